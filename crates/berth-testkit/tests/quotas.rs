//! Quotas over HTTP against the real server (on whichever backends
//! `BERTH_TEST_BACKENDS` selects): pushes that would take an owner past its
//! byte quota, or upload a blob over `blob_max_size`, are refused with 403
//! `DENIED` and the message docker prints as-is, on every path that adds
//! bytes (monolithic and chunked uploads, early during a PATCH, mounts,
//! manifest pushes), leaving nothing behind; racing pushers cannot pass the
//! limit together; pulls never stop; a cleanup makes room at once; refusals
//! reach webhooks and the metrics.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_config::Config;
use berth_meta::QuotaLimits;
use berth_oci::media_type::OCI_MANIFEST;
use berth_testkit::{TestServer, fixtures};
use common::*;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KIB: usize = 1024;

struct S {
    server: TestServer,
    http: reqwest::Client,
}

impl S {
    async fn start(customize: impl FnOnce(&mut Config)) -> S {
        S { server: TestServer::start_with(customize).await, http: client(None) }
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
        send_with(&self.http, method, &self.server.url(path), &Cred::Anon, headers, body).await
    }

    /// Monolithic upload (POST with `?digest=`).
    async fn post_blob(&self, repo: &str, data: &[u8]) -> Resp {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", digest(data));
        self.send(Method::POST, &path, &[("content-type", "application/octet-stream")], Some(data.to_vec())).await
    }

    async fn upload(&self, repo: &str, data: &[u8]) {
        let r = self.post_blob(repo, data).await;
        assert_eq!(r.status, 201, "blob upload to {repo}: {}", r.text());
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> Resp {
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.send(Method::PUT, &path, &[("content-type", OCI_MANIFEST)], Some(body.to_vec())).await
    }

    /// Opens an upload session; returns its path.
    async fn open_session(&self, repo: &str) -> String {
        let r = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], None).await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.header("location").expect("location")
    }

    async fn patch(&self, location: &str, data: &[u8]) -> Resp {
        let url = if location.starts_with("http") { location.to_owned() } else { self.server.url(location) };
        send_with(
            &self.http,
            Method::PATCH,
            &url,
            &Cred::Anon,
            &[("content-type", "application/octet-stream")],
            Some(data.to_vec()),
        )
        .await
    }

    async fn bytes_used(&self, owner: &str) -> u64 {
        self.server.registry.usage(owner).await.expect("usage").usage.bytes
    }

    async fn assert_no_drift(&self) {
        let drift = self.server.registry.recount_usage().await.expect("recount");
        assert!(drift.is_empty(), "usage drifted: {drift:?}");
    }
}

fn message(r: &Resp) -> String {
    r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

/// 403 DENIED saying `quota exceeded: <owner> uses ...`.
fn assert_quota_refusal(r: &Resp, owner: &str) -> String {
    assert_error(r, 403, "DENIED");
    let m = message(r);
    assert!(m.starts_with(&format!("quota exceeded: {owner} uses ")), "message: {m}");
    m
}

fn quota(config: &mut Config, bytes: u64) {
    config.quotas.owner_bytes = berth_config::Size(bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_the_quota_is_refused_with_the_message_docker_prints() {
    let s = S::start(|c| quota(c, 100 * KIB as u64)).await;
    let img = Image::new(1);
    s.upload("acme/app", &img.config).await;
    s.upload("acme/app", &img.layer).await;
    let r = s.put_manifest("acme/app", "v1", &img.manifest).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let used = s.bytes_used("acme").await;
    assert_eq!(used, (img.config.len() + img.layer.len() + img.manifest.len()) as u64);

    let big = fixtures::blob(2, 120 * KIB);
    let r = s.post_blob("acme/app", &big).await;
    let m = assert_quota_refusal(&r, "acme");
    assert!(m.contains(" of 100 KiB"), "message: {m}");
    // Nothing left behind: not linked, not counted.
    let r = s.send(Method::HEAD, &format!("/v2/acme/app/blobs/{}", digest(&big)), &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(s.bytes_used("acme").await, used);
    // Another owner is not limited by acme's quota, and pulls of acme go on.
    s.upload("other/app", &fixtures::blob(3, 50 * KIB)).await;
    let r = s.send(Method::GET, &format!("/v2/acme/app/blobs/{}", img.layer_digest), &[], None).await;
    assert_eq!((r.status, r.body.len()), (200, img.layer.len()));
    s.assert_no_drift().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_stops_once_it_alone_would_pass_the_quota() {
    let s = S::start(|c| quota(c, 2048 * KIB as u64)).await;
    // Declared lengths: refused before a byte is stored, the session
    // discarded (uploads that stay under 1 MiB are left to the final check).
    let location = s.open_session("acme/big").await;
    let r = s.patch(&location, &fixtures::blob(4, 1536 * KIB)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = s.patch(&location, &fixtures::blob(5, 1024 * KIB)).await;
    let m = assert_quota_refusal(&r, "acme");
    assert!(m.contains(" of 2 MiB"), "{m}");
    let r = s.send(Method::GET, &location, &[], None).await;
    assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");

    // A body without a declared length stops at the limit, mid-stream.
    let location = s.open_session("acme/big").await;
    let url = if location.starts_with("http") { location.clone() } else { s.server.url(&location) };
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..40).map(|i| Ok(bytes::Bytes::from(fixtures::blob(100 + i, 64 * KIB)))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let sent = s.http.patch(&url).header("content-type", "application/octet-stream").body(body).send().await;
    // The server stops storing at the limit, reads (and drops) the rest of a
    // modest body, and answers: the client sees the refusal, not a reset.
    let resp = sent.expect("the refusal is answered");
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.expect("body");
    assert!(
        text.contains("quota exceeded: acme uses 0 B of 2 MiB; this upload needs more than the 2 MiB left"),
        "{text}"
    );
    let r = s.send(Method::GET, &location, &[], None).await;
    assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(s.bytes_used("acme").await, 0);
    s.assert_no_drift().await;
}

/// A limit set by another process (`berth quota set`, another replica)
/// binds at once, and the refusal names it, though this server had read
/// the limits a moment before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_set_by_another_process_binds_at_once_and_is_named() {
    let s = S::start(|_| {}).await;
    s.upload("acme/app", &fixtures::blob(40, 2 * KIB)).await;
    let other = berth::backends::open_meta(&s.server.config, false).await.expect("second connection");
    let limits = QuotaLimits { bytes: Some(3 * KIB as u64), repositories: None };
    other.meta.set_quota("acme", limits).await.expect("set from elsewhere");
    let r = s.post_blob("acme/app", &fixtures::blob(41, 2 * KIB)).await;
    assert_eq!(assert_quota_refusal(&r, "acme"), "quota exceeded: acme uses 2 KiB of 3 KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_past_owner_repositories_is_refused() {
    let s = S::start(|c| c.quotas.owner_repositories = 1).await;
    s.upload("acme/one", &fixtures::blob(30, 100)).await;
    s.upload("acme/one", &fixtures::blob(31, 100)).await;
    let r = s.post_blob("acme/two", &fixtures::blob(32, 100)).await;
    assert_error(&r, 403, "DENIED");
    assert_eq!(message(&r), "quota exceeded: acme has 1 of 1 repositories");
    let r = s.send(Method::GET, "/v2/_catalog", &[], None).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["acme/one"]), "no repository left behind");
    s.upload("bob/two", &fixtures::blob(32, 100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_over_blob_max_size_are_refused() {
    let s = S::start(|c| c.quotas.blob_max_size = berth_config::Size(64 * KIB as u64)).await;
    s.upload("acme/app", &fixtures::blob(6, 64 * KIB)).await;
    let r = s.post_blob("acme/app", &fixtures::blob(7, 64 * KIB + 1)).await;
    assert_error(&r, 403, "DENIED");
    assert!(message(&r).starts_with("blob too large:"), "{}", message(&r));
    let location = s.open_session("acme/app").await;
    assert_eq!(s.patch(&location, &fixtures::blob(8, 40 * KIB)).await.status, 202);
    let r = s.patch(&location, &fixtures::blob(9, 40 * KIB)).await;
    assert_error(&r, 403, "DENIED");
    assert!(message(&r).contains("64 KiB"), "{}", message(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_and_manifest_pushes_respect_the_quota_and_a_cleanup_makes_room() {
    let s = S::start(|_| {}).await;
    let shared = fixtures::blob(10, 80 * KIB);
    s.upload("bob/src", &shared).await;
    let img = Image::new(11);
    s.upload("acme/app", &img.config).await;
    s.upload("acme/app", &img.layer).await;
    let used = s.bytes_used("acme").await;
    // An own quota set while the server runs applies at once: room for the
    // shared blob only once the image is gone.
    let limits = QuotaLimits { bytes: Some(81 * KIB as u64), repositories: None };
    s.server.registry.set_quota("acme", limits).await.expect("set quota");

    let mount = format!("/v2/acme/app/blobs/uploads/?mount={}&from=bob/src", digest(&shared));
    let r = s.send(Method::POST, &mount, &[], None).await;
    assert_quota_refusal(&r, "acme");
    assert_eq!(s.bytes_used("acme").await, used);

    // The manifest fits in the last KiB; a second, bigger one does not.
    let tight = QuotaLimits { bytes: Some(used + 1024), repositories: None };
    s.server.registry.set_quota("acme", tight).await.expect("tighten");
    assert_eq!(s.put_manifest("acme/app", "v1", &img.manifest).await.status, 201);
    let padded = fixtures::image_manifest(&img.config, &[&img.layer, &img.layer, &img.layer, &img.layer]);
    let mut big_manifest: serde_json::Value = serde_json::from_slice(&padded).expect("json");
    big_manifest["annotations"] = serde_json::json!({ "pad": "x".repeat(2000) });
    let big_manifest = serde_json::to_vec(&big_manifest).expect("json");
    let r = s.put_manifest("acme/app", "v2", &big_manifest).await;
    assert_quota_refusal(&r, "acme");
    let r = s.send(Method::GET, "/v2/acme/app/tags/list", &[], None).await;
    assert_eq!(r.json()["tags"], serde_json::json!(["v1"]), "the refused push left no tag");

    // Over the limit (lowered below usage): pulls still work.
    s.server.registry.set_quota("acme", QuotaLimits { bytes: Some(10), repositories: None }).await.expect("lower");
    let r = s.send(Method::GET, "/v2/acme/app/manifests/v1", &[("accept", OCI_MANIFEST)], None).await;
    assert_eq!(r.status, 200);

    // Cleanup: delete the image and its blobs; usage drops at once and the mount succeeds.
    s.server.registry.set_quota("acme", limits).await.expect("restore");
    let r = s.send(Method::DELETE, &format!("/v2/acme/app/manifests/{}", img.manifest_digest), &[], None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    for d in [&img.config_digest, &img.layer_digest] {
        assert_eq!(s.send(Method::DELETE, &format!("/v2/acme/app/blobs/{d}"), &[], None).await.status, 202);
    }
    assert_eq!(s.bytes_used("acme").await, 0);
    let r = s.send(Method::POST, &mount, &[], None).await;
    assert_eq!(r.status, 201, "mount after cleanup: {}", r.text());
    s.assert_no_drift().await;
}

/// Twenty pushers race for the room of five blobs: exactly five get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushers_cannot_pass_the_quota_together() {
    const PUSHERS: u64 = 20;
    const BLOB: usize = 40 * KIB;
    let s = Arc::new(S::start(|c| quota(c, 5 * BLOB as u64 + 1000)).await);
    let tasks: Vec<_> = (0..PUSHERS)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.post_blob(&format!("acme/r{}", i % 3), &fixtures::blob(1000 + i, BLOB)).await })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            201 => created += 1,
            403 => {
                assert_quota_refusal(&r, "acme");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {}", r.text()),
        }
    }
    assert_eq!((created, refused), (5, PUSHERS - 5));
    assert_eq!(s.bytes_used("acme").await, 5 * BLOB as u64);
    s.assert_no_drift().await;
}

/// Accepts webhook deliveries on loopback; returns the URL and the bodies received.
async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        bodies.lock().expect("lock").push(String::from_utf8_lossy(&buf[end + 4..]).into_owned());
                        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
                        buf.clear();
                    }
                }
            });
        }
    });
    (url, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_webhooks_and_metrics() {
    let (url, bodies) = receiver().await;
    let s = S::start(|c| {
        quota(c, 10 * KIB as u64);
        c.webhooks.push(berth_config::WebhookConfig {
            name: "quota-watch".into(),
            url,
            secret: Default::default(),
            owners: vec![],
            events: vec!["quota".into()],
        });
    })
    .await;
    s.server
        .registry
        .set_quota("acme", QuotaLimits { bytes: Some(10 * KIB as u64), repositories: None })
        .await
        .expect("own");
    let r = s.post_blob("acme/app", &fixtures::blob(20, 20 * KIB)).await;
    let m = assert_quota_refusal(&r, "acme");

    let start = Instant::now();
    let delivered = loop {
        let found = bodies.lock().expect("lock").iter().find(|b| b.contains("\"quota\"")).cloned();
        if let Some(b) = found {
            break b;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no quota event delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let event: serde_json::Value = serde_json::from_str(&delivered).expect("event JSON");
    assert_eq!(event["event"], "quota");
    assert_eq!(event["repository"], "acme/app");
    assert_eq!(event["message"], m.as_str());

    s.server.registry.record_stats().await.expect("stats");
    let r = s.send(Method::GET, "/metrics", &[], None).await;
    let text = r.text();
    assert!(text.contains("berth_owner_quota_bytes{owner=\"acme\"} 10240"), "{text}");
    assert!(text.contains("berth_owner_bytes{owner=\"acme\"} 0"), "{text}");
    assert!(!text.contains("owner=\"other\""), "only owners with their own quota get series");
    assert!(text.contains("berth_quota_refusals_total 1") || text.contains("berth_quota_refusals_total"), "{text}");
}

/// A small deterministic generator for the mix below.
struct Mix(u64);

impl Mix {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Pushes, mounts, tag moves and every kind of delete over HTTP, with full
/// garbage collection and retention runs in between: the usage the
/// database kept is what a recount finds, and it shrinks to the manifests
/// and blobs that are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_matches_a_recount_after_pushes_deletes_gc_and_retention() {
    use berth_registry::gc::{GcOptions, no_progress};
    use berth_registry::retention::RetentionRule;

    const REPOS: [&str; 4] = ["acme/a", "acme/b", "bob/x", "bob/y/deep"];
    let s = S::start(|_| {}).await;
    let rule = RetentionRule {
        repositories: "acme/*".into(),
        keep_last: Some(2),
        keep_tags: vec![],
        remove_older_than: None,
        remove_tags: vec![],
    };
    s.server.maintenance.add_retention_rule(rule, "test").await.expect("rule");
    let mut mix = Mix(7);
    let mut pushed: Vec<(&str, Image)> = Vec::new();
    let (mut freed, mut retained_away) = (0u64, 0usize);
    for step in 0..120u64 {
        let repo = REPOS[mix.next(REPOS.len() as u64) as usize];
        match mix.next(8) {
            0..=2 => {
                let img = Image::new(mix.next(12));
                s.upload(repo, &img.config).await;
                s.upload(repo, &img.layer).await;
                let tag = format!("t{}", mix.next(5));
                let r = s.put_manifest(repo, &tag, &img.manifest).await;
                assert_eq!(r.status, 201, "{}", r.text());
                pushed.push((repo, img));
            }
            3 => {
                if let Some((from, img)) = pushed.get(mix.next(pushed.len().max(1) as u64) as usize) {
                    let path = format!("/v2/{repo}/blobs/uploads/?mount={}&from={from}", img.layer_digest);
                    let r = s.send(Method::POST, &path, &[], None).await;
                    assert!(matches!(r.status, 201 | 202), "{}", r.text());
                }
            }
            4 => {
                if !pushed.is_empty() {
                    let (repo, img) = pushed.swap_remove(mix.next(pushed.len() as u64) as usize);
                    let path = format!("/v2/{repo}/manifests/{}", img.manifest_digest);
                    let r = s.send(Method::DELETE, &path, &[], None).await;
                    assert!(matches!(r.status, 202 | 404), "{}", r.text());
                }
            }
            5 => {
                let path = format!("/v2/{repo}/manifests/t{}", mix.next(5));
                let r = s.send(Method::DELETE, &path, &[], None).await;
                assert!(matches!(r.status, 202 | 404), "{}", r.text());
            }
            6 => {
                if let Some((_, img)) = pushed.get(mix.next(pushed.len().max(1) as u64) as usize) {
                    // Refused while a manifest references it; fine either way.
                    let path = format!("/v2/{repo}/blobs/{}", img.config_digest);
                    let r = s.send(Method::DELETE, &path, &[], None).await;
                    assert!(matches!(r.status, 202 | 403 | 404), "{}", r.text());
                }
            }
            _ => {
                if step % 2 == 0 {
                    let options = GcOptions { min_age: Duration::ZERO, dry_run: false };
                    let report = s.server.maintenance.collect_garbage(&options, None, &no_progress).await.expect("gc");
                    freed += report.bytes_freed();
                } else {
                    let policy = s.server.maintenance.retention_policy().await.expect("policy");
                    let report = s.server.maintenance.apply_retention(&policy, false, None).await.expect("retention");
                    retained_away += report.repositories.iter().map(|r| r.removed.len()).sum::<usize>();
                }
            }
        }
    }
    assert!(
        freed > 0 && retained_away > 0,
        "the mix collected ({freed} bytes) and applied retention ({retained_away} tags)"
    );
    s.assert_no_drift().await;
    // After a last collection, what is counted is exactly what is left.
    let options = GcOptions { min_age: Duration::ZERO, dry_run: false };
    s.server.maintenance.collect_garbage(&options, None, &no_progress).await.expect("gc");
    s.assert_no_drift().await;
    let total: u64 = s.server.registry.all_usage().await.expect("all").iter().map(|r| r.usage.bytes).sum();
    let per_repo: u64 = {
        let mut sum = 0;
        for owner in ["acme", "bob"] {
            sum += s.server.registry.repository_usage(owner).await.expect("repos").iter().map(|r| r.bytes).sum::<u64>();
        }
        sum
    };
    assert!(total <= per_repo, "an owner's blobs count once however many repositories hold them");
}
