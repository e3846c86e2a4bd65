//! `berth backup` and `berth restore`, for the embedded default (SQLite and
//! filesystem storage).
//!
//! A backup directory holds:
//! ```text
//! berth.db                              the metadata, a consistent copy (VACUUM INTO)
//! blobs/<algorithm>/<2 hex>/<hex>       every blob that copy references (storage layout)
//! backup.json                           the manifest: versions, time, counts, every digest
//! ```
//! The backup holds the garbage-collection lease from before the metadata
//! is copied until every blob it references is in the directory, so no
//! collection deletes a blob the copy still needs. Blobs are hard-linked
//! (copied across filesystems); a blob already in the directory with the
//! right size is kept, so a second backup into the same directory copies
//! only new blobs. `backup.json` and `berth.db` are replaced last, so an
//! interrupted backup leaves the previous one intact.
//!
//! Blobs are placed by a few threads at once (`--jobs`), without an `fsync`
//! each: one `syncfs` of the destination makes them all durable before the
//! database and `backup.json` take their place (restore does the same
//! before it puts the database in place). A bar shows the progress on a
//! terminal; otherwise a log line every 10 seconds.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_blob::blob_relative_path;
use berth_config::{Config, StorageBackend};
use berth_oci::{Digest, Hasher};
use berth_registry::maintenance::{GC_LEASE, Lease, LeaseHeld};
use berth_registry::{Maintenance, Registry};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::app::registry_policy;
use crate::backends::{open_blobs, open_sqlite};
use crate::files;
use crate::progress::Progress;

/// The README section that gives the Postgres and S3 procedure.
const README_SECTION: &str = "README.md, \"Backup and restore\" (Postgres and S3: pg_dump first, then copy the bucket, with garbage collection held)";
const MANIFEST: &str = "backup.json";
const DATABASE: &str = "berth.db";
/// The token signing key, inside the backup directory.
const JWT_KEY: &str = "auth/jwt-ed25519.pem";
/// The layout of backup directories this build writes and reads.
const FORMAT: u64 = 1;

#[derive(Args)]
pub struct BackupArgs {
    /// Backup directory (created if missing; an earlier backup there is updated incrementally).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Blobs copied at once [default: the number of cores, at least 2, at most 4; 1 for a slow disk].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Directory written by `berth backup`.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Blobs copied and verified at once [default: the number of cores, at least 2, at most 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

fn jobs(asked: Option<u16>) -> usize {
    asked.map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4), usize::from)
}

/// Refuses anything but SQLite and filesystem storage.
fn embedded_only(config: &Config, what: &str) -> Result<(), String> {
    let sqlite = config.database.url.expose().starts_with("sqlite:");
    let fs = config.storage.backend == StorageBackend::Filesystem;
    if sqlite && fs {
        return Ok(());
    }
    let used = match (sqlite, fs) {
        (false, false) => "Postgres and S3",
        (false, true) => "Postgres",
        _ => "S3",
    };
    Err(format!(
        "berth {what} handles the embedded default (SQLite and filesystem storage) only; this registry uses {used}. \
         See {README_SECTION}"
    ))
}

/// `backup.json`: what a backup holds, written last.
#[derive(Debug, Serialize, Deserialize)]
struct BackupManifest {
    format: u64,
    berth_version: String,
    /// The highest database migration applied.
    schema_version: i64,
    created_at: String,
    database: String,
    counts: Counts,
    /// Bytes of every blob in the backup.
    bytes: u64,
    /// Blobs this run added (hard-linked or copied), and of them hard-linked.
    blobs_copied: u64,
    blobs_hard_linked: u64,
    /// Blobs already in the directory from an earlier backup.
    blobs_reused: u64,
    bytes_copied: u64,
    /// Whether `auth/jwt-ed25519.pem` (the token signing key) is included.
    #[serde(default)]
    jwt_key: bool,
    blobs: Vec<BlobEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Counts {
    repositories: u64,
    manifests: u64,
    tags: u64,
    blobs: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct BlobEntry {
    digest: String,
    size: u64,
}

#[derive(Debug, Default)]
struct Tally {
    blobs: u64,
    bytes: u64,
    copied: u64,
    copied_bytes: u64,
    linked: u64,
    reused: u64,
    database_time: Duration,
    blobs_time: Duration,
    sync_time: Duration,
}

impl Tally {
    /// `database 0.1s, blobs 2.0s, flush 0.4s`.
    fn phases(&self) -> String {
        format!(
            "database {:.1}s, blobs {:.1}s, flush {:.1}s",
            self.database_time.as_secs_f64(),
            self.blobs_time.as_secs_f64(),
            self.sync_time.as_secs_f64()
        )
    }
}

enum Placed {
    Reused,
    Linked,
    Copied,
}

pub async fn backup(config: &Config, args: BackupArgs) -> Result<(), String> {
    embedded_only(config, "backup")?;
    let started = Instant::now();
    let store = open_sqlite(config, true).await.map_err(|e| e.to_string())?;
    let blobs = open_blobs(config).await.map_err(|e| e.to_string())?;
    let policy = registry_policy(config).map_err(|e| e.to_string())?;
    let shared = Arc::new(store.clone());
    let maintenance = Maintenance::new(Registry::new(shared.clone(), blobs, policy), shared);
    let waiting = |held: &LeaseHeld| {
        eprintln!("berth: garbage collection is running (by {}); the backup waits for it to finish", held.holder);
    };
    let lease = maintenance.lease(GC_LEASE, waiting).await.map_err(|e| e.to_string())?;
    tracing::info!(
        to = %args.to.display(),
        "backup started: holding the garbage collection lease, so no collection deletes anything until it ends"
    );
    let key = config.auth.jwt_key_file.as_deref();
    let result = write_backup(&store, &config.storage.path, key, &args.to, jobs(args.jobs), &lease).await;
    // Not a collection: the schedule's clock is left alone.
    let _ = lease.release(false).await;
    let (snapshot, tally) = result?;
    tracing::info!("backup finished: garbage collection lease released");
    let elapsed = started.elapsed();
    println!(
        "backup written to {} in {:.1}s: {} repositories, {} manifests, {} tags, {} blobs ({}); \
         {} blobs copied ({}, {} of them as hard links), {} already in the backup; {}; \
         garbage collection was held throughout",
        args.to.display(),
        elapsed.as_secs_f64(),
        snapshot.repositories,
        snapshot.manifests,
        snapshot.tags,
        tally.blobs,
        berth_config::human_size(tally.bytes),
        tally.copied + tally.linked,
        berth_config::human_size(tally.copied_bytes),
        tally.linked,
        tally.reused,
        tally.phases(),
    );
    Ok(())
}

async fn write_backup(
    store: &berth_meta_sqlite::SqliteMetaStore,
    storage: &Path,
    key: Option<&Path>,
    to: &Path,
    jobs: usize,
    lease: &Lease,
) -> Result<(berth_meta_sqlite::Snapshot, Tally), String> {
    let at = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    files::prepare_dir(to).map_err(|e| at(to, e))?;
    let tmp = to.join(format!("{DATABASE}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(&tmp, e)),
        _ => {}
    }
    let clock = Instant::now();
    let snapshot = {
        let _step = Progress::step("copying the database (VACUUM INTO)");
        store.backup_into(&tmp).await.map_err(|e| format!("copying the database: {e}"))?;
        berth_meta_sqlite::read_snapshot(&tmp).await.map_err(|e| format!("reading the copy: {e}"))?
    };
    let database_time = clock.elapsed();
    let clock = Instant::now();
    let mut tally = tokio::task::block_in_place(|| place_all(&snapshot.blobs, storage, to, jobs, lease))?;
    tally.database_time = database_time;
    tally.blobs_time = clock.elapsed();
    lease.ensure_held().map_err(|e| e.to_string())?;
    let key = key.filter(|k| k.is_file());
    if let Some(key) = key {
        let dst = to.join(JWT_KEY);
        copy_private(key, &dst).map_err(|e| format!("copying the JWT key {}: {e}", key.display()))?;
    }
    // The blobs and the database copy, durable before they are named by
    // the manifest: one flush of the filesystem, not an fsync per blob.
    let clock = Instant::now();
    tokio::task::block_in_place(|| {
        let _step = Progress::step("flushing the backup to disk (syncfs)");
        files::sync_filesystem(to).map_err(|e| format!("flushing {} to disk: {e}", to.display()))
    })?;
    tally.sync_time = clock.elapsed();
    let manifest = BackupManifest {
        format: FORMAT,
        berth_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: snapshot.schema_version,
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        database: DATABASE.to_owned(),
        counts: Counts {
            repositories: snapshot.repositories,
            manifests: snapshot.manifests,
            tags: snapshot.tags,
            blobs: tally.blobs,
        },
        bytes: tally.bytes,
        blobs_copied: tally.copied + tally.linked,
        blobs_hard_linked: tally.linked,
        blobs_reused: tally.reused,
        bytes_copied: tally.copied_bytes,
        jwt_key: key.is_some(),
        blobs: snapshot.blobs.iter().map(|(digest, size)| BlobEntry { digest: digest.clone(), size: *size }).collect(),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    let db = to.join(DATABASE);
    fs::rename(&tmp, &db).map_err(|e| at(&db, e))?;
    files::sync_dir(to).map_err(|e| at(to, e))?;
    write_atomically(&to.join(MANIFEST), &text).map_err(|e| at(&to.join(MANIFEST), e))?;
    files::sync_dir(to).map_err(|e| at(to, e))?;
    Ok((snapshot, tally))
}

/// One blob to copy: its digest, size and path below the storage root.
struct Job<'a> {
    digest: &'a str,
    parsed: Digest,
    size: u64,
    relative: PathBuf,
}

fn jobs_for<'a>(blobs: &'a [(String, u64)], under: &Path) -> Result<Vec<Job<'a>>, String> {
    let mut list = Vec::with_capacity(blobs.len());
    let mut parents = BTreeSet::new();
    for (digest, size) in blobs {
        let parsed = Digest::parse(digest).map_err(|e| format!("blob {digest}: {e}"))?;
        let relative = blob_relative_path(&parsed);
        if let Some(parent) = under.join(&relative).parent() {
            parents.insert(parent.to_path_buf());
        }
        list.push(Job { digest, parsed, size: *size, relative });
    }
    // Each directory once, before the threads start.
    for dir in parents {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(list)
}

/// Puts every blob of the snapshot into `to`, `jobs` at a time.
fn place_all(blobs: &[(String, u64)], storage: &Path, to: &Path, jobs: usize, lease: &Lease) -> Result<Tally, String> {
    let list = jobs_for(blobs, to)?;
    let progress = Progress::new("backup", list.len() as u64, list.iter().map(|j| j.size).sum());
    // Cleared on the first EXDEV: another filesystem, copy from then on.
    let links = AtomicBool::new(true);
    let tallies = in_parallel(&list, jobs, |job, tally: &mut Tally| {
        lease.ensure_held().map_err(|e| e.to_string())?;
        let (src, dst) = (storage.join(&job.relative), to.join(&job.relative));
        let placed = place(&src, &dst, job.size, &links).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "blob {} is referenced by the metadata but missing from storage ({})",
                job.digest,
                src.display()
            ),
            _ => format!("blob {}: {e}", job.digest),
        })?;
        tally.blobs += 1;
        tally.bytes += job.size;
        match placed {
            Placed::Reused => tally.reused += 1,
            Placed::Linked => tally.linked += 1,
            Placed::Copied => tally.copied += 1,
        }
        if !matches!(placed, Placed::Reused) {
            tally.copied_bytes += job.size;
        }
        progress.blob_done(job.size);
        Ok(())
    });
    progress.finish();
    let mut total = Tally::default();
    for t in tallies? {
        total.blobs += t.blobs;
        total.bytes += t.bytes;
        total.copied += t.copied;
        total.copied_bytes += t.copied_bytes;
        total.linked += t.linked;
        total.reused += t.reused;
    }
    Ok(total)
}

/// Runs `work` on every item, spread over `threads` threads, each with its
/// own accumulator; stops at the first error.
fn in_parallel<T: Sync, A: Default + Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T, &mut A) -> Result<(), String> + Sync,
) -> Result<Vec<A>, String> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let joined: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut acc = A::default();
                    while !stop.load(Ordering::Relaxed) {
                        let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                        if let Err(e) = work(item, &mut acc) {
                            stop.store(true, Ordering::Relaxed);
                            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            break;
                        }
                    }
                    acc
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join()).collect()
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    joined.into_iter().map(|r| r.map_err(|_| "a copying thread panicked".to_owned())).collect()
}

/// Puts the blob `src` at `dst`: kept if already there with `size` bytes,
/// else hard-linked (while `links` holds), else copied. Not fsynced: the
/// caller flushes the filesystem once at the end.
fn place(src: &Path, dst: &Path, size: u64, links: &AtomicBool) -> io::Result<Placed> {
    if let Ok(m) = fs::symlink_metadata(dst) {
        if m.len() == size {
            return Ok(Placed::Reused);
        }
        fs::remove_file(dst)?;
    }
    if links.load(Ordering::Relaxed) {
        match fs::hard_link(src, dst) {
            Ok(()) => return Ok(Placed::Linked),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => links.store(false, Ordering::Relaxed),
            // Too many links to one file, a filesystem without them: copy this one.
            Err(_) => {}
        }
    }
    let tmp = tmp_beside(dst);
    // copy_file_range where the kernel can (reflinks on XFS and Btrfs), else a read/write loop.
    fs::copy(src, &tmp)?;
    fs::rename(&tmp, dst)?;
    Ok(Placed::Copied)
}

/// Copies a private file (0600), replacing `dst` atomically.
fn copy_private(src: &Path, dst: &Path) -> io::Result<()> {
    if let Some(parent) = dst.parent() {
        files::create_dir(parent)?;
    }
    let tmp = tmp_beside(dst);
    fs::copy(src, &tmp)?;
    fs::set_permissions(&tmp, <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(files::FILE_MODE))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dst)
}

fn tmp_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_beside(path);
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

pub async fn restore(config: &Config, args: RestoreArgs) -> Result<(), String> {
    embedded_only(config, "restore")?;
    let started = Instant::now();
    let from = &args.from;
    let manifest_path = from.join(MANIFEST);
    let text = fs::read(&manifest_path).map_err(|e| {
        format!("{}: {e} (is {} a directory written by `berth backup`?)", manifest_path.display(), from.display())
    })?;
    let manifest: BackupManifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a backup manifest: {e}", manifest_path.display()))?;
    if manifest.format != FORMAT {
        return Err(format!("{}: unknown backup format {}", manifest_path.display(), manifest.format));
    }
    let schema = manifest.schema_version;
    let known = berth_meta_sqlite::latest_schema_version();
    if schema > known {
        return Err(format!(
            "the backup was made by a newer Berth ({}, schema {schema}); this one knows schema {known}: restore with that version or later",
            manifest.berth_version
        ));
    }
    let wanted: Vec<(String, u64)> = manifest.blobs.iter().map(|b| (b.digest.clone(), b.size)).collect();
    let source_db = from.join(DATABASE);
    let snapshot =
        berth_meta_sqlite::read_snapshot(&source_db).await.map_err(|e| format!("{}: {e}", source_db.display()))?;
    if snapshot.blobs != wanted {
        return Err(format!(
            "{} and {} disagree on the blobs ({} against {}): the backup is damaged",
            source_db.display(),
            manifest_path.display(),
            snapshot.blobs.len(),
            wanted.len()
        ));
    }
    let db = berth_meta_sqlite::database_file(config.database.url.expose())
        .ok_or("the database URL names no SQLite file to restore into")?;
    let storage = config.storage.path.clone();
    for dir in [&config.data_dir, &storage] {
        if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(format!(
                "{} is not empty: berth restore fills an empty data directory only (move it aside, or point \
                 data_dir at a new one)",
                dir.display()
            ));
        }
    }
    if db.exists() {
        return Err(format!("{} already exists: berth restore does not overwrite a database", db.display()));
    }
    files::prepare_dir(&config.data_dir).map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let threads = jobs(args.jobs);
    let (blobs_time, sync_time, bytes) = tokio::task::block_in_place(|| {
        let clock = Instant::now();
        // Even for a backup without blobs: the flush below opens it.
        files::create_dir(&storage).map_err(|e| format!("{}: {e}", storage.display()))?;
        let list = jobs_for(&wanted, &storage)?;
        let bytes: u64 = list.iter().map(|j| j.size).sum();
        let progress = Progress::new("restore", list.len() as u64, bytes);
        let copied = in_parallel(&list, threads, |job, buf: &mut Vec<u8>| {
            copy_verified(&from.join(&job.relative), &storage.join(&job.relative), &job.parsed, job.size, buf)?;
            progress.blob_done(job.size);
            Ok(())
        });
        progress.finish();
        copied?;
        let blobs_time = clock.elapsed();
        // Every blob durable before the database that names them exists.
        let clock = Instant::now();
        {
            let _step = Progress::step("flushing the blobs to disk (syncfs)");
            files::sync_filesystem(&storage).map_err(|e| format!("flushing {} to disk: {e}", storage.display()))?;
        }
        let sync_time = clock.elapsed();
        // The database last: a restore cut short leaves no registry that starts with blobs missing.
        let key = config.auth.jwt_key_file.as_deref().filter(|k| manifest.jwt_key && !k.exists());
        if let Some(key) = key {
            copy_private(&from.join(JWT_KEY), key).map_err(|e| format!("{}: {e}", key.display()))?;
        }
        copy_private(&source_db, &db).map_err(|e| format!("{}: {e}", db.display()))?;
        if let Some(dir) = db.parent() {
            files::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok::<_, String>((blobs_time, sync_time, bytes))
    })?;
    println!(
        "restored {} into {} in {:.1}s: {} repositories, {} manifests, {} tags, {} blobs ({}), every digest verified{} \
         (backup of {}, Berth {}); blobs {:.1}s, flush {:.1}s",
        from.display(),
        config.data_dir.display(),
        started.elapsed().as_secs_f64(),
        snapshot.repositories,
        snapshot.manifests,
        snapshot.tags,
        wanted.len(),
        berth_config::human_size(bytes),
        if manifest.jwt_key { ", and the JWT signing key" } else { "" },
        manifest.created_at,
        manifest.berth_version,
        blobs_time.as_secs_f64(),
        sync_time.as_secs_f64(),
    );
    Ok(())
}

/// Copies one blob, hashing it as it streams; the copy only takes its
/// place if its size and digest match. `buf` is the thread's buffer.
fn copy_verified(src: &Path, dst: &Path, digest: &Digest, size: u64, buf: &mut Vec<u8>) -> Result<(), String> {
    const BUFFER: usize = 1 << 20;
    let fail = |e: io::Error| format!("blob {digest} ({}): {e}", src.display());
    let mut input = File::open(src).map_err(fail)?;
    let tmp = tmp_beside(dst);
    let mut output = File::create(&tmp).map_err(fail)?;
    let mut hasher = Hasher::new(digest.algorithm());
    if buf.is_empty() {
        buf.resize(BUFFER, 0);
    }
    let mut copied = 0u64;
    loop {
        let n = input.read(buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(fail)?;
        copied += n as u64;
    }
    let actual = hasher.finish();
    if copied != size || actual != *digest {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "blob {digest} in the backup is corrupt: {copied} bytes hashing to {actual}, expected {size} bytes ({})",
            src.display()
        ));
    }
    fs::rename(&tmp, dst).map_err(fail)
}
