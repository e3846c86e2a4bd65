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

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Directory written by `berth backup`.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
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
    let result = write_backup(&store, &config.storage.path, key, &args.to, &lease).await;
    // Not a collection: the schedule's clock is left alone.
    let _ = lease.release(false).await;
    let (snapshot, tally) = result?;
    tracing::info!("backup finished: garbage collection lease released");
    println!(
        "backup written to {} in {:.1}s: {} repositories, {} manifests, {} tags, {} blobs ({}); \
         {} blobs copied ({}), {} already in the backup; garbage collection was held throughout",
        args.to.display(),
        started.elapsed().as_secs_f64(),
        snapshot.repositories,
        snapshot.manifests,
        snapshot.tags,
        tally.blobs,
        berth_config::human_size(tally.bytes),
        tally.copied + tally.linked,
        berth_config::human_size(tally.copied_bytes),
        tally.reused,
    );
    Ok(())
}

async fn write_backup(
    store: &berth_meta_sqlite::SqliteMetaStore,
    storage: &Path,
    key: Option<&Path>,
    to: &Path,
    lease: &Lease,
) -> Result<(berth_meta_sqlite::Snapshot, Tally), String> {
    let at = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    files::prepare_dir(to).map_err(|e| at(to, e))?;
    let tmp = to.join(format!("{DATABASE}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(&tmp, e)),
        _ => {}
    }
    store.backup_into(&tmp).await.map_err(|e| format!("copying the database: {e}"))?;
    let snapshot = berth_meta_sqlite::read_snapshot(&tmp).await.map_err(|e| format!("reading the copy: {e}"))?;
    let progress = std::io::stderr().is_terminal();
    let total = snapshot.blobs.len();
    let mut tally = Tally::default();
    tokio::task::block_in_place(|| {
        for (i, (digest, size)) in snapshot.blobs.iter().enumerate() {
            if i % 64 == 0 {
                lease.ensure_held().map_err(|e| e.to_string())?;
                if progress {
                    eprint!("\r\x1b[2Kblobs: {i}/{total}");
                }
            }
            let parsed = Digest::parse(digest).map_err(|e| format!("blob {digest}: {e}"))?;
            let relative = blob_relative_path(&parsed);
            let (src, dst) = (storage.join(&relative), to.join(&relative));
            let placed = place(&src, &dst, *size).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    format!("blob {digest} is referenced by the metadata but missing from storage ({})", src.display())
                }
                _ => format!("blob {digest}: {e}"),
            })?;
            tally.blobs += 1;
            tally.bytes += size;
            match placed {
                Placed::Reused => tally.reused += 1,
                Placed::Linked => tally.linked += 1,
                Placed::Copied => tally.copied += 1,
            }
            if !matches!(placed, Placed::Reused) {
                tally.copied_bytes += size;
            }
        }
        if progress {
            eprintln!("\r\x1b[2Kblobs: {total}/{total}");
        }
        Ok::<_, String>(())
    })?;
    lease.ensure_held().map_err(|e| e.to_string())?;
    let key = key.filter(|k| k.is_file());
    if let Some(key) = key {
        let dst = to.join(JWT_KEY);
        copy_private(key, &dst).map_err(|e| format!("copying the JWT key {}: {e}", key.display()))?;
    }
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
    write_atomically(&to.join(MANIFEST), &text).map_err(|e| at(&to.join(MANIFEST), e))?;
    Ok((snapshot, tally))
}

/// Puts the blob `src` at `dst`: kept if already there with `size` bytes,
/// else hard-linked, else (another filesystem) copied.
fn place(src: &Path, dst: &Path, size: u64) -> io::Result<Placed> {
    if let Ok(m) = fs::metadata(dst) {
        if m.len() == size {
            return Ok(Placed::Reused);
        }
        fs::remove_file(dst)?;
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::hard_link(src, dst) {
        Ok(()) => return Ok(Placed::Linked),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let tmp = tmp_beside(dst);
    fs::copy(src, &tmp)?;
    File::open(&tmp)?.sync_all()?;
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
    let progress = std::io::stderr().is_terminal();
    let total = wanted.len();
    let mut bytes = 0;
    tokio::task::block_in_place(|| {
        for (i, (digest, size)) in wanted.iter().enumerate() {
            if progress && i % 64 == 0 {
                eprint!("\r\x1b[2Kblobs: {i}/{total}");
            }
            let parsed = Digest::parse(digest).map_err(|e| format!("blob {digest}: {e}"))?;
            let relative = blob_relative_path(&parsed);
            copy_verified(&from.join(&relative), &storage.join(&relative), &parsed, *size)?;
            bytes += size;
        }
        if progress {
            eprintln!("\r\x1b[2Kblobs: {total}/{total}");
        }
        // The database last: a restore cut short leaves no registry that starts with blobs missing.
        let key = config.auth.jwt_key_file.as_deref().filter(|k| manifest.jwt_key && !k.exists());
        if let Some(key) = key {
            copy_private(&from.join(JWT_KEY), key).map_err(|e| format!("{}: {e}", key.display()))?;
        }
        copy_private(&source_db, &db).map_err(|e| format!("{}: {e}", db.display()))
    })?;
    println!(
        "restored {} into {} in {:.1}s: {} repositories, {} manifests, {} tags, {} blobs ({}), every digest verified{} \
         (backup of {}, Berth {})",
        from.display(),
        config.data_dir.display(),
        started.elapsed().as_secs_f64(),
        snapshot.repositories,
        snapshot.manifests,
        snapshot.tags,
        total,
        berth_config::human_size(bytes),
        if manifest.jwt_key { ", and the JWT signing key" } else { "" },
        manifest.created_at,
        manifest.berth_version,
    );
    Ok(())
}

/// Copies one blob, hashing it as it streams; the copy only takes its
/// place if its size and digest match.
fn copy_verified(src: &Path, dst: &Path, digest: &Digest, size: u64) -> Result<(), String> {
    let fail = |e: io::Error| format!("blob {digest} ({}): {e}", src.display());
    let mut input = File::open(src).map_err(fail)?;
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    let tmp = tmp_beside(dst);
    let mut output = File::create(&tmp).map_err(fail)?;
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(fail)?;
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
    output.sync_all().map_err(fail)?;
    fs::rename(&tmp, dst).map_err(fail)
}
