//! `berth scrub` beside a running server, and the server's own scrub
//! schedule (`[scrub] interval`): a byte flipped on disk is found, named
//! with the tags that reach it, quarantined and refused to pulls; the exit
//! status says whether anything was found.

mod common;

use std::time::{Duration, Instant};

use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_testkit::TestServer;
use berth_testkit::backends::{Database, Storage};
use berth_testkit::fixtures::{blob, image_manifest};
use common::berth_on;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes `repo:tag` (a config and one layer) through the service; returns the layer's digest.
async fn push(server: &TestServer, repo: &str, tag: &str, seed: u64) -> Digest {
    let r = RepositoryName::parse(repo).unwrap();
    let config = blob(seed, 100);
    let layer = blob(seed + 1000, 30_000);
    for data in [&config, &layer] {
        let body: berth_blob::ByteStream =
            Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(data))]));
        server.registry.put_blob(&r, &Digest::sha256_of(data), body, None).await.unwrap();
    }
    let manifest = image_manifest(&config, &[&layer]);
    let tag = Reference::Tag(Tag::parse(tag).unwrap());
    server.registry.put_manifest(&r, &tag, manifest, Some(OCI_MANIFEST), vec![], None).await.unwrap();
    Digest::sha256_of(&layer)
}

/// Flips one byte of a stored blob on disk.
fn flip_a_byte(server: &TestServer, digest: &Digest) {
    let path = server.config.storage.path.join(berth_blob::blob_relative_path(digest));
    let mut bytes = std::fs::read(&path).expect("the blob is on disk");
    bytes[100] ^= 0x20;
    std::fs::write(&path, bytes).expect("write it back");
}

async fn status_of(server: &TestServer, repo: &str, digest: &Digest) -> (u16, String) {
    berth_testkit::install_crypto_provider();
    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
    let r = reqwest::get(url).await.expect("GET");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_from_the_cli_names_the_damage_and_exits_4() {
    let server = TestServer::start_on(Database::Sqlite, Storage::Filesystem, |_| {}).await;
    let layer = push(&server, "acme/app", "1.0", 1).await;
    push(&server, "acme/app", "latest", 1).await;
    push(&server, "bob/tool", "v1", 2).await;

    let (code, out, err) = berth_on(&server, &["scrub"], &[]);
    assert_eq!(code, 0, "a clean registry: {out}\n{err}");
    assert!(out.contains("scrub checked 2 repositories: 4 blobs") && out.contains("no problems found"), "{out}");
    assert!(out.contains("unreferenced objects: 0"), "{out}");

    flip_a_byte(&server, &layer);
    let (code, out, err) = berth_on(&server, &["scrub"], &[]);
    assert_eq!(code, 4, "problems found: {out}\n{err}");
    assert!(out.contains("1 problem found"), "{out}");
    assert!(out.contains(&format!("{layer} (blob): digest mismatch")), "{out}");
    assert!(out.contains("acme/app: tags 1.0, latest"), "{out}");
    assert!(out.contains("damaged bytes moved to quarantine/sha256/"), "{out}");
    let quarantine = server.config.storage.path.join("quarantine/sha256");
    assert_eq!(std::fs::read_dir(&quarantine).expect("quarantine directory").count(), 1);

    // The running server refuses it from now on.
    let (status, body) = status_of(&server, "acme/app", &layer).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("damaged in storage"), "{body}");

    // A scrub of another namespace finds nothing; bad arguments are usage errors.
    let (code, out, _) = berth_on(&server, &["scrub", "--repository", "bob/*", "--rate", "50MB/s"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 repositories matching \"bob/*\"") && out.contains("no problems found"), "{out}");
    let (code, _, err) = berth_on(&server, &["scrub", "--rate", "fast"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a rate"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_scrubs_on_its_schedule() {
    let server = TestServer::start_on(Database::Sqlite, Storage::Filesystem, |c| {
        c.scrub.interval = Duration::from_millis(400);
    })
    .await;
    let layer = push(&server, "acme/app", "1.0", 7).await;
    assert_eq!(status_of(&server, "acme/app", &layer).await.0, 200);
    flip_a_byte(&server, &layer);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = status_of(&server, "acme/app", &layer).await;
        if status == 404 {
            assert!(body.contains("digest mismatch"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled scrub found the damage in 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}
