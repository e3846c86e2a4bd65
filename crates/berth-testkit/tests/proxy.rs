//! The pull-through cache over HTTP, on loopback: Berth (auth on) in front
//! of Debian's `docker-registry` with htpasswd, or of a second Berth with
//! auth on (the Bearer token flow), through a fault-injecting proxy of the
//! tests' own that counts every request reaching the upstream. Runs on the
//! backends `BERTH_TEST_BACKENDS` selects. Without `docker-registry` the
//! Distribution cases print `NOT RUN`.

mod proxykit;

use std::time::Duration;

use berth_auth::admin;
use berth_config::{Secret, UpstreamAccess, UpstreamConfig};
use berth_oci::Digest;
use berth_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use berth_testkit::TestServer;
use proxykit::{Distribution, FaultProxy, Image, Mode, PASSWORD, Puller, Pusher, USER};

const ALICE: (&str, &str) = ("alice", "alice-password");

struct Setup {
    upstream: Option<Distribution>,
    fault: FaultProxy,
    berth: TestServer,
    pusher: Pusher,
}

impl Setup {
    fn alice(&self) -> Puller {
        Puller::new(&self.berth.url(""), Some(ALICE))
    }

    fn anonymous(&self) -> Puller {
        Puller::new(&self.berth.url(""), None)
    }

    async fn user(&self, name: &str, password: &str, site_admin: bool) -> Puller {
        let auth = self.berth.auth.as_ref().expect("auth on");
        admin::create_user(auth.store().as_ref(), name, Some(password), site_admin).await.unwrap();
        Puller::new(&self.berth.url(""), Some((name, password)))
    }
}

fn upstream_config(url: &str, user: &str, password: &str) -> UpstreamConfig {
    UpstreamConfig {
        name: "hub".into(),
        url: url.into(),
        username: user.into(),
        password: Secret::new(password),
        password_file: None,
        revalidate_after: Duration::from_secs(300),
        timeout: Duration::from_secs(30),
        access: UpstreamAccess::Users,
        repositories: Vec::new(),
        mirror_root: false,
    }
}

/// Distribution (htpasswd) behind the fault proxy, and a Berth with auth on
/// caching it as `hub`, with the user alice.
async fn setup(test: &str, change: impl FnOnce(&mut UpstreamConfig)) -> Option<Setup> {
    let upstream = Distribution::start(test).await?;
    let fault = FaultProxy::start(&upstream.url).await;
    let mut config = upstream_config(&fault.url, USER, PASSWORD);
    change(&mut config);
    let berth = TestServer::start_with(|c| {
        c.auth.enabled = true;
        c.upstreams = vec![config];
    })
    .await;
    let pusher = upstream.pusher();
    let s = Setup { upstream: Some(upstream), fault, berth, pusher };
    s.user(ALICE.0, ALICE.1, false).await;
    Some(s)
}

async fn metrics(s: &Setup) -> String {
    reqwest::get(s.berth.url("/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tags_pull_with_upstream_digests_and_no_upstream_request() {
    let Some(s) = setup("cached_tags_pull_with_upstream_digests_and_no_upstream_request", |_| {}).await else {
        return;
    };
    let image = Image::new(1, &[1000, 300_000]);
    let upstream_digest = s.pusher.push_image("team/app", "v1", &image).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/team/app", "v1").await, upstream_digest, "digests equal the upstream's");
    let m = alice.manifest("hub/team/app", "v1").await;
    assert_eq!(m.body, image.manifest, "stored byte for byte");

    // 100 pulls of a fresh tag, then by digest and every blob: no upstream request.
    s.fault.clear();
    for _ in 0..100 {
        let m = alice.manifest("hub/team/app", "v1").await;
        assert_eq!((m.status, m.header("docker-content-digest")), (200, Some(upstream_digest.to_string())));
    }
    assert_eq!(alice.pull("hub/team/app", upstream_digest.as_str()).await, upstream_digest);
    let head = alice.head(&format!("/v2/hub/team/app/blobs/{}", image.layer_digest(1))).await;
    assert_eq!((head.status, head.header("content-length")), (200, Some("300000".into())));
    assert_eq!(s.fault.api_requests(), 0, "{:?}", s.fault.seen());

    // Tags come from the upstream.
    s.pusher.push_manifest("team/app", "v2", OCI_MANIFEST, &image.manifest).await;
    let tags = alice.get("/v2/hub/team/app/tags/list").await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(alice.get("/v2/hub/team/app/tags/list?n=1&last=v1").await.json()["tags"], serde_json::json!(["v2"]));
    // Distribution 2.8 has no referrers API: the cache's own (none) are listed.
    let referrers = alice.get(&format!("/v2/hub/team/app/referrers/{upstream_digest}")).await;
    assert_eq!((referrers.status, referrers.json()["manifests"].clone()), (200, serde_json::json!([])));
    // An unknown repository or tag upstream is unknown here too.
    let missing = alice.manifest("hub/team/nothing", "v1").await;
    assert_eq!((missing.status, missing.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let text = metrics(&s).await;
    assert!(text.contains("berth_proxy_hits_total{upstream=\"hub\",kind=\"manifest\"}"), "{text}");
    assert!(text.contains("berth_proxy_bytes_fetched_total{upstream=\"hub\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_pulls_one_platform_then_the_other() {
    let Some(s) = setup("an_index_pulls_one_platform_then_the_other", |_| {}).await else { return };
    let (amd, arm) = (Image::new(10, &[2000]), Image::new(11, &[3000]));
    s.pusher.push_image("team/multi", "amd", &amd).await;
    s.pusher.push_image("team/multi", "arm", &arm).await;
    let index = berth_testkit::fixtures::index(&[&amd.manifest, &arm.manifest]);
    let index_digest = s.pusher.push_manifest("team/multi", "1.0", OCI_INDEX, &index).await;
    let alice = s.alice();

    let got = alice.manifest("hub/team/multi", "1.0").await;
    assert_eq!((got.status, Digest::sha256_of(&got.body)), (200, index_digest.clone()));
    assert_eq!(got.body, index, "the index is kept byte for byte");
    assert_eq!(alice.pull("hub/team/multi", amd.digest().as_str()).await, amd.digest());
    assert_eq!(s.fault.count("GET", arm.digest().as_str()), 0, "the other platform is not fetched");
    assert_eq!(s.fault.count("GET", arm.layer_digest(0).as_str()), 0);

    // Later, the other platform.
    assert_eq!(alice.pull("hub/team/multi", arm.digest().as_str()).await, arm.digest());
    assert_eq!(s.fault.count("GET", arm.layer_digest(0).as_str()), 1);
    s.fault.clear();
    assert_eq!(alice.manifest("hub/team/multi", index_digest.as_str()).await.status, 200);
    assert_eq!(s.fault.api_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_served_once_revalidate_after_passes() {
    let Some(s) = setup("a_moved_tag_is_served_once_revalidate_after_passes", |u| {
        u.revalidate_after = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let (one, two) = (Image::new(20, &[100]), Image::new(21, &[200]));
    let d1 = s.pusher.push_image("team/app", "stable", &one).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/team/app", "stable").await, d1);
    let d2 = s.pusher.push_image("team/app", "stable", &two).await;
    s.fault.clear();
    assert_eq!(alice.pull("hub/team/app", "stable").await, d1, "still fresh: the cached digest");
    assert_eq!(s.fault.api_requests(), 0);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.fault.clear();
    assert_eq!(alice.pull("hub/team/app", "stable").await, d2, "the tag moved");
    assert_eq!(s.fault.count("HEAD", "/manifests/stable"), 1, "{:?}", s.fault.seen());
    assert_eq!(s.fault.count("GET", "/manifests/"), 1, "{:?}", s.fault.seen());

    // Unchanged upstream: one HEAD, nothing fetched.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.fault.clear();
    assert_eq!(alice.manifest("hub/team/app", "stable").await.status, 200);
    assert_eq!(s.fault.seen(), vec!["HEAD /v2/team/app/manifests/stable".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_upstream_still_serves_cached_tags() {
    let Some(mut s) = setup("a_stopped_upstream_still_serves_cached_tags", |u| {
        u.revalidate_after = Duration::ZERO;
    })
    .await
    else {
        return;
    };
    let (image, other) = (Image::new(30, &[5000]), Image::new(31, &[6000]));
    let digest = s.pusher.push_image("team/app", "v1", &image).await;
    s.pusher.push_image("team/app", "v2", &other).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest);

    // The upstream stops (the fault proxy answers 502 for it), then goes dark.
    drop(s.upstream.take());
    for mode in [Mode::Pass, Mode::Down] {
        s.fault.set(mode);
        assert_eq!(alice.pull("hub/team/app", "v1").await, digest, "{mode:?}: the cached tag is served");
        let missing = alice.manifest("hub/team/app", "v2").await;
        assert_eq!((missing.status, missing.code().as_str()), (503, "UNAVAILABLE"), "{mode:?}");
        assert!(missing.message().contains("upstream \"hub\""), "{}", missing.message());
        let blob = alice.blob("hub/team/app", &other.layer_digest(0)).await;
        assert_eq!(blob.status, 503, "{mode:?}: {}", blob.text());
    }
    let text = metrics(&s).await;
    let stale =
        text.lines().find(|l| l.starts_with("berth_proxy_stale_serves_total{upstream=\"hub\",kind=\"manifest\"}"));
    assert!(stale.is_some_and(|l| !l.ends_with(" 0")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_upstream_serves_the_cache_and_passes_retry_after_on() {
    let Some(s) = setup("a_rate_limited_upstream_serves_the_cache_and_passes_retry_after_on", |u| {
        u.revalidate_after = Duration::ZERO;
    })
    .await
    else {
        return;
    };
    let image = Image::new(40, &[4000]);
    let digest = s.pusher.push_image("team/app", "v1", &image).await;
    s.pusher.push_image("team/app", "v2", &Image::new(41, &[1])).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest);
    s.fault.set(Mode::TooMany);
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest, "the cache is served");
    let limited = alice.manifest("hub/team/app", "v2").await;
    assert_eq!((limited.status, limited.code().as_str()), (429, "TOOMANYREQUESTS"), "{}", limited.text());
    assert_eq!(limited.header("retry-after").as_deref(), Some("7"));
    assert!(limited.message().contains("upstream \"hub\""), "{}", limited.message());
    // 503 upstream: the same, as UNAVAILABLE naming its status.
    s.fault.set(Mode::Unavailable);
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest);
    let down = alice.manifest("hub/team/app", "v2").await;
    assert_eq!(down.status, 503);
    assert!(down.message().contains("HTTP 503"), "{}", down.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_times_out_to_the_cache() {
    let Some(s) = setup("a_slow_upstream_times_out_to_the_cache", |u| {
        u.revalidate_after = Duration::ZERO;
        u.timeout = Duration::from_millis(500);
    })
    .await
    else {
        return;
    };
    let image = Image::new(45, &[4000]);
    let digest = s.pusher.push_image("team/app", "v1", &image).await;
    s.pusher.push_image("team/app", "v2", &Image::new(46, &[1])).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest);
    s.fault.slow(Duration::from_secs(3));
    let started = std::time::Instant::now();
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest, "served from the cache");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let late = alice.manifest("hub/team/app", "v2").await;
    assert_eq!((late.status, late.code().as_str()), (503, "UNAVAILABLE"));
    assert!(late.message().contains("upstream \"hub\""), "{}", late.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_one_uncached_blob_or_tag_make_one_upstream_request() {
    let Some(s) = setup("concurrent_pulls_of_one_uncached_blob_or_tag_make_one_upstream_request", |_| {}).await else {
        return;
    };
    let image = Image::new(50, &[64 << 20]);
    s.pusher.push_image("team/big", "v1", &image).await;
    let alice = s.alice();
    assert_eq!(alice.manifest("hub/team/big", "v1").await.status, 200);
    s.fault.clear();
    let layer = image.layer_digest(0);
    let pulls: Vec<_> = (0..20)
        .map(|_| {
            let (alice, layer) = (alice.clone(), layer.clone());
            tokio::spawn(async move { alice.blob("hub/team/big", &layer).await })
        })
        .collect();
    for p in pulls {
        let got = p.await.unwrap();
        assert_eq!(got.status, 200, "{}", got.text());
        assert!(!got.broken);
        assert_eq!(Digest::sha256_of(&got.body), layer);
    }
    assert_eq!(s.fault.count("GET", layer.as_str()), 1, "{:?}", s.fault.seen());
    // The callers had their bytes before the commit: it follows.
    until_stored(&s, &layer).await;

    // Twenty pulls of an uncached tag, the upstream slow: one upstream request.
    s.pusher.push_manifest("team/big", "v2", OCI_MANIFEST, &image.manifest).await;
    s.fault.clear();
    s.fault.slow(Duration::from_millis(300));
    let pulls: Vec<_> = (0..20)
        .map(|_| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.manifest("hub/team/big", "v2").await })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap().status, 200);
    }
    assert_eq!(s.fault.count("GET", "/manifests/") + s.fault.count("HEAD", "/manifests/"), 1, "{:?}", s.fault.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_from_the_upstream_are_refused_and_nothing_is_stored() {
    let Some(s) = setup("wrong_bytes_from_the_upstream_are_refused_and_nothing_is_stored", |_| {}).await else {
        return;
    };
    let image = Image::new(60, &[3 << 20]);
    s.pusher.push_image("team/app", "v1", &image).await;
    let alice = s.alice();
    s.fault.set(Mode::WrongBytes);
    let bad = alice.manifest("hub/team/app", "v1").await;
    assert_eq!((bad.status, bad.code().as_str()), (502, "UNKNOWN"), "{}", bad.text());
    assert!(bad.message().contains("upstream \"hub\""), "{}", bad.message());
    s.fault.set(Mode::Pass);
    assert_eq!(alice.manifest("hub/team/app", "v1").await.status, 200);

    s.fault.set(Mode::WrongBytes);
    let layer = image.layer_digest(0);
    let got = alice.blob("hub/team/app", &layer).await;
    assert!(got.status != 200 || got.broken, "a blob of wrong bytes must not arrive whole");
    assert_ne!(Digest::sha256_of(&got.body), layer);
    assert!(!s.berth.stored_blobs().await.contains(&layer), "nothing stored");
    // The upstream heals: the blob is fetched and served.
    s.fault.set(Mode::Pass);
    assert_eq!(alice.pull("hub/team/app", "v1").await, image.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_into_an_upstream_namespace_are_denied_and_site_admins_evict() {
    let Some(s) = setup("pushes_into_an_upstream_namespace_are_denied_and_site_admins_evict", |_| {}).await else {
        return;
    };
    let image = Image::new(70, &[100]);
    let digest = s.pusher.push_image("team/app", "v1", &image).await;
    let root = s.user("root", "root-password", true).await;
    for who in [&root, &s.alice()] {
        let start = who.send(reqwest::Method::POST, "/v2/hub/team/app/blobs/uploads/").await;
        assert_eq!((start.status, start.code().as_str()), (403, "DENIED"), "{}", start.text());
        let put = who.send(reqwest::Method::PUT, "/v2/hub/team/app/manifests/v9").await;
        assert_eq!((put.status, put.code().as_str()), (403, "DENIED"), "{}", put.text());
    }
    assert_eq!(root.pull("hub/team/app", "v1").await, digest);
    let by_alice = s.alice().send(reqwest::Method::DELETE, &format!("/v2/hub/team/app/manifests/{digest}")).await;
    assert_eq!(by_alice.status, 403);
    let evicted = root.send(reqwest::Method::DELETE, &format!("/v2/hub/team/app/manifests/{digest}")).await;
    assert_eq!(evicted.status, 202, "{}", evicted.text());
    // Gone from the cache: the next pull fetches it again.
    s.fault.clear();
    assert_eq!(s.alice().pull("hub/team/app", "v1").await, digest);
    assert_eq!(s.fault.count("GET", "/manifests/v1"), 1, "{:?}", s.fault.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_upstream_content_needs_the_access_level() {
    let Some(s) =
        setup("private_upstream_content_needs_the_access_level", |u| u.access = UpstreamAccess::Members).await
    else {
        return;
    };
    let image = Image::new(80, &[100]);
    let digest = s.pusher.push_image("private/app", "v1", &image).await;
    let auth = s.berth.auth.as_ref().unwrap();
    admin::create_org(auth.store().as_ref(), "hub").await.unwrap();
    let bob = s.user("bob", "bob-password", false).await;
    admin::set_member(auth.store().as_ref(), "hub", "bob", "read").await.unwrap();
    let check_refusals = async || {
        let anon = s.anonymous().manifest("hub/private/app", "v1").await;
        assert_eq!((anon.status, anon.code().as_str()), (401, "UNAUTHORIZED"));
        let alice = s.alice().manifest("hub/private/app", "v1").await;
        assert_eq!((alice.status, alice.code().as_str()), (403, "DENIED"));
        let blob = s.alice().blob("hub/private/app", &image.layer_digest(0)).await;
        assert_eq!(blob.status, 403);
    };
    check_refusals().await;
    assert_eq!(s.fault.api_requests(), 0, "refused callers never reach the upstream");
    assert_eq!(bob.pull("hub/private/app", "v1").await, digest);
    // Cached with the upstream's credentials, still unreadable without the level.
    check_refusals().await;
    let token = reqwest::Client::new()
        .get(s.berth.url("/v2/token?service=berth&scope=repository:hub/private/app:pull"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let jwt = token["token"].as_str().unwrap();
    let with_jwt = reqwest::Client::new()
        .get(s.berth.url("/v2/hub/private/app/manifests/v1"))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(with_jwt.status(), 401, "a token for alice grants nothing here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_berth_upstream_with_bearer_tokens() {
    // The upstream: a second Berth with auth on; its repositories are private.
    let upstream = TestServer::start_with(|c| c.auth.enabled = true).await;
    let store = upstream.auth.as_ref().unwrap().store().clone();
    admin::create_user(store.as_ref(), "mirror", Some("mirror-password"), false).await.unwrap();
    let pusher = Pusher::new(&upstream.url(""), "mirror", "mirror-password");
    let image = Image::new(90, &[70_000]);
    let digest = pusher.push_image("mirror/tools", "1.0", &image).await;
    let fault = FaultProxy::start(&upstream.url("")).await;
    let config = upstream_config(&fault.url, "mirror", "mirror-password");
    let berth = TestServer::start_with(|c| {
        c.auth.enabled = true;
        c.upstreams = vec![config];
    })
    .await;
    let s = Setup { upstream: None, fault, berth, pusher };
    s.user(ALICE.0, ALICE.1, false).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/mirror/tools", "1.0").await, digest);
    // The upstream challenged with Bearer, and Berth came back with a token.
    assert!(s.fault.count("GET", "/manifests/1.0") >= 2, "{:?}", s.fault.seen());
    let tags = alice.get("/v2/hub/mirror/tools/tags/list").await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["1.0"]));

    // Referrers come from the upstream's referrers API.
    let (empty, sig) = (b"{}".to_vec(), b"signature bytes".to_vec());
    s.pusher.push_blob("mirror/tools", &empty).await;
    s.pusher.push_blob("mirror/tools", &sig).await;
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::sha256_of(&empty), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.sig", "digest": Digest::sha256_of(&sig), "size": sig.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": image.manifest.len()},
        "annotations": {"org.example.signer": "ci"},
    }))
    .unwrap();
    let artifact_digest = Digest::sha256_of(&artifact);
    s.pusher.push_manifest("mirror/tools", artifact_digest.as_str(), OCI_MANIFEST, &artifact).await;
    let listed = alice.get(&format!("/v2/hub/mirror/tools/referrers/{digest}")).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let manifests = listed.json()["manifests"].clone();
    assert_eq!(manifests[0]["digest"], serde_json::json!(artifact_digest.as_str()), "{manifests}");
    assert_eq!(manifests[0]["artifactType"], serde_json::json!("application/vnd.example.sig"));
    assert_eq!(manifests[0]["annotations"]["org.example.signer"], serde_json::json!("ci"));
    let filtered =
        alice.get(&format!("/v2/hub/mirror/tools/referrers/{digest}?artifactType=application/x-other")).await;
    assert_eq!(filtered.json()["manifests"], serde_json::json!([]));
    // The artifact itself pulls by digest through the cache.
    let got = alice.manifest("hub/mirror/tools", artifact_digest.as_str()).await;
    assert_eq!((got.status, got.body.clone()), (200, artifact));
    // Wrong credentials for the upstream: refused, and said so.
    let refused = TestServer::start_with(|c| {
        c.auth.enabled = true;
        c.upstreams = vec![upstream_config(&upstream.url(""), "mirror", "wrong-password")];
    })
    .await;
    admin::create_user(refused.auth.as_ref().unwrap().store().as_ref(), "alice", Some(ALICE.1), false).await.unwrap();
    let got = Puller::new(&refused.url(""), Some(ALICE)).manifest("hub/mirror/tools", "1.0").await;
    assert_eq!(got.status, 403, "{}", got.text());
    assert!(got.message().contains("upstream \"hub\""), "{}", got.message());
}

/// Polls until the server's storage holds `digest` (a fetch finishing in the background).
async fn until_stored(s: &Setup, digest: &Digest) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !s.berth.stored_blobs().await.contains(digest) {
        assert!(std::time::Instant::now() < deadline, "{digest} never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stored, then linked: give the link its moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_stream_while_stored_and_a_caller_leaving_does_not_stop_the_fetch() {
    let Some(s) = setup("blobs_stream_while_stored_and_a_caller_leaving_does_not_stop_the_fetch", |_| {}).await else {
        return;
    };
    let image = Image::new(100, &[8 << 20, 3 << 20, 5000]);
    s.pusher.push_image("team/app", "v1", &image).await;
    let alice = s.alice();
    assert_eq!(alice.manifest("hub/team/app", "v1").await.status, 200);

    // The upstream pauses after a MiB: the first bytes reach the caller
    // long before the upstream finishes; then the caller hangs up.
    s.fault.stall(Duration::from_secs(3));
    let layer = image.layer_digest(0);
    let started = std::time::Instant::now();
    let resp = reqwest::Client::new()
        .get(s.berth.url(&format!("/v2/hub/team/app/blobs/{layer}")))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(8 << 20));
    let mut stream = futures_util::StreamExt::fuse(resp.bytes_stream());
    let mut received = 0;
    while received < (512 << 10) {
        received += futures_util::StreamExt::next(&mut stream).await.unwrap().unwrap().len();
    }
    assert!(started.elapsed() < Duration::from_secs(2), "streamed while fetched: {:?}", started.elapsed());
    drop(stream);
    until_stored(&s, &layer).await;
    s.fault.set(Mode::Pass);
    s.fault.clear();
    let got = alice.blob("hub/team/app", &layer).await;
    assert_eq!((got.status, Digest::sha256_of(&got.body)), (200, layer.clone()));
    assert_eq!(s.fault.api_requests(), 0, "the fetch finished without its caller: {:?}", s.fault.seen());

    // HEAD of an uncached blob answers from the upstream's headers and fills the cache.
    let second = image.layer_digest(1);
    let head = alice.head(&format!("/v2/hub/team/app/blobs/{second}")).await;
    assert_eq!((head.status, head.header("content-length")), (200, Some((3 << 20).to_string())));
    until_stored(&s, &second).await;
    s.fault.clear();
    assert_eq!(Digest::sha256_of(&alice.blob("hub/team/app", &second).await.body), second);
    assert_eq!(s.fault.api_requests(), 0);

    // A range of an uncached blob.
    let third = image.layer_digest(2);
    let part = reqwest::Client::new()
        .get(s.berth.url(&format!("/v2/hub/team/app/blobs/{third}")))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &image.layers[2][10..20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_root_serves_names_without_a_local_owner() {
    let Some(s) = setup("mirror_root_serves_names_without_a_local_owner", |u| {
        u.mirror_root = true;
        u.access = UpstreamAccess::Public;
    })
    .await
    else {
        return;
    };
    let image = Image::new(110, &[1234]);
    let digest = s.pusher.push_image("library/alpine", "3.20", &image).await;
    // As dockerd's registry-mirrors asks: no prefix, anonymously (public).
    let anonymous = s.anonymous();
    assert_eq!(anonymous.pull("library/alpine", "3.20").await, digest);
    let tags = anonymous.get("/v2/library/alpine/tags/list").await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["3.20"]));
    // The prefixed name is the same cache.
    s.fault.clear();
    assert_eq!(anonymous.pull("hub/library/alpine", "3.20").await, digest);
    assert_eq!(s.fault.api_requests(), 0, "{:?}", s.fault.seen());

    // Local owners win: alice's repositories never reach the upstream.
    let auth = s.berth.auth.as_ref().unwrap();
    let local = Image::new(111, &[99]);
    let alice = Pusher::new(&s.berth.url(""), ALICE.0, ALICE.1);
    let local_digest = alice.push_image("alice/alpine", "3.20", &local).await;
    assert_eq!(s.alice().pull("alice/alpine", "3.20").await, local_digest);
    let missing = s.alice().manifest("alice/other", "1").await;
    assert_eq!(missing.status, 404);
    assert_eq!(s.fault.api_requests(), 0, "{:?}", s.fault.seen());
    // A name without a local owner belongs to the mirror: nobody pushes there, site admins neither.
    let root = s.user("root", "root-password", true).await;
    let push = root.send(reqwest::Method::POST, "/v2/library/alpine/blobs/uploads/").await;
    assert_eq!((push.status, push.code().as_str()), (403, "DENIED"), "{}", push.text());
    // Once the owner exists locally, the name is theirs.
    admin::create_org(auth.store().as_ref(), "library").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await; // the owner lookup is remembered for 5 s
    let local_now = s.alice().manifest("library/alpine", "3.20").await;
    assert_eq!(local_now.status, 403, "alice is no member of the local org: {}", local_now.text());
    let by_root = root.manifest("library/alpine", "3.20").await;
    assert_eq!(by_root.status, 404, "the local repository does not exist: {}", by_root.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_what_was_not_pulled_and_gc_spares_fetches_in_flight() {
    use berth_registry::gc::GcOptions;
    use berth_registry::retention::{RetentionPolicy, RetentionRule};
    let Some(s) = setup("retention_expires_what_was_not_pulled_and_gc_spares_fetches_in_flight", |_| {}).await else {
        return;
    };
    let image = Image::new(120, &[4000]);
    let digest = s.pusher.push_image("team/app", "v1", &image).await;
    s.pusher.push_manifest("team/app", "latest", OCI_MANIFEST, &image.manifest).await;
    let alice = s.alice();
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest);
    assert_eq!(alice.pull("hub/team/app", "latest").await, digest);
    let local = Pusher::new(&s.berth.url(""), ALICE.0, ALICE.1);
    local.push_image("alice/app", "latest", &Image::new(121, &[10])).await;

    let policy = RetentionPolicy::new(vec![RetentionRule {
        repositories: "*".into(),
        remove_older_than: Some(Duration::from_secs(1)),
        ..Default::default()
    }])
    .unwrap();
    // Pulled just now: kept.
    let report = s.berth.maintenance.apply_retention(&policy, false, None).await.unwrap();
    assert_eq!(report.removed(), 0, "{report:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = s.berth.maintenance.apply_retention(&policy, false, None).await.unwrap();
    let removed: Vec<(String, Vec<String>)> = report
        .repositories
        .iter()
        .map(|r| {
            let mut tags: Vec<String> = r.removed.iter().map(|t| t.tag.clone()).collect();
            tags.sort();
            (r.repository.to_string(), tags)
        })
        .filter(|(_, tags)| !tags.is_empty())
        .collect();
    assert_eq!(
        removed,
        vec![("hub/team/app".to_owned(), vec!["latest".to_owned(), "v1".to_owned()])],
        "not pulled for a second: gone, latest too; alice's own latest stays"
    );
    let gc = GcOptions { min_age: Duration::ZERO, dry_run: false };
    s.berth.maintenance.collect_garbage(&gc, None, &|_, _| {}).await.unwrap();
    let layer = image.layer_digest(0);
    assert!(!s.berth.stored_blobs().await.contains(&layer), "collected");
    // Pulled again: fetched again.
    s.fault.clear();
    assert_eq!(alice.pull("hub/team/app", "v1").await, digest);
    assert!(s.fault.count("GET", layer.as_str()) == 1, "{:?}", s.fault.seen());

    // A collection while a blob is being fetched leaves it whole.
    let big = Image::new(122, &[6 << 20]);
    s.pusher.push_image("team/big", "v1", &big).await;
    assert_eq!(alice.manifest("hub/team/big", "v1").await.status, 200);
    s.fault.stall(Duration::from_secs(2));
    let big_layer = big.layer_digest(0);
    let pulling = {
        let (alice, d) = (alice.clone(), big_layer.clone());
        tokio::spawn(async move { alice.blob("hub/team/big", &d).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.berth.maintenance.collect_garbage(&gc, None, &|_, _| {}).await.unwrap();
    let got = pulling.await.unwrap();
    assert_eq!((got.status, got.broken), (200, false));
    assert_eq!(Digest::sha256_of(&got.body), big_layer);
    s.fault.set(Mode::Pass);
    s.fault.clear();
    assert_eq!(Digest::sha256_of(&alice.blob("hub/team/big", &big_layer).await.body), big_layer);
    assert_eq!(s.fault.api_requests(), 0, "stored and linked: {:?}", s.fault.seen());
}

/// Two replicas (one Postgres database, one blob storage) fetch the same
/// uncached blob at once: each may fetch it (one upstream GET per replica at
/// worst), and the blob ends up stored once and whole, and the metadata
/// agrees with the storage.
async fn two_replicas_fetch_one_blob(storage: berth_testkit::backends::Storage, test: &str) {
    use berth_testkit::backends::Database;
    let Some(upstream) = Distribution::start(test).await else { return };
    let fault = FaultProxy::start(&upstream.url).await;
    let mut config = upstream_config(&fault.url, USER, PASSWORD);
    config.access = UpstreamAccess::Public;
    let first = TestServer::start_on(Database::Postgres, storage, |c| c.upstreams = vec![config]).await;
    let second = first.start_replica().await;
    let image = Image::new(130, &[12 << 20]);
    upstream.pusher().push_image("team/app", "v1", &image).await;
    let (a, b) = (Puller::new(&first.url(""), None), Puller::new(&second.url(""), None));
    assert_eq!(a.manifest("hub/team/app", "v1").await.status, 200);
    assert_eq!(b.manifest("hub/team/app", "v1").await.status, 200, "the replica sees the cached tag");
    // Tags are asked of the upstream: each replica learns its Basic challenge
    // now, so the blob fetches below are one GET each.
    for p in [&a, &b] {
        assert_eq!(p.get("/v2/hub/team/app/tags/list").await.status, 200);
    }

    // The upstream pauses both bodies after their first MiB, so both
    // fetches are in flight together and commit close together.
    fault.clear();
    fault.stall(Duration::from_secs(1));
    let layer = image.layer_digest(0);
    let (got_a, got_b) = tokio::join!(a.blob("hub/team/app", &layer), b.blob("hub/team/app", &layer));
    for (name, got) in [("first", &got_a), ("second", &got_b)] {
        assert_eq!((got.status, got.broken), (200, false), "{name}: {}", got.text());
        assert_eq!(Digest::sha256_of(&got.body), layer, "{name} got other bytes");
    }
    assert_eq!(fault.count("GET", layer.as_str()), 2, "one fetch per replica, at once: {:?}", fault.seen());

    // Stored once and whole, whichever commit came second.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !first.stored_blobs().await.contains(&layer) {
        assert!(std::time::Instant::now() < deadline, "{layer} never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the later commit and both links
    let stored = first.stored_blobs().await;
    assert_eq!(stored.iter().filter(|d| **d == layer).count(), 1, "{stored:?}");
    let store = berth::backends::open_blobs(&first.config).await.unwrap();
    let (size, mut body) = store.read_stream(&layer).await.unwrap();
    let mut hasher = berth_oci::Hasher::new(layer.algorithm());
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        hasher.update(&chunk.unwrap());
    }
    assert_eq!((size, hasher.finish()), (12 << 20, layer.clone()), "the stored blob is whole");

    // The metadata agrees: scrub finds nothing wrong, and both replicas
    // serve the blob from the cache with the upstream down.
    let report = first.maintenance.scrub(&Default::default(), None, &berth_registry::scrub::no_progress).await;
    let report = report.expect("scrub runs");
    assert!(report.problems.is_empty(), "{report:#?}");
    assert_eq!(report.unreferenced.map(|u| u.count), Some(0), "{report:#?}");
    fault.set(Mode::Down);
    for (name, puller) in [("first", &a), ("second", &b)] {
        let got = puller.blob("hub/team/app", &layer).await;
        assert_eq!((got.status, Digest::sha256_of(&got.body)), (200, layer.clone()), "{name}");
    }
    assert_eq!(fault.count("GET", layer.as_str()), 2, "served from the cache: {:?}", fault.seen());
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_fetching_the_same_blob_at_once_never_corrupt_it_on_a_filesystem() {
    if !berth_testkit::backends::postgres_configured() {
        return;
    }
    let test = "two_replicas_fetching_the_same_blob_at_once_never_corrupt_it_on_a_filesystem";
    two_replicas_fetch_one_blob(berth_testkit::backends::Storage::Filesystem, test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_fetching_the_same_blob_at_once_never_corrupt_it_on_s3() {
    if !berth_testkit::backends::postgres_and_s3_configured() {
        // Straight to stderr, which libtest does not capture: say it loudly.
        let line = "NOT RUN: two_replicas_fetching_the_same_blob_at_once_never_corrupt_it_on_s3: \
                    BERTH_TEST_POSTGRES_URL and BERTH_TEST_S3_ENDPOINT must both be set\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let test = "two_replicas_fetching_the_same_blob_at_once_never_corrupt_it_on_s3";
    two_replicas_fetch_one_blob(berth_testkit::backends::Storage::S3, test).await;
}
