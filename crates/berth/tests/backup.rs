//! `berth backup` and `berth restore` with the real binary (SQLite and
//! filesystem storage), and the permissions of the files Berth keeps.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_oci::Digest;
use berth_testkit::fixtures::{blob, image_manifest};
use common::{BerthProcess, berth, client};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone)]
struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

/// A config and two layers, all unique to `seed`.
fn image(seed: u64, repo: &str, tag: &str) -> Image {
    let blobs = vec![blob(seed * 10, 200), blob(seed * 10 + 1, 40_000), blob(seed * 10 + 2, 3_000)];
    let manifest = image_manifest(&blobs[0], &[&blobs[1], &blobs[2]]);
    Image { repo: repo.to_owned(), tag: tag.to_owned(), manifest, blobs }
}

async fn push(c: &reqwest::Client, base: &str, img: &Image) -> Result<(), String> {
    for b in &img.blobs {
        let url = format!("{base}/v2/{}/blobs/uploads/?digest={}", img.repo, Digest::sha256_of(b));
        let r = c.post(url).body(b.clone()).send().await.map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("blob upload: {}", r.status()));
        }
    }
    let r = c
        .put(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("manifest push: {}", r.status()));
    }
    Ok(())
}

async fn assert_pulls(c: &reqwest::Client, base: &str, img: &Image) {
    let r = c
        .get(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("pull manifest");
    assert_eq!(r.status(), 200, "{}:{}", img.repo, img.tag);
    assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice(), "{}:{}", img.repo, img.tag);
    for b in &img.blobs {
        let digest = Digest::sha256_of(b);
        let r = c.get(format!("{base}/v2/{}/blobs/{digest}", img.repo)).send().await.expect("pull blob");
        assert_eq!(r.status(), 200, "{} in {}", digest, img.repo);
        assert_eq!(r.bytes().await.expect("body").as_ref(), b.as_slice(), "{digest} in {}", img.repo);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn manifest_of(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("backup.json")).expect("backup.json")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_installs_are_private_and_old_ones_are_tightened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let auth = [("BERTH_AUTH_ENABLED", "true")];
    let p = BerthProcess::start(&data, &auth);
    assert_eq!(mode(&data), 0o700, "data directory");
    for f in ["berth.db", "berth.db-wal", "berth.db-shm", "auth/jwt-ed25519.pem"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&data.join("auth")), 0o700, "auth directory");
    p.terminate();

    // An older install: world-readable database and key, open directory.
    let open = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    open(&data, 0o755);
    open(&data.join("berth.db"), 0o644);
    open(&data.join("auth/jwt-ed25519.pem"), 0o644);
    let p = BerthProcess::start(&data, &auth);
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("berth.db")), 0o600, "berth.db");
    assert_eq!(mode(&data.join("auth/jwt-ed25519.pem")), 0o600, "key");
    let logs = p.logs();
    let tightened = logs.iter().filter(|l| l.contains("tightened the permissions")).count();
    assert!(tightened >= 3, "one log line per change: {logs:#?}");
    p.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_every_image() {
    const PUSHERS: u64 = 8;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, backup, restored) = (tmp.path().join("data"), tmp.path().join("backup"), tmp.path().join("restored"));
    let server = BerthProcess::start(&data, &[]);
    let c = client();
    let before: Vec<Image> = (0..12).map(|i| image(i + 1, &format!("pre/app{i}"), "v1")).collect();
    for img in &before {
        push(&c, &server.base, img).await.expect("push before the backup");
    }

    // Load: pushers overwrite their tag again and again (each old image
    // becomes garbage), and `berth gc --min-age 0s` collects in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let (base, stop, pushed) = (server.base.clone(), stop.clone(), pushed.clone());
        pushers.push(tokio::spawn(async move {
            let c = client();
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let img = image(10_000 + p * 1_000 + k, &format!("load/p{p}"), "latest");
                // Pushes may meet a collection (a retryable 503); only the
                // images acknowledged before the backup are checked.
                if push(&c, &base, &img).await.is_ok() {
                    pushed.fetch_add(1, Ordering::SeqCst);
                }
                k += 1;
            }
        }));
    }
    let gc_runs = Arc::new(AtomicU64::new(0));
    let gc = {
        let (data, stop, gc_runs) = (data.clone(), stop.clone(), gc_runs.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (code, _, err) = berth(&data, &["gc", "--min-age", "0s"], &[]);
                assert_eq!(code, 0, "gc: {err}");
                gc_runs.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The token signing key goes with the backup (auth is off here: a stand-in).
    std::fs::create_dir_all(data.join("auth")).expect("auth dir");
    std::fs::write(data.join("auth/jwt-ed25519.pem"), b"stand-in key").expect("key");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, out, err) = {
        let (data, backup) = (data.clone(), backup.clone());
        tokio::task::spawn_blocking(move || {
            berth(&data, &["backup", "--to", backup.to_str().expect("utf-8")], &[("RUST_LOG", "info")])
        })
        .await
        .expect("backup task")
    };
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    assert!(out.contains("backup written"), "{out}");
    assert!(err.contains("holding the garbage collection lease"), "the log says GC is held: {err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for p in pushers {
        p.await.expect("pusher");
    }
    gc.join().expect("gc loop");
    eprintln!(
        "during the run: {} images pushed, {} gc runs",
        pushed.load(Ordering::SeqCst),
        gc_runs.load(Ordering::SeqCst)
    );
    eprintln!("backup: {out}\n{err}");
    assert!(pushed.load(Ordering::SeqCst) > 0, "the pushers pushed");
    assert!(gc_runs.load(Ordering::SeqCst) > 0, "gc ran");
    let manifest = manifest_of(&backup);
    assert!(manifest["counts"]["blobs"].as_u64().expect("count") >= 36, "{manifest}");
    assert!(manifest["schema_version"].as_i64().expect("schema") > 0, "{}", manifest["schema_version"]);
    server.terminate();

    let (code, out, err) = berth(&restored, &["restore", "--from", backup.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 0, "restore failed: {out}\n{err}");
    assert!(out.contains("every digest verified"), "{out}");
    assert_eq!(mode(&restored), 0o700);
    assert_eq!(mode(&restored.join("berth.db")), 0o600);
    assert_eq!(manifest["jwt_key"], true);
    assert_eq!(mode(&backup.join("auth/jwt-ed25519.pem")), 0o600);
    assert_eq!(std::fs::read(restored.join("auth/jwt-ed25519.pem")).expect("key restored"), b"stand-in key");
    assert_eq!(mode(&restored.join("auth/jwt-ed25519.pem")), 0o600);

    let server = BerthProcess::start(&restored, &[]);
    for img in &before {
        assert_pulls(&c, &server.base, img).await;
    }
    server.terminate();

    // A data directory that holds anything is refused.
    let (code, _, err) = berth(&restored, &["restore", "--from", backup.to_str().expect("utf-8")], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("is not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_copies_only_new_blobs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (tmp.path().join("data"), tmp.path().join("backup"));
    let to = backup.to_str().expect("utf-8");
    let server = BerthProcess::start(&data, &[]);
    let c = client();
    for i in 0..3 {
        push(&c, &server.base, &image(i + 1, "acme/app", &format!("v{i}"))).await.expect("push");
    }
    let (code, out, err) = berth(&data, &["backup", "--to", to], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let first = manifest_of(&backup);
    assert_eq!(first["counts"]["blobs"], 9, "{first}");
    assert_eq!(first["blobs_copied"], 9);
    assert_eq!(first["blobs_reused"], 0);
    assert!(out.contains("9 blobs copied"), "{out}");

    push(&c, &server.base, &image(50, "acme/app", "v9")).await.expect("push");
    let (code, out, err) = berth(&data, &["backup", "--to", to], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let second = manifest_of(&backup);
    assert_eq!(second["counts"]["blobs"], 12, "{second}");
    assert_eq!(second["blobs_copied"], 3, "only the new image's blobs");
    assert_eq!(second["blobs_reused"], 9);
    assert!(out.contains("3 blobs copied") && out.contains("9 already in the backup"), "{out}");
    assert_eq!(second["blobs"].as_array().expect("digests").len(), 12);
    server.terminate();
}

#[test]
fn backup_refuses_postgres_and_s3_with_a_pointer_to_the_readme() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let to = tmp.path().join("backup");
    let env = [("BERTH_DATABASE_URL", "postgres://berth@127.0.0.1:1/berth")];
    let (code, _, err) = berth(tmp.path(), &["backup", "--to", to.to_str().expect("utf-8")], &env);
    assert_ne!(code, 0);
    assert!(err.contains("Postgres") && err.contains("README.md"), "{err}");
    assert!(!to.exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_verifies_every_blob_digest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, backup, restored) = (tmp.path().join("data"), tmp.path().join("backup"), tmp.path().join("restored"));
    let server = BerthProcess::start(&data, &[]);
    let img = image(7, "acme/app", "v1");
    push(&client(), &server.base, &img).await.expect("push");
    let (code, out, err) = berth(&data, &["backup", "--to", backup.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    server.terminate();

    // Rot one byte of a layer in the backup (a new file: the backup's copy
    // may be a hard link to the live one).
    let digest = Digest::sha256_of(&img.blobs[1]);
    let file = backup.join("blobs/sha256").join(&digest.hex()[..2]).join(digest.hex());
    let mut bytes = std::fs::read(&file).expect("backup blob");
    bytes[100] ^= 1;
    std::fs::remove_file(&file).expect("unlink");
    std::fs::write(&file, &bytes).expect("write");

    let (code, _, err) = berth(&restored, &["restore", "--from", backup.to_str().expect("utf-8")], &[]);
    assert_ne!(code, 0, "a corrupt blob must stop the restore");
    assert!(err.contains("corrupt") && err.contains(digest.as_str()), "{err}");
    assert!(!restored.join("berth.db").exists(), "no database without its blobs");
}
