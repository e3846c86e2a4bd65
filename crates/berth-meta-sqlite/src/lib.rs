//! SQLite backend of [`berth_meta::MetaStore`].
//!
//! SQLite allows one writer at a time. Rather than let several pooled
//! connections race for the write lock (and hit `SQLITE_BUSY` when a read
//! transaction tries to upgrade), every write goes through a pool holding
//! exactly one connection and starts with `BEGIN IMMEDIATE`; plain reads use
//! a separate pool of read-only connections, which WAL mode lets run while
//! the writer commits. Writes are therefore queued in-process, and the queue
//! wait is bounded by the acquire timeout.
//!
//! Each aggregate has its own module of small functions taking a pool or a
//! transaction; the trait impl at the bottom of this file only routes calls.

mod auth;
mod blobs;
mod browse;
mod directory;
mod error;
mod events;
mod holders;
mod maintenance;
mod manifests;
mod migrate;
mod packages;
mod repositories;
mod sessions;
mod tags;
mod uploads;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_meta::maintenance::{
    BlobUsage, GcBlob, LeaseOutcome, LeaseRecord, NewRetentionRule, RepositoryGraph, RetentionRuleRecord, TagRecord,
};
use berth_meta::{
    MaintenanceStore, ManifestRecord, ManifestRef, MetaError, MetaStore, NewManifest, PackageVersionRecord, Referrer,
    Result, StoreStats, TagGuard, UploadProgress, UploadSession,
};
use berth_oci::{Digest, RepositoryName, Tag};
use sqlx::SqliteConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::db_err;

/// How long a statement waits for a lock held by another process (for
/// example `berth migrate` or a second registry instance on the same file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// `sqlite:///abs/path/berth.db`, `sqlite://./rel/berth.db` or
    /// `sqlite::memory:` (tests). A missing file and its parent directories
    /// are created.
    pub url: String,
    /// Size of the reader pool; writes always use one extra connection.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection before the store
    /// answers [`MetaError::Unavailable`].
    pub acquire_timeout: Duration,
}

impl SqliteSettings {
    /// A database file at `path`, with default pool settings.
    pub fn for_path(path: impl AsRef<Path>) -> Self {
        // The URL's path is percent-decoded and cut at `?`: escape both.
        let path = path.as_ref().display().to_string().replace('%', "%25").replace('?', "%3F");
        SqliteSettings { url: format!("sqlite://{path}"), max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }

    /// A private in-memory database that lives as long as the store.
    pub fn in_memory() -> Self {
        SqliteSettings { url: "sqlite::memory:".to_owned(), ..Self::for_path("unused") }
    }
}

/// The SQLite metadata store. Cloning is cheap and shares the pools.
#[derive(Debug, Clone)]
pub struct SqliteMetaStore {
    /// Exactly one connection: every write transaction goes through it.
    writer: SqlitePool,
    /// Connections for plain reads (the writer pool itself when in memory).
    reader: SqlitePool,
    /// The database file, `None` in memory; migrations lock a file beside it.
    path: Option<PathBuf>,
}

/// The embedded schema migrations (`migrations/sqlite` at the repository root).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl SqliteMetaStore {
    /// Opens (and if needed creates) the database. Does not migrate: call
    /// [`SqliteMetaStore::migrate`] at start-up or from `berth migrate`.
    pub async fn connect(settings: &SqliteSettings) -> Result<Self> {
        let location = parse_location(&settings.url)?;
        // Parse errors can quote the URL, so they are replaced, not wrapped.
        let options = SqliteConnectOptions::from_str(&settings.url)
            .map_err(|_| MetaError::Backend("invalid SQLite URL".into()))?
            .foreign_keys(true)
            // FULL: an acknowledged push must survive a power loss, even in WAL mode.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);

        match location {
            Location::Memory => {
                // An in-memory database vanishes with its last connection and
                // shares no WAL, so one pinned connection serves everything.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(db_err)?;
                Ok(SqliteMetaStore { writer: pool.clone(), reader: pool, path: None })
            }
            Location::File => {
                // The file sqlx opens (percent-decoded); migrations lock beside it.
                let path = options.get_filename().to_path_buf();
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| MetaError::Unavailable(format!("cannot create the database directory: {e}")))?;
                }
                // The writer connects first: it creates the file and switches
                // it to WAL (a persistent setting) before any reader opens it.
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal))
                    .await
                    .map_err(db_err)?;
                // query_only turns a write sent to the wrong pool into an error
                // instead of a lock upgrade that could deadlock with the writer.
                let reader = SqlitePoolOptions::new()
                    .max_connections(reader_count(settings.max_connections))
                    .acquire_timeout(settings.acquire_timeout)
                    // A small page cache per reader: the OS page cache already
                    // holds the file, and sixteen private 2 MiB caches add up.
                    .connect_with(options.pragma("query_only", "ON").pragma("cache_size", "-512"))
                    .await
                    .map_err(db_err)?;
                Ok(SqliteMetaStore { writer, reader, path: Some(path) })
            }
        }
    }

    /// Applies pending migrations. Processes starting together serialize on
    /// an OS lock of `<dbfile>.migrate.lock`, so exactly one of them applies
    /// each migration and the others find it done.
    pub async fn migrate(&self) -> Result<()> {
        let _lock = match &self.path {
            Some(path) => Some(migrate::lock_for(path).await?),
            None => None,
        };
        MIGRATOR.run(&self.writer).await.map_err(error::migrate_err)
    }

    /// Closes both pools, waiting for queries in flight.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Links `digest` into `repo` in a write transaction, if `condition` holds.
    async fn link(&self, repo: &RepositoryName, digest: &Digest, condition: blobs::LinkCondition<'_>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if !blobs::link(&mut tx, repo, digest, now_ms(), condition).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// Runs a single-statement write that need not survive a power loss on
    /// its own: upload progress and blob reservations. With
    /// `synchronous=NORMAL` its commit is not fsynced; the next ordinary
    /// (FULL) commit fsyncs the write-ahead log and with it this write. Lost
    /// to a crash, such a write costs nothing but a retry: an upload resumes
    /// from earlier progress or answers BLOB_UPLOAD_UNKNOWN, and bytes
    /// committed under a lost reservation are orphans for the collector.
    async fn relaxed<T>(&self, op: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.acquire().await.map_err(db_err)?;
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await.map_err(db_err)?;
        let result = op(&mut conn).await;
        if let Err(e) = sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await {
            // Never hand a relaxed connection to a durable write.
            conn.close_on_drop();
            return Err(db_err(e));
        }
        result
    }

    /// Starts a write transaction on the single writer connection.
    /// IMMEDIATE takes the write lock up front, so a transaction that reads
    /// before it writes cannot fail half-way on a lock upgrade.
    async fn begin_write(&self) -> Result<Tx> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)
    }
}

/// Readers beyond a couple per core only add memory (each has its own
/// page cache and worker thread): SQLite reads are CPU-bound.
fn reader_count(configured: u32) -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    configured.clamp(1, (2 * cores).max(4))
}

enum Location {
    Memory,
    File,
}

/// Whether a `sqlite:` URL names a file or memory. Anything else is refused,
/// so a Postgres URL handed to this backend by mistake does not become a
/// file name.
fn parse_location(url: &str) -> Result<Location> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| MetaError::Backend("database URL is not a sqlite: URL".into()))?;
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    if database == ":memory:" || params.split('&').any(|p| p == "mode=memory") {
        return Ok(Location::Memory);
    }
    if database.is_empty() {
        return Err(MetaError::Backend("SQLite URL names no database file".into()));
    }
    Ok(Location::File)
}

/// Milliseconds since the Unix epoch, for rows whose API call carries no time.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(db_err)?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests), \
                    (SELECT COUNT(*) FROM blobs), (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs), \
                    (SELECT COUNT(*) FROM uploads)",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        let n = |i: usize| -> Result<u64> { Ok(sqlx::Row::try_get::<i64, _>(&row, i).map_err(db_err)?.max(0) as u64) };
        Ok(StoreStats { repositories: n(0)?, manifests: n(1)?, blobs: n(2)?, blob_bytes: n(3)?, uploads: n(4)? })
    }

    async fn list_repositories(&self, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>> {
        repositories::list(&self.reader, after, limit).await
    }

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        repositories::exists(&self.reader, repo).await
    }

    async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        blobs::size_in(&self.reader, repo, digest).await
    }

    async fn global_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        blobs::global_size(&self.reader, digest).await
    }

    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>> {
        blobs::repositories_of(&self.reader, digest, limit).await
    }

    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<Option<String>> {
        self.relaxed(async |c| blobs::reserve(c, digest, size, now_ms()).await).await
    }

    async fn link_reserved_blob(&self, repo: &RepositoryName, digest: &Digest, reservation: &str) -> Result<bool> {
        self.link(repo, digest, blobs::LinkCondition::Reserved(reservation)).await
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.link(repo, digest, blobs::LinkCondition::Linked).await
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let unlinked = blobs::unlink(&mut tx, repo, digest, guard).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(unlinked)
    }

    async fn create_upload(&self, upload: &UploadSession) -> Result<()> {
        self.relaxed(async |c| uploads::create(c, upload).await).await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>> {
        uploads::get(&self.reader, id).await
    }

    async fn update_upload(&self, id: &str, expected_offset: u64, progress: &UploadProgress) -> Result<bool> {
        self.relaxed(async |c| uploads::update(c, id, expected_offset, progress).await).await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        uploads::delete(&self.writer, id).await
    }

    async fn complete_upload(&self, id: &str, digest: &Digest, reservation: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        uploads::complete(&mut tx, id, digest, reservation, now_ms()).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn stale_uploads(&self, before: i64, limit: u32) -> Result<Vec<UploadSession>> {
        uploads::stale(&self.reader, before, limit).await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef<'_>,
        with_content: bool,
    ) -> Result<Option<ManifestRecord>> {
        manifests::get(&self.reader, repo, reference, with_content).await
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        manifest: &NewManifest,
        check_references: bool,
        guard: TagGuard<'_>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        manifests::put(&mut tx, repo, manifest, check_references, guard).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = manifests::delete(&mut tx, repo, digest, guard).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(deleted)
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag, guard: TagGuard<'_>) -> Result<bool> {
        tags::delete(&self.reader, &self.writer, repo, tag, guard).await
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Vec<String>>> {
        tags::list(&self.reader, repo, after, limit).await
    }

    async fn package_versions(
        &self,
        owner: &str,
        repository: Option<&RepositoryName>,
    ) -> Result<Vec<PackageVersionRecord>> {
        packages::versions(&self.reader, owner, repository).await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        manifests::referrers(&self.reader, repo, subject, artifact_type).await
    }
}

#[async_trait]
impl MaintenanceStore for SqliteMetaStore {
    async fn acquire_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<LeaseOutcome> {
        let mut tx = self.begin_write().await?;
        let outcome = maintenance::acquire_lease(&mut tx, name, holder, now, ttl_ms).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(outcome)
    }

    async fn renew_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        maintenance::renew_lease(&self.writer, name, holder, now, ttl_ms).await
    }

    async fn release_lease(&self, name: &str, holder: &str, finished_at: Option<i64>) -> Result<bool> {
        maintenance::release_lease(&self.writer, name, holder, finished_at).await
    }

    async fn get_lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        maintenance::get_lease(&self.reader, name).await
    }

    async fn repository_graph(&self, repo: &RepositoryName) -> Result<RepositoryGraph> {
        maintenance::repository_graph(&self.reader, repo).await
    }

    async fn unlinked_blobs(&self, cutoff: i64, after: Option<&Digest>, limit: u32) -> Result<Vec<GcBlob>> {
        maintenance::unlinked_blobs(&self.reader, cutoff, after, limit).await
    }

    async fn deleting_blobs(&self, marked_before: i64, limit: u32) -> Result<Vec<GcBlob>> {
        maintenance::deleting_blobs(&self.reader, marked_before, limit).await
    }

    async fn blob_usage(&self, digests: &[Digest]) -> Result<Vec<BlobUsage>> {
        maintenance::blob_usage(&self.reader, digests).await
    }

    async fn known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        maintenance::known_blobs(&self.reader, digests).await
    }

    async fn gc_delete_manifest(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        maintenance::delete_manifest(&self.writer, repo, digest, cutoff).await
    }

    async fn gc_unlink_blob(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<bool> {
        maintenance::unlink_blob(&self.writer, repo, digest, cutoff).await
    }

    async fn gc_mark_blob(&self, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        maintenance::mark_blob(&self.writer, digest, cutoff).await
    }

    async fn gc_mark_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool> {
        maintenance::mark_orphan(&self.writer, digest, size, now).await
    }

    async fn gc_forget_blob(&self, digest: &Digest) -> Result<bool> {
        maintenance::forget_blob(&self.writer, digest).await
    }

    async fn repository_tags(&self, repo: &RepositoryName) -> Result<Vec<TagRecord>> {
        maintenance::repository_tags(&self.reader, repo).await
    }

    async fn delete_tag_if_unchanged(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool> {
        maintenance::delete_tag_if_unchanged(&self.writer, repo, tag, digest, updated_at).await
    }

    async fn list_retention_rules(&self) -> Result<Vec<RetentionRuleRecord>> {
        maintenance::list_retention_rules(&self.reader).await
    }

    async fn add_retention_rule(&self, rule: &NewRetentionRule) -> Result<i64> {
        maintenance::add_retention_rule(&self.writer, rule).await
    }

    async fn remove_retention_rule(&self, id: i64) -> Result<bool> {
        maintenance::remove_retention_rule(&self.writer, id).await
    }

    async fn expire_upload(&self, id: &str, before: i64) -> Result<bool> {
        maintenance::expire_upload(&self.writer, id, before).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert!(matches!(parse_location("sqlite::memory:"), Ok(Location::Memory)));
        assert!(matches!(parse_location("sqlite://?mode=memory"), Ok(Location::Memory)));
        assert!(matches!(parse_location("sqlite:///var/lib/berth/berth.db"), Ok(Location::File)));
        assert!(matches!(parse_location("sqlite://./data/berth.db?mode=rwc"), Ok(Location::File)));
        assert!(parse_location("sqlite://").is_err());
        let Err(err) = parse_location("postgres://user:hunter2@db/berth") else { panic!("postgres accepted") };
        assert!(!err.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn creates_missing_directories_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/deeper/berth.db");
        let store = SqliteMetaStore::connect(&SqliteSettings::for_path(&path)).await.expect("connect");
        store.migrate().await.expect("migrate");
        assert!(path.exists());
        store.ping().await.expect("ping");
        store.close().await;
    }

    #[tokio::test]
    async fn odd_file_names_survive_the_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("100% sure?/berth #1.db");
        let store = SqliteMetaStore::connect(&SqliteSettings::for_path(&path)).await.expect("connect");
        assert_eq!(store.path.as_deref(), Some(path.as_path()));
        store.migrate().await.expect("migrate");
        assert!(path.exists());
        assert!(path.with_file_name("berth #1.db.migrate.lock").exists());
    }

    #[tokio::test]
    async fn pragmas_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
        let journal: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.writer).await.expect("journal");
        assert_eq!(journal, "wal");
        for pool in [&store.writer, &store.reader] {
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.expect("synchronous");
            assert_eq!(sync, 2, "synchronous=FULL");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.expect("foreign_keys");
            assert_eq!(fk, 1);
        }
        let query_only: i64 =
            sqlx::query_scalar("PRAGMA query_only").fetch_one(&store.reader).await.expect("query_only");
        assert_eq!(query_only, 1, "readers must not write");
    }

    /// Stores stand in for processes starting together on a fresh file: each
    /// opens its own connections and its own handle on the lock file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_on_one_file_all_succeed() {
        const STARTERS: usize = 6;
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = SqliteSettings::for_path(dir.path().join("berth.db"));
        let mut stores = Vec::new();
        for _ in 0..STARTERS {
            stores.push(SqliteMetaStore::connect(&settings).await.expect("connect"));
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(STARTERS));
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .map(|store| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.migrate().await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("migrate");
        }
        // A later run finds nothing to do.
        stores[0].migrate().await.expect("re-migrate");
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&stores[0].reader)
            .await
            .expect("count migrations");
        assert_eq!(applied, i64::try_from(MIGRATOR.iter().count()).expect("count"));
    }

    #[tokio::test]
    async fn in_memory_store_works() {
        let store = SqliteMetaStore::connect(&SqliteSettings::in_memory()).await.expect("connect");
        store.migrate().await.expect("migrate");
        assert_eq!(store.list_repositories(None, None).await.expect("list"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn rejects_non_sqlite_urls_without_echoing_them() {
        let settings = SqliteSettings { url: "postgres://u:secret@h/db".into(), ..SqliteSettings::in_memory() };
        let err = SqliteMetaStore::connect(&settings).await.expect_err("must refuse");
        assert!(!err.to_string().contains("secret"));
    }
}
