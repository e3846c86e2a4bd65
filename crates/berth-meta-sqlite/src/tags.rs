//! Tags: names pointing at manifests, some protected by immutability rules.

use berth_meta::{MetaError, NewManifest, Result, TagGuard};
use berth_oci::{RepositoryName, Tag};

use sqlx::SqliteConnection;

use crate::error::StoreResult;

/// Points `tag` at `digest` inside a manifest push. An immutable tag may be
/// created, or re-pointed at the digest it already has, but never moved;
/// the check and the write share the transaction, so no push slips between.
pub(crate) async fn set(
    tx: &mut SqliteConnection,
    repository_id: i64,
    repo: &RepositoryName,
    tag: &Tag,
    manifest: &NewManifest,
    guard: TagGuard<'_>,
) -> StoreResult<()> {
    let digest = &manifest.digest;
    if let Some(rule) = guard(repo, tag.as_str()) {
        let current: Option<String> =
            sqlx::query_scalar("SELECT digest FROM tags WHERE repository_id = ? AND name = ?")
                .bind(repository_id)
                .bind(tag.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if current.is_some_and(|current| current != digest.as_str()) {
            return Err(MetaError::ImmutableTag { tag: tag.to_string(), rule }.into());
        }
    }
    sqlx::query(
        "INSERT INTO tags (repository_id, name, digest, created_at, updated_at, pushed_by) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at, \
         pushed_by = excluded.pushed_by",
    )
    .bind(repository_id)
    .bind(tag.as_str())
    .bind(digest.as_str())
    .bind(manifest.created_at)
    .bind(manifest.created_at)
    .bind(manifest.pushed_by.as_deref())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Parses a page of tag names that SQLite returned as a JSON array.
pub(crate) fn parse_page(json: &str) -> Result<Vec<String>> {
    serde_json::from_str::<Vec<String>>(json).map_err(|e| MetaError::Backend(format!("tag list: {e}")))
}
