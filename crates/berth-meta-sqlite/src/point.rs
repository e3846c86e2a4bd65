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
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_meta::{MetaError, Result};
use berth_meta_sql::Dialect;
use rusqlite::{Connection, OpenFlags};

use crate::error::Sqlite;

mod rows;
pub(crate) use rows::PointRow;

/// Connections of one database file for point reads, opened as needed.
#[derive(Debug)]
pub(crate) struct PointReaders {
    path: PathBuf,
    busy_timeout: Duration,
    /// Idle connections kept for the next read; more may be open at once
    /// (one per thread reading), the surplus is closed when given back.
    keep: usize,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl PointReaders {
    /// Opens the first connection at once, so a database that cannot be read
    /// is an error at start-up rather than at the first request.
    pub(crate) fn open(path: &Path, keep: usize, busy_timeout: Duration) -> Result<Self> {
        let readers = PointReaders {
            path: path.to_path_buf(),
            busy_timeout,
            keep: keep.max(1),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        let first = readers.connect().map_err(classify)?;
        readers.lock().push(first);
        Ok(readers)
    }

    /// Runs `op` on an idle connection (or a new one) on this thread.
    pub(crate) fn run<T>(&self, op: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(MetaError::Unavailable("the metadata store is closed".into()));
        }
        let conn = match self.lock().pop() {
            Some(conn) => conn,
            None => self.connect().map_err(classify)?,
        };
        let value = op(&conn).map_err(classify)?;
        let mut idle = self.lock();
        if idle.len() < self.keep && !self.closed.load(Ordering::Acquire) {
            idle.push(conn);
        }
        Ok(value)
    }

    /// Refuses further reads and closes every idle connection (a read in
    /// flight closes its own when it ends).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(std::mem::take(&mut *self.lock()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
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
        readers.lock().len()
    }

    #[test]
    fn connections_are_reused_and_a_failed_read_closes_its_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.db");
        Connection::open(&path).expect("create").execute_batch("CREATE TABLE t (x INTEGER)").expect("table");
        let readers = PointReaders::open(&path, 2, Duration::from_secs(1)).expect("open");
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

    #[test]
    fn busy_is_transient_and_a_missing_table_is_not() {
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), Some("database is locked".into()));
        assert!(matches!(classify(busy), MetaError::Unavailable(_)));
        let missing = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(1), Some("no such table".into()));
        assert!(matches!(classify(missing), MetaError::Backend(_)));
    }
}
