//! Tags: names pointing at manifests, some protected by immutability rules.

use berth_meta::{MetaError, NewManifest, Result, TagGuard};
use berth_oci::{RepositoryName, Tag};
use sqlx::SqlitePool;

use crate::Tx;
use crate::error::db_err;
use crate::repositories::{self, sql_limit};

/// Points `tag` at `digest` inside a manifest push. An immutable tag may be
/// created, or re-pointed at the digest it already has, but never moved;
/// the check and the write share the transaction, so no push slips between.
pub(crate) async fn set(
    tx: &mut Tx,
    repository_id: i64,
    repo: &RepositoryName,
    tag: &Tag,
    manifest: &NewManifest,
    guard: TagGuard<'_>,
) -> Result<()> {
    let digest = &manifest.digest;
    if let Some(rule) = guard(repo, tag.as_str()) {
        let current: Option<String> =
            sqlx::query_scalar("SELECT digest FROM tags WHERE repository_id = ? AND name = ?")
                .bind(repository_id)
                .bind(tag.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
        if current.is_some_and(|current| current != digest.as_str()) {
            return Err(MetaError::ImmutableTag { tag: tag.to_string(), rule });
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
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Deletes a tag unless `guard` protects it. A protected tag that does not
/// exist is reported absent (`false`) rather than refused: nothing would move.
pub(crate) async fn delete(
    reader: &SqlitePool,
    writer: &SqlitePool,
    repo: &RepositoryName,
    tag: &Tag,
    guard: TagGuard<'_>,
) -> Result<bool> {
    if let Some(rule) = guard(repo, tag.as_str()) {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM repositories r JOIN tags t ON t.repository_id = r.id \
             WHERE r.name = ? AND t.name = ?)",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_one(reader)
        .await
        .map_err(db_err)?;
        return if exists { Err(MetaError::ImmutableTag { tag: tag.to_string(), rule }) } else { Ok(false) };
    }
    let result =
        sqlx::query("DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND name = ?")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(writer)
            .await
            .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

/// Tag names in byte order after `after`; `None` if the repository is unknown.
pub(crate) async fn list(
    pool: &SqlitePool,
    repo: &RepositoryName,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<Option<Vec<String>>> {
    if limit == Some(0) {
        // The query below could not tell "no rows wanted" from "no repository".
        return Ok(repositories::exists(pool, repo).await?.then(Vec::new));
    }
    // One query, one row: no row when the repository does not exist, else
    // the page of names as a JSON array. A single row matters: sqlx hands
    // every row across threads, which dominated listing a thousand tags.
    let page: Option<String> = sqlx::query_scalar(
        "SELECT (SELECT json_group_array(name ORDER BY name) FROM \
                   (SELECT t.name FROM tags t WHERE t.repository_id = r.id AND t.name > ? ORDER BY t.name LIMIT ?)) \
         FROM repositories r WHERE r.name = ?",
    )
    .bind(after.unwrap_or(""))
    .bind(sql_limit(limit))
    .bind(repo.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    page.map(|json| {
        serde_json::from_str::<Vec<String>>(&json).map_err(|e| MetaError::Backend(format!("tag list: {e}")))
    })
    .transpose()
}
