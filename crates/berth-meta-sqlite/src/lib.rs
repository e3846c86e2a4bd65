//! SQLite backend of [`berth_meta::MetaStore`].
//!
//! SQLite allows one writer at a time. Rather than let several pooled
//! connections race for the write lock (and hit `SQLITE_BUSY` when a read
//! transaction tries to upgrade), every write goes through a pool holding
//! exactly one connection and starts with `BEGIN IMMEDIATE`; reads use
//! read-only connections of their own, which WAL mode lets run while the
//! writer commits. Writes are therefore queued in-process, and the queue
//! wait is bounded by the acquire timeout.
//!
//! Reads come in two kinds. The point reads of the per-request paths (a
//! manifest, a blob's entry, an upload session, credentials with their
//! access facts: a row or a few by key) run on the caller's thread through
//! rusqlite (`point`); every other read (lists, usage, maintenance, admin
//! lookups) runs on sqlx reader connections (`readers`), off the runtime's
//! threads. A point connection keeps its read snapshot between reads until
//! a write of this process ends (or 2 ms pass, for other processes' writes):
//! a request sees every write acknowledged before it began, without paying
//! SQLite's per-transaction locks on each read (see `point`).
//!
//! sqlx runs each SQLite connection on a thread of its own, and every
//! statement sent to it is a round trip between threads. The hot writes of a
//! blob upload are therefore written as batches: one SQL string holding the
//! whole transaction, `BEGIN IMMEDIATE` to `COMMIT`, sent as one command
//! (see [`SqliteMetaStore::batch`]).
//!
//! Each trait is implemented in its own module (`store`, `auth`, `events`,
//! `maintenance`) with its SQL inline; the rest is shared through
//! `berth-meta-sql`.

mod auth;
mod backup;
mod blobs;
mod browse;
mod directory;
mod error;
mod events;
mod holders;
mod maintenance;
mod manifests;
mod migrate;
mod point;
mod proxy;
mod readers;
mod scrub;
mod sessions;
mod store;
mod tags;
mod usage;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_meta::{MetaError, Result};
use berth_meta_sql::error::classify_migration;
use sqlx::SqliteConnection;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use crate::backup::{Snapshot, database_file, latest_schema_version, read_snapshot};
use crate::error::{Sqlite, StoreError, StoreResult};
use crate::point::{PointReaders, WriteMark};
use crate::readers::Readers;

/// How long a statement waits for a lock held by another process (for
/// example `berth migrate` or a second registry instance on the same file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// `sqlite:///abs/path/berth.db`, `sqlite://./rel/berth.db` or
    /// `sqlite::memory:` (tests: a temporary file removed with the store).
    /// A missing file and its parent directories
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

    /// A private database that lives as long as the store (a file in a
    /// temporary directory, see [`SqliteMetaStore::connect`]).
    pub fn in_memory() -> Self {
        SqliteSettings { url: "sqlite::memory:".to_owned(), ..Self::for_path("unused") }
    }
}

/// The SQLite metadata store. Cloning is cheap and shares the pools.
#[derive(Debug, Clone)]
pub struct SqliteMetaStore {
    /// Exactly one connection: every write transaction goes through it.
    writer: SqlitePool,
    /// Connections for reads that may scan.
    reader: Arc<Readers>,
    /// Connections for point reads, run on the caller's thread.
    points: Arc<PointReaders>,
    /// The database file; migrations lock a file beside it.
    path: PathBuf,
    /// Holds an "in-memory" database's directory until the last clone drops.
    _temp_dir: Option<Arc<tempfile::TempDir>>,
}

/// The embedded schema migrations (`migrations/sqlite` at the repository root).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl SqliteMetaStore {
    /// Opens (and if needed creates) the database. Does not migrate: call
    /// [`SqliteMetaStore::migrate`] at start-up or from `berth migrate`.
    pub async fn connect(settings: &SqliteSettings) -> Result<Self> {
        // "In memory" is a file in a private temporary directory, removed
        // with the store: point reads open their own connections (see
        // `point`), and an SQLite in-memory database is private to one.
        let (options, temp_dir) = match parse_location(&settings.url)? {
            Location::Memory => {
                let dir = tempfile::Builder::new()
                    .prefix("berth-memory-")
                    .tempdir()
                    .map_err(|e| MetaError::Unavailable(format!("cannot create a temporary database: {e}")))?;
                (SqliteConnectOptions::new().filename(dir.path().join("berth.db")), Some(Arc::new(dir)))
            }
            // Parse errors can quote the URL, so they are replaced, not wrapped.
            Location::File => (
                SqliteConnectOptions::from_str(&settings.url)
                    .map_err(|_| MetaError::Backend("invalid SQLite URL".into()))?,
                None,
            ),
        };
        let options = options
            .foreign_keys(true)
            // FULL: an acknowledged push must survive a power loss, even in WAL mode.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // The file sqlx opens (percent-decoded); migrations lock beside it.
        let path = options.get_filename().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| MetaError::Unavailable(format!("cannot create the database directory: {e}")))?;
        }
        // The writer connects first: it creates the file and switches
        // it to WAL (a persistent setting) before any reader opens it. Its
        // page cache is as small as the readers': SQLite's default 2 MiB
        // stayed resident after a burst of pushes (private memory during the
        // 256 MiB transfers 7.2 -> 5.6 MiB), with no write measurably slower.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .pragma("cache_size", "-512"),
            )
            .await
            .map_err(StoreError::from)?;
        let readers = reader_count(settings.max_connections);
        // query_only turns a write sent to the wrong pool into an error
        // instead of a lock upgrade that could deadlock with the writer.
        let reader = Readers::new(
            // A small page cache per reader: the OS page cache already
            // holds the file, and sixteen private 2 MiB caches add up.
            options.pragma("query_only", "ON").pragma("cache_size", "-512"),
            readers,
            settings.acquire_timeout,
        );
        let points = PointReaders::open(&path, readers as usize, BUSY_TIMEOUT)?;
        Ok(SqliteMetaStore { writer, reader: Arc::new(reader), points: Arc::new(points), path, _temp_dir: temp_dir })
    }

    /// Applies pending migrations. Processes starting together serialize on
    /// an OS lock of `<dbfile>.migrate.lock`, so exactly one of them applies
    /// each migration and the others find it done.
    pub async fn migrate(&self) -> Result<()> {
        let _lock = migrate::lock_for(&self.path).await?;
        let _mark = self.write_mark();
        MIGRATOR.run(&self.writer).await.map_err(|e| classify_migration::<Sqlite>(&e))
    }

    /// Closes the readers and the writer, waiting for queries in flight.
    pub async fn close(&self) {
        self.points.close();
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Runs `op` on a reader connection, classifying its errors.
    pub(crate) async fn read<T>(&self, op: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>) -> Result<T> {
        Ok(self.reader.run(op).await?)
    }

    /// Runs `op` (a point read, see [`point`]) on this thread.
    pub(crate) fn point_read<T>(&self, op: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.points.run(op)
    }

    /// Marks a write beginning (see [`PointReaders`]): idle point snapshots
    /// end now, and older ones are stale once the mark drops.
    fn write_mark(&self) -> WriteMark {
        self.points.end_idle_snapshots();
        WriteMark
    }

    /// Runs `op` in a write transaction on the single writer connection and
    /// commits; point reads that begin after it ended see it ([`WriteMark`]).
    /// IMMEDIATE takes the write lock up front, so a transaction that reads
    /// before it writes cannot fail half-way on a lock upgrade.
    pub(crate) async fn write<T>(&self, op: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>) -> Result<T> {
        let _mark = self.write_mark();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::from)?;
        let value = op(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(value)
    }

    /// Runs `op` on the writer connection, for batches: SQL strings of
    /// several statements (see `blobs` and [`relaxed!`]) that sqlx sends to
    /// the connection's thread as one command, instead of one round trip per
    /// statement. A batch runs its own `BEGIN IMMEDIATE` ... `COMMIT`.
    ///
    /// A batch that failed half-way may leave a transaction open or
    /// synchronous relaxed: both are undone before the connection goes back
    /// to the pool, and a connection that cannot be cleaned up (or whose
    /// batch was cancelled mid-way) is closed, which rolls back.
    pub(crate) async fn batch<T>(&self, op: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>) -> Result<T> {
        let _mark = self.write_mark();
        let mut writer = Writer { conn: self.writer.acquire().await.map_err(StoreError::from)?, clean: false };
        let result = op(&mut writer.conn).await;
        writer.clean = match result {
            Ok(_) => true,
            Err(_) => {
                // "no transaction is active" is fine: the batch had not begun one.
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *writer.conn).await;
                sqlx::raw_sql("PRAGMA synchronous = FULL").execute(&mut *writer.conn).await.is_ok()
            }
        };
        Ok(result?)
    }
}

/// The writer connection during a batch; closed rather than pooled again
/// unless the batch left it clean (see [`SqliteMetaStore::batch`]).
struct Writer {
    conn: PoolConnection<sqlx::Sqlite>,
    clean: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}

/// A single-statement write that need not survive a power loss on its own:
/// upload progress and blob reservations. With `synchronous=NORMAL` its
/// commit is not fsynced; the next ordinary (FULL) commit fsyncs the
/// write-ahead log and with it this write. Lost to a crash, such a write
/// costs nothing but a retry: an upload resumes from earlier progress or
/// answers BLOB_UPLOAD_UNKNOWN, and bytes committed under a lost reservation
/// are orphans for the collector. Run it with [`SqliteMetaStore::batch`],
/// reading its outcome from `RETURNING` rows: in a batch, sqlx's
/// `rows_affected` also counts the pragmas (SQLite reports the last write's
/// count for them).
macro_rules! relaxed {
    ($sql:literal) => {
        concat!("PRAGMA synchronous = NORMAL; ", $sql, "; PRAGMA synchronous = FULL")
    };
}
pub(crate) use relaxed;

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

#[cfg(test)]
mod tests {
    use berth_meta::{MaintenanceStore, MetaStore};

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
        assert_eq!(store.path, path);
        store.migrate().await.expect("migrate");
        assert!(path.exists());
        assert!(path.with_file_name("berth #1.db.migrate.lock").exists());
    }

    /// Point snapshots kept between reads must not keep the writer from
    /// starting the write-ahead log over: a log that only grows makes every
    /// commit try a checkpoint (twice the syncs per write).
    #[tokio::test]
    async fn reads_between_writes_let_the_log_start_over() {
        use berth_meta::{UploadProgress, UploadSession};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let store = SqliteMetaStore::connect(&SqliteSettings::for_path(&path)).await.expect("connect");
        store.migrate().await.expect("migrate");
        let repository = berth_oci::RepositoryName::parse("acme/app").expect("name");
        for i in 0..600 {
            let session = UploadSession {
                id: format!("upload-{i}"),
                repository: repository.clone(),
                algorithm: berth_oci::Algorithm::Sha256,
                progress: UploadProgress::default(),
                created_at: 0,
            };
            store.create_upload(&session).await.expect("create");
            assert!(store.get_upload(&session.id).await.expect("read").is_some());
        }
        // The automatic checkpoint starts over at 1000 pages (4 MiB); a log
        // that never starts over holds every page written.
        let wal = std::fs::metadata(path.with_file_name("w.db-wal")).expect("wal").len();
        assert!(wal < 6 << 20, "write-ahead log of {wal} bytes");
        store.close().await;
    }

    #[tokio::test]
    async fn pragmas_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
        let journal: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.writer).await.expect("journal");
        assert_eq!(journal, "wal");
        let pragma = |name: &'static str| sqlx::query_scalar::<_, i64>(name);
        let writer = [
            pragma("PRAGMA synchronous").fetch_one(&store.writer).await.ok(),
            pragma("PRAGMA foreign_keys").fetch_one(&store.writer).await.ok(),
        ];
        let reader = [
            store.read(async |conn| Ok(pragma("PRAGMA synchronous").fetch_one(&mut *conn).await?)).await.ok(),
            store.read(async |conn| Ok(pragma("PRAGMA foreign_keys").fetch_one(&mut *conn).await?)).await.ok(),
        ];
        for [sync, fk] in [writer, reader] {
            assert_eq!(sync, Some(2), "synchronous=FULL");
            assert_eq!(fk, Some(1), "foreign_keys");
        }
        let query_only = store
            .read(async |conn| Ok(pragma("PRAGMA query_only").fetch_one(&mut *conn).await?))
            .await
            .expect("query_only");
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
        let applied: i64 = stores[0]
            .read(async |conn| {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&mut *conn).await?)
            })
            .await
            .expect("count migrations");
        assert_eq!(applied, i64::try_from(MIGRATOR.iter().count()).expect("count"));
    }

    /// A batch that fails half-way must not leave its transaction open or
    /// synchronous relaxed on the writer for the next caller.
    #[tokio::test]
    async fn failed_batches_leave_the_writer_clean() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
        store.migrate().await.expect("migrate");
        for sql in [
            "BEGIN IMMEDIATE; INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'h', 1); \
             INSERT INTO no_such_table VALUES (1); COMMIT",
            relaxed!("INSERT INTO no_such_table VALUES (1)"),
        ] {
            let failed = store.batch(async |c| Ok(sqlx::query(sql).execute(&mut *c).await.map(|_| ())?)).await;
            assert!(failed.is_err(), "{sql}");
            let (sync, leases): (i64, i64) = store
                .batch(async |c| {
                    let sync = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *c).await?;
                    let leases = sqlx::query_scalar("SELECT COUNT(*) FROM leases").fetch_one(&mut *c).await?;
                    Ok((sync, leases))
                })
                .await
                .expect("writer usable");
            assert_eq!(sync, 2, "synchronous=FULL again after {sql}");
            assert_eq!(leases, 0, "the failed transaction was rolled back");
        }
        // And a write transaction can begin: none is left open.
        store.acquire_lease("gc", "me", 1, 10).await.expect("lease");
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
