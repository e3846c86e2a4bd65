//! Tags: names pointing at manifests, some protected by immutability rules.

use berth_meta::{MetaError, NewManifest, TagGuard};
use berth_oci::{RepositoryName, Tag};

use crate::Tx;
use crate::error::StoreResult;

/// Points every tag of `manifest` at it inside its push, in one statement.
///
/// An immutable tag may be created, or re-pointed at the digest it already
/// has, but never moved. The check is the upsert's own `WHERE`: Postgres
/// locks the conflicting row and evaluates it against the latest committed
/// version, so of two replicas creating the same protected tag the second
/// waits for the first and then finds the tag taken. A refused tag is
/// simply not updated (and not returned); the caller's transaction is then
/// dropped, so no other tag of the push moves either.
pub(crate) async fn set(
    tx: &mut Tx,
    repository_id: i64,
    repo: &RepositoryName,
    manifest: &NewManifest,
    guard: TagGuard<'_>,
) -> StoreResult<()> {
    let tags = &manifest.tags;
    if tags.is_empty() {
        return Ok(());
    }
    // In push order, so the error names the first refused tag, as in SQLite.
    let protected: Vec<(&str, String)> =
        tags.iter().filter_map(|tag| guard(repo, tag.as_str()).map(|rule| (tag.as_str(), rule))).collect();
    let protected_names: Vec<&str> = protected.iter().map(|(name, _)| *name).collect();
    // Deduplicated: one statement may not upsert a row twice. Inserted in
    // byte order: every push locks tag rows in the same order, so two pushes
    // sharing tags cannot deadlock.
    let mut names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let applied: Vec<String> = sqlx::query_scalar(
        "INSERT INTO tags (repository_id, name, digest, created_at, updated_at, pushed_by) \
         SELECT $1, name, $3, $4, $4, $6 FROM UNNEST($2::text[]) AS pushed (name) ORDER BY name COLLATE \"C\" \
         ON CONFLICT (repository_id, name) DO UPDATE \
         SET digest = excluded.digest, updated_at = excluded.updated_at, pushed_by = excluded.pushed_by \
         WHERE tags.digest = excluded.digest OR tags.name <> ALL ($5::text[]) \
         RETURNING name",
    )
    .bind(repository_id)
    .bind(&names)
    .bind(manifest.digest.as_str())
    .bind(manifest.created_at)
    .bind(&protected_names)
    .bind(manifest.pushed_by.as_deref())
    .fetch_all(&mut **tx)
    .await?;
    if applied.len() == names.len() {
        return Ok(());
    }
    let refused = protected.into_iter().find(|(name, _)| !applied.iter().any(|a| a == name));
    Err(match refused {
        Some((name, rule)) => MetaError::ImmutableTag { tag: name.to_owned(), rule },
        None => MetaError::Backend(format!("{} of {} tags were not applied", names.len() - applied.len(), names.len())),
    }
    .into())
}
