//! Retention rules over the admin API, against the real server with auth on:
//! a site admin adds a rule, the preview shows what it would remove (and
//! removes nothing), the rule is listed after the config file's read-only
//! rules, anyone else is refused (401 anonymous, 403 authenticated, in the
//! package API's `{"message": ...}` shape), and deleting it works.

mod common;

use std::time::Duration;

use berth_config::RetentionRuleConfig;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const RULES: &str = "/api/v1/admin/retention/rules";
const PREVIEW: &str = "/api/v1/admin/retention/preview";
const ROOT_PW: &str = "root-correct-horse";
const ALICE_PW: &str = "alice-battery-staple";

fn root() -> Cred {
    Cred::basic("root", ROOT_PW)
}

fn alice() -> Cred {
    Cred::basic("alice", ALICE_PW)
}

async fn post(h: &H, cred: &Cred, body: &str) -> Resp {
    h.send(Method::POST, RULES, cred, &[("content-type", "application/json")], Some(body.as_bytes().to_vec())).await
}

/// A refusal in the package API's shape.
#[track_caller]
fn assert_refused(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.text());
}

/// A server whose config file has one rule (for `bob/*`), with `root` (a
/// site admin) and `alice`, and `alice/app` holding v1..v5, pushed in that
/// order, and `latest`.
async fn setup() -> H {
    let h = H::start(|c| {
        c.retention.rules =
            vec![RetentionRuleConfig { repositories: "bob/*".into(), keep_last: Some(1), ..Default::default() }];
    })
    .await;
    h.site_admin("root", ROOT_PW).await;
    h.user("alice", ALICE_PW).await;
    for (i, tag) in ["v1", "v2", "v3", "v4", "v5", "latest"].iter().enumerate() {
        h.push_image("alice/app", tag, &alice(), 10 + i as u64).await;
        // Tags are ranked by the time a push set them (ms).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h
}

async fn tags(h: &H) -> Vec<String> {
    let r = h.get("/v2/alice/app/tags/list", &alice()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut tags: Vec<String> = serde_json::from_value(r.json()["tags"].clone()).expect("tag list");
    tags.sort();
    tags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_admin_manages_retention_rules_and_previews_them() {
    let h = setup().await;

    // Only the config file's rule so far, flagged read-only.
    let r = h.get(RULES, &root()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = r.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["source"], "config");
    assert_eq!(listed[0]["read_only"], true);
    assert_eq!(listed[0]["position"], 1);
    assert_eq!(listed[0]["repositories"], "bob/*");
    assert_eq!(listed[0]["keep_last"], 1);

    // Add: keep the two newest of alice's tags.
    let r = post(&h, &root(), r#"{"repositories":"alice/*","keep_last":2,"keep_tags":["stable"]}"#).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = r.json();
    let id = stored["id"].as_i64().expect("id");
    assert_eq!(stored["source"], "api");
    assert_eq!(stored["read_only"], false);
    assert_eq!(stored["created_by"], "root");
    assert_eq!(stored["repositories"], "alice/*");
    assert_eq!(stored["keep_last"], 2);
    assert_eq!(stored["keep_tags"], json!(["stable"]));
    assert_eq!(stored["remove_older_than"], Value::Null);

    let listed = h.get(RULES, &root()).await.json();
    let sources: Vec<&str> = listed.as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["config", "api"], "config rules first: {listed}");
    assert_eq!(listed[1], stored);

    // The preview: v1..v3 would go (oldest first), v4, v5 and latest stay.
    let r = h.get(PREVIEW, &root()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let preview = r.json();
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["would_remove"], 3, "{preview}");
    let repos = preview["repositories"].as_array().expect("repositories");
    assert_eq!(repos.len(), 1, "{preview}");
    let app = &repos[0];
    assert_eq!(app["repository"], "alice/app");
    assert_eq!(app["rule"], json!({ "source": "api", "id": id }));
    assert_eq!(app["kept"], 3);
    assert_eq!(app["immutable"], json!([]));
    let going: Vec<&str> = app["would_remove"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(going, ["v1", "v2", "v3"]);
    let v1 = h.get_manifest("alice/app", "v1", &alice()).await;
    assert_eq!(app["would_remove"][0]["digest"].as_str(), v1.header("docker-content-digest").as_deref());
    assert_eq!(tags(&h).await.len(), 6, "a preview removes nothing");

    // Delete: 204, then 404; config rules have no id to delete.
    let r = h.delete(&format!("{RULES}/{id}"), &root()).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_refused(&h.delete(&format!("{RULES}/{id}"), &root()).await, 404);
    assert_refused(&h.delete(&format!("{RULES}/config-1"), &root()).await, 404);
    assert_eq!(h.get(RULES, &root()).await.json().as_array().map(Vec::len), Some(1));
    let preview = h.get(PREVIEW, &root()).await.json();
    assert_eq!(preview["repositories"], json!([]), "{preview}");
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_site_admins_may_and_bad_rules_are_refused() {
    let h = setup().await;
    let rule = r#"{"repositories":"alice/*","keep_last":2}"#;

    // Anonymous and bad credentials: 401.
    for path in [RULES, PREVIEW] {
        assert_refused(&h.get(path, &Cred::Anon).await, 401);
        assert_refused(&h.get(path, &Cred::basic("root", "wrong")).await, 401);
    }
    assert_refused(&post(&h, &Cred::Anon, rule).await, 401);
    assert_refused(&h.delete(&format!("{RULES}/1"), &Cred::Anon).await, 401);

    // A user who is not a site admin: 403, whatever the request.
    for path in [RULES, PREVIEW] {
        assert_refused(&h.get(path, &alice()).await, 403);
    }
    assert_refused(&post(&h, &alice(), rule).await, 403);
    let r = post(&h, &root(), rule).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_i64().expect("id");
    assert_refused(&h.delete(&format!("{RULES}/{id}"), &alice()).await, 403);

    // A site admin's tokens: read:package reads, write:package changes; a
    // token limited to some repositories never administers the site.
    let (_, reader) = h.pat("root", &[READ], &[], None).await;
    assert_eq!(h.get(RULES, &Cred::bearer(&reader)).await.status, 200);
    assert_refused(&post(&h, &Cred::bearer(&reader), rule).await, 403);
    let (_, narrow) = h.pat("root", &[WRITE], &["alice/*"], None).await;
    assert_refused(&h.get(RULES, &Cred::bearer(&narrow)).await, 403);
    let (_, writer) = h.pat("root", &[WRITE], &[], None).await;
    assert_eq!(h.get(PREVIEW, &Cred::Raw(format!("token {writer}"))).await.status, 200);

    // Bad rules: malformed or unknown fields 400, refused rules 422.
    for body in ["{", r#"{"repositories":"alice/*","keep_lats":2}"#, r#"{"keep_last":2}"#] {
        assert_refused(&post(&h, &root(), body).await, 400);
    }
    for body in [
        r#"{"repositories":"alice/*"}"#,
        r#"{"repositories":"alice/*","keep_last":0}"#,
        r#"{"repositories":"","keep_last":2}"#,
        r#"{"repositories":"alice/*","keep_last":2,"keep_tags":["["]}"#,
        r#"{"repositories":"alice/*","remove_older_than":"soon"}"#,
    ] {
        assert_refused(&post(&h, &root(), body).await, 422);
    }
    let r = post(&h, &root(), r#"{"repositories":"alice/*","remove_older_than":"30d","remove_tags":["pr-*"]}"#).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["remove_older_than"], "30days");

    // Nobody's refused request changed anything.
    let ids: Vec<i64> =
        h.get(RULES, &root()).await.json().as_array().unwrap().iter().filter_map(|r| r["id"].as_i64()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], id);
    assert_eq!(tags(&h).await.len(), 6);
    h.server.stop().await;
}
