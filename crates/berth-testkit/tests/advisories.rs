//! Regression tests from other registries' security advisories, over HTTP
//! against the real server with auth on. Each would fail on a registry that
//! has the bug the advisory describes.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{Value, json};

const ALICE_PW: &str = "alice-correct-horse";
const BOB_PW: &str = "bob-battery-staple";

fn alice() -> Cred {
    Cred::basic("alice", ALICE_PW)
}

fn bob() -> Cred {
    Cred::basic("bob", BOB_PW)
}

fn scope(repo: &str, actions: &str) -> String {
    format!("repository:{repo}:{actions}")
}

async fn world(customize: impl FnOnce(&mut berth_config::Config)) -> (H, Image) {
    let h = H::start(customize).await;
    h.user("alice", ALICE_PW).await;
    h.user("bob", BOB_PW).await;
    let img = h.push_image("alice/app", "latest", &alice(), 1).await;
    (h, img)
}

async fn tag_digest(h: &H, repo: &str, tag: &str) -> Option<String> {
    let r = h.head(&format!("/v2/{repo}/manifests/{tag}"), &alice()).await;
    (r.status == 200).then(|| r.header("docker-content-digest").expect("digest header"))
}

/// Gitea CVE-2026-27771: anonymous pulls of private images.
#[tokio::test]
async fn anonymous_pull_of_a_private_image_is_401() {
    let (h, img) = world(|_| {}).await;
    let pull = scope("alice/app", "pull");
    let paths = [
        "/v2/alice/app/manifests/latest".to_owned(),
        format!("/v2/alice/app/manifests/{}", img.manifest_digest),
        format!("/v2/alice/app/blobs/{}", img.layer_digest),
        format!("/v2/alice/app/blobs/{}", img.config_digest),
        "/v2/alice/app/tags/list".to_owned(),
        format!("/v2/alice/app/referrers/{}", img.manifest_digest),
    ];
    let anon_jwt = Cred::bearer(&h.jwt(&Cred::Anon, &[&pull]).await);
    for path in &paths {
        h.assert_401(&h.get(path, &Cred::Anon).await, Some(&pull), None);
        if !path.contains("/tags/") && !path.contains("/referrers/") {
            h.assert_401(&h.head(path, &Cred::Anon).await, Some(&pull), None);
        }
        h.assert_401(&h.get(path, &anon_jwt).await, Some(&pull), Some("insufficient_scope"));
    }
    // The package API does not show it either.
    let r = h.get("/api/v1/packages/alice/container/app/latest", &Cred::Anon).await;
    assert_eq!(r.status, 401, "{}", r.text());
}

/// Distribution CVE-2023-2253: a huge `n` made the registry allocate for it.
#[tokio::test]
async fn huge_n_on_tag_and_catalog_lists_stays_bounded() {
    let (h, _) = world(|_| {}).await;
    for tag in ["a", "b"] {
        h.push_image("alice/app", tag, &alice(), 2).await;
    }
    for n in ["4294967295", "2147483647", "1000000000"] {
        let t = Instant::now();
        let r = h.get(&format!("/v2/alice/app/tags/list?n={n}"), &alice()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["tags"], json!(["a", "b", "latest"]));
        assert!(r.header("link").is_none(), "a short list has no next page");
        let r = h.get(&format!("/v2/_catalog?n={n}"), &alice()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["repositories"], json!(["alice/app"]));
        assert!(t.elapsed() < Duration::from_secs(2), "n={n} took {:?}", t.elapsed());
    }
    // Beyond u32: refused, not wrapped.
    let r = h.get("/v2/alice/app/tags/list?n=99999999999999999999", &alice()).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// An Ed25519 public key as a JWK.
fn jwk_of(pem: &[u8], dir: &std::path::Path) -> Value {
    let path = dir.join("k.pem");
    std::fs::write(&path, pem).expect("write key");
    let public = berth_auth::jwt::public_key_pem(&path).expect("public key");
    let body: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).expect("base64");
    json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]) })
}

/// A JWT with exactly `header`, signed with `pem`.
fn signed(header: &Value, claims: &Value, pem: &[u8]) -> String {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = EncodingKey::from_ed_pem(pem).expect("key");
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::EdDSA).expect("sign");
    format!("{msg}.{sig}")
}

/// Distribution CVE-2025-24976: a token carrying its own key was verified
/// with that key.
#[tokio::test]
async fn a_jwt_carrying_its_own_key_is_refused_even_with_our_kid() {
    let (h, _) = world(|_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = foreign_key_pem(dir.path());
    let claims = claims("alice", repo_access("alice/app", &["pull", "push", "delete"]));
    let kid = h.kid();
    let cases = [
        // Signed by the attacker, carrying the attacker's public key.
        (json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "jwk": jwk_of(&foreign, dir.path())}), foreign.clone()),
        // Signed by the server's own key, yet pointing elsewhere for keys.
        (json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "jku": "https://evil.example/jwks.json"}), h.key_pem()),
        (json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "x5u": "https://evil.example/cert.pem"}), h.key_pem()),
        (json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "x5c": ["MIIBszCCAVmgAwIBAgIU"]}), h.key_pem()),
    ];
    for (header, pem) in cases {
        let jwt = signed(&header, &claims, &pem);
        let r = h.get_manifest("alice/app", "latest", &Cred::bearer(&jwt)).await;
        h.assert_401(&r, Some(&scope("alice/app", "pull")), Some("invalid_token"));
    }
    // The same claims with a plain header and the server's key work: the
    // header alone made the difference.
    let plain = signed(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}), &claims, &h.key_pem());
    assert_eq!(h.get_manifest("alice/app", "latest", &Cred::bearer(&plain)).await.status, 200);
}

/// Distribution CVE-2026-41888: a tag delete path that skipped immutability.
#[tokio::test]
async fn no_delete_path_moves_or_removes_an_immutable_tag() {
    let (h, _) = world(|c| c.tags.immutable = vec!["*:v*".into()]).await;
    h.site_admin("root", "root-pw").await;
    let root = Cred::basic("root", "root-pw");
    let v1 = h.push_image("alice/app", "v1", &alice(), 3).await;
    let other = Image::new(4);
    // The tag endpoint, by tag and by digest.
    assert_denied(&h.delete("/v2/alice/app/manifests/v1", &alice()).await);
    assert_denied(&h.delete(&format!("/v2/alice/app/manifests/{}", v1.manifest_digest), &alice()).await);
    // Moving it.
    h.upload_blob("alice/app", &alice(), &other.config).await;
    h.upload_blob("alice/app", &alice(), &other.layer).await;
    assert_denied(&h.put_manifest("alice/app", "v1", &alice(), &other.manifest).await);
    // The Gitea package API, by tag and by digest, even for a site admin.
    for version in ["v1", v1.manifest_digest.as_str()] {
        let r = h.delete(&format!("/api/v1/packages/alice/container/app/{version}"), &root).await;
        assert_eq!(r.status, 403, "{version}: {}", r.text());
        assert!(r.text().contains("*:v*"), "names the rule: {}", r.text());
    }
    // Retention, with a rule stored through the admin API that removes every tag.
    let rule = r#"{"repositories": "alice/*", "remove_tags": ["*"]}"#;
    let r = h
        .send(
            Method::POST,
            "/api/v1/admin/retention/rules",
            &root,
            &[("content-type", "application/json")],
            Some(rule.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let preview = h.get("/api/v1/admin/retention/preview", &root).await;
    assert_eq!(preview.status, 200, "{}", preview.text());
    assert!(!preview.text().contains("\"v1\"") || preview.text().contains("immutable"), "{}", preview.text());
    let policy = h.server.maintenance.retention_policy().await.expect("rules");
    h.server.maintenance.apply_retention(&policy, false, None).await.expect("retention runs");
    assert_eq!(tag_digest(&h, "alice/app", "v1").await.as_deref(), Some(v1.manifest_digest.as_str()));
    // `latest` (not protected) is kept by retention's own rule, but the
    // protected tag survived every path above.
}

/// zot CVE-2026-31801: overwriting an existing tag without push rights on
/// that repository.
#[tokio::test]
async fn overwriting_a_tag_needs_push_rights_on_that_repository() {
    let (h, img) = world(|_| {}).await;
    h.push_image("alice/other", "latest", &alice(), 5).await;
    let evil = Image::new(6);
    // Blobs for the replacement exist in the repository (pushed by alice),
    // so only the manifest push is at stake.
    h.upload_blob("alice/app", &alice(), &evil.config).await;
    h.upload_blob("alice/app", &alice(), &evil.layer).await;
    let (_, other_only) = h.pat("alice", &[WRITE], &["alice/other"], None).await;
    let (_, read_only) = h.pat("alice", &[READ], &[], None).await;
    for cred in [Cred::basic("alice", &other_only), Cred::basic("alice", &read_only), bob()] {
        for tag in ["latest", "new-tag"] {
            assert_denied(&h.put_manifest("alice/app", tag, &cred, &evil.manifest).await);
        }
    }
    // A JWT for another repository's push is not a push on this one.
    let jwt = h.jwt(&alice(), &[&scope("alice/other", "pull,push"), &scope("alice/app", "pull")]).await;
    let r = h.put_manifest("alice/app", "latest", &Cred::bearer(&jwt), &evil.manifest).await;
    h.assert_401(&r, Some(&scope("alice/app", "pull,push")), Some("insufficient_scope"));
    assert_eq!(tag_digest(&h, "alice/app", "latest").await.as_deref(), Some(img.manifest_digest.as_str()));
    assert_eq!(tag_digest(&h, "alice/app", "new-tag").await, None);
}

/// Harbor CVE-2022-31669: rule ids used across projects (owners).
#[tokio::test]
async fn admin_rule_ids_cannot_be_used_by_owner_admins() {
    let (h, _) = world(|_| {}).await;
    h.site_admin("root", "root-pw").await;
    h.org("acme").await;
    h.member("acme", "alice", "admin").await;
    let root = Cred::basic("root", "root-pw");
    let rule = r#"{"repositories": "bob/*", "keep_last": 3}"#;
    let r = h
        .send(
            Method::POST,
            "/api/v1/admin/retention/rules",
            &root,
            &[("content-type", "application/json")],
            Some(rule.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_i64().expect("rule id");
    let (_, admin_token) = h.pat("alice", &[WRITE], &[], None).await;
    for cred in [alice(), Cred::basic("alice", &admin_token), Cred::bearer(&admin_token)] {
        let r = h.delete(&format!("/api/v1/admin/retention/rules/{id}"), &cred).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(h.get("/api/v1/admin/retention/rules", &cred).await.status, 403);
        assert_eq!(h.get("/api/v1/admin/retention/preview", &cred).await.status, 403);
    }
    let rules = h.get("/api/v1/admin/retention/rules", &root).await.json();
    assert!(rules.to_string().contains("bob/*"), "the rule is still there: {rules}");
}

/// Harbor CVE-2026-4404 (default credentials): with no admin_password, no
/// account exists and nothing logs in.
#[tokio::test]
async fn no_default_credentials_exist() {
    let h = H::start(|c| c.admin_password = berth_config::Secret::default()).await;
    assert!(h.store().list_users().await.expect("users").is_empty(), "no account was created");
    for (user, password) in
        [("admin", "admin"), ("admin", ""), ("admin", "password"), ("admin", "Harbor12345"), ("root", "root")]
    {
        let r = h.get("/v2/", &Cred::basic(user, password)).await;
        assert_eq!(r.status, 401, "{user}:{password}: {}", r.text());
        let r = h.token(&Cred::basic(user, password), &["registry:catalog:*"]).await;
        assert_eq!(r.status, 401, "{user}:{password} at the token endpoint");
    }
}
