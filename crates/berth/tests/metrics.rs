//! The scraped `/metrics` output carries every metric operators are told about.

mod common;

use berth_oci::Digest;
use berth_testkit::fixtures::{blob, image_manifest};
use common::{BerthProcess, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_contains_the_documented_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let p = BerthProcess::start(dir.path(), &[]);
    let c = client();
    // Some traffic: a push, a pull, a failed login.
    let (cfg, layer) = (b"{}".to_vec(), blob(9, 4096));
    for b in [&cfg, &layer] {
        let url = p.url(&format!("/v2/m/app/blobs/uploads/?digest={}", Digest::sha256_of(b)));
        assert_eq!(c.post(url).body(b.clone()).send().await.unwrap().status(), 201);
    }
    let manifest = image_manifest(&cfg, &[&layer]);
    let r = c
        .put(p.url("/v2/m/app/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c.get(p.url(&format!("/v2/m/app/blobs/{}", Digest::sha256_of(&layer)))).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().len(), 4096);
    let _ = c.post(p.url("/v2/m/app/blobs/uploads/")).send().await.unwrap();
    // A repository named `m/blobs`: the router serves a manifest, and the metrics say so.
    let r = c.head(p.url("/v2/m/blobs/manifests/v1")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Prometheus asks for OpenMetrics and gets it, typed (`berth_http_requests`
    // is a counter family whose samples are `..._total`).
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let r = c.get(p.url("/metrics")).header("accept", prometheus_accept).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let openmetrics = r.text().await.unwrap();
    assert!(openmetrics.contains("# TYPE berth_http_requests counter\n"), "{openmetrics}");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    // A scraper that accepts only the classic format (or says nothing) gets
    // it: the type is declared on the sample name, and no `# EOF`.
    let r = c.get(p.url("/metrics")).header("accept", "text/plain;version=0.0.4").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE berth_http_requests_total counter\n"), "{text}");
    assert!(text.contains("# TYPE berth_http_request_duration_seconds histogram\n"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    for name in [
        "berth_http_requests_total",
        "berth_http_request_duration_seconds_bucket",
        "berth_blob_bytes_pushed_total",
        "berth_blob_bytes_pulled_total",
        "berth_blobs_stored",
        "berth_manifests_stored",
        "berth_repositories",
        "berth_storage_bytes",
        "berth_uploads_in_flight",
        "berth_auth_failures_total",
        "berth_gc_runs_total",
        "berth_gc_bytes_freed_total",
        "berth_gc_duration_seconds_bucket",
        "berth_retention_deletions_total",
        "berth_uploads_expired_total",
    ] {
        assert!(text.contains(name), "{name} is missing from /metrics:\n{text}");
    }
    assert!(text.contains(r#"route="manifest",method="PUT",status="201""#), "{text}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample for {name}"))
    };
    assert!(value("berth_blob_bytes_pushed_total") >= 4098.0);
    assert!(value("berth_blob_bytes_pulled_total") >= 4096.0);
    assert!(text.contains(r#"route="manifest",method="HEAD",status="404""#), "{text}");
    assert!(!text.contains(r#"route="blob",method="HEAD""#), "{text}");
    // The store gauges are read as the scrape asks: exactly what was pushed.
    assert_eq!(value("berth_repositories"), 1.0, "{text}");
    assert_eq!(value("berth_manifests_stored"), 1.0, "{text}");
    assert_eq!(value("berth_blobs_stored"), 2.0, "{text}");
    assert_eq!(value("berth_storage_bytes"), 4098.0, "{text}");
    assert_eq!(value("berth_uploads_in_flight"), 1.0, "{text}");
}
