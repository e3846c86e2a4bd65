//! The transactions behind `MetaStore::put_manifest` and `delete_manifest`:
//! manifests, their references and tags.

use std::collections::{HashMap, HashSet};

use berth_meta::{MetaError, NewManifest, RefProblem, TagGuard, protection};
use berth_meta_sql::to_sql_int;
use berth_oci::{Digest, RepositoryName};

use crate::error::StoreResult;
use crate::{Tx, holders, repositories, tags};

/// Stores the manifest, its references and its tags (see the trait docs).
pub(crate) async fn put(
    tx: &mut Tx,
    repo: &RepositoryName,
    manifest: &NewManifest,
    check_references: bool,
    guard: TagGuard<'_>,
) -> StoreResult<()> {
    let repository_id = repositories::upsert(tx, repo, manifest.created_at).await?;
    if check_references {
        let problem = reference_problems(tx, repository_id, manifest).await?;
        if !problem.missing.is_empty() || !problem.wrong_size.is_empty() {
            return Err(MetaError::References(problem).into());
        }
    }
    // Same digest, same bytes: a repeated push changes nothing about the
    // manifest row, and its references are already recorded.
    if insert_manifest(tx, repository_id, manifest).await? {
        insert_references(tx, repository_id, manifest).await?;
    }
    tags::set(tx, repository_id, repo, manifest, guard).await
}

/// What the manifest references that the repository lacks: one query for
/// the blobs and one for the child manifests, each skipped when empty.
///
/// The rows found are locked `FOR KEY SHARE` until the push commits, so a
/// concurrent unlink or manifest delete on another replica waits for it
/// rather than removing what the check just approved.
async fn reference_problems(tx: &mut Tx, repository_id: i64, manifest: &NewManifest) -> StoreResult<RefProblem> {
    let blob_digests = unique(manifest.blobs.iter().map(|b| &b.digest));
    let mut linked: HashMap<String, i64> = HashMap::new();
    if !blob_digests.is_empty() {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository_id = $1 AND rb.digest = ANY ($2::text[]) \
             FOR KEY SHARE OF rb",
        )
        .bind(repository_id)
        .bind(as_strs(&blob_digests))
        .fetch_all(&mut **tx)
        .await?;
        linked.extend(rows);
    }

    let child_digests = unique(manifest.manifests.iter());
    let mut present: HashSet<String> = HashSet::new();
    if !child_digests.is_empty() {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM manifests WHERE repository_id = $1 AND digest = ANY ($2::text[]) FOR KEY SHARE",
        )
        .bind(repository_id)
        .bind(as_strs(&child_digests))
        .fetch_all(&mut **tx)
        .await?;
        present.extend(rows);
    }

    let mut problem = RefProblem::default();
    for blob in &manifest.blobs {
        let list = match linked.get(blob.digest.as_str()) {
            None => &mut problem.missing,
            Some(&size) if u64::try_from(size).ok() != Some(blob.size) => &mut problem.wrong_size,
            Some(_) => continue,
        };
        if !list.contains(&blob.digest) {
            list.push(blob.digest.clone());
        }
    }
    for child in &child_digests {
        if !present.contains(child.as_str()) {
            problem.missing.push((*child).clone());
        }
    }
    Ok(problem)
}

/// Digests in first-seen order, without repeats (a layer may be listed twice).
fn unique<'a>(digests: impl Iterator<Item = &'a Digest>) -> Vec<&'a Digest> {
    let mut seen = HashSet::new();
    digests.filter(|d| seen.insert(d.as_str())).collect()
}

/// Digests as a text array parameter.
fn as_strs<'a>(digests: &[&'a Digest]) -> Vec<&'a str> {
    digests.iter().map(|d| d.as_str()).collect()
}

/// Inserts the manifest row; `false` if this repository already had it.
///
/// An existing row is not changed (`WHERE false`), but `DO UPDATE` locks it
/// (FOR NO KEY UPDATE) until the push commits, which `DO NOTHING` would not:
/// a concurrent [`delete`] of this digest then waits for the push and sees
/// its tags, instead of deleting the manifest under it. If the row is
/// deleted while this insert waits, Postgres retries the insert.
async fn insert_manifest(tx: &mut Tx, repository_id: i64, manifest: &NewManifest) -> StoreResult<bool> {
    let size = to_sql_int(manifest.content.len() as u64, "manifest size")?;
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO manifests \
         (repository_id, digest, media_type, artifact_type, subject, annotations, size, content, pushed_by, \
          created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (repository_id, digest) DO UPDATE SET media_type = manifests.media_type WHERE false \
         RETURNING 1",
    )
    .bind(repository_id)
    .bind(manifest.digest.as_str())
    .bind(&manifest.media_type)
    .bind(manifest.artifact_type.as_deref())
    .bind(manifest.subject.as_ref().map(Digest::as_str))
    .bind(manifest.annotations.as_deref())
    .bind(size)
    .bind(&manifest.content)
    .bind(manifest.pushed_by.as_deref())
    .bind(manifest.created_at)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(inserted.is_some())
}

/// Records what the manifest points at, in one multi-row insert. Repeats
/// (the same layer twice) collapse on the primary key; the first kind wins.
async fn insert_references(tx: &mut Tx, repository_id: i64, manifest: &NewManifest) -> StoreResult<()> {
    let (targets, kinds): (Vec<&str>, Vec<&str>) = manifest
        .blobs
        .iter()
        .map(|b| (b.digest.as_str(), "blob"))
        .chain(manifest.manifests.iter().map(|d| (d.as_str(), "manifest")))
        .unzip();
    if targets.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, kind) \
         SELECT $1, $2, target, kind FROM UNNEST($3::text[], $4::text[]) WITH ORDINALITY AS r (target, kind, n) \
         ORDER BY n \
         ON CONFLICT (repository_id, manifest_digest, target_digest) DO NOTHING",
    )
    .bind(repository_id)
    .bind(manifest.digest.as_str())
    .bind(&targets)
    .bind(&kinds)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes the manifest and, by cascade, its tags and references. Refused
/// if `guard` protects one of its tags or a tag of an index above it.
///
/// The read locks the manifest and every index above it `FOR UPDATE`
/// (see [`holders`]): from then on no tag can join them and no checked push
/// can list them as children. The delete re-checks, in its own snapshot,
/// that no manifest or tag above it appeared that the read did not approve
/// (one committed while the read waited for its locks); if one did, the
/// next pass reads again, now under those locks.
pub(crate) async fn delete(
    tx: &mut Tx,
    repo: &RepositoryName,
    digest: &Digest,
    guard: TagGuard<'_>,
) -> StoreResult<bool> {
    for _ in 0..holders::PASSES {
        let Some((repository_id, holders)) = holders::of_manifest(tx, repo, digest).await? else {
            return Ok(false);
        };
        if let Some(refusal) = protection::manifest_refusal(repo, digest, &holders, guard) {
            return Err(refusal.into());
        }
        let (manifests, tags) = holders::approved(&holders);
        let deleted = sqlx::query(
            "WITH RECURSIVE holders (digest) AS ( \
                 SELECT $2::text COLLATE \"C\" \
               UNION \
                 SELECT mr.manifest_digest FROM holders h \
                 JOIN manifest_references mr ON mr.repository_id = $1 AND mr.target_digest = h.digest \
                 WHERE mr.kind = 'manifest') \
             DELETE FROM manifests WHERE repository_id = $1 AND digest = $2 \
             AND NOT EXISTS (SELECT 1 FROM holders h WHERE h.digest <> ALL ($3::text[])) \
             AND NOT EXISTS (SELECT 1 FROM holders h JOIN tags t ON t.repository_id = $1 AND t.digest = h.digest \
                             WHERE h.digest || ' ' || t.name <> ALL ($4::text[]))",
        )
        .bind(repository_id)
        .bind(digest.as_str())
        .bind(&manifests)
        .bind(&tags)
        .execute(&mut **tx)
        .await?;
        if deleted.rows_affected() > 0 {
            return Ok(true);
        }
    }
    Err(MetaError::Backend(format!("manifest {digest} kept gaining tags or indexes while being deleted")).into())
}
