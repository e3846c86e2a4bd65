//! Which backends test servers run on, chosen by `BERTH_TEST_BACKENDS`:
//! `sqlite-fs` (default), `postgres-fs` or `postgres-s3` (also `sqlite-s3`).
//! Postgres needs `BERTH_TEST_POSTGRES_URL` (each server gets a fresh
//! database, dropped afterwards); S3 needs `BERTH_TEST_S3_ENDPOINT` (each
//! server gets its own key prefix in `BERTH_TEST_S3_BUCKET`, default
//! `berth-test`). CI runs the HTTP and conformance tests once per combination.

use berth_config::{Config, Secret, StorageBackend};
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Filesystem,
    S3,
}

/// The combination selected for this test process.
pub fn selected() -> (Database, Storage) {
    let choice = std::env::var("BERTH_TEST_BACKENDS").unwrap_or_else(|_| "sqlite-fs".into());
    match choice.as_str() {
        "sqlite-fs" | "" => (Database::Sqlite, Storage::Filesystem),
        "postgres-fs" => (Database::Postgres, Storage::Filesystem),
        "postgres-s3" => (Database::Postgres, Storage::S3),
        "sqlite-s3" => (Database::Sqlite, Storage::S3),
        other => panic!("BERTH_TEST_BACKENDS={other:?}: use sqlite-fs, postgres-fs, postgres-s3 or sqlite-s3"),
    }
}

fn required(var: &str, why: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} must be set when BERTH_TEST_BACKENDS selects {why}"))
}

/// A database created for one server, dropped when this is dropped.
pub struct TempDatabase {
    admin_url: String,
    name: String,
}

impl TempDatabase {
    pub async fn create() -> (TempDatabase, String) {
        let admin_url = required("BERTH_TEST_POSTGRES_URL", "postgres");
        let name = format!("berth_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to BERTH_TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        let url = replace_database(&admin_url, &name);
        (TempDatabase { admin_url, name }, url)
    }
}

/// `postgres://u@h:p/db?x` with `db` replaced.
fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_end..].find('/').map(|i| authority_end + i).unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context: use a small runtime on a thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Points `config` at the selected backends; returns what must live as long as the server.
pub async fn apply(config: &mut Config) -> Option<TempDatabase> {
    let (db, storage) = selected();
    apply_backends(config, db, storage).await
}

/// Whether `BERTH_TEST_POSTGRES_URL` is set; if not, says loudly on stderr
/// (which libtest does not capture) that the calling test is not run.
pub fn postgres_configured() -> bool {
    if std::env::var("BERTH_TEST_POSTGRES_URL").is_ok_and(|s| !s.trim().is_empty()) {
        return true;
    }
    let line = "NOT RUN: BERTH_TEST_POSTGRES_URL is not set; Postgres test skipped\n";
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// One `#[tokio::test]` per database for each case, an `async fn(Database)`
/// in the invoking module: `sqlite::<case>` and `postgres::<case>`, so a
/// failure names its backend. Without `BERTH_TEST_POSTGRES_URL` the Postgres
/// ones say NOT RUN and pass (CI always sets it). `workers = N;` first sets
/// the runtime's worker threads (default 2).
#[macro_export]
macro_rules! on_both_databases {
    (workers = $workers:literal; $($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn $case() {
                    super::$case($crate::backends::Database::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn $case() {
                    if !$crate::backends::postgres_configured() {
                        return;
                    }
                    super::$case($crate::backends::Database::Postgres).await;
                }
            )*
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::on_both_databases!(workers = 2; $($case),*);
    };
}

/// Whether `BERTH_TEST_POSTGRES_URL` and `BERTH_TEST_S3_ENDPOINT` are both
/// set (tests that always need Postgres + S3 check this, and say NOT RUN
/// otherwise).
pub fn postgres_and_s3_configured() -> bool {
    ["BERTH_TEST_POSTGRES_URL", "BERTH_TEST_S3_ENDPOINT"]
        .iter()
        .all(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Points `config` at the given backends, whatever `BERTH_TEST_BACKENDS`
/// says (SQLite + filesystem stay under the config's data directory).
pub async fn apply_backends(config: &mut Config, db: Database, storage: Storage) -> Option<TempDatabase> {
    if db == Database::Sqlite {
        config.database.url = Secret::new(format!("sqlite://{}", config.data_dir.join("berth.db").display()));
    }
    if storage == Storage::Filesystem {
        config.storage.backend = StorageBackend::Filesystem;
        config.storage.path = config.data_dir.join("blobs");
    }
    let keep = match db {
        Database::Sqlite => None,
        Database::Postgres => {
            let (temp, url) = TempDatabase::create().await;
            config.database.url = Secret::new(url);
            Some(temp)
        }
    };
    if storage == Storage::S3 {
        let s3 = &mut config.storage.s3;
        config.storage.backend = StorageBackend::S3;
        s3.endpoint = required("BERTH_TEST_S3_ENDPOINT", "s3");
        s3.bucket = std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "berth-test".into());
        s3.prefix = format!("testkit/{}", uuid::Uuid::new_v4());
        s3.access_key_id = Secret::new(std::env::var("BERTH_TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()));
        s3.secret_access_key =
            Secret::new(std::env::var("BERTH_TEST_S3_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()));
        s3.path_style = true;
        s3.allow_http = true;
        s3.part_size = 5 * 1024 * 1024;
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/test?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h", "z"), "postgres://h/z");
    }
}
