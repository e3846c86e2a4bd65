//! What every Postgres test binary shares: the opt-in URL, a throw-away
//! schema per test, and stores on it.
//!
//! Each binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

use berth_meta::testsuite::Fixture;
use berth_meta_postgres::{PostgresMetaStore, PostgresSettings};
use sqlx::{Connection, Executor, PgConnection};

/// The variable CI sets, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const URL_VAR: &str = "BERTH_TEST_POSTGRES_URL";

/// The database URL, or `None` after saying loudly that the test is skipped.
/// Written straight to the stderr handle, which libtest does not capture, so
/// the skip shows even for tests that "pass".
pub fn test_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // One write, so the line is not split by libtest's own output.
            let line = format!("NOT RUN: {URL_VAR} is not set; Postgres tests skipped\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

/// An empty schema of its own for one test, dropped when the test ends (kept,
/// and named on stderr, when the test fails, for a look at its rows).
pub struct Schema {
    url: String,
    name: String,
}

impl Schema {
    /// A fresh schema, or `None` (after the skip message) without a database.
    pub async fn create() -> Option<Schema> {
        let url = test_url()?;
        let name = format!("berth_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&url).await.expect("connect to the test database");
        // The name is generated above from hex digits: safe to splice in.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).await.expect("create test schema");
        let _ = conn.close().await;
        Some(Schema { url, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Settings for a store whose tables live in this schema.
    pub fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            max_connections: 4,
            // Generous: other test binaries may load the machine meanwhile.
            acquire_timeout: Duration::from_secs(10),
            schema: Some(self.name.clone()),
            // Lets a test find this schema's sessions in pg_stat_activity.
            application_name: self.name.clone(),
            ..PostgresSettings::new(self.url.clone())
        }
    }

    /// A connected store on this schema, not migrated.
    pub async fn connect(&self) -> PostgresMetaStore {
        PostgresMetaStore::connect(&self.settings()).await.expect("connect to Postgres")
    }

    /// A connected, migrated store on this schema.
    pub async fn store(&self) -> PostgresMetaStore {
        let store = self.connect().await;
        store.migrate().await.expect("migrate");
        store
    }

    /// A plain connection with this schema on its search_path, for
    /// transactions a test holds open against the store.
    pub async fn raw(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&self.url).await.expect("connect to the test database");
        conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {}", self.name))).await.expect("set search_path");
        conn
    }
}

/// Waits (up to 10 s) until one of `schema`'s store sessions is waiting for
/// a lock; `false` if none ever did.
pub async fn store_waits_for_lock(schema: &Schema, monitor: &mut PgConnection) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock')",
        )
        .bind(schema.name())
        .fetch_one(&mut *monitor)
        .await
        .expect("read pg_stat_activity");
        if waiting {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

impl Drop for Schema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "test failed: keeping Postgres schema {}", self.name);
            return;
        }
        // Drop cannot await, and may run inside the test's runtime; a
        // short-lived thread with its own runtime does the cleanup.
        let (url, name) = (self.url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                conn.execute(sqlx::AssertSqlSafe(sql)).await.ok()?;
                conn.close().await.ok()
            })
        });
        if !matches!(cleanup.join(), Ok(Some(()))) {
            let _ = writeln!(std::io::stderr(), "could not drop Postgres schema {}", self.name);
        }
    }
}

/// A fresh, migrated store for one suite case; `None` when not configured.
pub async fn fresh_fixture() -> Option<Fixture> {
    let schema = Schema::create().await?;
    let store = schema.store().await;
    // The schema is dropped after the store, at the end of the case.
    Some(Fixture::with_keep_alive(store, schema))
}
