//! Garbage collection against a live registry: the stress test the issue
//! asks for (collection in a loop against 20 concurrent pushers, losing
//! nothing), the server's schedule, and the `berth gc` / `berth retention`
//! commands.
//!
//! Every test runs on SQLite and on Postgres (`sqlite::<case>`,
//! `postgres::<case>`; the Postgres ones say NOT RUN without
//! BERTH_TEST_POSTGRES_URL), with filesystem storage; the stress test also
//! runs on Postgres + S3 when BERTH_TEST_S3_ENDPOINT is set too.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_registry::gc::{GcOptions, no_progress};
use berth_registry::maintenance::GC_LEASE;
use berth_testkit::backends::{Database, Storage, postgres_and_s3_configured};
use berth_testkit::fixtures::{blob, image_manifest};
use berth_testkit::{TestServer, on_both_databases};
use common::{berth_on, client};
use reqwest::StatusCode;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

on_both_databases!(
    workers = 4;
    gc_in_a_loop_against_20_pushers_loses_nothing,
    the_server_collects_garbage_on_its_schedule,
    gc_and_retention_commands_work_beside_the_server,
);

// --- the stress test ------------------------------------------------------------

const PUSHERS: usize = 20;
/// Layers shared by all pushers. Iteration `i` of every pusher uses layers
/// `i % POOL` and `(i + 5) % POOL`, and images are deleted two iterations
/// later, so each layer falls out of use for a few iterations and then
/// comes back: the collector deletes layers that pushers are re-pushing at
/// that very moment (with the HEAD-then-skip, mount and dedup-on-commit
/// paths), which is the race the blob reservations must win.
const POOL: u64 = 10;
/// The collector's grace period during the run: short, so that layers of
/// deleted images become garbage while other pushers are re-pushing them.
const STRESS_MIN_AGE: Duration = Duration::from_millis(300);

#[derive(Clone, Debug)]
struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

struct Stress {
    base: String,
    http: reqwest::Client,
    pool: Vec<Vec<u8>>,
    /// Pushed successfully and not deleted by the test: must stay pullable.
    kept: Mutex<HashMap<(String, String), Image>>,
    /// Never deleted: the readers pull these during the run.
    permanent: Mutex<Vec<Image>>,
    failed_pushes: AtomicU64,
    retries: AtomicU64,
    /// Why push attempts failed (status lines), for the summary.
    retry_reasons: Mutex<HashMap<String, u64>>,
    read_errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Stress {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http") { location.to_owned() } else { self.url(location) }
    }

    async fn has_blob(&self, repo: &str, digest: &Digest) -> bool {
        let r = self.http.head(self.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await;
        r.is_ok_and(|r| r.status() == StatusCode::OK)
    }

    /// Uploads one blob by one of the three paths the handlers offer.
    async fn upload(&self, repo: &str, data: &[u8], how: usize, neighbour: &str) -> Result<(), String> {
        let digest = Digest::sha256_of(data);
        let fail = |what: &str, r: reqwest::Response| format!("{what}: {}", r.status());
        match how % 3 {
            0 => {
                let r = self
                    .http
                    .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                    .body(data.to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != StatusCode::CREATED {
                    return Err(fail("monolithic upload", r));
                }
            }
            1 => {
                let r = self
                    .http
                    .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != StatusCode::ACCEPTED {
                    return Err(fail("start upload", r));
                }
                let location = self.absolute(r.headers()["location"].to_str().unwrap());
                let r = self
                    .http
                    .patch(&location)
                    .header("content-type", "application/octet-stream")
                    .body(data.to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != StatusCode::ACCEPTED {
                    return Err(fail("patch", r));
                }
                let location = self.absolute(r.headers()["location"].to_str().unwrap());
                let sep = if location.contains('?') { '&' } else { '?' };
                let r =
                    self.http.put(format!("{location}{sep}digest={digest}")).send().await.map_err(|e| e.to_string())?;
                if r.status() != StatusCode::CREATED {
                    return Err(fail("finish upload", r));
                }
            }
            _ => {
                let r = self
                    .http
                    .post(self.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={neighbour}")))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match r.status() {
                    StatusCode::CREATED => {}
                    StatusCode::ACCEPTED => {
                        // Nothing to mount: drop the session, upload instead.
                        let location = self.absolute(r.headers()["location"].to_str().unwrap());
                        let _ = self.http.delete(location).send().await;
                        return Box::pin(self.upload(repo, data, 0, neighbour)).await;
                    }
                    _ => return Err(fail("mount", r)),
                }
            }
        }
        Ok(())
    }

    /// Pushes an image as clients do: skip blobs the registry says it has.
    async fn push(&self, image: &Image, how: usize, neighbour: &str) -> Result<(), String> {
        for (i, data) in image.blobs.iter().enumerate() {
            if !self.has_blob(&image.repo, &Digest::sha256_of(data)).await {
                self.upload(&image.repo, data, how + i, neighbour).await?;
            }
        }
        let r = self
            .http
            .put(self.url(&format!("/v2/{}/manifests/{}", image.repo, image.tag)))
            .header("content-type", OCI_MANIFEST)
            .body(image.manifest.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != StatusCode::CREATED {
            return Err(format!("manifest: {} {}", r.status(), r.text().await.unwrap_or_default()));
        }
        Ok(())
    }

    /// Pulls the image by tag and checks every byte.
    async fn pull(&self, image: &Image) -> Result<(), String> {
        let r = self
            .http
            .get(self.url(&format!("/v2/{}/manifests/{}", image.repo, image.tag)))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != StatusCode::OK {
            return Err(format!("{}:{} manifest: {}", image.repo, image.tag, r.status()));
        }
        if r.bytes().await.map_err(|e| e.to_string())? != image.manifest {
            return Err(format!("{}:{} manifest changed", image.repo, image.tag));
        }
        for data in &image.blobs {
            let digest = Digest::sha256_of(data);
            let r = self
                .http
                .get(self.url(&format!("/v2/{}/blobs/{digest}", image.repo)))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != StatusCode::OK {
                return Err(format!("{}:{} blob {digest}: {}", image.repo, image.tag, r.status()));
            }
            let got = r.bytes().await.map_err(|e| e.to_string())?;
            if Digest::sha256_of(&got) != digest {
                return Err(format!(
                    "{}:{} blob {digest}: {} bytes of other content",
                    image.repo,
                    image.tag,
                    got.len()
                ));
            }
        }
        Ok(())
    }

    async fn pusher(self: Arc<Self>, p: usize, iterations: usize) {
        let repo = format!("stress/r{}", p % 10);
        let neighbour = format!("stress/r{}", (p + 1) % 10);
        let mut pushed: Vec<Option<Image>> = Vec::new();
        for i in 0..iterations {
            let config = format!(r#"{{"pusher":{p},"iteration":{i}}}"#).into_bytes();
            // Permanent images get a layer of their own, so they pin no shared one.
            let own = blob(10_000 + (p * 1000 + i) as u64, 1500);
            let layers: Vec<&[u8]> = if i % 4 == 0 {
                vec![own.as_slice()]
            } else {
                (0..2).map(|k| self.pool[(i + k * 5) % POOL as usize].as_slice()).collect()
            };
            let manifest = image_manifest(&config, &layers);
            let mut blobs = vec![config.clone()];
            blobs.extend(layers.iter().map(|l| l.to_vec()));
            let image = Image { repo: repo.clone(), tag: format!("p{p}-i{i}"), manifest, blobs };
            let mut ok = false;
            for attempt in 0..8 {
                match self.push(&image, p + i + attempt, &neighbour).await {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        // Expected under an aggressive collector: a layer this
                        // client saw (HEAD) was collected before its manifest
                        // came, or a 503 while a digest was being deleted.
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        let reason: String = e.chars().take(60).collect();
                        *self.retry_reasons.lock().unwrap().entry(reason).or_default() += 1;
                        if attempt == 7 {
                            eprintln!("push {}:{} failed for good: {e}", image.repo, image.tag);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            if !ok {
                self.failed_pushes.fetch_add(1, Ordering::Relaxed);
                pushed.push(None);
                continue;
            }
            self.kept.lock().unwrap().insert((image.repo.clone(), image.tag.clone()), image.clone());
            if i % 4 == 0 {
                self.permanent.lock().unwrap().push(image.clone());
                pushed.push(None);
            } else {
                pushed.push(Some(image));
            }
            // Delete the tag of two iterations ago: its manifest and layers
            // become garbage while others push the same layers again.
            if i >= 2
                && let Some(old) = pushed[i - 2].take()
            {
                let r = self.http.delete(self.url(&format!("/v2/{}/manifests/{}", old.repo, old.tag))).send().await;
                if r.is_ok_and(|r| r.status() == StatusCode::ACCEPTED) {
                    self.kept.lock().unwrap().remove(&(old.repo, old.tag));
                }
            }
        }
    }

    async fn reader(self: Arc<Self>) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::SeqCst) {
            let image = {
                let permanent = self.permanent.lock().unwrap();
                (!permanent.is_empty()).then(|| permanent[n % permanent.len()].clone())
            };
            if let Some(image) = image
                && let Err(e) = self.pull(&image).await
            {
                self.read_errors.lock().unwrap().push(e);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn stress(db: Database, storage: Storage, iterations: usize) {
    let server = TestServer::start_on(db, storage, |c| {
        // The test drives the collector itself.
        c.gc.interval = Duration::ZERO;
        c.uploads.expiry_interval = Duration::ZERO;
    })
    .await;
    let stress = Arc::new(Stress {
        base: server.url(""),
        http: client(),
        pool: (0..POOL).map(|i| blob(1000 + i, 2048 + (i as usize) * 1024)).collect(),
        kept: Mutex::new(HashMap::new()),
        permanent: Mutex::new(Vec::new()),
        failed_pushes: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        retry_reasons: Mutex::new(HashMap::new()),
        read_errors: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let collector = tokio::spawn({
        let (maintenance, stress) = (server.maintenance.clone(), stress.clone());
        async move {
            let (mut runs, mut manifests, mut blobs) = (0u64, 0u64, 0u64);
            let options = GcOptions { min_age: STRESS_MIN_AGE, dry_run: false };
            while !stress.stop.load(Ordering::SeqCst) {
                let lease = maintenance.lease(GC_LEASE, |_| {}).await.expect("lease");
                let report = maintenance.collect_garbage(&options, Some(&lease), &no_progress).await.expect("gc run");
                lease.release(true).await.expect("release");
                runs += 1;
                manifests += report.manifests.count;
                blobs += report.blobs_deleted();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (runs, manifests, blobs)
        }
    });
    let readers: Vec<_> = (0..2).map(|_| tokio::spawn(stress.clone().reader())).collect();
    let pushers: Vec<_> = (0..PUSHERS).map(|p| tokio::spawn(stress.clone().pusher(p, iterations))).collect();
    for p in pushers {
        p.await.expect("pusher");
    }
    // Let the collector catch up with the last deletions before stopping it.
    tokio::time::sleep(STRESS_MIN_AGE * 2).await;
    stress.stop.store(true, Ordering::SeqCst);
    let (runs, gc_manifests, gc_blobs) = collector.await.expect("collector");
    for r in readers {
        r.await.expect("reader");
    }
    let kept: Vec<Image> = stress.kept.lock().unwrap().values().cloned().collect();
    let total = PUSHERS * iterations;
    let failed = stress.failed_pushes.load(Ordering::Relaxed);
    eprintln!(
        "gc stress ({db:?} + {storage:?}): {total} pushes ({failed} failed for good, {} retried attempts), \
         {} kept, {runs} collections freed {gc_manifests} manifests and {gc_blobs} blobs, {:.1}s",
        stress.retries.load(Ordering::Relaxed),
        kept.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("retried because: {:#?}", stress.retry_reasons.lock().unwrap());
    let unexpected: Vec<String> =
        stress.retry_reasons.lock().unwrap().keys().filter(|r| r.contains("500")).cloned().collect();
    assert!(unexpected.is_empty(), "internal errors during the run: {unexpected:?}");
    let errors = stress.read_errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "pulls failed during the run: {errors:#?}");
    assert!(failed * 10 <= total as u64, "too many pushes failed for good: {failed} of {total}");
    assert!(runs >= 3 && gc_manifests > 0 && gc_blobs > 0, "the collector did work: {runs} runs");

    // Every manifest pushed and not deleted is fully pullable, intact.
    for image in &kept {
        stress.pull(image).await.unwrap_or_else(|e| panic!("lost after the run: {e}"));
    }
    // A final collection with no grace at all frees everything else and still
    // loses nothing.
    let options = GcOptions { min_age: Duration::ZERO, dry_run: false };
    server.maintenance.collect_garbage(&options, None, &no_progress).await.expect("final gc");
    for image in &kept {
        stress.pull(image).await.unwrap_or_else(|e| panic!("lost after the final collection: {e}"));
    }
    let referenced: BTreeSet<Digest> = kept.iter().flat_map(|i| i.blobs.iter().map(|b| Digest::sha256_of(b))).collect();
    let stored: BTreeSet<Digest> = server.stored_blobs().await.into_iter().collect();
    assert_eq!(stored, referenced, "exactly the referenced blobs remain");
    server.stop().await;
}

async fn gc_in_a_loop_against_20_pushers_loses_nothing(db: Database) {
    // Fewer rounds on Postgres: each costs more round trips.
    let iterations = if db == Database::Sqlite { 24 } else { 12 };
    stress(db, Storage::Filesystem, iterations).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_in_a_loop_against_20_pushers_loses_nothing_postgres_s3() {
    if !postgres_and_s3_configured() {
        let line = "NOT RUN: BERTH_TEST_POSTGRES_URL and BERTH_TEST_S3_ENDPOINT must both be set; \
                    the Postgres + S3 garbage collection stress test is skipped\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    stress(Database::Postgres, Storage::S3, 12).await;
}

// --- the schedule -------------------------------------------------------------------

async fn push_and_untag(server: &TestServer, repo: &str) -> Vec<Digest> {
    let r = RepositoryName::parse(repo).unwrap();
    let (config, layer) = (blob(7, 100), blob(8, 3000));
    for b in [&config, &layer] {
        let body: berth_blob::ByteStream = Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(b))]));
        server.registry.put_blob(&r, &Digest::sha256_of(b), body, None).await.unwrap();
    }
    let manifest = image_manifest(&config, &[&layer]);
    let tag = Reference::Tag(Tag::parse("v1").unwrap());
    server.registry.put_manifest(&r, &tag, manifest, Some(OCI_MANIFEST), vec![], None).await.unwrap();
    server.registry.delete_manifest(&r, &tag).await.unwrap();
    vec![Digest::sha256_of(&config), Digest::sha256_of(&layer)]
}

async fn the_server_collects_garbage_on_its_schedule(db: Database) {
    let server = TestServer::start_on(db, Storage::Filesystem, |c| {
        c.gc.interval = Duration::from_secs(1);
        c.gc.min_age = Duration::from_millis(300);
    })
    .await;
    push_and_untag(&server, "acme/app").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.stored_blobs().await.is_empty() {
        assert!(Instant::now() < deadline, "the schedule never collected the garbage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The run is recorded when its lease is released, just after it deleted.
    loop {
        if server.maintenance.last_run(GC_LEASE).await.unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the run is recorded for the other replicas");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

// --- the CLI ----------------------------------------------------------------------------

async fn gc_and_retention_commands_work_beside_the_server(db: Database) {
    let server = TestServer::start_on(db, Storage::Filesystem, |_| {}).await;
    let freed = push_and_untag(&server, "acme/app").await;

    let (code, out, err) = berth_on(&server, &["gc", "--dry-run", "--min-age", "0s"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("nothing was deleted") && out.contains("storage would free: 2 objects"), "{out}");
    assert!(!out.contains('\r'), "no progress line when stdout is not a terminal");
    assert_eq!(server.stored_blobs().await.len(), 2);

    // The default grace period (1h) keeps everything.
    let (code, out, _) = berth_on(&server, &["gc"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("storage freed: 0 objects"), "{out}");

    // While another collector holds the lease, --no-wait gives up at once.
    let lease = server.maintenance.try_lease(GC_LEASE).await.unwrap().expect("free");
    let (code, _, err) = berth_on(&server, &["gc", "--no-wait", "--min-age", "0s"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("already running"), "{err}");
    lease.release(false).await.unwrap();

    let (code, out, err) = berth_on(&server, &["gc", "--min-age", "0s"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("untagged manifests") && out.contains("storage freed: 2 objects"), "{out}");
    let stored = server.stored_blobs().await;
    assert!(freed.iter().all(|d| !stored.contains(d)));

    // Retention: list shows the effective rules; apply prints each tag.
    let rules = r#"[{"repositories":"acme/*","keep_last":1,"keep_tags":["stable"]}]"#;
    let r = RepositoryName::parse("acme/svc").unwrap();
    for (i, name) in ["a", "b", "stable"].iter().enumerate() {
        let tag = Reference::Tag(Tag::parse(name).unwrap());
        let config = blob(50 + i as u64, 10);
        let body: berth_blob::ByteStream =
            Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(&config))]));
        server.registry.put_blob(&r, &Digest::sha256_of(&config), body, None).await.unwrap();
        let m = image_manifest(&config, &[]);
        server.registry.put_manifest(&r, &tag, m, Some(OCI_MANIFEST), vec![], None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let env = [("BERTH_RETENTION_RULES", rules)];
    let (code, out, err) = berth_on(&server, &["retention", "list"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"repositories = "acme/*""#) && out.contains("keep_last = 1"), "{out}");
    let (code, out, _) = berth_on(&server, &["retention", "list"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("no retention rules"), "{out}");
    let (code, out, err) = berth_on(&server, &["retention", "apply", "--dry-run"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would remove acme/svc:a "), "{out}");
    let (code, out, err) = berth_on(&server, &["retention", "apply"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed acme/svc:a ") && out.contains("removed 1 tags"), "{out}");
    let tags = server.registry.list_tags(&r, None, None).await.unwrap();
    assert_eq!(tags, vec!["b".to_owned(), "stable".to_owned()]);
    server.stop().await;
}

// --- retention rules added at run time ----------------------------------------------------
