//! Manifest GET/HEAD by tag and by digest, and `Accept` negotiation.

use berth_conformance::content::{
    self, ACCEPT_ALL_MANIFESTS, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX,
    OCI_MANIFEST,
};
use berth_conformance::{
    Manifest, Resp, Target, assert_error, assert_error_one_of, assert_head_status, here, send, sha256,
};
use serde_json::json;

/// Asserts a 200 GET of `m`: exact bytes, its media type, length and digest.
fn served(r: &Resp, m: &Manifest) {
    r.expect_status(200)
        .expect_body(&m.body)
        .expect_header("Content-Type", &m.media_type)
        .expect_header("Docker-Content-Digest", &m.digest);
}

/// Asserts a 200 HEAD of `m`: no body, but the GET's headers.
fn headed(r: &Resp, m: &Manifest) {
    r.expect_status(200)
        .expect_empty_body()
        .expect_header("Content-Type", &m.media_type)
        .expect_header("Docker-Content-Digest", &m.digest);
    assert_eq!(r.content_length(), Some(m.body.len() as u64), "{r}");
}

#[tokio::test]
async fn get_by_tag_returns_exact_bytes_type_length_and_digest() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "latest").await;
    served(&t.get_manifest(t.repo(), "latest").await, &m);
}

#[tokio::test]
async fn get_by_digest_returns_exact_bytes_type_length_and_digest() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 2).await;
    t.push_manifest(t.repo(), &m.digest, &m).await;
    served(&t.get_manifest(t.repo(), &m.digest).await, &m);
}

#[tokio::test]
async fn head_by_tag_and_by_digest_have_headers_and_no_body() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "v1").await;
    headed(&t.head_manifest(t.repo(), "v1").await, &m);
    headed(&t.head_manifest(t.repo(), &m.digest).await, &m);
}

#[tokio::test]
async fn sha512_manifest_is_served_under_its_sha512_digest() {
    let t = Target::new(here!()).await;
    let m = Manifest::sha512(t.image_value(t.repo(), 1).await);
    assert!(m.digest.starts_with("sha512:"));
    let r = t.push_manifest(t.repo(), &m.digest, &m).await;
    r.expect_header("Docker-Content-Digest", &m.digest);
    served(&t.get_manifest(t.repo(), &m.digest).await, &m);
    headed(&t.head_manifest(t.repo(), &m.digest).await, &m);
}

#[tokio::test]
async fn tag_of_a_sha512_manifest_reports_its_sha512_digest() {
    // Pushed by sha512 digest with `?tag=`: lookups by tag report the digest
    // in the algorithm it was pushed with.
    let t = Target::new(here!()).await;
    let m = Manifest::sha512(t.image_value(t.repo(), 1).await);
    t.push_manifest(t.repo(), &format!("{}?tag=v512", m.digest), &m).await;
    served(&t.get_manifest(t.repo(), "v512").await, &m);
    headed(&t.head_manifest(t.repo(), "v512").await, &m);
}

#[tokio::test]
async fn index_is_served_with_the_index_type() {
    let t = Target::new(here!()).await;
    let (a, b) = (t.image(t.repo(), 1).await, t.image(t.repo(), 1).await);
    t.push_manifest(t.repo(), &a.digest, &a).await;
    t.push_manifest(t.repo(), &b.digest, &b).await;
    let mut da = content::manifest_descriptor(&a);
    da["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let mut db = content::manifest_descriptor(&b);
    db["platform"] = json!({ "architecture": "arm64", "os": "linux" });
    let index = Manifest::new(content::index(vec![da, db]));
    assert_eq!(index.media_type, OCI_INDEX);
    t.push_manifest(t.repo(), "multi", &index).await;
    served(&t.get_manifest(t.repo(), "multi").await, &index);
    headed(&t.head_manifest(t.repo(), &index.digest).await, &index);
}

/// A Docker schema 2 image manifest, its blobs pushed.
async fn docker_image(t: &Target) -> Manifest {
    let config = t.config_blob();
    let layer = t.blob(300);
    t.push_blob(t.repo(), &config).await;
    t.push_blob(t.repo(), &layer).await;
    Manifest::new(json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": content::descriptor(DOCKER_CONFIG, &config),
        "layers": [content::descriptor(DOCKER_LAYER, &layer)],
    }))
}

#[tokio::test]
async fn docker_schema2_manifest_is_served_with_its_type() {
    let t = Target::new(here!()).await;
    let m = docker_image(&t).await;
    t.push_manifest(t.repo(), "docker", &m).await;
    served(&t.get_manifest(t.repo(), "docker").await, &m);
    headed(&t.head_manifest(t.repo(), &m.digest).await, &m);
}

#[tokio::test]
async fn docker_manifest_list_is_served_with_its_type() {
    let t = Target::new(here!()).await;
    let image = docker_image(&t).await;
    t.push_manifest(t.repo(), &image.digest, &image).await;
    let mut d = content::manifest_descriptor(&image);
    d["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let list = Manifest::new(json!({ "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": [d] }));
    t.push_manifest(t.repo(), "list", &list).await;
    served(&t.get_manifest(t.repo(), "list").await, &list);
    headed(&t.head_manifest(t.repo(), "list").await, &list);
}

#[tokio::test]
async fn accept_listing_only_other_manifest_types_is_404_manifest_unknown() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "oci").await;
    let accept = format!("{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}");
    for reference in ["oci", m.digest.as_str()] {
        let path = format!("/v2/{}/manifests/{reference}", t.repo());
        assert_error(&send(t.get(&path).header("Accept", &accept)).await, 404, "MANIFEST_UNKNOWN");
        assert_head_status(&send(t.head(&path).header("Accept", &accept)).await, 404);
    }
}

#[tokio::test]
async fn accept_absent_wildcard_or_the_stored_type_is_200() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "oci").await;
    let path = format!("/v2/{}/manifests/oci", t.repo());
    served(&t.raw("GET", &path, &[]).await, &m);
    headed(&t.raw("HEAD", &path, &[]).await, &m);
    for accept in [
        "*/*",
        OCI_MANIFEST,
        ACCEPT_ALL_MANIFESTS,
        "application/vnd.docker.distribution.manifest.v2+json;q=0.9, application/vnd.oci.image.manifest.v1+json;q=0.5",
    ] {
        served(&send(t.get(&path).header("Accept", accept)).await, &m);
        headed(&send(t.head(&path).header("Accept", accept)).await, &m);
    }
    // Several Accept header lines count together.
    let r = t.raw("GET", &path, &[("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)]).await;
    served(&r, &m);
}

#[tokio::test]
async fn missing_manifest_is_404_manifest_unknown() {
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "present").await;
    let absent = sha256(&t.blob(20));
    for reference in [absent.as_str(), "absent"] {
        let r = t.get_manifest(t.repo(), reference).await;
        assert_error(&r, 404, "MANIFEST_UNKNOWN");
        assert_head_status(&t.head_manifest(t.repo(), reference).await, 404);
    }
}

#[tokio::test]
async fn manifest_of_an_unknown_repository_is_404() {
    let t = Target::new(here!()).await;
    let r = t.get_manifest(t.repo(), "latest").await;
    assert_error_one_of(&r, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
    assert_head_status(&t.head_manifest(t.repo(), "latest").await, 404);
}

#[tokio::test]
async fn malformed_digest_reference_on_get_is_400_or_404() {
    // The spec allows either; Berth answers 400 DIGEST_INVALID.
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "present").await;
    let r = t.get_manifest(t.repo(), "sha256:baddigeststring").await;
    match r.status {
        400 => assert_error(&r, 400, "DIGEST_INVALID"),
        _ => assert_error(&r, 404, "MANIFEST_UNKNOWN"),
    }
}

#[tokio::test]
async fn manifest_responses_are_not_content_encoded() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "latest").await;
    let r = send(
        t.get(&format!("/v2/{}/manifests/latest", t.repo()))
            .header("Accept", OCI_MANIFEST)
            .header("Accept-Encoding", "gzip, br, zstd"),
    )
    .await;
    served(&r, &m);
    r.expect_no_header("Content-Encoding");
}

#[tokio::test]
async fn manifest_of_another_repository_is_not_visible() {
    let t = Target::new(here!()).await;
    let (owner, other) = (t.repo_at("owner"), t.repo_at("other"));
    let m = t.push_image(&owner, "latest").await;
    t.push_image(&other, "latest").await;
    assert_error(&t.get_manifest(&other, &m.digest).await, 404, "MANIFEST_UNKNOWN");
    assert_head_status(&t.head_manifest(&other, &m.digest).await, 404);
}
