//! Adversarial authentication and authorization tests, over HTTP against the
//! real server. Every case asserts the exact status, the OCI error code and,
//! for 401s, the exact `WWW-Authenticate` challenge.
//!
//! The rules under test (from the product issue):
//! - users own `owner/...`; org roles read (pull) / write (pull, push,
//!   delete) / admin; site admins may do everything; repositories are
//!   private by default; an owner or a repository can be made public;
//!   pushing to an owner that does not exist is denied;
//! - personal access tokens narrow their user's rights by scope
//!   (`read:package`, `write:package`) and repository globs, may expire and
//!   can be revoked; a password works where a token does unless
//!   `auth.allow_password = false`;
//! - no credentials → 401 with a Bearer challenge naming the scope the
//!   request needs; an anonymous bearer token lacking access → 401
//!   `insufficient_scope`; valid credentials without the right → 403
//!   DENIED, identical whether or not the repository exists;
//! - bearer JWTs: EdDSA only, known `kid`, `exp`, `nbf`, `aud`, `iss`;
//! - bearer JWTs grant exactly their `access` claim, checked against live
//!   rights; what they lack is 401 `insufficient_scope`;
//! - login limits are in `login_limits.rs`.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
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

/// alice and bob, each with a private image tagged `latest` in `<user>/app`.
async fn two_users(customize: impl FnOnce(&mut berth_config::Config)) -> (H, Image, Image) {
    let h = H::start(customize).await;
    h.user("alice", ALICE_PW).await;
    h.user("bob", BOB_PW).await;
    let a = h.push_image("alice/app", "latest", &alice(), 1).await;
    let b = h.push_image("bob/app", "latest", &bob(), 2).await;
    (h, a, b)
}

/// The `access` claim of a JWT.
fn access_of(jwt: &str) -> Value {
    claims_of(jwt)["access"].clone()
}

/// Tags of `repo` as its owner sees them.
async fn tags(h: &H, repo: &str, cred: &Cred) -> Value {
    let r = h.get(&format!("/v2/{repo}/tags/list"), cred).await;
    assert_eq!(r.status, 200, "tags of {repo}: {}", r.text());
    r.json()["tags"].clone()
}

async fn catalog(h: &H, cred: &Cred) -> Value {
    let r = h.get("/v2/_catalog", cred).await;
    assert_eq!(r.status, 200, "catalog: {}", r.text());
    r.json()["repositories"].clone()
}

/// Every repository the registry holds, bypassing auth.
async fn all_repositories(h: &H) -> Vec<String> {
    h.server.registry.list_repositories(None, None).await.expect("list repositories")
}

// ---------------------------------------------------------------------------
// 1. read:package tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn read_package_token_can_pull_but_not_push_or_delete() {
    let (h, a, _) = two_users(|_| {}).await;
    let (_, read) = h.pat("alice", &[READ], &[], None).await;
    let fresh = Image::new(77);
    for cred in [Cred::basic("alice", &read), Cred::bearer(&read), Cred::Raw(format!("token {read}"))] {
        // Pull works.
        let r = h.get_manifest("alice/app", "latest", &cred).await;
        assert_eq!(r.status, 200, "{cred:?}: {}", r.text());
        assert_eq!(r.body, a.manifest);
        let r = h.head(&format!("/v2/alice/app/blobs/{}", a.layer_digest), &cred).await;
        assert_eq!(r.status, 200, "{cred:?}");
        assert_eq!(tags(&h, "alice/app", &cred).await, json!(["latest"]));

        // Push is refused: new session, monolithic upload, manifest put.
        assert_denied(&h.start_upload("alice/app", &cred).await);
        assert_denied(&h.upload_blob("alice/app", &cred, &fresh.layer).await);
        assert_denied(&h.put_manifest("alice/app", "evil", &cred, &a.manifest).await);
        // Delete is refused: manifest by digest, tag, blob.
        assert_denied(&h.delete(&format!("/v2/alice/app/manifests/{}", a.manifest_digest), &cred).await);
        assert_denied(&h.delete("/v2/alice/app/manifests/latest", &cred).await);
        assert_denied(&h.delete(&format!("/v2/alice/app/blobs/{}", a.layer_digest), &cred).await);
    }

    // A session opened with the password cannot be driven with the read token.
    let r = h.start_upload("alice/app", &alice()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("docker-upload-uuid").expect("upload id");
    let up = format!("/v2/alice/app/blobs/uploads/{id}");
    let rc = Cred::basic("alice", &read);
    assert_denied(&h.get(&up, &rc).await);
    assert_denied(
        &h.send(Method::PATCH, &up, &rc, &[("content-type", "application/octet-stream")], Some(fresh.layer.clone()))
            .await,
    );
    assert_denied(
        &h.send(Method::PUT, &format!("{up}?digest={}", fresh.layer_digest), &rc, &[], Some(fresh.layer.clone())).await,
    );
    assert_denied(&h.delete(&up, &rc).await);

    // A JWT obtained with the read token carries pull only and cannot push
    // either: it is told which scope it lacks.
    let jwt = h.jwt(&rc, &[&scope("alice/app", "pull,push,delete")]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "alice/app", "actions": ["pull"] }]));
    let bearer = Cred::bearer(&jwt);
    assert_eq!(h.get_manifest("alice/app", "latest", &bearer).await.status, 200);
    let (push, del) = (scope("alice/app", "pull,push"), scope("alice/app", "delete"));
    h.assert_401(&h.start_upload("alice/app", &bearer).await, Some(&push), Some("insufficient_scope"));
    // The same token again for the same scope: 403 with the same challenge.
    h.assert_403_scope(&h.put_manifest("alice/app", "evil", &bearer, &a.manifest).await, &push);
    h.assert_401(
        &h.put_manifest(
            "alice/app",
            "evil",
            &Cred::bearer(&h.jwt(&rc, &[&scope("alice/app", "pull")]).await),
            &a.manifest,
        )
        .await,
        Some(&push),
        Some("insufficient_scope"),
    );
    h.assert_401(&h.delete("/v2/alice/app/manifests/latest", &bearer).await, Some(&del), Some("insufficient_scope"));

    // Nothing changed.
    assert_eq!(tags(&h, "alice/app", &alice()).await, json!(["latest"]));
    assert_eq!(h.get_manifest("alice/app", &a.manifest_digest, &alice()).await.status, 200);
    assert_eq!(h.head(&format!("/v2/alice/app/blobs/{}", a.layer_digest), &alice()).await.status, 200);
    assert_eq!(h.head(&format!("/v2/alice/app/blobs/{}", fresh.layer_digest), &alice()).await.status, 404);
}

// ---------------------------------------------------------------------------
// 2. Cross-namespace pushes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn cross_namespace_push_is_denied_for_password_and_token() {
    let (h, _, b) = two_users(|_| {}).await;
    let (_, write) = h.pat("alice", &[WRITE], &[], None).await;
    let img = Image::new(5);
    for cred in [alice(), Cred::basic("alice", &write), Cred::bearer(&write)] {
        let mut prints = Vec::new();
        for repo in ["bob/app", "bob/new", "nosuchowner/app"] {
            let start = h.start_upload(repo, &cred).await;
            assert_denied(&start);
            assert_denied(&h.upload_blob(repo, &cred, &img.layer).await);
            assert_denied(&h.put_manifest(repo, "latest", &cred, &b.manifest).await);
            assert_denied(&h.delete(&format!("/v2/{repo}/manifests/latest"), &cred).await);
            assert_denied(&h.delete(&format!("/v2/{repo}/blobs/{}", b.layer_digest), &cred).await);
            assert_denied(&h.get_manifest(repo, "latest", &cred).await);
            prints.push(start.fingerprint(&[(repo, "<repo>")]));
        }
        // Existing repository, missing repository, missing owner: one answer.
        assert_eq!(prints[0], prints[1], "{cred:?}: bob/app vs bob/new");
        assert_eq!(prints[0], prints[2], "{cred:?}: bob/app vs nosuchowner/app");
    }

    // The token endpoint grants nothing there either.
    let jwt = h.jwt(&alice(), &[&scope("bob/app", "pull,push"), &scope("nosuchowner/app", "pull,push")]).await;
    assert_eq!(access_of(&jwt), json!([]));
    for repo in ["bob/app", "nosuchowner/app"] {
        let r = h.start_upload(repo, &Cred::bearer(&jwt)).await;
        h.assert_401(&r, Some(&scope(repo, "pull,push")), Some("insufficient_scope"));
    }

    // Nothing was created or changed.
    assert_eq!(tags(&h, "bob/app", &bob()).await, json!(["latest"]));
    assert_eq!(all_repositories(&h).await, vec!["alice/app".to_owned(), "bob/app".to_owned()]);
}

// ---------------------------------------------------------------------------
// 3. Organization roles and site admins
// ---------------------------------------------------------------------------

const ROOT_PW: &str = "root-pw-0123";
const MEMBER_PW: &str = "member-pw-4567";

fn member(name: &str) -> Cred {
    Cred::basic(name, MEMBER_PW)
}

/// Org `acme` with a reader, a writer and an admin member, an outsider, a
/// site admin `root`, and bob with a private `bob/app`. `acme/app:latest`
/// is pushed by the writer.
async fn org_world() -> (H, Image) {
    let h = H::default().await;
    h.site_admin("root", ROOT_PW).await;
    for u in ["reader", "writer", "orgadmin", "outsider"] {
        h.user(u, MEMBER_PW).await;
    }
    h.user("bob", BOB_PW).await;
    h.org("acme").await;
    h.member("acme", "reader", "read").await;
    h.member("acme", "writer", "write").await;
    h.member("acme", "orgadmin", "admin").await;
    let img = h.push_image("acme/app", "latest", &member("writer"), 10).await;
    h.push_image("bob/app", "latest", &bob(), 11).await;
    (h, img)
}

#[tokio::test]
async fn org_read_member_can_pull_but_not_push_or_delete() {
    let (h, img) = org_world().await;
    let c = member("reader");
    assert_eq!(h.get_manifest("acme/app", "latest", &c).await.status, 200);
    assert_eq!(h.head(&format!("/v2/acme/app/blobs/{}", img.layer_digest), &c).await.status, 200);
    assert_eq!(tags(&h, "acme/app", &c).await, json!(["latest"]));
    let fresh = Image::new(12);
    assert_denied(&h.start_upload("acme/app", &c).await);
    assert_denied(&h.upload_blob("acme/app", &c, &fresh.layer).await);
    assert_denied(&h.put_manifest("acme/app", "v2", &c, &img.manifest).await);
    assert_denied(&h.put_manifest("acme/new", "v1", &c, &img.manifest).await);
    assert_denied(&h.delete("/v2/acme/app/manifests/latest", &c).await);
    assert_denied(&h.delete(&format!("/v2/acme/app/manifests/{}", img.manifest_digest), &c).await);
    assert_denied(&h.delete(&format!("/v2/acme/app/blobs/{}", img.layer_digest), &c).await);
    // A token of a read member with write:package scope is still only a reader.
    let (_, write) = h.pat("reader", &[WRITE], &[], None).await;
    assert_denied(&h.start_upload("acme/app", &Cred::basic("reader", &write)).await);
    let jwt = h.jwt(&c, &[&scope("acme/app", "pull,push,delete")]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "acme/app", "actions": ["pull"] }]));
    assert_eq!(tags(&h, "acme/app", &member("writer")).await, json!(["latest"]));
}

async fn org_member_can_push_and_delete(name: &str) {
    let (h, img) = org_world().await;
    let c = member(name);
    assert_eq!(h.get_manifest("acme/app", "latest", &c).await.status, 200);
    h.push_image("acme/app", "v2", &c, 20).await;
    h.push_image("acme/other", "v1", &c, 21).await;
    assert_eq!(tags(&h, "acme/app", &c).await, json!(["latest", "v2"]));
    // Delete a tag, a manifest by digest, a blob (one no manifest references
    // any more: a referenced blob is refused whoever asks).
    assert_eq!(h.delete("/v2/acme/app/manifests/v2", &c).await.status, 202);
    let r = h.delete(&format!("/v2/acme/app/manifests/{}", img.manifest_digest), &c).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = h.delete(&format!("/v2/acme/app/blobs/{}", img.layer_digest), &c).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_error(&h.get_manifest("acme/app", "latest", &c).await, 404, "MANIFEST_UNKNOWN");
    // A JWT carries all three actions.
    let jwt = h.jwt(&c, &[&scope("acme/app", "pull,push,delete")]).await;
    assert_eq!(
        access_of(&jwt),
        json!([{ "type": "repository", "name": "acme/app", "actions": ["pull", "push", "delete"] }])
    );
    // Org membership says nothing about other namespaces.
    assert_denied(&h.get_manifest("bob/app", "latest", &c).await);
    assert_denied(&h.start_upload("bob/app", &c).await);
}

#[tokio::test]
async fn org_write_member_can_push_and_delete() {
    org_member_can_push_and_delete("writer").await;
}

#[tokio::test]
async fn org_admin_member_can_push_and_delete() {
    org_member_can_push_and_delete("orgadmin").await;
}

#[tokio::test]
async fn org_non_member_is_denied_private_org_repositories() {
    let (h, img) = org_world().await;
    let c = member("outsider");
    let existing = h.get_manifest("acme/app", "latest", &c).await;
    assert_denied(&existing);
    let missing = h.get_manifest("acme/nothing", "latest", &c).await;
    assert_denied(&missing);
    assert_eq!(existing.fingerprint(&[("acme/app", "<r>")]), missing.fingerprint(&[("acme/nothing", "<r>")]));
    assert_denied(&h.head(&format!("/v2/acme/app/blobs/{}", img.layer_digest), &c).await);
    assert_denied(&h.get("/v2/acme/app/tags/list", &c).await);
    assert_denied(&h.get(&format!("/v2/acme/app/referrers/{}", img.manifest_digest), &c).await);
    assert_denied(&h.start_upload("acme/app", &c).await);
    assert_denied(&h.delete("/v2/acme/app/manifests/latest", &c).await);
    assert_eq!(access_of(&h.jwt(&c, &[&scope("acme/app", "pull")]).await), json!([]));
    // Anonymous: a challenge.
    h.assert_401(&h.get_manifest("acme/app", "latest", &Cred::Anon).await, Some(&scope("acme/app", "pull")), None);
    // An organization is not an account one can log in as.
    h.assert_401(&h.get("/v2/", &Cred::basic("acme", "")).await, None, None);
    h.assert_401(&h.get("/v2/", &Cred::basic("acme", MEMBER_PW)).await, None, None);
    assert!(
        berth_auth::admin::create_token(
            h.store(),
            "acme",
            &berth_auth::admin::TokenRequest { scopes: vec![WRITE.into()], ..Default::default() }
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn site_admin_may_do_everything_anywhere() {
    let (h, img) = org_world().await;
    let root = Cred::basic("root", ROOT_PW);
    // Pull anything.
    assert_eq!(h.get_manifest("acme/app", "latest", &root).await.status, 200);
    assert_eq!(h.get_manifest("bob/app", "latest", &root).await.status, 200);
    // Push into a user's namespace, an org's, and an owner that does not exist.
    h.push_image("bob/app", "by-root", &root, 30).await;
    let mine = h.push_image("acme/app", "by-root", &root, 31).await;
    h.push_image("nosuchowner/app", "v1", &root, 32).await;
    // Delete anywhere: a tag, a manifest, a blob.
    assert_eq!(h.delete("/v2/bob/app/manifests/by-root", &root).await.status, 202);
    let r = h.delete(&format!("/v2/acme/app/manifests/{}", mine.manifest_digest), &root).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = h.delete(&format!("/v2/acme/app/blobs/{}", mine.layer_digest), &root).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(h.get_manifest("acme/app", "latest", &root).await.body, img.manifest);
    // A token of the site admin (write:package) does the same.
    let (_, t) = h.pat("root", &[WRITE], &[], None).await;
    h.push_image("bob/app", "by-root-token", &Cred::basic("root", &t), 33).await;
    let jwt = h.jwt(&root, &[&scope("bob/app", "*"), "registry:catalog:*"]).await;
    assert_eq!(
        access_of(&jwt),
        json!([
            { "type": "repository", "name": "bob/app", "actions": ["pull", "push", "delete"] },
            { "type": "registry", "name": "catalog", "actions": ["*"] },
        ])
    );
    assert_eq!(catalog(&h, &root).await, json!(["acme/app", "bob/app", "nosuchowner/app"]));
}

// ---------------------------------------------------------------------------
// 4. Revoked and expired tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn revoked_token_is_rejected_on_v2_and_at_the_token_endpoint() {
    let (h, _, _) = two_users(|_| {}).await;
    let (id, pat) = h.pat("alice", &[WRITE], &[], None).await;
    assert_eq!(h.get("/v2/", &Cred::basic("alice", &pat)).await.status, 200);
    assert_eq!(h.get_manifest("alice/app", "latest", &Cred::bearer(&pat)).await.status, 200);
    h.revoke(id).await;

    for cred in [Cred::basic("alice", &pat), Cred::basic("anyone", &pat), Cred::bearer(&pat)] {
        h.assert_401(&h.get("/v2/", &cred).await, None, None);
        h.assert_401(&h.get_manifest("alice/app", "latest", &cred).await, Some(&scope("alice/app", "pull")), None);
        h.assert_401(&h.start_upload("alice/app", &cred).await, Some(&scope("alice/app", "pull,push")), None);
        h.assert_401(
            &h.delete("/v2/alice/app/manifests/latest", &cred).await,
            Some(&scope("alice/app", "delete")),
            None,
        );
        h.assert_401(&h.token(&cred, &[&scope("alice/app", "pull")]).await, None, None);
    }
    let r = h
        .token_form(&[("grant_type", "password"), ("username", "alice"), ("password", &pat), ("service", "berth")])
        .await;
    h.assert_401(&r, None, None);
    // Revoking twice is an error, not a resurrection.
    assert!(berth_auth::admin::revoke_token(h.store(), id).await.is_err());
    h.assert_401(&h.get("/v2/", &Cred::basic("alice", &pat)).await, None, None);
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let (h, _, _) = two_users(|_| {}).await;
    let (_, already) = h.pat("alice", &[WRITE], &[], Some(Duration::ZERO)).await;
    h.assert_401(&h.get("/v2/", &Cred::basic("alice", &already)).await, None, None);
    h.assert_401(
        &h.get_manifest("alice/app", "latest", &Cred::basic("alice", &already)).await,
        Some(&scope("alice/app", "pull")),
        None,
    );

    // Long enough for the first uses on a loaded machine (argon2 included).
    let (_, soon) = h.pat("alice", &[WRITE], &[], Some(Duration::from_secs(6))).await;
    let c = Cred::basic("alice", &soon);
    assert_eq!(h.get("/v2/", &c).await.status, 200);
    assert_eq!(h.get_manifest("alice/app", "latest", &c).await.status, 200);
    tokio::time::sleep(Duration::from_millis(7200)).await;
    h.assert_401(&h.get("/v2/", &c).await, None, None);
    h.assert_401(&h.get_manifest("alice/app", "latest", &c).await, Some(&scope("alice/app", "pull")), None);
    h.assert_401(
        &h.get_manifest("alice/app", "latest", &Cred::bearer(&soon)).await,
        Some(&scope("alice/app", "pull")),
        None,
    );
    h.assert_401(&h.token(&c, &[&scope("alice/app", "pull")]).await, None, None);
}

// ---------------------------------------------------------------------------
// 5. Crafted and tampered JWTs
// ---------------------------------------------------------------------------

/// alice with `alice/app:latest`, and a JWT signed with the server's key
/// that the server accepts (so the crafting itself is known to be right).
async fn jwt_world() -> H {
    let h = H::default().await;
    h.user("alice", ALICE_PW).await;
    h.push_image("alice/app", "latest", &alice(), 40).await;
    let good = h.sign(&claims("alice", repo_access("alice/app", &["pull"])));
    let r = h.get_manifest("alice/app", "latest", &Cred::bearer(&good)).await;
    assert_eq!(r.status, 200, "a correctly crafted JWT is accepted: {}", r.text());
    h
}

/// A JWT the server must refuse as an invalid token, wherever it is presented.
async fn assert_invalid_token(h: &H, jwt: &str, what: &str) {
    let c = Cred::bearer(jwt);
    let r = h.get_manifest("alice/app", "latest", &c).await;
    assert_eq!(r.status, 401, "{what}: manifest GET: {}", r.text());
    h.assert_401(&r, Some(&scope("alice/app", "pull")), Some("invalid_token"));
    h.assert_401(&h.start_upload("alice/app", &c).await, Some(&scope("alice/app", "pull,push")), Some("invalid_token"));
    h.assert_401(&h.get("/v2/", &c).await, None, Some("invalid_token"));
    h.assert_401(&h.get("/v2/_catalog", &c).await, Some("registry:catalog:*"), Some("invalid_token"));
}

#[tokio::test]
async fn jwt_expired_is_rejected() {
    let h = jwt_world().await;
    let mut c = claims("alice", repo_access("alice/app", &["pull", "push"]));
    let now = now();
    c["iat"] = json!(now - 900);
    c["nbf"] = json!(now - 900);
    c["exp"] = json!(now - 120);
    assert_invalid_token(&h, &h.sign(&c), "expired").await;
}

#[tokio::test]
async fn jwt_not_yet_valid_is_rejected() {
    let h = jwt_world().await;
    let mut c = claims("alice", repo_access("alice/app", &["pull"]));
    c["nbf"] = json!(now() + 120);
    assert_invalid_token(&h, &h.sign(&c), "nbf in the future").await;
}

#[tokio::test]
async fn jwt_with_tampered_payload_is_rejected() {
    let h = jwt_world().await;
    h.user("bob", BOB_PW).await;
    h.push_image("bob/app", "latest", &bob(), 41).await;
    let good = h.jwt(&alice(), &[&scope("alice/app", "pull")]).await;
    assert_eq!(h.get_manifest("alice/app", "latest", &Cred::bearer(&good)).await.status, 200);
    let parts: Vec<&str> = good.split('.').collect();
    let original = claims_of(&good);
    let reencode = |v: &Value| format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(v.to_string()), parts[2]);

    let mut as_bob = original.clone();
    as_bob["sub"] = json!("bob");
    as_bob["access"] = repo_access("bob/app", &["pull", "push", "delete"]);
    assert_invalid_token(&h, &reencode(&as_bob), "sub and access changed").await;

    let mut more = original.clone();
    more["access"] = repo_access("alice/app", &["pull", "push", "delete"]);
    assert_invalid_token(&h, &reencode(&more), "actions widened").await;

    let mut longer = original.clone();
    longer["exp"] = json!(now() + 86_400 * 365);
    assert_invalid_token(&h, &reencode(&longer), "lifetime extended").await;

    assert_invalid_token(&h, &format!("{}.{}.", parts[0], parts[1]), "signature stripped").await;
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    sig[0] ^= 1;
    assert_invalid_token(
        &h,
        &format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig)),
        "signature bit flip",
    )
    .await;
    // bob's repository was never opened.
    assert_eq!(tags(&h, "bob/app", &bob()).await, json!(["latest"]));
}

#[tokio::test]
async fn jwt_with_alg_none_is_rejected() {
    let h = jwt_world().await;
    let c = claims("alice", repo_access("alice/app", &["pull", "push"]));
    for header in [
        json!({ "alg": "none", "typ": "JWT", "kid": h.kid() }),
        json!({ "alg": "none", "typ": "JWT" }),
        json!({ "alg": "None", "typ": "JWT", "kid": h.kid() }),
        json!({ "alg": "NONE", "kid": h.kid() }),
    ] {
        assert_invalid_token(&h, &assemble(&header, &c, ""), &format!("unsigned {header}")).await;
    }
    // alg none with the original (valid EdDSA) signature attached.
    let signed = h.sign(&c);
    let sig = signed.rsplit('.').next().expect("signature");
    assert_invalid_token(&h, &assemble(&json!({ "alg": "none", "kid": h.kid() }), &c, sig), "none + signature").await;
}

#[tokio::test]
async fn jwt_hs256_signed_with_the_public_key_is_rejected() {
    let h = jwt_world().await;
    let c = claims("alice", repo_access("alice/app", &["pull", "push"]));
    let key_file = h.server.config.auth.jwt_key_file.clone().expect("key file");
    let public_pem = berth_auth::jwt::public_key_pem(&key_file).expect("public key");
    let body: String = public_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = STANDARD.decode(body).expect("SPKI DER");
    let raw_public = spki[spki.len() - 32..].to_vec();
    for (name, secret) in [
        ("raw public key", raw_public.clone()),
        ("SPKI DER", spki.clone()),
        ("public PEM", public_pem.clone().into_bytes()),
        ("kid", h.kid().into_bytes()),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(h.kid());
            let jwt = jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&secret)).expect("sign");
            assert_invalid_token(&h, &jwt, &format!("{alg:?} keyed with the {name}")).await;
        }
    }
}

#[tokio::test]
async fn jwt_signed_by_a_foreign_key_is_rejected() {
    let h = jwt_world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = foreign_key_pem(dir.path());
    let c = claims("alice", repo_access("alice/app", &["pull", "push"]));
    assert_invalid_token(&h, &sign_ed25519(&foreign, Some(&h.kid()), &c), "foreign key, server kid").await;
    assert_invalid_token(&h, &sign_ed25519(&foreign, None, &c), "foreign key, no kid").await;
    let other = berth_auth::JwtKeys::load(
        &dir.path().join("foreign-ed25519.pem"),
        &[],
        "berth",
        "berth",
        Duration::from_secs(300),
    )
    .expect("foreign keys");
    assert_ne!(other.kid(), h.kid());
    assert_invalid_token(&h, &sign_ed25519(&foreign, Some(other.kid()), &c), "foreign key, its own kid").await;
    // A whole token issued by another Berth instance (same iss/aud, other key).
    let entry =
        berth_auth::AccessEntry { kind: "repository".into(), name: "alice/app".into(), actions: vec!["pull".into()] };
    let issued = other.issue("alice", vec![entry], None).expect("issue");
    assert_invalid_token(&h, &issued.token, "issued by another instance").await;
}

#[tokio::test]
async fn jwt_with_wrong_audience_or_issuer_is_rejected() {
    let h = jwt_world().await;
    let base = claims("alice", repo_access("alice/app", &["pull", "push"]));
    let variants: Vec<(&str, Value)> = vec![
        ("aud other", {
            let mut c = base.clone();
            c["aud"] = json!("other-registry");
            c
        }),
        ("aud list without berth", {
            let mut c = base.clone();
            c["aud"] = json!(["other-registry"]);
            c
        }),
        ("aud missing", {
            let mut c = base.clone();
            c.as_object_mut().expect("object").remove("aud");
            c
        }),
        ("iss other", {
            let mut c = base.clone();
            c["iss"] = json!("evil");
            c
        }),
        ("iss missing", {
            let mut c = base.clone();
            c.as_object_mut().expect("object").remove("iss");
            c
        }),
        ("exp missing", {
            let mut c = base.clone();
            c.as_object_mut().expect("object").remove("exp");
            c
        }),
        ("nbf missing", {
            let mut c = base.clone();
            c.as_object_mut().expect("object").remove("nbf");
            c
        }),
    ];
    for (what, c) in variants {
        assert_invalid_token(&h, &h.sign(&c), what).await;
    }
}

#[tokio::test]
async fn jwt_with_unknown_or_missing_kid_is_rejected() {
    let h = jwt_world().await;
    let c = claims("alice", repo_access("alice/app", &["pull"]));
    let pem = h.key_pem();
    assert_invalid_token(&h, &sign_ed25519(&pem, None, &c), "no kid").await;
    assert_invalid_token(&h, &sign_ed25519(&pem, Some("0000000000000000"), &c), "unknown kid").await;
    assert_invalid_token(&h, &sign_ed25519(&pem, Some(""), &c), "empty kid").await;
}

// ---------------------------------------------------------------------------
// 6. A JWT for one repository used on another
// ---------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_jwt_for_one_repository_does_not_open_another() {
    let (h, _, _) = two_users(|_| {}).await;
    h.push_image("bob/pub", "latest", &bob(), 50).await;
    h.visibility("bob/pub", true).await;
    let jwt = h.jwt(&Cred::Anon, &[&scope("bob/pub", "pull")]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "bob/pub", "actions": ["pull"] }]));
    let c = Cred::bearer(&jwt);
    assert_eq!(h.get_manifest("bob/pub", "latest", &c).await.status, 200);
    // Same owner, private repository: insufficient scope.
    h.assert_401(
        &h.get_manifest("bob/app", "latest", &c).await,
        Some(&scope("bob/app", "pull")),
        Some("insufficient_scope"),
    );
    h.assert_401(
        &h.get("/v2/bob/app/tags/list", &c).await,
        Some(&scope("bob/app", "pull")),
        Some("insufficient_scope"),
    );
    h.assert_401(
        &h.get_manifest("alice/app", "latest", &c).await,
        Some(&scope("alice/app", "pull")),
        Some("insufficient_scope"),
    );
    // And no push on the public one.
    h.assert_401(
        &h.start_upload("bob/pub", &c).await,
        Some(&scope("bob/pub", "pull,push")),
        Some("insufficient_scope"),
    );
}

#[tokio::test]
async fn user_jwt_for_repository_a_on_repository_b() {
    let (h, _, _) = two_users(|_| {}).await;
    h.push_image("alice/other", "latest", &alice(), 51).await;
    let jwt = h.jwt(&alice(), &[&scope("alice/app", "pull")]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "alice/app", "actions": ["pull"] }]));
    let c = Cred::bearer(&jwt);
    // A bearer token grants exactly its claim: anything else, even what its
    // holder may do, is 401 insufficient_scope naming the scope to ask for.
    let cases = [
        ("bob/app", h.get_manifest("bob/app", "latest", &c).await, "pull"),
        ("bob/app", h.start_upload("bob/app", &c).await, "pull,push"),
        ("alice/other", h.get_manifest("alice/other", "latest", &c).await, "pull"),
        ("alice/other", h.start_upload("alice/other", &c).await, "pull,push"),
        ("alice/app", h.start_upload("alice/app", &c).await, "pull,push"),
        ("alice/app", h.delete("/v2/alice/app/manifests/latest", &c).await, "delete"),
    ];
    for (repo, r, actions) in cases {
        h.assert_401(&r, Some(&scope(repo, actions)), Some("insufficient_scope"));
    }
    assert_eq!(h.get_manifest("alice/app", "latest", &c).await.status, 200);
    // The challenge's scope, asked for with the same credentials, works.
    let push = h.jwt(&alice(), &[&scope("alice/app", "pull,push")]).await;
    assert_eq!(h.start_upload("alice/app", &Cred::bearer(&push)).await.status, 202);
}

#[tokio::test]
async fn a_leaked_pull_token_is_never_a_push_or_delete_credential() {
    let (h, _, _) = two_users(|_| {}).await;
    h.org("acme").await;
    h.member("acme", "alice", "write").await;
    h.push_image("acme/app", "latest", &alice(), 53).await;
    // The JWT a CI job logged: pull on alice/app.
    let jwt = h.jwt(&alice(), &[&scope("alice/app", "pull")]).await;
    let c = Cred::bearer(&jwt);
    let fresh = Image::new(54);
    h.assert_401(
        &h.start_upload("acme/app", &c).await,
        Some(&scope("acme/app", "pull,push")),
        Some("insufficient_scope"),
    );
    let r = h.put_manifest("acme/app", "latest", &c, &fresh.manifest).await;
    h.assert_403_scope(&r, &scope("acme/app", "pull,push"));
    let r = h.delete("/v2/alice/app/manifests/latest", &c).await;
    h.assert_401(&r, Some(&scope("alice/app", "delete")), Some("insufficient_scope"));
    // The Gitea package API and its deletes refuse it too.
    let r = h.delete("/api/v1/packages/alice/container/app/latest", &c).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(tags(&h, "alice/app", &alice()).await, json!(["latest"]));
    assert_eq!(tags(&h, "acme/app", &alice()).await, json!(["latest"]));
}

#[tokio::test]
async fn pat_restrictions_and_revocation_apply_to_jwts() {
    let (h, _, _) = two_users(|_| {}).await;
    h.push_image("alice/other", "latest", &alice(), 52).await;
    // A write token limited to alice/app.
    let (id, pat) = h.pat("alice", &[WRITE], &["alice/app"], None).await;
    let jwt = h
        .jwt(&Cred::basic("alice", &pat), &[&scope("alice/app", "pull,push"), &scope("alice/other", "pull,push")])
        .await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "alice/app", "actions": ["pull", "push"] }]));
    let c = Cred::bearer(&jwt);
    assert_eq!(h.start_upload("alice/app", &c).await.status, 202);
    h.assert_401(
        &h.get_manifest("alice/other", "latest", &c).await,
        Some(&scope("alice/other", "pull")),
        Some("insufficient_scope"),
    );

    // Revoking the token behind the JWT ends the JWT within LIVE_CHECK_TTL.
    h.revoke(id).await;
    tokio::time::sleep(berth_auth::LIVE_CHECK_TTL + Duration::from_millis(200)).await;
    for r in [h.get_manifest("alice/app", "latest", &c).await, h.start_upload("alice/app", &c).await] {
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.www().unwrap_or_default().contains("error=\"invalid_token\""), "{:?}", r.www());
    }
    // And it cannot be exchanged for a fresh JWT at all.
    assert_error(&h.token(&c, &[&scope("alice/app", "pull,push")]).await, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn disabling_a_user_ends_their_jwts_within_seconds() {
    let h = H::default().await;
    h.user("dave", "dave-pw-1").await;
    let dave = Cred::basic("dave", "dave-pw-1");
    h.push_image("dave/app", "latest", &dave, 55).await;
    let (_, pat) = h.pat("dave", &[WRITE], &[], None).await;
    let all = scope("dave/app", "pull,push,delete");
    let by_password = Cred::bearer(&h.jwt(&dave, &[&all]).await);
    let by_token = Cred::bearer(&h.jwt(&Cred::basic("dave", &pat), &[&all]).await);
    for c in [&by_password, &by_token] {
        assert_eq!(h.get_manifest("dave/app", "latest", c).await.status, 200);
    }
    h.disable("dave").await;
    let disabled_at = std::time::Instant::now();
    // Poll: each JWT is refused within LIVE_CHECK_TTL (plus scheduling slack).
    for c in [&by_password, &by_token] {
        loop {
            let r = h.get_manifest("dave/app", "latest", c).await;
            if r.status == 401 {
                break;
            }
            assert_eq!(r.status, 200);
            assert!(disabled_at.elapsed() < berth_auth::LIVE_CHECK_TTL + Duration::from_secs(1), "still served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let img = Image::new(56);
    for c in [&by_password, &by_token] {
        assert_eq!(h.get_manifest("dave/app", "latest", c).await.status, 401);
        assert_eq!(h.upload_blob("dave/app", c, &img.layer).await.status, 401);
        assert_eq!(h.delete("/v2/dave/app/manifests/latest", c).await.status, 401);
    }
}

// ---------------------------------------------------------------------------
// 7. Anonymous access and public repositories
// ---------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_access_to_private_and_public_repositories() {
    let (h, _, b) = two_users(|_| {}).await;
    let anon = Cred::Anon;
    let pull = scope("bob/app", "pull");
    // Private: a challenge, and the anonymous token grants nothing.
    h.assert_401(&h.get_manifest("bob/app", "latest", &anon).await, Some(&pull), None);
    h.assert_401(&h.head(&format!("/v2/bob/app/blobs/{}", b.layer_digest), &anon).await, Some(&pull), None);
    let empty = h.jwt(&anon, &[&scope("bob/app", "pull")]).await;
    assert_eq!(claims_of(&empty)["sub"], json!(""));
    assert_eq!(access_of(&empty), json!([]));
    h.assert_401(
        &h.get_manifest("bob/app", "latest", &Cred::bearer(&empty)).await,
        Some(&pull),
        Some("insufficient_scope"),
    );

    // Public repository: anonymous pull, with or without a token.
    h.visibility("bob/app", true).await;
    let jwt = h.jwt(&anon, &[&scope("bob/app", "pull,push,delete")]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "bob/app", "actions": ["pull"] }]));
    let c = Cred::bearer(&jwt);
    let r = h.get_manifest("bob/app", "latest", &c).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b.manifest);
    let r = h.get(&format!("/v2/bob/app/blobs/{}", b.layer_digest), &c).await;
    assert_eq!((r.status, r.body.as_slice()), (200, b.layer.as_slice()));
    assert_eq!(h.get_manifest("bob/app", "latest", &anon).await.status, 200);
    assert_eq!(tags(&h, "bob/app", &anon).await, json!(["latest"]));

    // Anonymous push or delete on the public repository: 401.
    let push = scope("bob/app", "pull,push");
    let delete = scope("bob/app", "delete");
    h.assert_401(&h.start_upload("bob/app", &anon).await, Some(&push), None);
    h.assert_401(&h.upload_blob("bob/app", &anon, b"anonymous data").await, Some(&push), None);
    h.assert_401(&h.put_manifest("bob/app", "anon", &anon, &b.manifest).await, Some(&push), None);
    h.assert_401(&h.delete("/v2/bob/app/manifests/latest", &anon).await, Some(&delete), None);
    h.assert_401(&h.start_upload("bob/app", &c).await, Some(&push), Some("insufficient_scope"));
    h.assert_401(&h.put_manifest("bob/app", "anon", &c, &b.manifest).await, Some(&push), Some("insufficient_scope"));
    h.assert_401(&h.delete("/v2/bob/app/manifests/latest", &c).await, Some(&delete), Some("insufficient_scope"));
    // Wrong credentials are not downgraded to anonymous access.
    h.assert_401(&h.get_manifest("bob/app", "latest", &Cred::basic("alice", "wrong")).await, Some(&pull), None);
    h.assert_401(
        &h.get_manifest("bob/app", "latest", &Cred::bearer("e30.e30.x")).await,
        Some(&pull),
        Some("invalid_token"),
    );
    // A signed-in stranger may pull the public repository but not push.
    assert_eq!(h.get_manifest("bob/app", "latest", &alice()).await.status, 200);
    assert_denied(&h.start_upload("bob/app", &alice()).await);

    // Owner-level visibility, with a repository-level override.
    h.push_image("bob/other", "latest", &bob(), 60).await;
    h.assert_401(&h.get_manifest("bob/other", "latest", &anon).await, Some(&scope("bob/other", "pull")), None);
    h.visibility("bob", true).await;
    assert_eq!(h.get_manifest("bob/other", "latest", &anon).await.status, 200);
    h.visibility("bob/other", false).await;
    h.assert_401(&h.get_manifest("bob/other", "latest", &anon).await, Some(&scope("bob/other", "pull")), None);
    assert_eq!(tags(&h, "bob/app", &anon).await, json!(["latest"]));
    assert_eq!(tags(&h, "bob/app", &bob()).await, json!(["latest"]));
}

// ---------------------------------------------------------------------------
// 8. One user's token on another user's repository
// ---------------------------------------------------------------------------

#[tokio::test]
async fn user_token_on_another_users_repository_is_denied() {
    let (h, a, b) = two_users(|_| {}).await;
    let (_, pat) = h.pat("alice", &[WRITE], &[], None).await;
    for cred in [
        Cred::basic("alice", &pat),
        // The user name does not choose the identity: the token does.
        Cred::basic("bob", &pat),
        Cred::basic(&pat, "x"),
        Cred::bearer(&pat),
        Cred::Raw(format!("token {pat}")),
    ] {
        // It authenticates (as alice)...
        assert_eq!(h.get_manifest("alice/app", "latest", &cred).await.status, 200, "{cred:?}");
        // ...and gets nothing in bob's namespace.
        assert_denied(&h.get_manifest("bob/app", "latest", &cred).await);
        assert_denied(&h.head(&format!("/v2/bob/app/blobs/{}", b.layer_digest), &cred).await);
        assert_denied(&h.get("/v2/bob/app/tags/list", &cred).await);
        assert_denied(&h.start_upload("bob/app", &cred).await);
        assert_denied(&h.put_manifest("bob/app", "latest", &cred, &a.manifest).await);
        assert_denied(&h.delete("/v2/bob/app/manifests/latest", &cred).await);
        assert_denied(&h.delete(&format!("/v2/bob/app/blobs/{}", b.layer_digest), &cred).await);
    }
    // A token of alice's whose pattern names bob's namespace gains nothing there.
    let (_, aimed) = h.pat("alice", &[WRITE], &["bob/*"], None).await;
    let c = Cred::basic("alice", &aimed);
    assert_denied(&h.get_manifest("bob/app", "latest", &c).await);
    assert_denied(&h.start_upload("bob/app", &c).await);
    assert_denied(&h.get_manifest("alice/app", "latest", &c).await);
    assert_eq!(access_of(&h.jwt(&c, &[&scope("bob/app", "pull,push")]).await), json!([]));
    // bob's password with alice's name does not work either way round.
    h.assert_401(&h.get("/v2/", &Cred::basic("alice", BOB_PW)).await, None, None);
    assert_eq!(tags(&h, "bob/app", &bob()).await, json!(["latest"]));
}

// ---------------------------------------------------------------------------
// 9. Path tricks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn path_tricks_never_reach_another_namespace() {
    let (h, _, b) = two_users(|_| {}).await;
    // reqwest normalises dot segments, so raw requests are needed to send them.
    let url = reqwest::Url::parse(&h.url("/v2/alice/../bob/app/manifests/latest")).expect("url");
    assert_eq!(url.path(), "/v2/bob/app/manifests/latest");
    assert_denied(&h.get("/v2/alice/../bob/app/manifests/latest", &alice()).await);
    // Control: raw requests do reach the server as written.
    assert_eq!(h.raw("GET", "/v2/alice/app/manifests/latest", &alice()).await.status, 200);
    assert_denied(&h.raw("GET", "/v2/bob/app/manifests/latest", &alice()).await);

    let long = format!("bob/{}", "a".repeat(296));
    let targets = [
        "/v2/alice/../bob/app/manifests/latest".to_owned(),
        "/v2/alice/app/../../bob/app/manifests/latest".to_owned(),
        "/v2/alice/%2e%2e/bob/app/manifests/latest".to_owned(),
        "/v2/alice/%2E%2E/bob/app/manifests/latest".to_owned(),
        "/v2/./bob/app/manifests/latest".to_owned(),
        "/v2/bob/app/./manifests/latest".to_owned(),
        "/v2/bob%2Fapp/manifests/latest".to_owned(),
        "/v2/bob%2fapp/manifests/latest".to_owned(),
        "/v2/alice%2F..%2Fbob%2Fapp/manifests/latest".to_owned(),
        "/v2/alice/app%2F..%2F..%2Fbob%2Fapp/manifests/latest".to_owned(),
        "/v2/Bob/app/manifests/latest".to_owned(),
        "/v2/bob/App/manifests/latest".to_owned(),
        "/v2/BOB/APP/manifests/latest".to_owned(),
        "/v2/b%6Fb/app/manifests/latest".to_owned(),
        "/v2/bob//app/manifests/latest".to_owned(),
        "/v2/bob/app//manifests/latest".to_owned(),
        "/v2//bob/app/manifests/latest".to_owned(),
        "/v2/bob/app/manifests/latest/../../../../alice/app/manifests/latest".to_owned(),
        format!("/v2/{long}/manifests/latest"),
        "/v2/alice/..%2Fbob/app/tags/list".to_owned(),
        format!("/v2/alice/../bob/app/blobs/{}", b.layer_digest),
        "/v2/alice/../bob/app/blobs/uploads/".to_owned(),
    ];
    // The raw targets reach the server as written: its error names the raw component.
    let reason = |r: &Resp| r.json()["errors"][0]["detail"]["reason"].as_str().unwrap_or_default().to_owned();
    let r = h.raw("GET", "/v2/alice/../bob/app/manifests/latest", &alice()).await;
    assert!(reason(&r).contains("\"..\""), "{}", r.text());
    let r = h.raw("GET", "/v2/bob%2Fapp/manifests/latest", &alice()).await;
    assert!(reason(&r).contains("bob%2Fapp"), "{}", r.text());
    for target in &targets {
        for cred in [alice(), Cred::Anon] {
            let method = if target.ends_with("/uploads/") { "POST" } else { "GET" };
            let r = h.raw(method, target, &cred).await;
            assert_error(&r, 400, "NAME_INVALID");
            assert!(!r.text().contains(&b.manifest_digest), "{target}: leaked bob's digest");
        }
    }

    // Tricks inside the reference or digest stay within alice's repository.
    let r = h.raw("GET", "/v2/alice/app/manifests/..%2F..%2Fbob%2Fapp%2Fmanifests%2Flatest", &alice()).await;
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    let r = h.raw("GET", &format!("/v2/alice/app/manifests/{}", b.manifest_digest), &alice()).await;
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    let r = h.raw("GET", &format!("/v2/alice/app/blobs/{}", b.layer_digest), &alice()).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
    let r = h.raw("GET", &format!("/v2/alice/app/referrers/{}", b.manifest_digest), &alice()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifests"], json!([]));
    // Unknown endpoints under bob's name: 404 for everyone, never content
    // (UNSUPPORTED, as every path that is no endpoint: see berth_api::error).
    let r = h.raw("GET", "/v2/bob/app%2Fmanifests%2Flatest", &alice()).await;
    assert_error(&r, 404, "UNSUPPORTED");
}

// ---------------------------------------------------------------------------
// 10. Unauthenticated (and unauthorised) callers learn nothing
// ---------------------------------------------------------------------------

/// The same request against `bob/app` (private, exists), `bob/nope` (owner
/// exists) and `ghost/app` (owner missing), with `cred`.
async fn compare_private_and_missing(h: &H, b: &Image, cred: &Cred, check: impl Fn(&Resp, &str, &str)) {
    let kinds: [(&str, Method, String, &str); 9] = [
        ("manifest GET by tag", Method::GET, "manifests/latest".into(), "pull"),
        ("manifest HEAD", Method::HEAD, "manifests/latest".into(), "pull"),
        ("manifest GET by digest", Method::GET, format!("manifests/{}", b.manifest_digest), "pull"),
        ("blob HEAD", Method::HEAD, format!("blobs/{}", b.layer_digest), "pull"),
        ("blob GET", Method::GET, format!("blobs/{}", b.layer_digest), "pull"),
        ("tags list", Method::GET, "tags/list".into(), "pull"),
        ("referrers", Method::GET, format!("referrers/{}", b.manifest_digest), "pull"),
        ("upload start", Method::POST, "blobs/uploads/".into(), "pull,push"),
        ("manifest DELETE", Method::DELETE, format!("manifests/{}", b.manifest_digest), "delete"),
    ];
    for (what, method, tail, actions) in kinds {
        let mut prints = Vec::new();
        for repo in ["bob/app", "bob/nope", "ghost/app"] {
            let r = h.send(method.clone(), &format!("/v2/{repo}/{tail}"), cred, &[], None).await;
            check(&r, repo, actions);
            prints.push(r.fingerprint(&[(repo, "<repo>")]));
        }
        assert_eq!(prints[0], prints[1], "{what}: private bob/app vs missing bob/nope");
        assert_eq!(prints[0], prints[2], "{what}: private bob/app vs missing owner ghost/app");
    }
}

#[tokio::test]
async fn unauthenticated_callers_cannot_tell_private_from_missing() {
    let (h, _, b) = two_users(|_| {}).await;
    compare_private_and_missing(&h, &b, &Cred::Anon, |r, repo, actions| {
        h.assert_401(r, Some(&scope(repo, actions)), None);
    })
    .await;
    // With an anonymous bearer token (which grants nothing on any of them).
    let jwt =
        h.jwt(&Cred::Anon, &[&scope("bob/app", "pull"), &scope("bob/nope", "pull"), &scope("ghost/app", "pull")]).await;
    assert_eq!(access_of(&jwt), json!([]));
    compare_private_and_missing(&h, &b, &Cred::bearer(&jwt), |r, repo, actions| {
        h.assert_401(r, Some(&scope(repo, actions)), Some("insufficient_scope"));
    })
    .await;
    // Token endpoint: the same (empty) grant for all three.
    for repo in ["bob/app", "bob/nope", "ghost/app"] {
        assert_eq!(access_of(&h.jwt(&Cred::Anon, &[&scope(repo, "pull,push")]).await), json!([]));
    }
    // Catalog: a challenge, no listing.
    let r = h.get("/v2/_catalog", &Cred::Anon).await;
    h.assert_401(&r, Some("registry:catalog:*"), None);
    assert!(!r.text().contains("bob/app"));
}

#[tokio::test]
async fn authenticated_outsider_cannot_tell_private_from_missing() {
    let (h, _, b) = two_users(|_| {}).await;
    let (_, pat) = h.pat("alice", &[WRITE], &[], None).await;
    for cred in [alice(), Cred::basic("alice", &pat)] {
        compare_private_and_missing(&h, &b, &cred, |r, _, _| {
            assert_denied(r);
        })
        .await;
    }
}

// 11. Failed-login limits: see login_limits.rs.

// ---------------------------------------------------------------------------
// 12. The token endpoint
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_endpoint_grants_the_intersection_of_request_token_and_rights() {
    let (h, _, _) = two_users(|_| {}).await;
    h.push_image("alice/other", "latest", &alice(), 70).await;

    // Read token asking for more: pull only.
    let (_, read) = h.pat("alice", &[READ], &[], None).await;
    let r = h.token(&Cred::basic("alice", &read), &[&scope("alice/app", "pull,push")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let body = r.json();
    let jwt = body["token"].as_str().expect("token").to_owned();
    assert_eq!(body["access_token"].as_str(), Some(jwt.as_str()));
    assert_eq!(body["expires_in"], json!(300));
    assert!(body["issued_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{body}");
    let c = claims_of(&jwt);
    assert_eq!(c["access"], json!([{ "type": "repository", "name": "alice/app", "actions": ["pull"] }]));
    assert_eq!(
        (c["iss"].as_str(), c["aud"].as_str(), c["sub"].as_str()),
        (Some("berth"), Some("berth"), Some("alice"))
    );
    let (exp, iat, nbf) = (c["exp"].as_u64().unwrap(), c["iat"].as_u64().unwrap(), c["nbf"].as_u64().unwrap());
    assert_eq!(exp - iat, 300);
    assert!(nbf <= now() && iat <= now() + 1);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("EdDSA"), Some(h.kid().as_str())));

    // Write token limited to alice/app: nothing for alice/other; several
    // scopes in one parameter, and `*`.
    let (_, limited) = h.pat("alice", &[WRITE], &["alice/app"], None).await;
    let jwt = h
        .jwt(
            &Cred::basic("alice", &limited),
            &[&format!("{} {}", scope("alice/app", "*"), scope("alice/other", "pull"))],
        )
        .await;
    assert_eq!(
        access_of(&jwt),
        json!([{ "type": "repository", "name": "alice/app", "actions": ["pull", "push", "delete"] }])
    );

    // Password: everything asked in her namespace, nothing in bob's, nothing for malformed scopes.
    let jwt = h
        .jwt(
            &alice(),
            &[
                &scope("alice/other", "delete,pull"),
                &scope("bob/app", "pull"),
                "repository:Alice/app:pull",
                "repository:alice/../bob/app:pull",
                "repository:alice/app",
                &scope("alice/app", "frobnicate"),
            ],
        )
        .await;
    assert_eq!(
        access_of(&jwt),
        json!([{ "type": "repository", "name": "alice/other", "actions": ["pull", "delete"] }])
    );
}

#[tokio::test]
async fn token_endpoint_catalog_scope_only_for_authenticated_callers() {
    let (h, _, _) = two_users(|_| {}).await;
    let jwt = h.jwt(&alice(), &["registry:catalog:*"]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "registry", "name": "catalog", "actions": ["*"] }]));
    let jwt = h.jwt(&Cred::Anon, &["registry:catalog:*"]).await;
    assert_eq!(access_of(&jwt), json!([]));
    assert_eq!(claims_of(&jwt)["sub"], json!(""));
}

#[tokio::test]
async fn token_endpoint_post_password_grant() {
    let (h, _, _) = two_users(|_| {}).await;
    let (_, pat) = h.pat("alice", &[READ], &[], None).await;
    for (user, secret) in [("alice", ALICE_PW), ("alice", pat.as_str()), ("whoever", pat.as_str())] {
        let r = h
            .token_form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", secret),
                ("scope", &scope("alice/app", "pull")),
                ("service", "berth"),
                ("client_id", "containerd"),
            ])
            .await;
        assert_eq!(r.status, 200, "{user}: {}", r.text());
        let body = r.json();
        let jwt = body["access_token"].as_str().expect("access_token");
        assert_eq!(body["token"].as_str(), Some(jwt));
        assert_eq!(claims_of(jwt)["sub"], json!("alice"));
        assert_eq!(access_of(jwt), json!([{ "type": "repository", "name": "alice/app", "actions": ["pull"] }]));
        assert_eq!(h.get_manifest("alice/app", "latest", &Cred::bearer(jwt)).await.status, 200);
    }
}

#[tokio::test]
async fn token_endpoint_refuses_refresh_and_unknown_grants() {
    let (h, _, _) = two_users(|_| {}).await;
    for form in [
        vec![("grant_type", "refresh_token"), ("refresh_token", "anything"), ("service", "berth")],
        vec![("grant_type", "refresh_token"), ("username", "alice"), ("password", ALICE_PW)],
        vec![("grant_type", "client_credentials"), ("client_id", "alice"), ("client_secret", ALICE_PW)],
        vec![("username", "alice"), ("password", ALICE_PW)],
    ] {
        assert_error(&h.token_form(&form).await, 400, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn token_endpoint_rejects_bad_credentials() {
    let (h, _, _) = two_users(|_| {}).await;
    let s = scope("alice/app", "pull");
    h.assert_401(&h.token(&Cred::basic("alice", "wrong"), &[&s]).await, None, None);
    h.assert_401(&h.token(&Cred::basic("nobody", "wrong"), &[&s]).await, None, None);
    h.assert_401(&h.token(&Cred::basic("alice", ""), &[&s]).await, None, None);
    h.assert_401(&h.token(&Cred::bearer("not-a-token"), &[&s]).await, None, None);
    h.assert_401(&h.token(&Cred::bearer("a.b.c"), &[&s]).await, None, Some("invalid_token"));
    let r = h.token_form(&[("grant_type", "password"), ("username", "alice"), ("password", "wrong")]).await;
    h.assert_401(&r, None, None);
    let r = h.token_form(&[("grant_type", "password"), ("username", "alice")]).await;
    h.assert_401(&r, None, None);
}

// ---------------------------------------------------------------------------
// 13. /v2/ and the catalog
// ---------------------------------------------------------------------------

#[tokio::test]
async fn base_endpoint_challenges_and_checks_credentials() {
    let (h, _, _) = two_users(|_| {}).await;
    let (_, pat) = h.pat("alice", &[READ], &[], None).await;
    for path in ["/v2/", "/v2"] {
        h.assert_401(&h.get(path, &Cred::Anon).await, None, None);
        for good in [alice(), Cred::basic("alice", &pat), Cred::bearer(&pat)] {
            let r = h.get(path, &good).await;
            assert_eq!((r.status, r.json()), (200, json!({})), "{path} {good:?}");
        }
        for bad in [
            Cred::basic("alice", "wrong"),
            Cred::basic("nobody", "x"),
            Cred::basic("alice", ""),
            Cred::Raw("Basic".into()),
            Cred::Raw("Basic !!!not-base64!!!".into()),
            Cred::Raw(format!("Basic {}", STANDARD.encode("no-colon"))),
            Cred::Raw("Bearer".into()),
            Cred::bearer("not-a-jwt"),
        ] {
            h.assert_401(&h.get(path, &bad).await, None, None);
        }
        h.assert_401(&h.get(path, &Cred::bearer("e30.e30.sig")).await, None, Some("invalid_token"));
    }
    // A JWT from the token endpoint works, an anonymous one too (it is valid).
    let jwt = h.jwt(&alice(), &[]).await;
    assert_eq!(h.get("/v2/", &Cred::bearer(&jwt)).await.status, 200);
    let anon = h.jwt(&Cred::Anon, &[]).await;
    assert_eq!(h.get("/v2/", &Cred::bearer(&anon)).await.status, 200);
}

#[tokio::test]
async fn unsupported_authorization_schemes_are_challenged() {
    let (h, _, _) = two_users(|_| {}).await;
    for value in ["Digest username=\"alice\", realm=\"berth\"", "Negotiate abc", "AWS4-HMAC-SHA256 Credential=x"] {
        let c = Cred::Raw(value.to_owned());
        h.assert_401(&h.get("/v2/", &c).await, None, None);
        h.assert_401(&h.get_manifest("alice/app", "latest", &c).await, Some(&scope("alice/app", "pull")), None);
    }
}

#[tokio::test]
async fn catalog_lists_only_readable_repositories() {
    let h = H::default().await;
    h.site_admin("root", ROOT_PW).await;
    h.user("alice", ALICE_PW).await;
    h.user("bob", BOB_PW).await;
    h.user("carol", MEMBER_PW).await;
    h.org("acme").await;
    h.member("acme", "carol", "read").await;
    let root = Cred::basic("root", ROOT_PW);
    h.push_image("alice/app", "latest", &alice(), 80).await;
    h.push_image("alice/lib", "latest", &alice(), 81).await;
    h.push_image("bob/app", "latest", &bob(), 82).await;
    h.push_image("bob/pub", "latest", &bob(), 83).await;
    h.push_image("acme/app", "latest", &root, 84).await;
    h.visibility("bob/pub", true).await;
    let carol = Cred::basic("carol", MEMBER_PW);

    h.assert_401(&h.get("/v2/_catalog", &Cred::Anon).await, Some("registry:catalog:*"), None);
    h.assert_401(&h.get("/v2/_catalog", &Cred::basic("alice", "wrong")).await, Some("registry:catalog:*"), None);
    // Anonymous callers get no catalog grant, so their token lists nothing.
    let anon = h.jwt(&Cred::Anon, &["registry:catalog:*"]).await;
    let r = h.get("/v2/_catalog", &Cred::bearer(&anon)).await;
    h.assert_401(&r, Some("registry:catalog:*"), Some("insufficient_scope"));
    // Nor does a user's token issued for something else.
    let other = h.jwt(&alice(), &[&scope("alice/app", "pull")]).await;
    let r = h.get("/v2/_catalog", &Cred::bearer(&other)).await;
    h.assert_401(&r, Some("registry:catalog:*"), Some("insufficient_scope"));
    assert_eq!(catalog(&h, &alice()).await, json!(["alice/app", "alice/lib", "bob/pub"]));
    assert_eq!(catalog(&h, &bob()).await, json!(["bob/app", "bob/pub"]));
    assert_eq!(catalog(&h, &carol).await, json!(["acme/app", "bob/pub"]));
    assert_eq!(catalog(&h, &root).await, json!(["acme/app", "alice/app", "alice/lib", "bob/app", "bob/pub"]));
    let jwt = h.jwt(&alice(), &["registry:catalog:*"]).await;
    assert_eq!(catalog(&h, &Cred::bearer(&jwt)).await, json!(["alice/app", "alice/lib", "bob/pub"]));
    // A token limited to one repository lists only that one.
    let (_, pat) = h.pat("alice", &[READ], &["alice/app"], None).await;
    assert_eq!(catalog(&h, &Cred::basic("alice", &pat)).await, json!(["alice/app"]));

    // Pagination never yields what the caller may not read.
    let mut seen = Vec::new();
    let mut path = "/v2/_catalog?n=1".to_owned();
    loop {
        let r = h.get(&path, &alice()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.extend(r.json()["repositories"].as_array().expect("list").iter().map(|v| v.as_str().unwrap().to_owned()));
        let Some(link) = r.header("link") else { break };
        path = link.trim_start_matches('<').split('>').next().expect("link target").to_owned();
        assert!(seen.len() < 10, "pagination loops");
    }
    assert_eq!(seen, vec!["alice/app", "alice/lib", "bob/pub"]);
    let r = h.get("/v2/_catalog?n=5&last=bob/a", &alice()).await;
    assert_eq!(r.json()["repositories"], json!(["bob/pub"]));
}

// ---------------------------------------------------------------------------
// 14. auth.allow_password = false
// ---------------------------------------------------------------------------

#[tokio::test]
async fn passwords_are_refused_when_allow_password_is_false() {
    let h = H::start(|c| c.auth.allow_password = false).await;
    h.user("alice", ALICE_PW).await;
    let (_, pat) = h.pat("alice", &[WRITE], &[], None).await;
    let token = Cred::basic("alice", &pat);
    h.push_image("alice/app", "latest", &token, 90).await;

    h.assert_401(&h.get("/v2/", &alice()).await, None, None);
    h.assert_401(&h.get_manifest("alice/app", "latest", &alice()).await, Some(&scope("alice/app", "pull")), None);
    h.assert_401(&h.start_upload("alice/app", &alice()).await, Some(&scope("alice/app", "pull,push")), None);
    h.assert_401(&h.token(&alice(), &[&scope("alice/app", "pull")]).await, None, None);
    let r = h.token_form(&[("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW)]).await;
    h.assert_401(&r, None, None);

    assert_eq!(h.get("/v2/", &token).await.status, 200);
    assert_eq!(h.get_manifest("alice/app", "latest", &token).await.status, 200);
    let jwt = h.jwt(&token, &[&scope("alice/app", "pull,push")]).await;
    assert_eq!(access_of(&jwt), json!([{ "type": "repository", "name": "alice/app", "actions": ["pull", "push"] }]));
    assert_eq!(h.start_upload("alice/app", &Cred::bearer(&jwt)).await.status, 202);
    let r = h.token_form(&[("grant_type", "password"), ("username", "alice"), ("password", &pat)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------
// 15. Disabled users
// ---------------------------------------------------------------------------

#[tokio::test]
async fn disabled_user_password_and_token_are_rejected() {
    let (h, _, _) = two_users(|_| {}).await;
    let (_, pat) = h.pat("alice", &[WRITE], &[], None).await;
    let token = Cred::basic("alice", &pat);
    assert_eq!(h.get("/v2/", &alice()).await.status, 200);
    assert_eq!(h.get("/v2/", &token).await.status, 200);
    h.disable("alice").await;

    for cred in [alice(), token.clone(), Cred::bearer(&pat)] {
        h.assert_401(&h.get("/v2/", &cred).await, None, None);
        h.assert_401(&h.get_manifest("alice/app", "latest", &cred).await, Some(&scope("alice/app", "pull")), None);
        h.assert_401(&h.start_upload("alice/app", &cred).await, Some(&scope("alice/app", "pull,push")), None);
        h.assert_401(&h.token(&cred, &[&scope("alice/app", "pull")]).await, None, None);
    }
    let r = h.token_form(&[("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW)]).await;
    h.assert_401(&r, None, None);
    // bob is unaffected.
    assert_eq!(h.get("/v2/", &bob()).await.status, 200);
}

// ---------------------------------------------------------------------------
// Beyond the list: mounts and upload sessions across namespaces
// ---------------------------------------------------------------------------

#[tokio::test]
async fn cross_repository_mount_requires_pull_on_the_source() {
    let (h, _, b) = two_users(|_| {}).await;
    let blob = format!("/v2/alice/app/blobs/{}", b.layer_digest);
    for query in [format!("mount={}&from=bob/app", b.layer_digest), format!("mount={}", b.layer_digest)] {
        let r = h.send(Method::POST, &format!("/v2/alice/app/blobs/uploads/?{query}"), &alice(), &[], None).await;
        assert_eq!(r.status, 202, "{query}: a private blob must not be mounted: {}", r.text());
        assert_eq!(h.head(&blob, &alice()).await.status, 404, "{query}: nothing was mounted");
    }
    // Claiming the digest with other (or no) content does not link it.
    for body in [Vec::new(), b"guess".to_vec()] {
        let path = format!("/v2/alice/app/blobs/uploads/?digest={}", b.layer_digest);
        let r = h.send(Method::POST, &path, &alice(), &[], Some(body)).await;
        assert_error(&r, 400, "DIGEST_INVALID");
    }
    let r = h.start_upload("alice/app", &alice()).await;
    let id = r.header("docker-upload-uuid").expect("upload id");
    let r = h
        .send(Method::PUT, &format!("/v2/alice/app/blobs/uploads/{id}?digest={}", b.layer_digest), &alice(), &[], None)
        .await;
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_eq!(h.head(&blob, &alice()).await.status, 404);
    // A manifest naming bob's blobs cannot be pushed without them.
    assert_error(&h.put_manifest("alice/app", "stolen", &alice(), &b.manifest).await, 400, "MANIFEST_BLOB_UNKNOWN");
    // Once bob's repository is public, the same mount succeeds.
    h.visibility("bob/app", true).await;
    let r = h
        .send(
            Method::POST,
            &format!("/v2/alice/app/blobs/uploads/?mount={}&from=bob/app", b.layer_digest),
            &alice(),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(h.head(&blob, &alice()).await.status, 200);
}

#[tokio::test]
async fn a_bearer_mount_needs_pull_on_the_source_in_the_token() {
    let (h, _, b) = two_users(|_| {}).await;
    h.push_image("alice/base", "latest", &alice(), 57).await;
    let base = Image::new(57);
    let push = scope("alice/new", "pull,push");
    let only_target = Cred::bearer(&h.jwt(&alice(), &[&push]).await);
    let with_source = Cred::bearer(&h.jwt(&alice(), &[&push, &scope("alice/base", "pull")]).await);
    let mount = |digest: &str, from: Option<&str>| match from {
        Some(f) => format!("/v2/alice/new/blobs/uploads/?mount={digest}&from={f}"),
        None => format!("/v2/alice/new/blobs/uploads/?mount={digest}"),
    };
    // A source the holder may read but the token does not list: asked for
    // (401; a repeat with the same token: 403 with the same challenge).
    let wanted = format!("{push} {}", scope("alice/base", "pull"));
    let r = h.send(Method::POST, &mount(&base.layer_digest, Some("alice/base")), &only_target, &[], None).await;
    h.assert_401(&r, Some(&wanted), Some("insufficient_scope"));
    let r = h.send(Method::POST, &mount(&base.layer_digest, None), &only_target, &[], None).await;
    h.assert_403_scope(&r, &wanted);
    // With the source in the token: mounted.
    let r = h.send(Method::POST, &mount(&base.layer_digest, Some("alice/base")), &with_source, &[], None).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // A source the holder may not read: an ordinary upload, no hint.
    let r = h.send(Method::POST, &mount(&b.layer_digest, Some("bob/app")), &only_target, &[], None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = h.send(Method::POST, &mount(&b.layer_digest, None), &only_target, &[], None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(h.head(&format!("/v2/alice/new/blobs/{}", b.layer_digest), &alice()).await.status, 404);
}

#[tokio::test]
async fn upload_sessions_are_bound_to_their_repository() {
    let (h, _, _) = two_users(|_| {}).await;
    let data = b"alice's private layer".to_vec();
    let d = digest(&data);
    let r = h.start_upload("alice/app", &alice()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("docker-upload-uuid").expect("upload id");
    let octets = [("content-type", "application/octet-stream")];
    // bob on alice's session: denied.
    let theirs = format!("/v2/alice/app/blobs/uploads/{id}");
    assert_denied(&h.get(&theirs, &bob()).await);
    assert_denied(&h.send(Method::PATCH, &theirs, &bob(), &octets, Some(b"junk".to_vec())).await);
    assert_denied(&h.send(Method::PUT, &format!("{theirs}?digest={d}"), &bob(), &octets, Some(data.clone())).await);
    assert_denied(&h.delete(&theirs, &bob()).await);
    // bob replaying the session id under his own repository: unknown upload.
    let mine = format!("/v2/bob/app/blobs/uploads/{id}");
    assert_error(&h.get(&mine, &bob()).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &h.send(Method::PATCH, &mine, &bob(), &octets, Some(b"junk".to_vec())).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &h.send(Method::PUT, &format!("{mine}?digest={d}"), &bob(), &octets, Some(data.clone())).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(&h.delete(&mine, &bob()).await, 404, "BLOB_UPLOAD_UNKNOWN");
    // alice's session is intact.
    let r = h.send(Method::PUT, &format!("{theirs}?digest={d}"), &alice(), &octets, Some(data)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(h.head(&format!("/v2/bob/app/blobs/{d}"), &bob()).await.status, 404);
}

#[tokio::test]
async fn private_repository_in_a_public_namespace_looks_missing() {
    let (h, _, b) = two_users(|_| {}).await;
    h.visibility("bob", true).await;
    h.visibility("bob/app", false).await;
    h.push_image("bob/pub", "latest", &bob(), 100).await;
    assert_eq!(h.get_manifest("bob/pub", "latest", &Cred::Anon).await.status, 200, "the namespace is public");
    // Anonymous: bob/app exists but is private; bob/nope does not exist.
    let private = h.get_manifest("bob/app", "latest", &Cred::Anon).await;
    h.assert_401(&private, Some(&scope("bob/app", "pull")), None);
    let missing = h.get_manifest("bob/nope", "latest", &Cred::Anon).await;
    assert_eq!(
        private.fingerprint(&[("bob/app", "<r>")]),
        missing.fingerprint(&[("bob/nope", "<r>")]),
        "anonymous GET /v2/bob/app/manifests/latest (private) vs /v2/bob/nope/manifests/latest (missing)"
    );
    let private = h.get(&format!("/v2/bob/app/blobs/{}", b.layer_digest), &Cred::Anon).await;
    let missing = h.get(&format!("/v2/bob/nope/blobs/{}", b.layer_digest), &Cred::Anon).await;
    assert_eq!(private.fingerprint(&[("bob/app", "<r>")]), missing.fingerprint(&[("bob/nope", "<r>")]), "blob GET");
    let private = h.get("/v2/bob/app/tags/list", &Cred::Anon).await;
    let missing = h.get("/v2/bob/nope/tags/list", &Cred::Anon).await;
    assert_eq!(private.fingerprint(&[("bob/app", "<r>")]), missing.fingerprint(&[("bob/nope", "<r>")]), "tags list");
}

#[tokio::test]
async fn challenge_realm_cannot_be_steered_through_the_host_header() {
    let (h, _, _) = two_users(|_| {}).await;
    let target = "/v2/alice/app/manifests/latest";
    let pull = scope("alice/app", "pull");
    // Without public_url the realm follows Host, but nothing can be injected into the challenge.
    for host in ["evil.example\",error=\"x", "evil.example/phish", "evil example"] {
        let r = raw_request(h.server.addr, "GET", target, &Cred::Anon, &[("Host", host)]).await;
        assert_eq!(r.status, 401, "Host {host:?}: {}", r.text());
        assert_eq!(
            r.www().as_deref(),
            Some(format!("Bearer realm=\"http://localhost/v2/token\",service=\"berth\",scope=\"{pull}\"").as_str()),
            "Host {host:?}"
        );
    }
    // With public_url set, Host has no say at all.
    let h = H::start(|c| c.public_url = "https://registry.example".into()).await;
    for host in ["evil.example", "evil.example:8443", "localhost"] {
        let r = raw_request(h.server.addr, "GET", target, &Cred::Anon, &[("Host", host)]).await;
        assert_eq!(r.status, 401, "Host {host:?}: {}", r.text());
        assert_eq!(
            r.www().as_deref(),
            Some(
                format!("Bearer realm=\"https://registry.example/v2/token\",service=\"berth\",scope=\"{pull}\"")
                    .as_str()
            ),
            "Host {host:?}"
        );
    }
}

#[tokio::test]
async fn org_role_changes_apply_immediately() {
    let (h, img) = org_world().await;
    let c = member("writer");
    h.push_image("acme/app", "v2", &c, 110).await;
    h.member("acme", "writer", "read").await;
    assert_denied(&h.start_upload("acme/app", &c).await);
    assert_denied(&h.delete("/v2/acme/app/manifests/v2", &c).await);
    assert_eq!(h.get_manifest("acme/app", "latest", &c).await.status, 200);
    berth_auth::admin::remove_member(h.store(), "acme", "writer").await.expect("remove member");
    assert_denied(&h.get_manifest("acme/app", "latest", &c).await);
    assert_denied(&h.head(&format!("/v2/acme/app/blobs/{}", img.layer_digest), &c).await);
}

#[tokio::test]
async fn password_change_takes_effect_immediately() {
    let (h, _, _) = two_users(|_| {}).await;
    // Verified once (and cached by the server).
    assert_eq!(h.get("/v2/", &alice()).await.status, 200);
    assert_eq!(h.get_manifest("alice/app", "latest", &alice()).await.status, 200);
    berth_auth::admin::set_password(h.store(), "alice", "a-new-password").await.expect("set password");
    h.assert_401(&h.get("/v2/", &alice()).await, None, None);
    h.assert_401(&h.get_manifest("alice/app", "latest", &alice()).await, Some(&scope("alice/app", "pull")), None);
    assert_eq!(h.get("/v2/", &Cred::basic("alice", "a-new-password")).await.status, 200);
}

/// An OCI image manifest whose `subject` is `subject` (a referrer).
fn referrer(img: &Image, subject: &Image) -> Vec<u8> {
    let mut m: Value = serde_json::from_slice(&img.manifest).expect("manifest JSON");
    m["artifactType"] = json!("application/vnd.example.signature");
    m["subject"] = json!({
        "mediaType": berth_oci::media_type::OCI_MANIFEST,
        "digest": subject.manifest_digest,
        "size": subject.manifest.len(),
    });
    serde_json::to_vec(&m).expect("JSON")
}

#[tokio::test]
async fn referrers_never_cross_repositories() {
    let (h, a, b) = two_users(|_| {}).await;
    // bob signs his image; alice attaches an artifact to bob's digest in her repository.
    let sig = h.push_image("bob/app", "sig-base", &bob(), 120).await;
    let r = h.put_manifest("bob/app", &digest(&referrer(&sig, &b)), &bob(), &referrer(&sig, &b)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let fake = h.push_image("alice/app", "fake-base", &alice(), 121).await;
    let r = h.put_manifest("alice/app", &digest(&referrer(&fake, &b)), &alice(), &referrer(&fake, &b)).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let listed = |r: &Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    // bob sees his signature only, not alice's artifact.
    let r = h.get(&format!("/v2/bob/app/referrers/{}", b.manifest_digest), &bob()).await;
    assert_eq!(listed(&r), vec![digest(&referrer(&sig, &b))]);
    // alice learns nothing about bob's referrers through her repository.
    let r = h.get(&format!("/v2/alice/app/referrers/{}", b.manifest_digest), &alice()).await;
    assert_eq!(listed(&r), vec![digest(&referrer(&fake, &b))]);
    assert_denied(&h.get(&format!("/v2/bob/app/referrers/{}", b.manifest_digest), &alice()).await);
    let r = h.get(&format!("/v2/alice/app/referrers/{}", a.manifest_digest), &alice()).await;
    assert_eq!(listed(&r), Vec::<String>::new());
}

/// A leaked short-lived bearer token must not renew itself: the token
/// endpoint takes passwords and personal access tokens, never a JWT.
#[tokio::test]
async fn token_endpoint_refuses_a_bearer_jwt_as_credentials() {
    let (h, _, _) = two_users(|_| {}).await;
    let jwt = h.jwt(&alice(), &[&scope("alice/app", "pull")]).await;
    let r = h.token(&Cred::Bearer(jwt), &[&scope("alice/app", "pull,push,delete")]).await;
    assert_error(&r, 401, "UNAUTHORIZED");
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer realm=")));
}
