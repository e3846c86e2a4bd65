//! Deleting content that something still needs, over HTTP against the real
//! server: a blob or child manifest that an immutable tag reaches (directly
//! or through indexes, at any depth) is refused with 403 `DENIED` naming
//! the rule and the tag; a blob any manifest of the repository references
//! is refused naming that manifest. The image stays pullable. Content
//! nothing references still deletes as the OCI spec expects (202, then 404),
//! including in the conformance suite's order: tag, manifest, then blobs.

mod common;

use berth_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use berth_testkit::{TestServer, fixtures};
use common::*;
use reqwest::Method;
use serde_json::Value;

const RULE: &str = "*:v*";

/// A server with auth off and the immutability rule `*:v*`.
struct S {
    server: TestServer,
    http: reqwest::Client,
}

impl S {
    async fn start() -> S {
        let server = TestServer::start_with(|c| c.tags.immutable = vec![RULE.into()]).await;
        S { server, http: client(None) }
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
        send_with(&self.http, method, &self.server.url(path), &Cred::Anon, headers, body).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, &[("accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))], None).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, &[], None).await
    }

    async fn upload(&self, repo: &str, data: &[u8]) {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", digest(data));
        let r =
            self.send(Method::POST, &path, &[("content-type", "application/octet-stream")], Some(data.to_vec())).await;
        assert_eq!(r.status, 201, "blob upload to {repo}: {}", r.text());
    }

    async fn put(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let r = self.send(Method::PUT, &path, &[("content-type", media_type)], Some(body.to_vec())).await;
        assert_eq!(r.status, 201, "manifest push to {repo}:{reference}: {}", r.text());
    }

    /// Config, layer and manifest, the manifest under `reference` (a tag,
    /// or `None` for its digest).
    async fn push_image(&self, repo: &str, reference: Option<&str>, seed: u64) -> Image {
        let img = Image::new(seed);
        self.upload(repo, &img.config).await;
        self.upload(repo, &img.layer).await;
        self.put(repo, reference.unwrap_or(&img.manifest_digest), OCI_MANIFEST, &img.manifest).await;
        img
    }

    /// The manifest and its config and layer are served intact.
    async fn assert_pullable(&self, repo: &str, reference: &str, img: &Image) {
        let r = self.get(&format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!((r.status, &r.body), (200, &img.manifest), "{repo}:{reference}: {}", r.text());
        for blob in [&img.config, &img.layer] {
            let r = self.get(&format!("/v2/{repo}/blobs/{}", digest(blob))).await;
            assert_eq!((r.status, &r.body), (200, blob), "{repo}: blob {}", digest(blob));
        }
    }
}

fn message(r: &Resp) -> String {
    r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

fn detail(r: &Resp) -> Value {
    r.json()["errors"][0]["detail"].clone()
}

/// 403 DENIED saying `digest` is part of `repo:tag`, immutable under `*:v*`.
#[track_caller]
fn assert_protected(r: &Resp, digest: &str, repo: &str, tag: &str) {
    assert_denied(r);
    let expected = format!("{digest} is part of {repo}:{tag}, which is immutable (rule \"{RULE}\")");
    assert_eq!(message(r), expected);
    let d = detail(r);
    assert_eq!((d["digest"].as_str(), d["repository"].as_str()), (Some(digest), Some(repo)), "{d}");
    assert_eq!((d["tag"].as_str(), d["rule"].as_str()), (Some(tag), Some(RULE)), "{d}");
}

/// 403 DENIED naming the manifest that references the blob.
#[track_caller]
fn assert_referenced(r: &Resp, blob: &str, manifest: &str) {
    assert_denied(r);
    assert!(message(r).contains(manifest), "the message names the manifest: {}", r.text());
    let d = detail(r);
    assert_eq!((d["digest"].as_str(), d["manifest"].as_str()), (Some(blob), Some(manifest)), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_and_config_of_an_immutable_image_are_403_and_it_stays_pullable() {
    let s = S::start().await;
    let img = s.push_image("alice/rel", Some("v1.0"), 1).await;
    for blob in [&img.layer_digest, &img.config_digest] {
        let r = s.delete(&format!("/v2/alice/rel/blobs/{blob}")).await;
        assert_protected(&r, blob, "alice/rel", "v1.0");
    }
    s.assert_pullable("alice/rel", "v1.0", &img).await;
    s.assert_pullable("alice/rel", &img.manifest_digest, &img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_an_immutable_index_are_403_by_distribution_and_package_api() {
    let s = S::start().await;
    let (amd64, arm64) = (s.push_image("alice/multi", None, 11).await, s.push_image("alice/multi", None, 12).await);
    let index = fixtures::index(&[&amd64.manifest, &arm64.manifest]);
    s.put("alice/multi", "v2.0", OCI_INDEX, &index).await;

    for child in [&amd64, &arm64] {
        let r = s.delete(&format!("/v2/alice/multi/manifests/{}", child.manifest_digest)).await;
        assert_protected(&r, &child.manifest_digest, "alice/multi", "v2.0");
        let r = s.delete(&format!("/v2/alice/multi/blobs/{}", child.layer_digest)).await;
        assert_protected(&r, &child.layer_digest, "alice/multi", "v2.0");
        // The Gitea package API deletes a version given by digest the same way.
        let r = s.delete(&format!("/api/v1/packages/alice/container/multi/{}", child.manifest_digest)).await;
        assert_eq!(r.status, 403, "{}", r.text());
        let text = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(text.contains("alice/multi:v2.0") && text.contains(RULE), "{text}");
    }
    let r = s.get("/v2/alice/multi/manifests/v2.0").await;
    assert_eq!((r.status, &r.body), (200, &index), "{}", r.text());
    s.assert_pullable("alice/multi", &amd64.manifest_digest, &amd64).await;
    s.assert_pullable("alice/multi", &arm64.manifest_digest, &arm64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_indexes_protect_every_level_below_the_tag() {
    let s = S::start().await;
    let leaf = s.push_image("alice/nest", None, 21).await;
    let inner = fixtures::index(&[&leaf.manifest]);
    s.put("alice/nest", &digest(&inner), OCI_INDEX, &inner).await;
    // The outer index lists the inner one (an index) as a child.
    let mut outer: Value = serde_json::from_slice(&fixtures::index(&[&inner])).expect("json");
    outer["manifests"][0]["mediaType"] = OCI_INDEX.into();
    let outer = serde_json::to_vec(&outer).expect("json");
    s.put("alice/nest", "v3", OCI_INDEX, &outer).await;

    for target in [digest(&inner), leaf.manifest_digest.clone()] {
        let r = s.delete(&format!("/v2/alice/nest/manifests/{target}")).await;
        assert_protected(&r, &target, "alice/nest", "v3");
    }
    for blob in [&leaf.config_digest, &leaf.layer_digest] {
        let r = s.delete(&format!("/v2/alice/nest/blobs/{blob}")).await;
        assert_protected(&r, blob, "alice/nest", "v3");
    }
    let r = s.get(&format!("/v2/alice/nest/manifests/{}", digest(&inner))).await;
    assert_eq!((r.status, &r.body), (200, &inner), "{}", r.text());
    s.assert_pullable("alice/nest", &leaf.manifest_digest, &leaf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referenced_blob_is_403_until_its_manifest_is_deleted() {
    let s = S::start().await;
    let img = s.push_image("alice/app", Some("latest"), 31).await;
    let layer_path = format!("/v2/alice/app/blobs/{}", img.layer_digest);
    assert_referenced(&s.delete(&layer_path).await, &img.layer_digest, &img.manifest_digest);
    s.assert_pullable("alice/app", "latest", &img).await;

    // Untagging leaves the manifest, which still references the layer.
    assert_eq!(s.delete("/v2/alice/app/manifests/latest").await.status, 202);
    assert_referenced(&s.delete(&layer_path).await, &img.layer_digest, &img.manifest_digest);

    assert_eq!(s.delete(&format!("/v2/alice/app/manifests/{}", img.manifest_digest)).await.status, 202);
    assert_eq!(s.delete(&layer_path).await.status, 202);
    assert_error(&s.get(&layer_path).await, 404, "BLOB_UNKNOWN");
    assert_error(&s.delete(&layer_path).await, 404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_blobs_and_children_of_unprotected_indexes_delete() {
    let s = S::start().await;
    let loose = fixtures::blob(41, 300);
    s.upload("alice/tmp", &loose).await;
    let path = format!("/v2/alice/tmp/blobs/{}", digest(&loose));
    assert_eq!(s.delete(&path).await.status, 202);
    assert_error(&s.get(&path).await, 404, "BLOB_UNKNOWN");
    let head = s.send(Method::HEAD, &path, &[], None).await;
    assert_eq!(head.status, 404);

    // Only protection keeps an index's children.
    let child = s.push_image("alice/tmp", None, 42).await;
    let index = fixtures::index(&[&child.manifest]);
    s.put("alice/tmp", "latest", OCI_INDEX, &index).await;
    let child_path = format!("/v2/alice/tmp/manifests/{}", child.manifest_digest);
    assert_eq!(s.delete(&child_path).await.status, 202);
    assert_error(&s.get(&child_path).await, 404, "MANIFEST_UNKNOWN");
    assert_eq!(s.get("/v2/alice/tmp/manifests/latest").await.status, 200);
}

/// The official conformance suite's content-management order: the tag,
/// the manifest, then the config and layer blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_delete_order_succeeds() {
    let s = S::start().await;
    let img = s.push_image("alice/conformance", Some("tagtest0"), 51).await;
    assert_eq!(s.delete("/v2/alice/conformance/manifests/tagtest0").await.status, 202);
    let manifest = format!("/v2/alice/conformance/manifests/{}", img.manifest_digest);
    assert_eq!(s.delete(&manifest).await.status, 202);
    assert_error(&s.get(&manifest).await, 404, "MANIFEST_UNKNOWN");
    for blob in [&img.config_digest, &img.layer_digest] {
        let path = format!("/v2/alice/conformance/blobs/{blob}");
        assert_eq!(s.delete(&path).await.status, 202, "{blob}");
        assert_error(&s.get(&path).await, 404, "BLOB_UNKNOWN");
    }
}

/// With auth on, the owner (who may delete) gets the same refusals, from
/// the registry API with a password and from the package API with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_owner_is_refused_by_both_apis() {
    let h = H::start(|c| c.tags.immutable = vec![RULE.into()]).await;
    h.user("alice", "alice-correct-horse").await;
    let alice = Cred::basic("alice", "alice-correct-horse");
    let img = h.push_image("alice/rel", "v1.0", &alice, 61).await;
    let r = h.delete(&format!("/v2/alice/rel/blobs/{}", img.layer_digest), &alice).await;
    assert_protected(&r, &img.layer_digest, "alice/rel", "v1.0");

    let child = h.push_image("alice/multi", "build-1", &alice, 62).await;
    let index = fixtures::index(&[&child.manifest]);
    let r = h
        .send(Method::PUT, "/v2/alice/multi/manifests/v2.0", &alice, &[("content-type", OCI_INDEX)], Some(index))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(h.delete("/v2/alice/multi/manifests/build-1", &alice).await.status == 202, "an unprotected tag goes");
    let r = h.delete(&format!("/v2/alice/multi/manifests/{}", child.manifest_digest), &alice).await;
    assert_protected(&r, &child.manifest_digest, "alice/multi", "v2.0");

    let (_, token) = h.pat("alice", &[WRITE], &[], None).await;
    let token = Cred::Raw(format!("token {token}"));
    let r = h.delete(&format!("/api/v1/packages/alice/container/multi/{}", child.manifest_digest), &token).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let text = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("alice/multi:v2.0") && text.contains(RULE), "{text}");
    let r = h.get_manifest("alice/multi", &child.manifest_digest, &alice).await;
    assert_eq!((r.status, &r.body), (200, &child.manifest));
}
