//! Which manifests reach a blob or a manifest, with their tags: what a
//! delete is decided on (see [`berth_meta::protection`]). One recursive
//! query each, run in the deleting transaction; on the single writer
//! connection nothing can change between the read and the delete.

use berth_meta::protection::Holder;
use berth_meta_sql::rows::{HolderRow, holders_from};
use berth_oci::{Digest, RepositoryName};

use sqlx::SqliteConnection;

use crate::error::StoreResult;

/// Walks up from the manifests referencing the blob (`direct`) through the
/// indexes listing them (`kind = 'manifest'`). UNION, not UNION ALL: each
/// manifest is visited once, however many paths lead to it. Both steps use
/// `manifest_references_target_idx`.
const BLOB_HOLDERS: &str = "\
WITH RECURSIVE holders (repository_id, digest, direct) AS ( \
    SELECT mr.repository_id, mr.manifest_digest, 1 FROM repositories r \
    JOIN manifest_references mr ON mr.repository_id = r.id AND mr.target_digest = ?2 AND mr.kind = 'blob' \
    WHERE r.name = ?1 \
  UNION \
    SELECT mr.repository_id, mr.manifest_digest, 0 FROM holders h \
    JOIN manifest_references mr ON mr.repository_id = h.repository_id AND mr.target_digest = h.digest \
    WHERE mr.kind = 'manifest') \
SELECT rb.repository_id, h.digest, t.name, h.direct \
FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id \
LEFT JOIN holders h ON h.repository_id = rb.repository_id \
LEFT JOIN tags t ON t.repository_id = h.repository_id AND t.digest = h.digest \
WHERE r.name = ?1 AND rb.digest = ?2";

/// The manifest itself, then every index above it, each with its tags.
const MANIFEST_HOLDERS: &str = "\
WITH RECURSIVE holders (repository_id, digest) AS ( \
    SELECT m.repository_id, m.digest FROM repositories r JOIN manifests m ON m.repository_id = r.id \
    WHERE r.name = ?1 AND m.digest = ?2 \
  UNION \
    SELECT mr.repository_id, mr.manifest_digest FROM holders h \
    JOIN manifest_references mr ON mr.repository_id = h.repository_id AND mr.target_digest = h.digest \
    WHERE mr.kind = 'manifest') \
SELECT h.repository_id, h.digest, t.name, 0 FROM holders h \
LEFT JOIN tags t ON t.repository_id = h.repository_id AND t.digest = h.digest";

/// The repository linking the blob and the manifests above the blob;
/// `None` if `repo` does not link it.
pub(crate) async fn of_blob(
    tx: &mut SqliteConnection,
    repo: &RepositoryName,
    digest: &Digest,
) -> StoreResult<Option<(i64, Vec<Holder>)>> {
    fetch(tx, BLOB_HOLDERS, repo, digest).await
}

/// The manifest's repository and the manifest with every index above it;
/// `None` if the manifest does not exist.
pub(crate) async fn of_manifest(
    tx: &mut SqliteConnection,
    repo: &RepositoryName,
    digest: &Digest,
) -> StoreResult<Option<(i64, Vec<Holder>)>> {
    fetch(tx, MANIFEST_HOLDERS, repo, digest).await
}

async fn fetch(
    tx: &mut SqliteConnection,
    sql: &'static str,
    repo: &RepositoryName,
    digest: &Digest,
) -> StoreResult<Option<(i64, Vec<Holder>)>> {
    let rows: Vec<HolderRow> =
        sqlx::query_as(sql).bind(repo.as_str()).bind(digest.as_str()).fetch_all(&mut *tx).await?;
    Ok(holders_from(rows))
}
