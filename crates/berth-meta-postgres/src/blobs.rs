//! Blobs (global, by digest) and their links to repositories.

use berth_meta::Result;
use berth_oci::{Digest, RepositoryName};
use sqlx::PgPool;

use crate::error::{StoreResult, db_err, from_sql_int, parse_repository, to_sql_int};
use crate::{Tx, repositories};

/// Size of `digest` if it is linked to `repo`.
pub(crate) async fn size_in(pool: &PgPool, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT b.size FROM repositories r \
         JOIN repository_blobs rb ON rb.repository_id = r.id \
         JOIN blobs b ON b.digest = rb.digest \
         WHERE r.name = $1 AND rb.digest = $2",
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
pub(crate) async fn global_size(pool: &PgPool, digest: &Digest) -> Result<Option<u64>> {
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT b.size FROM blobs b \
         WHERE b.digest = $1 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
    )
    .bind(digest.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    size.map(|s| from_sql_int(s, "blob size")).transpose()
}

/// Repositories linking `digest`, by name (byte order).
pub(crate) async fn repositories_of(pool: &PgPool, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
         WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
    )
    .bind(digest.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    names.iter().map(|n| parse_repository(n)).collect()
}

/// Records the blob and links it to `repo`, creating the repository.
/// Idempotent; an existing blob row keeps its original size and time.
///
/// Concurrent links of one digest are safe: an insert that meets another
/// transaction's uncommitted row waits for it, then does nothing.
pub(crate) async fn link(tx: &mut Tx, repo: &RepositoryName, digest: &Digest, size: u64, now: i64) -> StoreResult<()> {
    let repository_id = repositories::upsert(tx, repo, now).await?;
    // One round trip for both rows. The foreign key from the link to the
    // blob is checked at the end of the statement, after the CTE's insert.
    sqlx::query(
        "WITH blob AS ( \
             INSERT INTO blobs (digest, size, created_at) VALUES ($2, $3, $4) \
             ON CONFLICT (digest) DO NOTHING) \
         INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $4) \
         ON CONFLICT (repository_id, digest) DO NOTHING",
    )
    .bind(repository_id)
    .bind(digest.as_str())
    .bind(to_sql_int(size, "blob size")?)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes the link only; the blob row stays for garbage collection.
pub(crate) async fn unlink(pool: &PgPool, repo: &RepositoryName, digest: &Digest) -> StoreResult<bool> {
    let result = sqlx::query(
        "DELETE FROM repository_blobs \
         WHERE repository_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2",
    )
    .bind(repo.as_str())
    .bind(digest.as_str())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}
