//! Blob reservations and links to repositories: the transactions behind
//! `MetaStore`'s blob writes.

use berth_meta::{MetaError, TagGuard, protection};
use berth_meta_sql::to_sql_int;
use berth_oci::{Digest, RepositoryName};
use sqlx::PgPool;

use crate::error::StoreResult;
use crate::{Tx, holders, repositories};

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
/// collection is deleting the blob.
///
/// The upsert locks an existing row and evaluates its `WHERE` against the
/// latest committed version, so it waits for a collector transaction that
/// holds the row and then sees its verdict: a row it marked `deleting` is
/// refused, a row it deleted is inserted afresh (with a new token).
pub(crate) async fn reserve(pool: &PgPool, digest: &Digest, size: u64, now: i64) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO blobs (digest, size, created_at, last_linked, state, token) \
         VALUES ($1, $2, $3, $3, 'live', md5(random()::text || clock_timestamp()::text)) \
         ON CONFLICT (digest) DO UPDATE SET last_linked = GREATEST(blobs.last_linked, excluded.last_linked) \
         WHERE blobs.state = 'live' \
         RETURNING token",
    )
    .bind(digest.as_str())
    .bind(to_sql_int(size, "blob size")?)
    .bind(now)
    .fetch_optional(pool)
    .await?)
}

/// Links a live blob to `repo` if `condition` holds, creating the
/// repository, and refreshes the blob's `last_linked` and the link's
/// `linked_at`. `false` otherwise (the caller's transaction then writes
/// nothing).
///
/// The first statement updates the blob row, which row-locks it until the
/// caller commits. The collector's mark takes `FOR UPDATE` on the same row
/// before it re-checks for links in a new statement, so either this link
/// commits first and the re-check sees it, or the mark commits first and
/// this update (re-evaluating `state = 'live'` on the marked row) matches
/// nothing. A mount's "some repository links it" is read in the same
/// statement: a link that existed then proves the bytes were present and
/// the row unmarked, and no mark can pass the lock this update holds.
pub(crate) async fn link(
    tx: &mut Tx,
    repo: &RepositoryName,
    digest: &Digest,
    now: i64,
    condition: LinkCondition<'_>,
) -> StoreResult<bool> {
    let touched = match condition {
        // The reserving upload committed verified bytes: whatever damage
        // scrub found before it reserved is repaired (see `mark_blob_damaged`).
        LinkCondition::Reserved(token) => sqlx::query(
            "UPDATE blobs SET last_linked = GREATEST(last_linked, $2), damaged_at = NULL, damage = NULL \
             WHERE digest = $1 AND state = 'live' AND token = $3",
        )
        .bind(digest.as_str())
        .bind(now)
        .bind(token),
        LinkCondition::Linked => sqlx::query(
            "UPDATE blobs SET last_linked = GREATEST(last_linked, $2) WHERE digest = $1 AND state = 'live' \
             AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest)",
        )
        .bind(digest.as_str())
        .bind(now),
    }
    .execute(&mut **tx)
    .await?;
    if touched.rows_affected() == 0 {
        return Ok(false);
    }
    let repository_id = repositories::upsert(tx, repo, now).await?;
    sqlx::query(
        "INSERT INTO repository_blobs (repository_id, digest, created_at, linked_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (repository_id, digest) DO UPDATE \
         SET linked_at = GREATEST(repository_blobs.linked_at, excluded.linked_at)",
    )
    .bind(repository_id)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// Removes the link only; the blob row stays for garbage collection.
/// Refused while a manifest of the repository references the blob (see
/// [`berth_meta::protection::blob_refusal`]).
///
/// The read locks the link `FOR UPDATE`, which a checked push relying on
/// it (`FOR KEY SHARE`) waits for, or made this read wait. References
/// committed during that wait are missed by the read but not by the
/// delete's own re-check; if that finds one, the next pass reports it.
pub(crate) async fn unlink(
    tx: &mut Tx,
    repo: &RepositoryName,
    digest: &Digest,
    guard: TagGuard<'_>,
) -> StoreResult<bool> {
    for _ in 0..holders::PASSES {
        let Some((repository_id, holders)) = holders::of_blob(tx, repo, digest).await? else { return Ok(false) };
        if let Some(refusal) = protection::blob_refusal(repo, digest, &holders, guard)? {
            return Err(refusal.into());
        }
        let result = sqlx::query(
            "DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2 \
             AND NOT EXISTS (SELECT 1 FROM manifest_references \
                             WHERE repository_id = $1 AND target_digest = $2 AND kind = 'blob')",
        )
        .bind(repository_id)
        .bind(digest.as_str())
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() > 0 {
            return Ok(true);
        }
    }
    Err(MetaError::Backend(format!("blob {digest} kept gaining references while being unlinked")).into())
}
