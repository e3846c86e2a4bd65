//! Repository rows: created implicitly by the first blob link or manifest.

use berth_meta::MetaError;
use berth_oci::RepositoryName;

use crate::Tx;
use crate::error::StoreResult;

/// Returns the repository's id, creating the row if needed.
///
/// Unlike SQLite's `ON CONFLICT DO UPDATE ... RETURNING`, this takes no row
/// lock on an existing repository (which would serialize every write to a
/// repository across replicas) and burns no identity value when the row
/// exists, the common case: one round trip.
pub(crate) async fn upsert(tx: &mut Tx, repo: &RepositoryName, now: i64) -> StoreResult<i64> {
    let id: Option<i64> = sqlx::query_scalar(
        "WITH existing AS (SELECT id FROM repositories WHERE name = $1), \
         inserted AS ( \
             INSERT INTO repositories (name, created_at) \
             SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM existing) \
             ON CONFLICT (name) DO NOTHING RETURNING id) \
         SELECT id FROM existing UNION ALL SELECT id FROM inserted",
    )
    .bind(repo.as_str())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = id {
        return Ok(id);
    }
    // Another transaction created the row after this statement's snapshot
    // was taken (the insert waited for it, then did nothing). A new
    // statement gets a new snapshot under READ COMMITTED and sees it.
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(repo.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    id.ok_or_else(|| MetaError::Backend(format!("repository {repo} vanished while being created")).into())
}
