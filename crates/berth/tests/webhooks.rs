//! Webhook deliveries are queued in the database: one that cannot be
//! delivered before a restart is delivered after it, signed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use berth_oci::Digest;
use berth_testkit::fixtures::{blob, image_manifest};
use common::{BerthProcess, client};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[derive(Default)]
struct Receiver {
    accept: AtomicBool,
    attempts: Mutex<u32>,
    received: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    *r.attempts.lock().unwrap() += 1;
    if !r.accept.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.received.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_survives_a_restart() {
    let (url, receiver) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!("[[webhooks]]\nname = \"scanner\"\nurl = \"{url}\"\nsecret = \"hook-secret\"\nevents = [\"push\"]\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [("BERTH_CONFIG", config.to_str().unwrap())];
    let p = BerthProcess::start(&data, &env);

    // Push an image while the receiver is down.
    let c = client();
    let (cfg, layer) = (b"{}".to_vec(), blob(5, 1000));
    for b in [&cfg, &layer] {
        let r = c
            .post(p.url(&format!("/v2/hooks/app/blobs/uploads/?digest={}", Digest::sha256_of(b))))
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let manifest = image_manifest(&cfg, &[&layer]);
    let r = c
        .put(p.url("/v2/hooks/app/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    wait_for("a first, failed attempt", || *receiver.attempts.lock().unwrap() >= 1).await;

    // Restart; the receiver comes back meanwhile.
    assert_eq!(p.terminate(), Some(0));
    receiver.accept.store(true, Ordering::SeqCst);
    let _p = BerthProcess::start(&data, &env);
    wait_for("the delivery after the restart", || !receiver.received.lock().unwrap().is_empty()).await;

    let (headers, body) = receiver.received.lock().unwrap()[0].clone();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"hook-secret").unwrap();
    mac.update(&body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(headers["x-berth-signature-256"].to_str().unwrap(), format!("sha256={expected}"));
    assert_eq!(headers["x-berth-event"].to_str().unwrap(), "push");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["repository"], "hooks/app");
    assert_eq!(event["digest"], Digest::sha256_of(&manifest).to_string());
    assert_eq!(event["media_type"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(event["size"], manifest.len());
    assert_eq!(event["tags"], serde_json::json!(["v1"]));
    assert_eq!(headers["x-berth-delivery"].to_str().unwrap(), event["id"].as_str().unwrap());
    // Delivered once, not again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), 1);
}
