//! Scrub against the real server, on whichever backends
//! `BERTH_TEST_BACKENDS` selects (on Postgres + S3 the blobs are read back
//! from the S3 server): a blob with one byte flipped and a blob deleted
//! from storage are both named with the tags that reach them; the flipped
//! one is refused to pulls (with a message naming the damage) until a push
//! uploads it again; a clean registry scrubs clean; a glob and a rate limit
//! are honoured.

mod common;

use std::time::{Duration, Instant};

use berth_blob::ByteStream;
use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_registry::scrub::{Damage, Object, ScrubOptions, ScrubReport, no_progress};
use berth_testkit::TestServer;
use berth_testkit::fixtures::{blob, image_manifest};
use bytes::Bytes;
use common::*;
use reqwest::Method;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn stream(data: &[u8]) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(data))]))
}

struct Pushed {
    layers: Vec<Vec<u8>>,
}

/// Pushes an image (a config and `layers`) through the service, tagged `tags`.
async fn push(server: &TestServer, repo: &str, tags: &[&str], seed: u64, layers: &[usize]) -> Pushed {
    let r = RepositoryName::parse(repo).unwrap();
    let config = blob(seed, 200);
    let layers: Vec<Vec<u8>> = layers.iter().enumerate().map(|(i, len)| blob(seed * 100 + i as u64, *len)).collect();
    for data in std::iter::once(&config).chain(&layers) {
        server.registry.put_blob(&r, &Digest::sha256_of(data), stream(data), None).await.unwrap();
    }
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let manifest = image_manifest(&config, &refs);
    for tag in tags {
        let reference = Reference::Tag(Tag::parse(tag).unwrap());
        server.registry.put_manifest(&r, &reference, manifest.clone(), Some(OCI_MANIFEST), vec![], None).await.unwrap();
    }
    Pushed { layers }
}

/// Replaces the stored bytes of `digest` with `bytes`, behind the
/// registry's back (as a rotting disk would), on any blob store.
async fn overwrite_stored(server: &TestServer, digest: &Digest, bytes: &[u8]) {
    let store = berth::backends::open_blobs(&server.config).await.unwrap();
    store.delete(digest).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let cursor = store.upload_start(&id).await.unwrap();
    let (cursor, _) =
        store.upload_append(&id, &cursor, stream(bytes), Some(digest.algorithm().hasher())).await.unwrap();
    store.upload_commit(&id, &cursor, digest).await.unwrap();
}

async fn delete_stored(server: &TestServer, digest: &Digest) {
    let store = berth::backends::open_blobs(&server.config).await.unwrap();
    store.delete(digest).await.unwrap();
}

async fn scrub(server: &TestServer, options: &ScrubOptions) -> ScrubReport {
    server.maintenance.scrub(options, None, &no_progress).await.expect("scrub runs")
}

async fn get_blob(server: &TestServer, repo: &str, digest: &Digest, method: Method) -> Resp {
    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
    send_with(&client(None), method, &url, &Cred::Anon, &[], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_names_a_flipped_and_a_deleted_blob_and_refuses_the_flipped_one() {
    let server = TestServer::start().await;
    let app = push(&server, "acme/app", &["1.0", "latest"], 1, &[3000, 5000]).await;
    let other = push(&server, "acme/other", &["v2"], 2, &[4000]).await;
    let _clean = push(&server, "bob/tool", &["latest"], 3, &[1000]).await;
    let flipped = Digest::sha256_of(&app.layers[0]);
    let deleted = Digest::sha256_of(&other.layers[0]);
    let mut bad = app.layers[0].clone();
    bad[1234] ^= 0x01;
    overwrite_stored(&server, &flipped, &bad).await;
    delete_stored(&server, &deleted).await;

    let report = scrub(&server, &ScrubOptions::default()).await;
    assert_eq!(report.problems.len(), 2, "{report:#?}");
    assert_eq!(report.repositories, 3);
    assert_eq!(report.blobs.count, 7, "3 configs and 4 layers");
    assert_eq!(report.manifests.count, 3);
    let p = report.problems.iter().find(|p| p.digest == flipped).expect("the flipped blob is named");
    assert_eq!(p.object, Object::Blob);
    assert_eq!(p.damage, Damage::DigestMismatch { computed: Digest::sha256_of(&bad) });
    let reach = &p.reach[&RepositoryName::parse("acme/app").unwrap()];
    assert_eq!(reach.tags, ["1.0", "latest"]);
    assert_eq!(p.reach.len(), 1, "{:?}", p.reach);
    assert!(p.quarantined.as_deref().is_some_and(|q| q.contains("quarantine")), "{:?}", p.quarantined);
    let p = report.problems.iter().find(|p| p.digest == deleted).expect("the deleted blob is named");
    assert_eq!(p.damage, Damage::Missing);
    assert_eq!(p.reach[&RepositoryName::parse("acme/other").unwrap()].tags, ["v2"]);
    let m = berth_metrics::metrics();
    assert_eq!(m.scrub_problems.get(), 2);
    assert!(m.scrub_bytes_checked.get() >= report.bytes_checked());

    // The flipped blob is refused, with the damage in the message; its
    // neighbours are served.
    let r = get_blob(&server, "acme/app", &flipped, Method::GET).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
    assert!(r.text().contains("damaged") && r.text().contains("digest mismatch"), "{}", r.text());
    assert_eq!(get_blob(&server, "acme/app", &flipped, Method::HEAD).await.status, 404);
    let fine = get_blob(&server, "acme/app", &Digest::sha256_of(&app.layers[1]), Method::GET).await;
    assert_eq!(fine.status, 200);

    // Pushing the layer again (what `docker push` does after its HEAD got
    // 404) repairs it.
    let url = server.url(&format!("/v2/acme/app/blobs/uploads/?digest={flipped}"));
    let r = send_with(&client(None), Method::POST, &url, &Cred::Anon, &[], Some(app.layers[0].clone())).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = get_blob(&server, "acme/app", &flipped, Method::GET).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, app.layers[0], "the pushed bytes, not the damaged ones");

    // The next scrub still names the missing one (not repaired), nothing else.
    let report = scrub(&server, &ScrubOptions::default()).await;
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    assert!(matches!(report.problems[0].damage, Damage::StillDamaged { .. }), "{report:#?}");
    // Once pushed again too, the registry scrubs clean.
    let url = server.url(&format!("/v2/acme/other/blobs/uploads/?digest={deleted}"));
    let r = send_with(&client(None), Method::POST, &url, &Cred::Anon, &[], Some(other.layers[0].clone())).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let report = scrub(&server, &ScrubOptions::default()).await;
    assert!(report.problems.is_empty(), "{report:#?}");
    assert_eq!(get_blob(&server, "acme/other", &deleted, Method::GET).await.status, 200);
    server.stop().await;
}

/// On Postgres + S3 this is the clean S3 run: every blob is read back from
/// the S3 server (one over 5 MiB, so several reads of a multipart object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_registry_scrubs_clean() {
    let server = TestServer::start().await;
    push(&server, "acme/app", &["1.0"], 10, &[6 * 1024 * 1024 + 17, 10]).await;
    push(&server, "acme/app", &["2.0"], 11, &[20_000]).await;
    push(&server, "bob/tool", &["latest"], 12, &[1]).await;
    let report = scrub(&server, &ScrubOptions::default()).await;
    assert!(report.problems.is_empty(), "{report:#?}");
    assert!(report.repaired.is_empty());
    assert_eq!(report.blobs.count, 7);
    assert_eq!(report.blobs.bytes, 3 * 200 + 6 * 1024 * 1024 + 17 + 10 + 20_000 + 1);
    assert_eq!(report.manifests.count, 3);
    let unreferenced = report.unreferenced.expect("counted over the whole registry");
    assert_eq!(unreferenced.count, 0, "{report:#?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_limits_the_scrub_and_a_rate_slows_it() {
    let server = TestServer::start().await;
    let acme = push(&server, "acme/app", &["1.0"], 20, &[100_000]).await;
    push(&server, "bob/tool", &["1.0"], 21, &[100_000]).await;
    // Damage in bob's repository is not acme's scrub's business.
    delete_stored(&server, &Digest::sha256_of(&blob(21, 200))).await;
    let only_acme = ScrubOptions { repositories: Some("acme/*".into()), rate: None };
    let report = scrub(&server, &only_acme).await;
    assert_eq!((report.repositories, report.blobs.count, report.manifests.count), (1, 2, 1), "{report:#?}");
    assert!(report.problems.is_empty(), "{report:#?}");
    assert_eq!(report.unreferenced, None, "not counted for a part of the registry");

    // 100,200 blob bytes at 200 kB/s: about half a second at least.
    let slow = ScrubOptions { repositories: Some("acme/*".into()), rate: Some(200_000) };
    let started = Instant::now();
    let report = scrub(&server, &slow).await;
    assert_eq!(report.blobs.bytes, 100_000 + 200);
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());
    drop(acme);

    let everything = scrub(&server, &ScrubOptions::default()).await;
    assert_eq!(everything.problems.len(), 1, "{everything:#?}");
    server.stop().await;
}
