//! Storage usage and quotas over the `/api/v1` JSON API, against the real
//! server with auth on: site admins see every owner, users their own usage,
//! organization admins their organization's (plain members and other users
//! get 403, anonymous callers 401); quotas round-trip through PUT, GET and
//! DELETE, bad ones are refused with a clear 400, and a push past a quota
//! set here is refused with 403 DENIED naming the figures.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ALL: &str = "/api/v1/admin/usage";
const QUOTAS: &str = "/api/v1/admin/quotas";
const ROOT_PW: &str = "root-correct-horse";
const ALICE_PW: &str = "alice-battery-staple";
const BOB_PW: &str = "bob-staple-battery";
const CAROL_PW: &str = "carol-horse-correct";
const DAVE_PW: &str = "dave-correct-staple";

fn root() -> Cred {
    Cred::basic("root", ROOT_PW)
}

fn alice() -> Cred {
    Cred::basic("alice", ALICE_PW)
}

fn bob() -> Cred {
    Cred::basic("bob", BOB_PW)
}

/// `carol` is an admin of org `acme`.
fn carol() -> Cred {
    Cred::basic("carol", CAROL_PW)
}

/// `dave` is a `write` member of org `acme`.
fn dave() -> Cred {
    Cred::basic("dave", DAVE_PW)
}

fn owner_usage(owner: &str) -> String {
    format!("/api/v1/owners/{owner}/usage")
}

async fn put_quota(h: &H, cred: &Cred, owner: &str, body: &str) -> Resp {
    let headers = [("content-type", "application/json")];
    h.send(Method::PUT, &format!("{QUOTAS}/{owner}"), cred, &headers, Some(body.as_bytes().to_vec())).await
}

/// A refusal in the JSON API's shape.
#[track_caller]
fn assert_refused(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{}", r.text());
    message
}

/// Bytes an image adds to its owner: config, layer and manifest.
fn image_bytes(img: &Image) -> u64 {
    (img.config.len() + img.layer.len() + img.manifest.len()) as u64
}

/// `root` (site admin), `alice` with `alice/app` and `alice/tool`, `bob`,
/// and org `acme` (admin `carol`, writer `dave`) with `acme/web`.
async fn setup() -> (H, u64, u64) {
    let h = H::default().await;
    h.site_admin("root", ROOT_PW).await;
    for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW), ("carol", CAROL_PW), ("dave", DAVE_PW)] {
        h.user(user, pw).await;
    }
    h.org("acme").await;
    h.member("acme", "carol", "admin").await;
    h.member("acme", "dave", "write").await;
    let app = h.push_image("alice/app", "v1", &alice(), 1).await;
    let tool = h.push_image("alice/tool", "v1", &alice(), 2).await;
    let web = h.push_image("acme/web", "v1", &dave(), 3).await;
    (h, image_bytes(&app) + image_bytes(&tool), image_bytes(&web))
}

fn find<'a>(list: &'a Value, owner: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|o| o["owner"] == owner))
        .unwrap_or_else(|| panic!("{owner} not in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_for_site_admins_the_owner_and_org_admins() {
    let (h, alice_bytes, acme_bytes) = setup().await;

    // A site admin sees every owner, with the limits that apply.
    let r = h.get(ALL, &root()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let all = r.json();
    let a = find(&all, "alice");
    assert_eq!(a["bytes"], alice_bytes, "{a}");
    assert_eq!((a["repositories"].as_u64(), a["manifests"].as_u64(), a["tags"].as_u64()), (Some(2), Some(2), Some(2)));
    assert_eq!(a["limits"], json!({ "bytes": 0, "repositories": 0 }));
    assert_eq!(a["own_limits"], Value::Null);
    assert!(a["bytes_human"].as_str().is_some_and(|s| s.ends_with("KiB")), "{a}");
    assert!(a.get("repositories_usage").is_none(), "only on the per-owner endpoint: {a}");
    assert_eq!(find(&all, "acme")["bytes"], acme_bytes);

    // A user sees their own, with each repository.
    let r = h.get(&owner_usage("alice"), &alice()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let own = r.json();
    assert_eq!(own["owner"], "alice");
    assert_eq!(own["bytes"], alice_bytes);
    let repos = own["repositories_usage"].as_array().expect("repositories_usage");
    let names: Vec<&str> = repos.iter().map(|r| r["repository"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice/app", "alice/tool"]);
    assert_eq!(repos.iter().map(|r| r["bytes"].as_u64().unwrap()).sum::<u64>(), alice_bytes);
    assert_eq!((repos[0]["manifests"].as_u64(), repos[0]["tags"].as_u64()), (Some(1), Some(1)));
    assert_eq!(h.get(&owner_usage("alice"), &root()).await.json(), own, "the site admin sees the same");

    // Nobody else's: not another user's, not the whole site.
    let m = assert_refused(&h.get(&owner_usage("bob"), &alice()).await, 403);
    assert!(m.contains("site admins"), "{m}");
    assert_refused(&h.get(&owner_usage("alice"), &bob()).await, 403);
    assert_refused(&h.get(ALL, &alice()).await, 403);
    assert_refused(&h.get(&owner_usage("alice"), &Cred::Anon).await, 401);
    assert_refused(&h.get(ALL, &Cred::Anon).await, 401);
    assert_refused(&h.get(&owner_usage("alice"), &Cred::basic("alice", "wrong")).await, 401);

    // An organization's admins see its usage; its other members do not.
    let r = h.get(&owner_usage("acme"), &carol()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], acme_bytes);
    assert_eq!(r.json()["repositories_usage"][0]["repository"], "acme/web");
    assert_refused(&h.get(&owner_usage("acme"), &dave()).await, 403);
    assert_refused(&h.get(&owner_usage("acme"), &alice()).await, 403);
    assert_refused(&h.get(&owner_usage("carol"), &dave()).await, 403);

    // Tokens: read:package suffices; one limited to some repositories never
    // speaks for the whole owner.
    let (_, reader) = h.pat("alice", &[READ], &[], None).await;
    assert_eq!(h.get(&owner_usage("alice"), &Cred::bearer(&reader)).await.status, 200);
    let (_, narrow) = h.pat("alice", &[WRITE], &["alice/*"], None).await;
    assert_refused(&h.get(&owner_usage("alice"), &Cred::bearer(&narrow)).await, 403);

    // An owner that stores nothing shows zeros; a name no owner can have is 404.
    let r = h.get(&owner_usage("nobody"), &root()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let zero = r.json();
    assert_eq!((zero["owner"].as_str(), zero["bytes"].as_u64()), (Some("nobody"), Some(0)));
    assert_eq!(zero["repositories_usage"], json!([]));
    assert_eq!(h.get(&owner_usage("bob"), &bob()).await.json()["bytes"], 0);
    assert_refused(&h.get(&owner_usage("No%20Body"), &root()).await, 404);
    assert_refused(&h.send(Method::POST, ALL, &root(), &[], None).await, 405);
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_round_trip_are_validated_and_refuse_pushes_past_them() {
    let (h, alice_bytes, _) = setup().await;
    assert_eq!(h.get(QUOTAS, &root()).await.json(), json!([]));

    // Set: human sizes or numbers; the answer is the owner's usage against them.
    let r = put_quota(&h, &root(), "alice", r#"{"bytes":"50GiB","repositories":10}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.json();
    assert_eq!(set["owner"], "alice");
    assert_eq!(set["bytes"], alice_bytes);
    assert_eq!(set["limits"], json!({ "bytes": 50u64 << 30, "repositories": 10 }));
    assert_eq!(set["own_limits"], json!({ "bytes": 50u64 << 30, "repositories": 10 }));
    let listed = h.get(QUOTAS, &root()).await.json();
    assert_eq!(
        listed,
        json!([{
            "owner": "alice",
            "own_limits": { "bytes": 50u64 << 30, "repositories": 10 },
            "limits": { "bytes": 50u64 << 30, "repositories": 10 },
        }])
    );
    // The owner sees its limits in its usage.
    assert_eq!(h.get(&owner_usage("alice"), &alice()).await.json()["limits"]["bytes"], 50u64 << 30);

    // Replaced: null (or absent) means the default applies (here unlimited: 0).
    let r = put_quota(&h, &root(), "alice", r#"{"bytes":null,"repositories":3}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["own_limits"], json!({ "bytes": null, "repositories": 3 }));
    assert_eq!(r.json()["limits"], json!({ "bytes": 0, "repositories": 3 }));
    let r = put_quota(&h, &root(), "alice", r#"{"bytes":1073741824}"#).await;
    assert_eq!(r.json()["own_limits"], json!({ "bytes": 1u64 << 30, "repositories": null }));

    // Bad limits: 400 with a message that says what is wrong; nothing changes.
    let m = assert_refused(&put_quota(&h, &root(), "alice", r#"{"bytes":"lots"}"#).await, 400);
    assert!(m.contains("bytes") && m.contains("\"lots\" is not a size") && m.contains("50GiB"), "{m}");
    for body in ["{", r#"{"bytes":-5}"#, r#"{"bytes":1.5}"#, r#"{"byts":1}"#, r#"{"repositories":"ten"}"#, "null"] {
        assert_refused(&put_quota(&h, &root(), "alice", body).await, 400);
    }
    assert_refused(&put_quota(&h, &root(), "Not%20An%20Owner", r#"{"bytes":1}"#).await, 404);
    assert_eq!(h.get(QUOTAS, &root()).await.json()[0]["own_limits"]["bytes"], 1u64 << 30);

    // Site admins only; changes need write:package.
    assert_refused(&put_quota(&h, &alice(), "alice", r#"{"bytes":0}"#).await, 403);
    assert_refused(&put_quota(&h, &Cred::Anon, "alice", r#"{"bytes":0}"#).await, 401);
    assert_refused(&h.get(QUOTAS, &alice()).await, 403);
    assert_refused(&h.delete(&format!("{QUOTAS}/alice"), &carol()).await, 403);
    let (_, reader) = h.pat("root", &[READ], &[], None).await;
    assert_eq!(h.get(QUOTAS, &Cred::bearer(&reader)).await.status, 200);
    assert_refused(&put_quota(&h, &Cred::bearer(&reader), "alice", r#"{"bytes":0}"#).await, 403);
    let (_, writer) = h.pat("root", &[WRITE], &[], None).await;
    assert_eq!(put_quota(&h, &Cred::bearer(&writer), "bob", r#"{"repositories":5}"#).await.status, 200);

    // Delete: 204, then 404.
    assert_eq!(h.delete(&format!("{QUOTAS}/alice"), &root()).await.status, 204);
    assert_refused(&h.delete(&format!("{QUOTAS}/alice"), &root()).await, 404);
    let owners: Vec<Value> =
        h.get(QUOTAS, &root()).await.json().as_array().unwrap().iter().map(|q| q["owner"].clone()).collect();
    assert_eq!(owners, [json!("bob")]);

    // A push past a quota set here is refused, naming the figures.
    assert_eq!(put_quota(&h, &root(), "bob", r#"{"bytes":"1KiB"}"#).await.status, 200);
    let img = Image::new(40);
    assert_eq!(h.upload_blob("bob/app", &bob(), &img.config).await.status, 201, "{} bytes fit", img.config.len());
    let refused = h.upload_blob("bob/app", &bob(), &img.layer).await;
    assert_denied(&refused);
    let message = refused.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("quota exceeded: bob uses ") && message.contains(" of 1 KiB"), "{message}");
    let usage = h.get(&owner_usage("bob"), &bob()).await.json();
    assert!(usage["bytes"].as_u64().is_some_and(|b| b <= 1024), "{usage}");
    // A PUT replaces: the repository limit set before is gone.
    assert_eq!(usage["limits"], json!({ "bytes": 1024, "repositories": 0 }));
    h.server.stop().await;
}
