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
fn an_empty_registry_backs_up_and_restores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, backup, restored) = (tmp.path().join("data"), tmp.path().join("backup"), tmp.path().join("restored"));
    let (code, _, err) = berth(&data, &["migrate"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth(&data, &["backup", "--to", backup.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 blobs"), "{out}");
    let (code, out, err) = berth(&restored, &["restore", "--from", backup.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(restored.join("berth.db").is_file());
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

// ---------------------------------------------------------------------------
// Postgres and S3: the README's procedure ("Backup and restore"), step by
// step, with the tools it names: garbage collection held ([gc] interval =
// "0s"), pg_dump while pushes go on, then the bucket copied object by object
// with the S3 API into a second bucket; pg_restore into a fresh database, a
// server on it and the copied bucket, every image pulled byte for byte.

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    Digest::sha256_of(format!("{nanos} {}", std::process::id()).as_bytes()).hex()[..12].to_owned()
}

fn s3_client(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    berth_testkit::install_crypto_provider();
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(std::env::var("BERTH_TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()))
        .with_secret_access_key(std::env::var("BERTH_TEST_S3_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("S3 client")
}

/// CreateBucket (moto takes it unsigned, as `.ci/services.sh` does).
async fn create_bucket(endpoint: &str, bucket: &str) {
    let r = client().put(format!("{endpoint}/{bucket}")).send().await.expect("create bucket");
    assert!(r.status().is_success(), "CreateBucket {bucket}: {}", r.status());
}

/// Copies every object under `prefix` from one bucket to the other (what
/// `aws s3 sync s3://from/prefix s3://to/prefix` does); returns the keys.
async fn copy_bucket(endpoint: &str, from: &str, to: &str, prefix: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let (src, dst) = (s3_client(endpoint, from), s3_client(endpoint, to));
    let listed: Vec<object_store::ObjectMeta> =
        src.list(Some(&object_store::path::Path::from(prefix))).try_collect().await.expect("list the bucket");
    for meta in &listed {
        let bytes = src.get(&meta.location).await.expect("get").bytes().await.expect("body");
        assert_eq!(bytes.len() as u64, meta.size, "{}", meta.location);
        dst.put(&meta.location, bytes.into()).await.expect("put");
    }
    listed.iter().map(|m| m.location.to_string()).collect()
}

fn run_tool(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn manifest_status(c: &reqwest::Client, base: &str, img: &Image) -> u16 {
    let url = format!("{base}/v2/{}/manifests/{}", img.repo, img.tag);
    c.get(url).header("accept", OCI_MANIFEST).send().await.expect("GET manifest").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_and_s3_procedure_from_the_readme() {
    use berth_testkit::backends::TempDatabase;
    // Said on stderr directly: libtest would hide an eprintln! of a passing test.
    let not_run = |why: &str| {
        let line = format!("NOT RUN: {why}; the Postgres + S3 backup procedure was not tested\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    };
    if !berth_testkit::backends::postgres_and_s3_configured() {
        return not_run("BERTH_TEST_POSTGRES_URL and BERTH_TEST_S3_ENDPOINT must both be set");
    }
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT").expect("checked");
    for tool in ["pg_dump", "pg_restore"] {
        if std::process::Command::new(tool).arg("--version").output().is_err() {
            return not_run(&format!("{tool} is not installed (apt-get install postgresql-client)"));
        }
    }
    let id = unique();
    let (live_bucket, copy_bucket_name) = (format!("berth-live-{id}"), format!("berth-copy-{id}"));
    create_bucket(&endpoint, &live_bucket).await;
    create_bucket(&endpoint, &copy_bucket_name).await;
    let prefix = "registry";
    let env_for = |url: &str, bucket: &str, gc_held: bool| -> Vec<(String, String)> {
        let mut env = vec![
            ("BERTH_DATABASE_URL", url.to_owned()),
            ("BERTH_STORAGE_BACKEND", "s3".into()),
            ("BERTH_STORAGE_S3_ENDPOINT", endpoint.clone()),
            ("BERTH_STORAGE_S3_BUCKET", bucket.to_owned()),
            ("BERTH_STORAGE_S3_PREFIX", prefix.into()),
            ("BERTH_STORAGE_S3_ACCESS_KEY_ID", "test".into()),
            ("BERTH_STORAGE_S3_SECRET_ACCESS_KEY", "test".into()),
            ("BERTH_STORAGE_S3_PATH_STYLE", "true".into()),
            ("BERTH_STORAGE_S3_ALLOW_HTTP", "true".into()),
        ];
        if gc_held {
            // Step 1 of the procedure: no scheduled collection.
            env.push(("BERTH_GC_INTERVAL", "0s".into()));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (live_db, live_url) = TempDatabase::create().await;
    let live_env = env_for(&live_url, &live_bucket, true);
    let live_env_ref: Vec<(&str, &str)> = live_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = BerthProcess::start(&tmp.path().join("live"), &live_env_ref);
    let c = client();
    let before: Vec<Image> = (0..6).map(|i| image(300 + i, &format!("acme/app{i}"), "v1")).collect();
    for img in &before {
        push(&c, &server.base, img).await.expect("push before the dump");
    }

    // Step 2, metadata first: pg_dump while pushers push.
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for p in 0..2u64 {
        let (base, stop) = (server.base.clone(), stop.clone());
        pushers.push(tokio::spawn(async move {
            let (c, mut pushed, mut k) = (client(), Vec::new(), 0);
            while !stop.load(Ordering::SeqCst) {
                let img = image(20_000 + p * 1_000 + k, &format!("busy/p{p}"), &format!("t{k}"));
                push(&c, &base, &img).await.expect("push during the dump");
                pushed.push(img);
                k += 1;
            }
            pushed
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dump = tmp.path().join("berth.dump");
    let dump_arg = dump.to_str().expect("utf-8").to_owned();
    let url = live_url.clone();
    tokio::task::spawn_blocking(move || run_tool("pg_dump", &["-Fc", "-f", &dump_arg, &url]))
        .await
        .expect("pg_dump task");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut during = Vec::new();
    for p in pushers {
        during.extend(p.await.expect("pusher"));
    }
    // Pushed after the dump: in the bucket copy, not in the dump.
    let late = image(400, "acme/late", "v1");
    push(&c, &server.base, &late).await.expect("push after the dump");

    // Step 3, blobs after: every object under the prefix, into the second bucket.
    let keys = copy_bucket(&endpoint, &live_bucket, &copy_bucket_name, prefix).await;
    let late_key = {
        let d = Digest::sha256_of(&late.blobs[1]);
        format!("{prefix}/blobs/sha256/{}/{}", &d.hex()[..2], d.hex())
    };
    assert!(keys.contains(&late_key), "the copy holds every object, the late image's too: {keys:?}");
    server.terminate();

    // Restore: pg_restore into a fresh database, a server on it and the copied bucket.
    let (restored_db, restored_url) = TempDatabase::create().await;
    let (dump_arg, url) = (dump.to_str().expect("utf-8").to_owned(), restored_url.clone());
    tokio::task::spawn_blocking(move || {
        run_tool("pg_restore", &["--no-owner", "--no-privileges", "--exit-on-error", "-d", &url, &dump_arg])
    })
    .await
    .expect("pg_restore task");
    let restored_env = env_for(&restored_url, &copy_bucket_name, false);
    let restored_ref: Vec<(&str, &str)> = restored_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = tmp.path().join("restored");
    let server = BerthProcess::start(&data, &restored_ref);
    for img in &before {
        assert_pulls(&c, &server.base, img).await;
    }
    // Images pushed while pg_dump ran: each is in the dump whole, or not at all.
    let mut kept = 0;
    for img in &during {
        match manifest_status(&c, &server.base, img).await {
            200 => {
                assert_pulls(&c, &server.base, img).await;
                kept += 1;
            }
            404 => {}
            other => panic!("{}:{} answered {other}", img.repo, img.tag),
        }
    }
    eprintln!("{} images pushed while pg_dump ran, {kept} of them in the dump", during.len());
    assert_eq!(manifest_status(&c, &server.base, &late).await, 404, "pushed after the dump");

    // The late image's blobs are orphans to the next collection, which
    // leaves every restored image whole.
    let (code, out, err) = berth(&data, &["gc", "--min-age", "0s"], &restored_ref);
    assert_eq!(code, 0, "gc on the restored registry: {out}\n{err}");
    eprintln!("gc after the restore: {out}");
    {
        use object_store::ObjectStoreExt;
        let copy = s3_client(&endpoint, &copy_bucket_name);
        let gone = copy.head(&object_store::path::Path::from(late_key.as_str())).await;
        assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "orphan collected: {gone:?}");
    }
    for img in &before {
        assert_pulls(&c, &server.base, img).await;
    }
    server.terminate();
    drop((live_db, restored_db));
}
