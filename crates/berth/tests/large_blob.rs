//! A 4 GiB blob pushes and pulls back intact while the server's RSS stays
//! flat: nothing buffers a blob in memory. Size override for quick local
//! runs: BERTH_TEST_LARGE_BLOB_MIB (default 4096).
//!
//! The two cases run one after the other (they would otherwise need twice
//! the disk at once), check up front that the disk can hold what they
//! write, and remove what they stored when they pass.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_blob::s3::MIN_PART_SIZE;
use berth_blob::{BlobStore, S3BlobStore, S3Settings};
use berth_oci::Digest;
use bytes::Bytes;
use common::{BerthProcess, client, hex_encode};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1 << 20;
/// Peak server RSS allowed while moving the blob.
const RSS_LIMIT_KIB: u64 = 100 * 1024;

/// One large blob at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn size_mib() -> u64 {
    std::env::var("BERTH_TEST_LARGE_BLOB_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(4096)
}

/// Fails with a plain statement when the filesystem holding `path` has less
/// than `need_mib` free, rather than letting the server run out mid-upload.
fn require_free_space(path: &std::path::Path, need_mib: u64, what: &str) {
    let out = std::process::Command::new("df").arg("-Pm").arg(path).output().expect("run df");
    let text = String::from_utf8_lossy(&out.stdout);
    let free_mib: u64 =
        text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(
        free_mib >= need_mib,
        "{what} needs {need_mib} MiB free on the filesystem of {}, which has {free_mib} MiB: free disk space (or set BERTH_TEST_LARGE_BLOB_MIB for a local run)",
        path.display()
    );
}

/// Samples the server's RSS every 50 ms until stopped; returns the peak.
fn watch_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(common::rss_kib(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gib_blob_round_trip_with_flat_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    require_free_space(dir.path(), size_mib() + 512, "the large-blob test on the filesystem");
    round_trip(dir.path(), &[]).await;
}

/// The same through S3 (multipart upload, server-side copy, ranged reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gib_blob_round_trip_on_s3_with_flat_memory() {
    let Ok(endpoint) = std::env::var("BERTH_TEST_S3_ENDPOINT") else {
        eprintln!("NOT RUN: BERTH_TEST_S3_ENDPOINT is not set; large blob on S3 skipped");
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    // The local S3 server (moto, spooling to the system temp dir) holds the
    // parts or the completed upload next to the committed copy: about twice
    // the blob at the peak, measured.
    require_free_space(&std::env::temp_dir(), 2 * size_mib() + 1024, "the large-blob test on S3");
    let bucket = std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "berth-test".into());
    let prefix = format!("large-blob/{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let digest = round_trip(
        dir.path(),
        &[
            ("BERTH_STORAGE_BACKEND", "s3"),
            ("BERTH_STORAGE_S3_ENDPOINT", &endpoint),
            ("BERTH_STORAGE_S3_BUCKET", &bucket),
            ("BERTH_STORAGE_S3_PREFIX", &prefix),
            ("BERTH_STORAGE_S3_ACCESS_KEY_ID", "test"),
            ("BERTH_STORAGE_S3_SECRET_ACCESS_KEY", "test"),
            ("BERTH_STORAGE_S3_PATH_STYLE", "true"),
            ("BERTH_STORAGE_S3_ALLOW_HTTP", "true"),
        ],
    )
    .await;
    // Free the server's disk for the rest of the suite.
    let store = S3BlobStore::open(&S3Settings {
        bucket,
        prefix,
        region: "us-east-1".into(),
        endpoint,
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        path_style: true,
        allow_http: true,
        part_size: MIN_PART_SIZE,
        redirect: None,
        read_timeout: Duration::from_secs(120),
    })
    .unwrap();
    store.delete(&digest.parse::<Digest>().unwrap()).await.unwrap();
    let leftovers = store.list().await.unwrap();
    assert!(leftovers.is_empty(), "blobs left under the test prefix: {leftovers:?}");
}

/// Pushes and pulls the blob; returns its digest.
async fn round_trip(data_dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let total_mib = size_mib();
    let total = total_mib * MIB;
    let p = BerthProcess::start(data_dir, env);
    let idle_kib = p.rss_kib();
    let c = client();
    let repo = "big/blob";

    // 64 distinct 1 MiB chunks, cycled: varied content without generating 4 GiB.
    let chunks: Arc<Vec<Bytes>> =
        Arc::new((0..64).map(|i| Bytes::from(berth_testkit::fixtures::blob(i + 1, MIB as usize))).collect());
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let body = {
        let (chunks, hasher, sent) = (chunks.clone(), hasher.clone(), sent.clone());
        futures_util::stream::iter(0..total_mib).map(move |i| {
            let chunk = chunks[(i as usize * 7) % chunks.len()].clone();
            hasher.lock().unwrap().update(&chunk);
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(chunk)
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(p.pid(), stop.clone());
    let started = Instant::now();
    let r = c.post(p.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = p.url(r.headers()["location"].to_str().unwrap());
    let r = c.patch(&loc).body(reqwest::Body::wrap_stream(body)).send().await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    assert_eq!(r.headers()["range"].to_str().unwrap(), format!("0-{}", total - 1));
    let digest = format!("sha256:{}", hex_encode(&hasher.lock().unwrap().clone().finalize()));
    let r = c.put(format!("{loc}?digest={digest}")).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let push_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let r = c.get(p.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), total.to_string());
    let mut pulled = Sha256::new();
    let mut received = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        pulled.update(&chunk);
    }
    let pull_secs = started.elapsed().as_secs_f64();
    assert_eq!(received, total);
    assert_eq!(format!("sha256:{}", hex_encode(&pulled.finalize())), digest, "pulled bytes differ");

    // A range near the end (offsets past 4 GiB - 1 MiB).
    let r = c
        .get(p.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("range", format!("bytes={}-", total - MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let tail = r.bytes().await.unwrap();
    assert_eq!(tail.as_ref(), chunks[((total_mib - 1) as usize * 7) % chunks.len()].as_ref());

    stop.store(true, Ordering::Relaxed);
    let peak_kib = watcher.join().unwrap();
    let mib_s = |secs: f64| total as f64 / MIB as f64 / secs;
    eprintln!(
        "{total_mib} MiB: push {push_secs:.1}s ({:.0} MiB/s), pull {pull_secs:.1}s ({:.0} MiB/s); server RSS idle {} KiB, peak {} KiB",
        mib_s(push_secs),
        mib_s(pull_secs),
        idle_kib,
        peak_kib
    );
    assert!(peak_kib < RSS_LIMIT_KIB, "server RSS peaked at {peak_kib} KiB (limit {RSS_LIMIT_KIB} KiB)");
    digest
}
