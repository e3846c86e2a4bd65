//! The stores a service test runs on: SQLite (a file in a tempdir) or
//! Postgres (a schema of its own in `BERTH_TEST_POSTGRES_URL`, dropped
//! afterwards), each beside a filesystem blob store.
//!
//! [`on_both_databases!`] runs each case on both, as `sqlite::<case>` and
//! `postgres::<case>`. Without `BERTH_TEST_POSTGRES_URL` the Postgres ones
//! say NOT RUN on stderr and pass; CI always sets it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use berth_blob::{BlobStore, FsBlobStore};
use berth_meta::{MaintenanceStore, MetaStore};
use berth_meta_postgres::{PostgresMetaStore, PostgresSettings};
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};
use sqlx::{Connection, Executor, PgConnection};

/// The variable CI sets, e.g. `postgres://postgres@127.0.0.1:5432/test`.
const URL_VAR: &str = "BERTH_TEST_POSTGRES_URL";

/// A metadata store as every trait the service uses.
pub(crate) trait Store: MetaStore + MaintenanceStore {}
impl<T: MetaStore + MaintenanceStore> Store for T {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

/// Empty, migrated stores for one case, and what must outlive them.
pub(crate) struct Stores {
    // Declared first: dropped (pools closed) before the schema and directory go.
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    _schema: Option<Schema>,
    _dir: tempfile::TempDir,
}

impl Stores {
    pub async fn open(db: Db) -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
        let (store, schema): (Arc<dyn Store>, _) = match db {
            Db::Sqlite => {
                let settings = SqliteSettings::for_path(dir.path().join("berth.db"));
                let store = SqliteMetaStore::connect(&settings).await.unwrap();
                store.migrate().await.unwrap();
                (Arc::new(store), None)
            }
            Db::Postgres => {
                let url = postgres_url().expect("the Postgres cases check the URL first");
                let schema = Schema::create(url).await;
                let store = PostgresMetaStore::connect(&schema.settings()).await.expect("connect to Postgres");
                store.migrate().await.expect("migrate");
                (Arc::new(store), Some(schema))
            }
        };
        Stores { store, blobs, _schema: schema, _dir: dir }
    }

    pub fn meta(&self) -> Arc<dyn MetaStore> {
        self.store.clone()
    }

    pub fn maintenance(&self) -> Arc<dyn MaintenanceStore> {
        self.store.clone()
    }
}

/// The Postgres URL, or `None` after saying loudly that the case is not run
/// (written straight to stderr, which libtest does not capture).
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let line = format!("NOT RUN: {URL_VAR} is not set; Postgres service tests skipped\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

/// A schema of one case's own, dropped at its end (kept and named when it fails).
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn create(url: String) -> Schema {
        let name = format!("berth_r_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&url).await.expect("connect to the test database");
        // The name is hex digits generated above: safe to splice in.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).await.expect("create test schema");
        let _ = conn.close().await;
        Schema { url, name }
    }

    fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            max_connections: 4,
            // Generous: other test binaries may load the machine meanwhile.
            acquire_timeout: Duration::from_secs(10),
            schema: Some(self.name.clone()),
            application_name: self.name.clone(),
            ..PostgresSettings::new(self.url.clone())
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "test failed: keeping Postgres schema {}", self.name);
            return;
        }
        // Drop cannot await and may run inside the test's runtime.
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE"))).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// One `#[tokio::test]` per case and database: `sqlite::<case>` and
/// `postgres::<case>`. Each case is an `async fn(Db)` in the invoking module.
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case($crate::tests::backends::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    if $crate::tests::backends::postgres_url().is_none() {
                        return;
                    }
                    super::$case($crate::tests::backends::Db::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_databases;
