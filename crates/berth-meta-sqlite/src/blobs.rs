//! Blobs (global, by digest) and their links to repositories.

use berth_meta::Result;
use berth_oci::{Digest, RepositoryName};
use sqlx::SqlitePool;

use crate::error::{db_err, from_sql_int, to_sql_int};
use crate::{Tx, repositories};

/// Size of `digest` if it is linked to `repo`.
pub(crate) async fn size_in(pool: &SqlitePool, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT b.size FROM repositories r \
         JOIN repository_blobs rb ON rb.repository_id = r.id \
         JOIN blobs b ON b.digest = rb.digest \
         WHERE r.name = ? AND rb.digest = ?",
    )
    .bind(repo.as_str())
    .bind(digest.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    size.map(|s| from_sql_int(s, "blob size")).transpose()
}

/// Size of `digest` if at least one repository links it. A blob row nobody
/// links any more is awaiting garbage collection and must not be mounted.
pub(crate) async fn global_size(pool: &SqlitePool, digest: &Digest) -> Result<Option<u64>> {
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT b.size FROM blobs b \
         WHERE b.digest = ? AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
    )
    .bind(digest.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    size.map(|s| from_sql_int(s, "blob size")).transpose()
}

/// Repositories linking `digest`, by name.
pub(crate) async fn repositories_of(pool: &SqlitePool, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
         WHERE rb.digest = ? ORDER BY r.name LIMIT ?",
    )
    .bind(digest.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    names.iter().map(|n| crate::error::parse_repository(n)).collect()
}

/// Records the blob and links it to `repo`, creating the repository.
/// Idempotent; an existing blob row keeps its original size and time.
pub(crate) async fn link(tx: &mut Tx, repo: &RepositoryName, digest: &Digest, size: u64, now: i64) -> Result<()> {
    let repository_id = repositories::upsert(tx, repo, now).await?;
    sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING")
        .bind(digest.as_str())
        .bind(to_sql_int(size, "blob size")?)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) \
         ON CONFLICT (repository_id, digest) DO NOTHING",
    )
    .bind(repository_id)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Removes the link only; the blob row stays for garbage collection.
pub(crate) async fn unlink(writer: &SqlitePool, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
    let result = sqlx::query(
        "DELETE FROM repository_blobs \
         WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?",
    )
    .bind(repo.as_str())
    .bind(digest.as_str())
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}
