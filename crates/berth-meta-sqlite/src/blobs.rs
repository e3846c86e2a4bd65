//! Linking blobs to repositories: the write transactions of a blob upload,
//! each a single batch (one round trip to the writer's thread), and the
//! checked unlink.
//!
//! A batch cannot branch, so each write in it carries the batch's condition
//! in its own `WHERE`: once the condition fails, every write is a no-op and
//! the `COMMIT` commits nothing. The condition cannot change during the
//! batch: it holds the write lock from `BEGIN IMMEDIATE`, and its own writes
//! leave the condition's columns alone.

use berth_meta::{TagGuard, protection};
use berth_oci::{Digest, RepositoryName};
use sqlx::SqliteConnection;

use crate::error::StoreResult;
use crate::holders;

/// What a link requires of the blob.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LinkCondition<'a> {
    /// The caller reserved this incarnation of the row (its token) and
    /// committed the bytes since.
    Reserved(&'a str),
    /// Some repository links it already (a mount).
    Linked,
}

/// Links a live blob to `repo` (`?1`, digest `?2`, time `?3`) if the
/// condition holds, creating the repository, and refreshes the blob's
/// `last_linked` and the link's `linked_at`. The first statement answers
/// whether it held. `$cond` is a condition on `blobs`, with `?4` for the
/// token; `$set` more assignments to the blob row.
macro_rules! link_batch {
    ($cond:literal, $set:literal) => {
        concat!(
            "BEGIN IMMEDIATE; \
             UPDATE blobs SET last_linked = max(last_linked, ?3)",
            $set,
            " WHERE digest = ?2 AND state = 'live' AND ",
            $cond,
            " RETURNING 1; \
             INSERT INTO repositories (name, created_at) SELECT ?1, ?3 \
               WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?2 AND state = 'live' AND ",
            $cond,
            ") ON CONFLICT (name) DO NOTHING; \
             INSERT INTO repository_blobs (repository_id, digest, created_at, linked_at) \
               SELECT id, ?2, ?3, ?3 FROM repositories WHERE name = ?1 \
               AND EXISTS (SELECT 1 FROM blobs WHERE digest = ?2 AND state = 'live' AND ",
            $cond,
            ") ON CONFLICT (repository_id, digest) DO UPDATE \
               SET linked_at = max(repository_blobs.linked_at, excluded.linked_at); \
             COMMIT"
        )
    };
}

/// Runs a link batch; `false`, writing nothing, if the condition failed.
pub(crate) async fn link(
    conn: &mut SqliteConnection,
    repo: &RepositoryName,
    digest: &Digest,
    now: i64,
    condition: LinkCondition<'_>,
) -> StoreResult<bool> {
    let sql = match condition {
        // The reserving upload committed verified bytes: whatever damage
        // scrub found before it reserved is repaired (see `mark_blob_damaged`).
        LinkCondition::Reserved(_) => link_batch!("token = ?4", ", damaged_at = NULL, damage = NULL"),
        LinkCondition::Linked => {
            link_batch!("EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest)", "")
        }
    };
    let mut query = sqlx::query_scalar::<_, i64>(sql).bind(repo.as_str()).bind(digest.as_str()).bind(now);
    if let LinkCondition::Reserved(token) = condition {
        query = query.bind(token);
    }
    let touched = query.fetch_all(&mut *conn).await?;
    Ok(!touched.is_empty())
}

/// Completes upload `?1`: if the session exists and the blob (`?2`) still
/// has the reservation token `?3`, links the blob to the session's
/// repository and removes the session, at time `?4`. Returns the session's
/// repository and whether the reservation held; no row if the session is
/// gone. Either failure writes nothing.
pub(crate) async fn complete_upload(
    conn: &mut SqliteConnection,
    id: &str,
    digest: &Digest,
    reservation: &str,
    now: i64,
) -> StoreResult<Vec<(String, bool)>> {
    Ok(sqlx::query_as(
        "BEGIN IMMEDIATE; \
         SELECT u.repository, \
                EXISTS (SELECT 1 FROM blobs b WHERE b.digest = ?2 AND b.state = 'live' AND b.token = ?3) \
           FROM uploads u WHERE u.id = ?1; \
         UPDATE blobs SET last_linked = max(last_linked, ?4), damaged_at = NULL, damage = NULL \
           WHERE digest = ?2 AND state = 'live' AND token = ?3 AND EXISTS (SELECT 1 FROM uploads WHERE id = ?1); \
         INSERT INTO repositories (name, created_at) SELECT u.repository, ?4 FROM uploads u \
           WHERE u.id = ?1 \
             AND EXISTS (SELECT 1 FROM blobs b WHERE b.digest = ?2 AND b.state = 'live' AND b.token = ?3) \
           ON CONFLICT (name) DO NOTHING; \
         INSERT INTO repository_blobs (repository_id, digest, created_at, linked_at) \
           SELECT r.id, ?2, ?4, ?4 FROM uploads u JOIN repositories r ON r.name = u.repository \
           WHERE u.id = ?1 \
             AND EXISTS (SELECT 1 FROM blobs b WHERE b.digest = ?2 AND b.state = 'live' AND b.token = ?3) \
           ON CONFLICT (repository_id, digest) DO UPDATE \
           SET linked_at = max(repository_blobs.linked_at, excluded.linked_at); \
         DELETE FROM uploads WHERE id = ?1 \
           AND EXISTS (SELECT 1 FROM blobs b WHERE b.digest = ?2 AND b.state = 'live' AND b.token = ?3); \
         COMMIT",
    )
    .bind(id)
    .bind(digest.as_str())
    .bind(reservation)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?)
}

/// Removes the link only; the blob row stays for garbage collection.
/// Refused while a manifest of the repository references the blob (see
/// [`berth_meta::protection::blob_refusal`]); the check shares the write
/// transaction, so no push can add a reference between it and the delete.
pub(crate) async fn unlink(
    tx: &mut SqliteConnection,
    repo: &RepositoryName,
    digest: &Digest,
    guard: TagGuard<'_>,
) -> StoreResult<bool> {
    let Some((repository_id, holders)) = holders::of_blob(tx, repo, digest).await? else { return Ok(false) };
    if let Some(refusal) = protection::blob_refusal(repo, digest, &holders, guard)? {
        return Err(refusal.into());
    }
    sqlx::query("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?")
        .bind(repository_id)
        .bind(digest.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(true)
}
