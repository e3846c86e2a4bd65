//! Repository rows: created implicitly by the first blob link or manifest.

use berth_meta::Result;
use berth_oci::RepositoryName;
use sqlx::SqlitePool;

use crate::Tx;
use crate::error::db_err;

/// SQLite reads a negative LIMIT as "no limit".
pub(crate) fn sql_limit(limit: Option<u32>) -> i64 {
    limit.map_or(-1, i64::from)
}

pub(crate) async fn list(pool: &SqlitePool, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>> {
    // Names are never empty, so "" as the lower bound means "from the start"
    // and the query stays a plain range scan of the unique index.
    sqlx::query_scalar("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?")
        .bind(after.unwrap_or(""))
        .bind(sql_limit(limit))
        .fetch_all(pool)
        .await
        .map_err(db_err)
}

pub(crate) async fn exists(pool: &SqlitePool, repo: &RepositoryName) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = ?)")
        .bind(repo.as_str())
        .fetch_one(pool)
        .await
        .map_err(db_err)
}

/// Returns the repository's id, creating the row if needed. The no-op
/// update makes `RETURNING` yield the id for an existing row too.
pub(crate) async fn upsert(tx: &mut Tx, repo: &RepositoryName, now: i64) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET name = excluded.name \
         RETURNING id",
    )
    .bind(repo.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_err)
}
