//! Postgres backend of [`berth_meta::MetaStore`].
//!
//! Several registry replicas may share one database, so unlike SQLite (one
//! in-process writer) writes here really do run concurrently. Every write
//! runs at READ COMMITTED and is made safe where it happens:
//!
//! - idempotent inserts use `ON CONFLICT`, which waits for a concurrent
//!   inserter of the same key and then sees its row;
//! - compare-and-set updates (upload offsets) and claiming deletes (upload
//!   completion) put the condition in their `WHERE`, which Postgres
//!   re-checks against the row a concurrent writer left behind;
//! - where a read decides a write (immutable tags, reference checks,
//!   manifest deletion) the rows read are locked or the write re-checks the
//!   read; each function's docs say which.
//!
//! Deadlocks and serialization failures, should they still happen, are
//! retried a few times (see `retry`).
//!
//! Each trait is implemented in its own module (`store`, `auth`, `events`,
//! `maintenance`) with its SQL inline; what is not SQL dialect comes from
//! `berth-meta-sql`.

mod auth;
mod blobs;
mod browse;
mod directory;
mod error;
mod events;
mod holders;
mod maintenance;
mod manifests;
mod proxy;
mod repositories;
mod retry;
mod scrub;
mod sessions;
mod settings;
mod store;
mod tags;
mod usage;

use std::fmt;
use std::time::{Duration, Instant};

use berth_meta::Result;
use berth_meta_sql::error::classify_migration;
use berth_oci::{Digest, RepositoryName};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{Postgres, StoreError, StoreResult};
use crate::retry::retrying;
pub use crate::settings::PostgresSettings;

pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The embedded schema migrations (`migrations/postgres` at the repository root).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The Postgres metadata store. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresMetaStore {
    pool: PgPool,
    /// For the dedicated migration connection. Holds the password, hence
    /// the hand-written `Debug`.
    migration_options: PgConnectOptions,
    /// How long opening the migration connection may take.
    acquire_timeout: Duration,
}

impl fmt::Debug for PostgresMetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresMetaStore").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl PostgresMetaStore {
    /// Opens the pool, waiting up to `acquire_timeout` for a first
    /// connection (a server that is still starting up is retried). Does not
    /// migrate: call [`PostgresMetaStore::migrate`] at start-up or from
    /// `berth migrate`.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self> {
        let options = settings.connect_options()?;
        let migration_options = settings.migration_options()?;
        let pool = settings.pool_options().connect_with(options).await.map_err(StoreError::from)?;
        Ok(PostgresMetaStore { pool, migration_options, acquire_timeout: settings.acquire_timeout })
    }

    /// Applies pending migrations.
    ///
    /// sqlx's Postgres migrator holds `pg_advisory_lock` (keyed on the
    /// database name) from before it reads `_sqlx_migrations` until it has
    /// applied everything, so of several replicas starting together exactly
    /// one applies each migration and the others wait, then find it done.
    /// When the schema is already current that is a handful of short
    /// queries under the lock.
    ///
    /// It runs on a connection of its own (a private one-connection pool)
    /// rather than a shared pooled one: if a migration fails, sqlx returns
    /// without `pg_advisory_unlock`, and a session lock left on a shared
    /// connection would stall every later migration (of any replica) until
    /// that connection closed. Closing the private pool releases the lock
    /// whatever happened.
    pub async fn migrate(&self) -> Result<()> {
        let started = Instant::now();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(self.migration_options.clone())
            .await
            .map_err(StoreError::from)?;
        let result = MIGRATOR.run(&pool).await.map_err(|e| classify_migration::<Postgres>(&e));
        pool.close().await;
        tracing::debug!(elapsed = ?started.elapsed(), ok = result.is_ok(), "postgres migrations checked");
        result
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Links `digest` into `repo` if `condition` holds.
    async fn link(&self, repo: &RepositoryName, digest: &Digest, condition: blobs::LinkCondition<'_>) -> Result<bool> {
        retrying("link_blob", || async {
            let mut tx = self.begin().await?;
            if !blobs::link(&mut tx, repo, digest, berth_meta_sql::now_ms(), condition).await? {
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Runs `op` on the pool, classifying its errors.
    pub(crate) async fn read<T>(&self, op: impl AsyncFnOnce(&PgPool) -> StoreResult<T>) -> Result<T> {
        Ok(op(&self.pool).await?)
    }

    /// Starts a write transaction. READ COMMITTED is the server default,
    /// but the locking above relies on its per-statement snapshots, so it is
    /// stated rather than left to `default_transaction_isolation`.
    async fn begin(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?)
    }
}
