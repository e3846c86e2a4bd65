//! Blobs (global, by digest) and their links to repositories.

use berth_meta::{Result, TagGuard, protection};
use berth_oci::{Digest, RepositoryName};
use sqlx::{SqliteConnection, SqlitePool};

use crate::error::{db_err, from_sql_int, to_sql_int};
use crate::{Tx, holders, repositories};

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
/// links any more is awaiting garbage collection and must not be mounted
/// (and [`link`] refuses one that is being deleted).
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

/// What a link requires of the blob.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LinkCondition<'a> {
    /// The caller reserved this incarnation of the row (its token) and
    /// committed the bytes since.
    Reserved(&'a str),
    /// Some repository links it already (a mount).
    Linked,
}

/// Creates the blob row (with a random token) or refreshes its
/// `last_linked` time; returns the row's token, or `None` if garbage
/// collection is deleting the blob. One statement on the writer, so it is
/// ordered before or after any collector transaction as a whole.
pub(crate) async fn reserve(
    writer: &mut SqliteConnection,
    digest: &Digest,
    size: u64,
    now: i64,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "INSERT INTO blobs (digest, size, created_at, last_linked, state, token) \
         VALUES (?1, ?2, ?3, ?3, 'live', lower(hex(randomblob(16)))) \
         ON CONFLICT (digest) DO UPDATE SET last_linked = max(blobs.last_linked, excluded.last_linked) \
         WHERE blobs.state = 'live' \
         RETURNING token",
    )
    .bind(digest.as_str())
    .bind(to_sql_int(size, "blob size")?)
    .bind(now)
    .fetch_optional(&mut *writer)
    .await
    .map_err(db_err)
}

/// Links a live blob to `repo` if `condition` holds, creating the
/// repository, and refreshes the blob's `last_linked` and the link's
/// `linked_at`. `false`, writing nothing, otherwise. Runs inside the
/// caller's write transaction, which the collector's cannot interleave with.
pub(crate) async fn link(
    tx: &mut Tx,
    repo: &RepositoryName,
    digest: &Digest,
    now: i64,
    condition: LinkCondition<'_>,
) -> Result<bool> {
    let touched = match condition {
        LinkCondition::Reserved(token) => sqlx::query(
            "UPDATE blobs SET last_linked = max(last_linked, ?1) WHERE digest = ?2 AND state = 'live' AND token = ?3",
        )
        .bind(now)
        .bind(digest.as_str())
        .bind(token),
        LinkCondition::Linked => sqlx::query(
            "UPDATE blobs SET last_linked = max(last_linked, ?1) WHERE digest = ?2 AND state = 'live' \
             AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest)",
        )
        .bind(now)
        .bind(digest.as_str()),
    }
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    if touched.rows_affected() == 0 {
        return Ok(false);
    }
    let repository_id = repositories::upsert(tx, repo, now).await?;
    sqlx::query(
        "INSERT INTO repository_blobs (repository_id, digest, created_at, linked_at) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (repository_id, digest) DO UPDATE SET linked_at = max(linked_at, excluded.linked_at)",
    )
    .bind(repository_id)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(true)
}

/// Removes the link only; the blob row stays for garbage collection.
/// Refused while a manifest of the repository references the blob (see
/// [`berth_meta::protection::blob_refusal`]); the check shares the write
/// transaction, so no push can add a reference between it and the delete.
pub(crate) async fn unlink(tx: &mut Tx, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
    let Some((repository_id, holders)) = holders::of_blob(tx, repo, digest).await? else { return Ok(false) };
    if let Some(refusal) = protection::blob_refusal(repo, digest, &holders, guard)? {
        return Err(refusal);
    }
    sqlx::query("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?")
        .bind(repository_id)
        .bind(digest.as_str())
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(true)
}
