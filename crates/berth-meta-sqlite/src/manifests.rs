//! Manifests, their references, and the referrers index.

use std::collections::{HashMap, HashSet};

use berth_meta::{MetaError, NewManifest, RefProblem, TagGuard, protection};
use berth_meta_sql::to_sql_int;
use berth_oci::{Digest, RepositoryName};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::error::StoreResult;
use crate::{holders, tags};

/// Bind parameters per statement for generated IN lists and multi-row
/// inserts; far below SQLite's limit (32766), and keeps statements small.
const MAX_BINDS: usize = 400;

/// Returns the repository's id, creating the row if needed. The no-op
/// update makes `RETURNING` yield the id for an existing row too.
pub(crate) async fn upsert_repository(tx: &mut SqliteConnection, repo: &RepositoryName, now: i64) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET name = excluded.name \
         RETURNING id",
    )
    .bind(repo.as_str())
    .bind(now)
    .fetch_one(&mut *tx)
    .await?)
}

/// Stores the manifest, its references and its tags (see the trait docs).
pub(crate) async fn put(
    tx: &mut SqliteConnection,
    repo: &RepositoryName,
    manifest: &NewManifest,
    check_references: bool,
    guard: TagGuard<'_>,
) -> StoreResult<()> {
    let repository_id = upsert_repository(tx, repo, manifest.created_at).await?;
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
    for tag in &manifest.tags {
        tags::set(tx, repository_id, repo, tag, manifest, guard).await?;
    }
    Ok(())
}

/// What the manifest references that the repository lacks, with one query
/// per chunk of blob digests and per chunk of child manifest digests.
async fn reference_problems(
    tx: &mut SqliteConnection,
    repository_id: i64,
    manifest: &NewManifest,
) -> StoreResult<RefProblem> {
    let blob_digests = unique(manifest.blobs.iter().map(|b| &b.digest));
    let mut linked: HashMap<String, i64> = HashMap::new();
    for chunk in blob_digests.chunks(MAX_BINDS) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository_id = ",
        );
        query.push_bind(repository_id).push(" AND rb.digest IN (");
        push_digest_list(&mut query, chunk);
        let rows: Vec<(String, i64)> = query.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
        linked.extend(rows);
    }

    let child_digests = unique(manifest.manifests.iter());
    let mut present: HashSet<String> = HashSet::new();
    for chunk in child_digests.chunks(MAX_BINDS) {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT digest FROM manifests WHERE repository_id = ");
        query.push_bind(repository_id).push(" AND digest IN (");
        push_digest_list(&mut query, chunk);
        let rows: Vec<String> = query.build_query_scalar().persistent(false).fetch_all(&mut *tx).await?;
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

/// Appends `?, ?, ...)` binding each digest.
fn push_digest_list(query: &mut QueryBuilder<Sqlite>, digests: &[&Digest]) {
    let mut list = query.separated(", ");
    for digest in digests {
        list.push_bind(digest.as_str().to_owned());
    }
    list.push_unseparated(")");
}

/// Inserts the manifest row; `false` if this repository already had it.
async fn insert_manifest(tx: &mut SqliteConnection, repository_id: i64, manifest: &NewManifest) -> StoreResult<bool> {
    let size = to_sql_int(manifest.content.len() as u64, "manifest size")?;
    let result = sqlx::query(
        "INSERT INTO manifests \
         (repository_id, digest, media_type, artifact_type, subject, annotations, size, content, pushed_by, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (repository_id, digest) DO NOTHING",
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
    .execute(&mut *tx)
    .await
    ?;
    Ok(result.rows_affected() > 0)
}

/// Records what the manifest points at, in multi-row inserts. Repeats (the
/// same layer twice) collapse on the primary key.
async fn insert_references(tx: &mut SqliteConnection, repository_id: i64, manifest: &NewManifest) -> StoreResult<()> {
    let targets: Vec<(&str, &str)> = manifest
        .blobs
        .iter()
        .map(|b| (b.digest.as_str(), "blob"))
        .chain(manifest.manifests.iter().map(|d| (d.as_str(), "manifest")))
        .collect();
    for chunk in targets.chunks(MAX_BINDS / 4) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, kind) ",
        );
        query.push_values(chunk, |mut row, &(target, kind)| {
            row.push_bind(repository_id)
                .push_bind(manifest.digest.as_str().to_owned())
                .push_bind(target.to_owned())
                .push_bind(kind);
        });
        query.push(" ON CONFLICT (repository_id, manifest_digest, target_digest) DO NOTHING");
        query.build().persistent(false).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Deletes the manifest and, by cascade, its tags and references. Refused
/// if `guard` protects one of its tags or a tag of an index above it.
pub(crate) async fn delete(
    tx: &mut SqliteConnection,
    repo: &RepositoryName,
    digest: &Digest,
    guard: TagGuard<'_>,
) -> StoreResult<bool> {
    let Some((repository_id, holders)) = holders::of_manifest(tx, repo, digest).await? else { return Ok(false) };
    if let Some(refusal) = protection::manifest_refusal(repo, digest, &holders, guard) {
        return Err(refusal.into());
    }
    sqlx::query("DELETE FROM manifests WHERE repository_id = ? AND digest = ?")
        .bind(repository_id)
        .bind(digest.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use berth_meta::{BlobRef, MetaStore, no_guard};

    use super::*;
    use crate::{SqliteMetaStore, SqliteSettings};

    async fn references(store: &SqliteMetaStore, manifest: &Digest) -> Vec<(String, String)> {
        store
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT target_digest, kind FROM manifest_references WHERE manifest_digest = ? ORDER BY target_digest",
                )
                .bind(manifest.as_str())
                .fetch_all(&mut *conn)
                .await?)
            })
            .await
            .expect("read references")
    }

    /// Garbage collection will rely on these rows, which the trait cannot show.
    #[tokio::test]
    async fn references_are_recorded_once_and_cascade_on_delete() {
        let store = SqliteMetaStore::connect(&SqliteSettings::in_memory()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let repo = RepositoryName::parse("acme/app").expect("name");
        let layer = BlobRef { digest: Digest::sha256_of(b"layer"), size: 5 };
        let child = Digest::sha256_of(b"child");
        let content = b"{}".to_vec();
        let manifest = NewManifest {
            digest: Digest::sha256_of(&content),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            content,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: vec![layer.clone(), layer.clone()],
            manifests: vec![child.clone()],
            tags: Vec::new(),
            pushed_by: None,
            created_at: 1,
        };
        store.put_manifest(&repo, &manifest, false, &no_guard).await.expect("put");
        store.put_manifest(&repo, &manifest, false, &no_guard).await.expect("put again");

        let mut expected =
            vec![(layer.digest.to_string(), "blob".to_owned()), (child.to_string(), "manifest".to_owned())];
        expected.sort();
        assert_eq!(references(&store, &manifest.digest).await, expected);

        assert!(store.delete_manifest(&repo, &manifest.digest, &no_guard).await.expect("delete"));
        assert_eq!(references(&store, &manifest.digest).await, Vec::new());
    }

    /// Enough digests to need several IN-list and multi-row insert chunks.
    #[tokio::test]
    async fn large_manifests_are_checked_in_chunks() {
        let store = SqliteMetaStore::connect(&SqliteSettings::in_memory()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let repo = RepositoryName::parse("acme/big").expect("name");
        let blobs: Vec<BlobRef> =
            (0..1000u32).map(|i| BlobRef { digest: Digest::sha256_of(&i.to_be_bytes()), size: u64::from(i) }).collect();
        for blob in blobs.iter().skip(1) {
            let token = store.reserve_blob(&blob.digest, blob.size).await.expect("reserve").expect("live");
            assert!(store.link_reserved_blob(&repo, &blob.digest, &token).await.expect("link"));
        }
        let content = b"{\"big\":true}".to_vec();
        let manifest = NewManifest {
            digest: Digest::sha256_of(&content),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: blobs.clone(),
            manifests: Vec::new(),
            tags: Vec::new(),
            pushed_by: None,
            created_at: 1,
        };
        match store.put_manifest(&repo, &manifest, true, &no_guard).await {
            Err(MetaError::References(problem)) => assert_eq!(problem.missing, vec![blobs[0].digest.clone()]),
            other => panic!("expected a References error, got {other:?}"),
        }
        let token = store.reserve_blob(&blobs[0].digest, blobs[0].size).await.expect("reserve first").expect("live");
        assert!(store.link_reserved_blob(&repo, &blobs[0].digest, &token).await.expect("link first"));
        store.put_manifest(&repo, &manifest, true, &no_guard).await.expect("put");
        assert_eq!(references(&store, &manifest.digest).await.len(), blobs.len());
    }
}
