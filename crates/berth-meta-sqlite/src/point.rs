//! Point reads: one row (or a few) found through an index, such as a
//! manifest by tag, a blob's entry or a token by its lookup key. They run on
//! the caller's own thread through rusqlite instead of on an sqlx connection.
//!
//! Why: sqlx runs each SQLite connection on a thread of its own, so every
//! statement is two cross-thread wake-ups. On a manifest GET those wake-ups
//! and the context switches behind them cost more than the query itself (a
//! profile under load put over half of the process's CPU there). A point read
//! served from the OS page cache takes microseconds, less than one hand-off,
//! so it is cheaper to run it where the request already is. In WAL mode a
//! reader never waits for the writer, so such a read does not block the
//! runtime's thread on a lock (a page not in the OS cache costs a disk read
//! on that thread, as reading a small file would). Reads that may scan
//! (lists, usage, GC, backup) stay on the sqlx readers, which do not hold up
//! a runtime thread.
//!
//! A connection whose read failed is closed rather than reused, as with the
//! sqlx readers: a half-finished statement never reaches the next caller.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use berth_meta::{MetaError, Result};
use berth_meta_sql::Dialect;
use rusqlite::{Connection, OpenFlags};

use crate::error::Sqlite;

mod rows;
pub(crate) use rows::PointRow;

/// How long a read snapshot is reused at most while no write of this
/// process happened: the bound on how late a point read sees another
/// process's write (`berth` commands on the same file).
const SNAPSHOT_REUSE: Duration = Duration::from_millis(2);
/// How long an idle connection may keep its snapshot: a snapshot held
/// keeps checkpoints from recycling the write-ahead log.
const IDLE_SNAPSHOT: Duration = Duration::from_millis(100);

/// Counts the write transactions of this process, on any SQLite store:
/// a snapshot taken before the latest one ended is not reused.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Held while a write transaction runs; dropping it (after the commit, or
/// when the write failed or was abandoned) makes older snapshots stale.
pub(crate) struct WriteMark;

impl Drop for WriteMark {
    fn drop(&mut self) {
        WRITES.fetch_add(1, Ordering::Release);
    }
}

/// A point connection, with the read transaction it may hold open.
#[derive(Debug)]
struct PointConnection {
    conn: Connection,
    snapshot: Option<Snapshot>,
}

/// An open read transaction: which writes had ended before it, and when.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    writes: u64,
    taken: Instant,
}

impl PointConnection {
    /// Ends the read transaction, if any. A connection that cannot is
    /// unusable: the caller drops it, which rolls back.
    fn end_snapshot(&mut self) -> rusqlite::Result<()> {
        if self.snapshot.take().is_some() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// Makes sure the connection reads a snapshot no older than the last
    /// write of this process and [`SNAPSHOT_REUSE`].
    fn fresh_snapshot(&mut self) -> rusqlite::Result<()> {
        let writes = WRITES.load(Ordering::Acquire);
        if self.snapshot.is_some_and(|s| s.writes != writes || s.taken.elapsed() >= SNAPSHOT_REUSE) {
            self.end_snapshot()?;
        }
        if self.snapshot.is_none() {
            // Deferred: the snapshot is taken by the first read, after `writes` was loaded.
            self.conn.execute_batch("BEGIN")?;
            self.snapshot = Some(Snapshot { writes, taken: Instant::now() });
        }
        Ok(())
    }
}

/// Connections of one database file for point reads, opened as needed.
///
/// Each read transaction costs SQLite a handful of locks on the WAL index,
/// contended between the runtime's threads (a fifth of a manifest GET's CPU
/// in a profile). So a connection keeps its read transaction open between
/// reads and reuses the snapshot while it is current: until any write of
/// this process ends ([`WriteMark`]), for at most [`SNAPSHOT_REUSE`]. A
/// request therefore sees every write this process acknowledged before it
/// began, and another process's writes within milliseconds. Idle
/// connections give their snapshots up when a write of this process begins
/// ([`PointReaders::end_idle_snapshots`]) and after [`IDLE_SNAPSHOT`] (a
/// task of the runtime sweeps them), so checkpoints are not held back.
#[derive(Debug)]
pub(crate) struct PointReaders {
    path: PathBuf,
    busy_timeout: Duration,
    /// Idle connections kept for the next read; more may be open at once
    /// (one per thread reading), the surplus is closed when given back.
    keep: usize,
    pool: Mutex<Pool>,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Vec<PointConnection>,
    /// When the sweeper last ran, while one is scheduled.
    sweeping: Option<Instant>,
}

impl PointReaders {
    /// Opens the first connection at once, so a database that cannot be read
    /// is an error at start-up rather than at the first request.
    pub(crate) fn open(path: &Path, keep: usize, busy_timeout: Duration) -> Result<Self> {
        let readers = PointReaders {
            path: path.to_path_buf(),
            busy_timeout,
            keep: keep.max(1),
            pool: Mutex::new(Pool::default()),
            closed: AtomicBool::new(false),
        };
        let first = readers.connect().map_err(classify)?;
        readers.lock().idle.push(PointConnection { conn: first, snapshot: None });
        Ok(readers)
    }

    /// Runs `op` on an idle connection (or a new one) on this thread.
    pub(crate) fn run<T>(self: &Arc<Self>, op: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(MetaError::Unavailable("the metadata store is closed".into()));
        }
        let idle = self.lock().idle.pop();
        let mut pc = match idle {
            Some(pc) => pc,
            None => PointConnection { conn: self.connect().map_err(classify)?, snapshot: None },
        };
        // On error the connection is dropped: closing it rolls back.
        pc.fresh_snapshot().map_err(classify)?;
        let value = op(&pc.conn).map_err(classify)?;
        self.give_back(pc);
        Ok(value)
    }

    fn give_back(self: &Arc<Self>, mut pc: PointConnection) {
        let mut pool = self.lock();
        if pool.idle.len() >= self.keep || self.closed.load(Ordering::Acquire) {
            return;
        }
        let swept_lately = pool.sweeping.is_some_and(|at| at.elapsed() < IDLE_SNAPSHOT * 10);
        if pc.snapshot.is_some() && !swept_lately {
            // Only a runtime can sweep; without one (or if its sweeper died
            // with a runtime that ended) the snapshot ends now.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    pool.sweeping = Some(Instant::now());
                    runtime.spawn(sweep(Arc::downgrade(self)));
                }
                Err(_) => {
                    if pc.end_snapshot().is_err() {
                        return;
                    }
                }
            }
        }
        pool.idle.push(pc);
    }

    /// Ends the snapshots idle connections held for [`IDLE_SNAPSHOT`];
    /// whether some are left to sweep later.
    fn sweep_idle(&self) -> bool {
        let mut pool = self.lock();
        pool.idle.retain_mut(|pc| {
            let stale = pc.snapshot.is_some_and(|s| s.taken.elapsed() >= IDLE_SNAPSHOT);
            !stale || pc.end_snapshot().is_ok()
        });
        let more = pool.idle.iter().any(|pc| pc.snapshot.is_some());
        pool.sweeping = more.then(Instant::now);
        more
    }

    /// Ends the snapshots of idle connections: called as a write begins, so
    /// that no idle snapshot keeps the writer from starting the write-ahead
    /// log over (otherwise it grows, and every commit tries to checkpoint
    /// it: twice the syncs per write, measured on small-blob pushes).
    pub(crate) fn end_idle_snapshots(&self) {
        let mut pool = self.lock();
        pool.idle.retain_mut(|pc| pc.end_snapshot().is_ok());
    }

    /// Refuses further reads and closes every idle connection (a read in
    /// flight closes its own when it ends).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(std::mem::take(&mut self.lock().idle));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only session on the file. NO_MUTEX: a connection is used by one
    /// thread at a time (it is taken out of the pool), so SQLite's own
    /// per-connection mutex would be pure overhead.
    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        // query_only: a write sent here by mistake is an error, not a lock
        // upgrade. A small page cache: the OS page cache already holds the file.
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -512;")?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }
}

/// Sweeps idle snapshots until none is left (see [`PointReaders`]).
async fn sweep(readers: Weak<PointReaders>) {
    loop {
        tokio::time::sleep(IDLE_SNAPSHOT).await;
        match readers.upgrade() {
            Some(readers) if readers.sweep_idle() => {}
            _ => return,
        }
    }
}

/// Classifies a rusqlite error as [`berth_meta_sql::error::classify`] does
/// an sqlx one: lock contention, I/O trouble and a full disk are transient.
pub(crate) fn classify(err: rusqlite::Error) -> MetaError {
    match &err {
        rusqlite::Error::SqliteFailure(e, message) => {
            let code = e.extended_code.to_string();
            let message = format!("{} (SQLite code {code})", message.as_deref().unwrap_or("database error"));
            if Sqlite::is_transient(&code) { MetaError::Unavailable(message) } else { MetaError::Backend(message) }
        }
        _ => MetaError::Backend(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(readers: &PointReaders) -> usize {
        readers.lock().idle.len()
    }

    #[test]
    fn connections_are_reused_and_a_failed_read_closes_its_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.db");
        Connection::open(&path).expect("create").execute_batch("CREATE TABLE t (x INTEGER)").expect("table");
        let readers = Arc::new(PointReaders::open(&path, 2, Duration::from_secs(1)).expect("open"));
        assert_eq!(idle(&readers), 1, "the first connection is opened at once");
        let one: i64 = readers.run(|c| c.query_row("SELECT 1", [], |r| r.get(0))).expect("read");
        assert_eq!(one, 1);
        assert_eq!(idle(&readers), 1, "given back, not a second one opened");

        let failed = readers.run(|c| c.query_row("SELECT x FROM nowhere", [], |r| r.get::<_, i64>(0)));
        assert!(matches!(failed, Err(MetaError::Backend(_))), "{failed:?}");
        assert_eq!(idle(&readers), 0, "a failed read's connection is closed");

        let written = readers.run(|c| c.execute("INSERT INTO t VALUES (1)", []));
        assert!(written.is_err(), "point readers refuse writes");

        readers.close();
        assert_eq!(idle(&readers), 0);
        assert!(readers.run(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))).is_err(), "closed: refused");
    }

    fn table_with_one_row() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let writer = Connection::open(&path).expect("create");
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .expect("table");
        (dir, path, writer)
    }

    fn count(readers: &Arc<PointReaders>) -> i64 {
        readers.run(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))).expect("read")
    }

    #[test]
    fn a_write_of_this_process_is_seen_by_the_next_read() {
        let (_dir, path, writer) = table_with_one_row();
        let readers = Arc::new(PointReaders::open(&path, 2, Duration::from_secs(1)).expect("open"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let _in_runtime = rt.enter();
        assert_eq!(count(&readers), 1);
        for expected in 2..50 {
            let mark = WriteMark;
            writer.execute("INSERT INTO t VALUES (1)", []).expect("insert");
            drop(mark);
            assert_eq!(count(&readers), expected, "the snapshot was renewed after the write");
        }
    }

    #[test]
    fn another_process_write_is_seen_within_the_reuse_bound() {
        let (_dir, path, writer) = table_with_one_row();
        let readers = Arc::new(PointReaders::open(&path, 2, Duration::from_secs(1)).expect("open"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let _in_runtime = rt.enter();
        assert_eq!(count(&readers), 1);
        // No WriteMark: as if another process wrote.
        writer.execute("INSERT INTO t VALUES (1)", []).expect("insert");
        std::thread::sleep(SNAPSHOT_REUSE + Duration::from_millis(1));
        assert_eq!(count(&readers), 2);
    }

    #[test]
    fn idle_snapshots_end_so_a_truncating_checkpoint_is_not_held_back() {
        let (_dir, path, writer) = table_with_one_row();
        let readers = Arc::new(PointReaders::open(&path, 2, Duration::from_secs(1)).expect("open"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            assert_eq!(count(&readers), 1);
            assert!(readers.lock().idle.iter().any(|pc| pc.snapshot.is_some()), "kept while fresh");
            writer.execute("INSERT INTO t VALUES (1)", []).expect("insert");
            tokio::time::sleep(IDLE_SNAPSHOT * 3).await;
            assert!(readers.lock().idle.iter().all(|pc| pc.snapshot.is_none()), "swept");
        });
        // busy = 0: every frame copied and the log truncated, no reader in the way.
        let busy: i64 = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).expect("checkpoint");
        assert_eq!(busy, 0);
    }

    #[test]
    fn without_a_runtime_no_snapshot_outlives_its_read() {
        let (_dir, path, _writer) = table_with_one_row();
        let readers = Arc::new(PointReaders::open(&path, 2, Duration::from_secs(1)).expect("open"));
        assert_eq!(count(&readers), 1);
        assert!(readers.lock().idle.iter().all(|pc| pc.snapshot.is_none()));
    }

    #[test]
    fn busy_is_transient_and_a_missing_table_is_not() {
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), Some("database is locked".into()));
        assert!(matches!(classify(busy), MetaError::Unavailable(_)));
        let missing = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(1), Some("no such table".into()));
        assert!(matches!(classify(missing), MetaError::Backend(_)));
    }
}
