//! The sqlx reader connections, for reads that may scan (lists, usage,
//! maintenance; point reads have their own connections, see `point`),
//! pooled here rather than in an sqlx `Pool`: each checkout of a pooled
//! connection costs two extra round trips to the connection's worker thread
//! (sqlx pings a connection when it is taken and again, in a spawned task,
//! when it is given back), and on a short read those cost more than the
//! query. Here a connection is taken and given back without a word to
//! its thread. What sqlx's return ping guards against, a connection left
//! half-way through a command, cannot happen: a connection whose read
//! failed or was cancelled is closed instead of given back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::Semaphore;

use crate::error::StoreResult;

/// An idle connection is closed after this long (as in sqlx's pools).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// At most `max` connections, opened as reads need them.
#[derive(Debug)]
pub(crate) struct Readers {
    options: SqliteConnectOptions,
    max: u32,
    /// One permit per connection in use (or being opened).
    slots: Semaphore,
    acquire_timeout: Duration,
    /// Idle connections, the most recently used last, with when they became idle.
    idle: Mutex<Vec<(SqliteConnection, Instant)>>,
}

impl Readers {
    /// Opens nothing yet: the point readers' first connection already
    /// proves at start-up that the file can be read (see `point`), and a
    /// process that never scans never pays for a connection and its thread.
    pub(crate) fn new(options: SqliteConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        Readers { options, max, slots: Semaphore::new(max as usize), acquire_timeout, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `op` on an idle connection, or a new one.
    pub(crate) async fn run<T>(&self, op: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>) -> StoreResult<T> {
        let _slot = match tokio::time::timeout(self.acquire_timeout, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed.into()),
            Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
        };
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.options.connect().await?,
        };
        // If this future is dropped during `op`, so is `conn`: closed.
        let result = op(&mut conn).await;
        if result.is_ok() {
            self.give_back(conn);
        }
        result
    }

    fn take_idle(&self) -> Option<SqliteConnection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop().map(|(conn, _)| conn)
    }

    /// Keeps `conn` for the next read (unless closing), and closes the
    /// oldest idle connection if it has idled past [`IDLE_TIMEOUT`].
    fn give_back(&self, conn: SqliteConnection) {
        let stale = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let stale = idle.first().is_some_and(|(_, since)| since.elapsed() > IDLE_TIMEOUT).then(|| idle.remove(0));
            if !self.slots.is_closed() {
                idle.push((conn, Instant::now()));
            }
            stale
        };
        // Dropped outside the lock: a connection's drop stops its thread.
        drop(stale);
    }

    /// Waits for reads in flight, refuses further ones and closes every connection.
    pub(crate) async fn close(&self) {
        if let Ok(all) = self.slots.acquire_many(self.max).await {
            all.forget();
        }
        self.slots.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(readers: &Readers) -> usize {
        readers.idle.lock().expect("idle").len()
    }

    async fn one(readers: &Readers) -> StoreResult<i64> {
        readers.run(async |conn| Ok(sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await?)).await
    }

    #[tokio::test]
    async fn connections_are_reused_unless_a_read_failed_or_was_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SqliteConnectOptions::new().filename(dir.path().join("r.db")).create_if_missing(true);
        let readers = Readers::new(options, 2, Duration::from_secs(5));
        assert_eq!(idle(&readers), 0, "nothing is opened before the first read");
        assert_eq!(one(&readers).await.expect("read"), 1);
        assert_eq!(idle(&readers), 1, "given back, not a second one opened");

        let failed =
            readers.run(async |conn| Ok(sqlx::query("SELECT x FROM nowhere").execute(&mut *conn).await?)).await;
        assert!(failed.is_err());
        assert_eq!(idle(&readers), 0, "a failed read's connection is closed");

        let slow = readers.run(async |conn| {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&mut *conn).await?)
        });
        assert!(tokio::time::timeout(Duration::from_millis(20), slow).await.is_err());
        assert_eq!(idle(&readers), 0, "a cancelled read's connection is closed");

        assert_eq!(one(&readers).await.expect("read after"), 1, "a new connection is opened");
        assert_eq!(idle(&readers), 1);
        readers.close().await;
        assert_eq!(idle(&readers), 0);
        assert!(one(&readers).await.is_err(), "closed readers refuse reads");
    }
}
