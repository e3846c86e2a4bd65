//! The client against a fake Docker-Hub-like upstream on loopback: the
//! Bearer token flow (caching per scope, single flight, expiry, refused
//! tokens, credentials to the realm), blob redirects to "object storage"
//! without the Authorization header, and every kind of bad answer.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_oci::media_type as mt;
use berth_upstream::{UpstreamClient, UpstreamError, UpstreamSettings};
use common::fake::Fake;
use common::{blob, drain, image_manifest, name, reference};

fn client_with(fake: &Fake, change: impl FnOnce(&mut UpstreamSettings)) -> UpstreamClient {
    let mut s = UpstreamSettings::new("fakehub", &fake.url);
    change(&mut s);
    UpstreamClient::new(s).unwrap()
}

fn client(fake: &Fake) -> UpstreamClient {
    client_with(fake, |_| {})
}

/// A one-layer image in `repo` tagged `tag`: (manifest digest, manifest bytes, layer).
fn seed(fake: &Fake, repo: &str, tag: &str, layer_len: usize) -> (Digest, Vec<u8>, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#).into_bytes();
    let layer = blob(layer_len, layer_len as u64 + repo.len() as u64);
    fake.add_blob(&config);
    fake.add_blob(&layer);
    let m = image_manifest(mt::OCI_MANIFEST, &config, &[&layer]);
    (fake.add_manifest(repo, Some(tag), mt::OCI_MANIFEST, &m), m, layer)
}

#[tokio::test]
async fn bearer_flow_with_blob_redirected_without_authorization() {
    let fake = Fake::start().await;
    let (digest, bytes, layer) = seed(&fake, "library/alpine", "3.20", 3 * 1024 * 1024 + 17);
    let c = client(&fake);
    let repo = name("library/alpine");

    let head = c.head_manifest(&repo, &reference("3.20")).await.unwrap();
    assert_eq!(
        (head.digest.clone(), head.media_type.as_str(), head.size),
        (digest.clone(), mt::OCI_MANIFEST, bytes.len() as u64)
    );
    assert_eq!(fake.token_requests(), 1);
    let query = fake.state.token_queries.lock().unwrap()[0].clone();
    assert!(
        query.contains("service=fake-registry") && query.contains("scope=repository%3Alibrary%2Falpine%3Apull"),
        "{query}"
    );
    assert!(!query.contains("account="), "anonymous: {query}");
    assert_eq!(fake.state.token_authorization.lock().unwrap()[0], None);

    let by_tag = c.get_manifest(&repo, &reference("3.20"), &[]).await.unwrap();
    assert_eq!(
        (by_tag.bytes.as_ref(), &by_tag.digest, by_tag.media_type.as_str()),
        (&bytes[..], &digest, mt::OCI_MANIFEST)
    );
    let by_digest =
        c.get_manifest(&repo, &berth_oci::Reference::Digest(digest.clone()), &[mt::OCI_MANIFEST]).await.unwrap();
    assert_eq!(by_digest, by_tag);

    let stream = c.get_blob(&repo, &Digest::sha256_of(&layer)).await.unwrap();
    assert_eq!(stream.length(), Some(layer.len() as u64));
    let (got, chunks, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, Digest::sha256_of(&layer));
    assert!(chunks > 1, "streamed in chunks, not one buffer");
    assert_eq!(fake.state.storage_requests.load(Ordering::SeqCst), 1);
    assert!(!fake.state.storage_saw_authorization.load(Ordering::SeqCst), "Authorization followed the redirect");

    // One token and one 401 for the lot: later requests carried the token up front.
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.unauthorized(), 1);
}

#[tokio::test]
async fn tokens_are_cached_per_scope() {
    let fake = Fake::start().await;
    seed(&fake, "team/a", "v1", 100);
    seed(&fake, "team/b", "v1", 100);
    let c = client(&fake);
    for _ in 0..5 {
        c.get_manifest(&name("team/a"), &reference("v1"), &[]).await.unwrap();
    }
    assert_eq!(fake.token_requests(), 1, "5 requests, one token");
    c.head_manifest(&name("team/b"), &reference("v1")).await.unwrap();
    assert_eq!(fake.token_requests(), 2, "another repository, another scope, another token");
    c.head_manifest(&name("team/a"), &reference("v1")).await.unwrap();
    c.list_tags(&name("team/b")).await.unwrap();
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.unauthorized(), 2);
    let queries = fake.state.token_queries.lock().unwrap().clone();
    assert!(queries[0].contains("team%2Fa") && queries[1].contains("team%2Fb"), "{queries:?}");
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let fake = Fake::start().await;
    let (digest, _, _) = seed(&fake, "library/busybox", "latest", 100);
    fake.state.token_delay_ms.store(300, Ordering::SeqCst);
    let c = client(&fake);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get_manifest(&name("library/busybox"), &reference("latest"), &[]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().digest, digest);
    }
    assert_eq!(fake.token_requests(), 1, "20 concurrent requests, one token fetch");
}

#[tokio::test]
async fn expired_tokens_are_refreshed_and_refused_tokens_replaced() {
    let fake = Fake::start().await;
    seed(&fake, "app/web", "v1", 100);
    fake.state.expires_in.store(2, Ordering::SeqCst);
    let c = client(&fake);
    let (repo, tag) = (name("app/web"), reference("v1"));
    c.head_manifest(&repo, &tag).await.unwrap();
    c.head_manifest(&repo, &tag).await.unwrap();
    assert_eq!((fake.token_requests(), fake.unauthorized()), (1, 1));
    // Used for 1.5 s of its 2: after that a new one is fetched before the request.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.head_manifest(&repo, &tag).await.unwrap();
    assert_eq!((fake.token_requests(), fake.unauthorized()), (2, 1), "refreshed up front, no 401");
    // A token the upstream stops honouring is replaced once.
    fake.revoke_tokens();
    c.head_manifest(&repo, &tag).await.unwrap();
    assert_eq!((fake.token_requests(), fake.unauthorized()), (3, 2));
}

#[tokio::test]
async fn credentials_go_to_the_realm_and_wrong_ones_are_unauthorized() {
    let fake = Fake::start().await;
    seed(&fake, "private/app", "v1", 100);
    *fake.state.realm_credentials.lock().unwrap() = Some(("bob".into(), "s3cret-pass".into()));
    fake.state.oauth_style.store(true, Ordering::SeqCst);
    let (repo, tag) = (name("private/app"), reference("v1"));

    let good = client_with(&fake, |s| *s = s.clone().with_credentials("bob", "s3cret-pass"));
    good.get_manifest(&repo, &tag, &[]).await.unwrap();
    let auth = fake.state.token_authorization.lock().unwrap()[0].clone().unwrap();
    assert!(auth.starts_with("Basic "), "{auth}");
    assert!(fake.state.token_queries.lock().unwrap()[0].contains("account=bob"));

    let wrong = client_with(&fake, |s| *s = s.clone().with_credentials("bob", "wrong-password"));
    let e = wrong.get_manifest(&repo, &tag, &[]).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("fakehub") && text.contains(&fake.url), "{text}");
    assert!(!text.contains("wrong-password") && !text.contains("s3cret"), "{text}");
    assert!(text.contains("incorrect username or password"), "{text}");

    let anonymous = client(&fake);
    let e = anonymous.head_manifest(&repo, &tag).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e}");
}

#[tokio::test]
async fn rate_limits_server_errors_and_missing_content() {
    let fake = Fake::start().await;
    seed(&fake, "fault/ratelimit", "v1", 10);
    seed(&fake, "fault/broken", "v1", 10);
    seed(&fake, "app/real", "v1", 10);
    let c = client(&fake);

    let e = c.get_manifest(&name("fault/ratelimit"), &reference("v1"), &[]).await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::TooManyRequests { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{e}"
    );
    assert!(e.is_transient() && e.to_string().contains("retry after 7 s"), "{e}");

    let e = c.head_manifest(&name("fault/broken"), &reference("v1")).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable { status: Some(500), .. }), "{e}");
    let e = c.get_manifest(&name("fault/broken"), &reference("v1"), &[]).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("\"fakehub\"") && text.contains(&fake.url) && text.contains("database is on fire"), "{text}");

    for e in [
        c.get_manifest(&name("app/real"), &reference("nope"), &[]).await.unwrap_err(),
        c.head_manifest(&name("app/real"), &reference("nope")).await.unwrap_err(),
        c.list_tags(&name("app/missing")).await.unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
    let e = c.get_blob(&name("app/real"), &Digest::sha256_of(b"missing")).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // A valid token that does not grant the repository (how Docker Hub
    // answers for a private or missing one): no new token for each try.
    let before = fake.token_requests();
    for _ in 0..3 {
        let e = c.head_manifest(&name("fault/forbidden"), &reference("v1")).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e}");
    }
    assert_eq!(fake.token_requests(), before + 1);
}

#[tokio::test]
async fn timeouts_stalls_and_unreachable_upstreams() {
    let fake = Fake::start().await;
    seed(&fake, "fault/slowheaders", "v1", 10);
    seed(&fake, "fault/slow", "v1", 10);
    let (_, _, layer) = seed(&fake, "fault/slowblob", "v1", 256 * 1024);
    let c = client_with(&fake, |s| {
        s.header_timeout = Duration::from_millis(400);
        s.idle_timeout = Duration::from_millis(400);
    });
    let started = Instant::now();
    let e = c.head_manifest(&name("fault/slowheaders"), &reference("v1")).await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::Unavailable { status: None, .. }) && e.to_string().contains("no response"),
        "{e}"
    );
    let e = c.get_manifest(&name("fault/slow"), &reference("v1"), &[]).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable { .. }) && e.to_string().contains("stalled"), "{e}");
    let s = c.get_blob(&name("fault/slowblob"), &Digest::sha256_of(&layer)).await.unwrap();
    let (_, chunks, err) = drain(s).await;
    let e = err.expect("a stalled blob must end in an error");
    assert!(chunks > 0 && e.to_string().contains("stalled"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // A consumer slower than the idle timeout is not the upstream stalling:
    // the clock runs only while the consumer waits for the upstream.
    let (_, _, layer) = seed(&fake, "fault/pause", "v1", 64 * 1024);
    let mut s = c.get_blob(&name("fault/pause"), &Digest::sha256_of(&layer)).await.unwrap();
    let first = futures_util::StreamExt::next(&mut s).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, _, err) = drain(s).await;
    assert!(err.is_none() && !first.is_empty(), "{err:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = UpstreamClient::new(UpstreamSettings::new("down", &url)).unwrap();
    let e = down.head_manifest(&name("a/b"), &reference("v1")).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable { status: None, .. }) && e.is_transient(), "{e}");
    assert!(e.to_string().contains("cannot connect") && e.to_string().contains(&url), "{e}");
}

#[tokio::test]
async fn bad_answers_are_refused() {
    let fake = Fake::start().await;
    let c = client(&fake);
    let invalid = |e: &UpstreamError, needle: &str| {
        assert!(matches!(e, UpstreamError::Invalid { .. }) && e.to_string().contains(needle), "{e}");
    };
    // A Docker-Content-Digest that disagrees with the bytes.
    seed(&fake, "fault/liar", "v1", 10);
    let e = c.get_manifest(&name("fault/liar"), &reference("v1"), &[]).await.unwrap_err();
    invalid(&e, "Docker-Content-Digest");
    // By-digest bytes that hash to something else.
    let (digest, _, _) = seed(&fake, "fault/swapped", "v1", 10);
    let e = c.get_manifest(&name("fault/swapped"), &berth_oci::Reference::Digest(digest), &[]).await.unwrap_err();
    invalid(&e, "hash to");
    // Over 4 MiB, with Content-Length and without.
    fake.add_manifest("fault/huge", Some("v1"), mt::OCI_MANIFEST, b"{}");
    fake.add_manifest("fault/huge-chunked", Some("v1"), mt::OCI_MANIFEST, b"{}");
    let e = c.get_manifest(&name("fault/huge"), &reference("v1"), &[]).await.unwrap_err();
    invalid(&e, "over the limit");
    let e = c.get_manifest(&name("fault/huge-chunked"), &reference("v1"), &[]).await.unwrap_err();
    invalid(&e, "over the limit");
    // Blob bytes that do not match their digest, and a length that does not match the descriptor.
    let (_, _, layer) = seed(&fake, "fault/wrongbytes", "v1", 100_000);
    let s = c.get_blob(&name("fault/wrongbytes"), &Digest::sha256_of(&layer)).await.unwrap();
    let (_, _, err) = drain(s).await;
    invalid(&err.expect("wrong bytes must end in an error"), "hash to");
    let (_, _, layer) = seed(&fake, "app/ok", "v1", 1000);
    let s = c.get_blob(&name("app/ok"), &Digest::sha256_of(&layer)).await.unwrap();
    invalid(&s.expect_size(999).unwrap_err(), "Content-Length 1000");
    // A redirect loop, and a challenge that cannot be parsed.
    let e = c.get_blob(&name("fault/loop"), &Digest::sha256_of(b"x")).await.unwrap_err();
    invalid(&e, "redirects");
    let e = c.head_manifest(&name("fault/badchallenge"), &reference("v1")).await.unwrap_err();
    invalid(&e, "WWW-Authenticate");
}

#[tokio::test]
async fn head_without_digest_falls_back_to_get() {
    let fake = Fake::start().await;
    let (digest, bytes, _) = seed(&fake, "fault/nodigest", "v1", 10);
    let c = client(&fake);
    let head = c.head_manifest(&name("fault/nodigest"), &reference("v1")).await.unwrap();
    assert_eq!((head.digest, head.size), (digest, bytes.len() as u64));
    assert_eq!(fake.requests_matching("GET /v2/fault/nodigest/manifests/v1"), 1);
}

#[tokio::test]
async fn pagination_and_referrers() {
    let fake = Fake::start().await;
    let (subject, _, _) = seed(&fake, "pag/app", "t1", 10);
    for t in ["t2", "t3", "t4", "t5"] {
        seed(&fake, "pag/app", t, 10);
    }
    seed(&fake, "pag/other", "v1", 10);
    seed(&fake, "pag/third", "v1", 10);
    let c = client_with(&fake, |s| s.page_size = Some(2));
    let tags = c.list_tags(&name("pag/app")).await.unwrap();
    let tags: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(fake.requests_matching("/v2/pag/app/tags/list?last="), 2, "three pages of two");
    let repos = c.catalog().await.unwrap();
    let repos: Vec<&str> = repos.iter().map(|r| r.as_str()).collect();
    assert_eq!(repos, ["pag/app", "pag/other", "pag/third"]);
    assert_eq!(fake.token_queries_matching("registry%3Acatalog%3A*"), 1);

    let sig = serde_json::json!({
        "mediaType": mt::OCI_MANIFEST, "digest": Digest::sha256_of(b"sig"), "size": 3,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
    });
    fake.add_referrer(&subject, sig);
    fake.add_referrer(&subject, serde_json::json!({"mediaType": "x", "digest": "not-a-digest", "size": 1}));
    let refs = c.referrers(&name("pag/app"), &subject).await.unwrap().expect("supported");
    assert_eq!(refs.len(), 1, "the malformed entry is skipped");
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/vnd.dev.cosign.artifact.sig.v1+json"));
    assert_eq!(c.referrers(&name("pag/app"), &Digest::sha256_of(b"none")).await.unwrap(), Some(vec![]));
    fake.state.referrers_api.store(false, Ordering::SeqCst);
    assert_eq!(c.referrers(&name("pag/app"), &subject).await.unwrap(), None);
}

#[tokio::test]
async fn https_with_a_private_ca_and_no_downgrade() {
    use axum::http::{StatusCode, header};
    let manifest = image_manifest(mt::OCI_MANIFEST, b"{}", &[]);
    let digest = Digest::sha256_of(&manifest);
    let plain = Fake::start().await;
    let downgrade = format!("{}/blob/x", plain.storage_url);
    let (m, d) = (manifest.clone(), digest.to_string());
    let router = axum::Router::new()
        .route(
            "/v2/tls/app/manifests/v1",
            axum::routing::get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, mt::OCI_MANIFEST.to_owned()),
                        (header::HeaderName::from_static("docker-content-digest"), d),
                    ],
                    m,
                )
            }),
        )
        .fallback(move || async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, downgrade)]) });
    let server = common::tls::serve(router).await;

    let trusting = UpstreamClient::new(UpstreamSettings {
        ca_certificates_pem: Some(server.cert_pem.clone()),
        ..UpstreamSettings::new("tls", &server.url)
    })
    .unwrap();
    let got = trusting.get_manifest(&name("tls/app"), &reference("v1"), &[]).await.unwrap();
    assert_eq!(got.digest, digest);
    let e = trusting.get_blob(&name("tls/app"), &Digest::sha256_of(b"x")).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Invalid { .. }) && e.to_string().contains("redirect from HTTPS"), "{e}");
    assert_eq!(plain.state.storage_requests.load(Ordering::SeqCst), 0);

    let untrusting = UpstreamClient::new(UpstreamSettings::new("tls", &server.url)).unwrap();
    let e = untrusting.get_manifest(&name("tls/app"), &reference("v1"), &[]).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable { status: None, .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}
