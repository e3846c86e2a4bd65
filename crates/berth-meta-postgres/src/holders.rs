//! Which manifests reach a blob or a manifest, with their tags: what a
//! delete is decided on (see [`berth_meta::protection`]). One recursive
//! query each, which also locks what the decision rests on.
//!
//! Replicas write concurrently, so each query locks (`FOR UPDATE`) the row
//! it would delete, and a manifest query also every index above the
//! manifest. Every checked push takes `FOR KEY SHARE` on the links and
//! child manifests it relies on, and tagging a manifest takes the same on
//! its row (the foreign key): once these locks are held no push can add a
//! reference to the content, an index above it, or a tag to those indexes.
//! What committed while the query waited for its locks is not in its
//! snapshot, so the delete that follows re-checks in its own statement
//! (a new READ COMMITTED snapshot) that nothing new appeared, and the
//! caller reads again if something did.

use berth_meta::protection::Holder;
use berth_meta_sql::rows::{HolderRow, holders_from};
use berth_oci::{Digest, RepositoryName};

use crate::Tx;
use crate::error::StoreResult;

/// How often a delete reads and re-checks before giving up. A pass that
/// waited for locks may miss what the waited-for pushes added; the next
/// pass locks that too. Two passes settle a single concurrent push; more
/// cover a push that lands on an index the previous pass had not locked yet.
pub(crate) const PASSES: usize = 4;

/// Walks up from the manifests referencing the blob (`direct`) through the
/// indexes listing them (`kind = 'manifest'`), once per manifest (UNION).
/// Both steps use `manifest_references_target_idx`. Locks the link.
const BLOB_HOLDERS: &str = "\
WITH RECURSIVE holders (repository_id, digest, direct) AS ( \
    SELECT mr.repository_id, mr.manifest_digest, TRUE FROM repositories r \
    JOIN manifest_references mr ON mr.repository_id = r.id AND mr.target_digest = $2 AND mr.kind = 'blob' \
    WHERE r.name = $1 \
  UNION \
    SELECT mr.repository_id, mr.manifest_digest, FALSE FROM holders h \
    JOIN manifest_references mr ON mr.repository_id = h.repository_id AND mr.target_digest = h.digest \
    WHERE mr.kind = 'manifest') \
SELECT rb.repository_id, h.digest, t.name, h.direct \
FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id \
LEFT JOIN holders h ON h.repository_id = rb.repository_id \
LEFT JOIN tags t ON t.repository_id = h.repository_id AND t.digest = h.digest \
WHERE r.name = $1 AND rb.digest = $2 \
FOR UPDATE OF rb";

/// The manifest itself, then every index above it, each with its tags;
/// locks all of those manifest rows.
const MANIFEST_HOLDERS: &str = "\
WITH RECURSIVE holders (repository_id, digest) AS ( \
    SELECT m.repository_id, m.digest FROM repositories r JOIN manifests m ON m.repository_id = r.id \
    WHERE r.name = $1 AND m.digest = $2 \
  UNION \
    SELECT mr.repository_id, mr.manifest_digest FROM holders h \
    JOIN manifest_references mr ON mr.repository_id = h.repository_id AND mr.target_digest = h.digest \
    WHERE mr.kind = 'manifest') \
SELECT m.repository_id, m.digest, t.name, FALSE FROM holders h \
JOIN manifests m ON m.repository_id = h.repository_id AND m.digest = h.digest \
LEFT JOIN tags t ON t.repository_id = m.repository_id AND t.digest = m.digest \
FOR UPDATE OF m";

/// The repository linking the blob and the manifests above the blob, with
/// the link locked; `None` if `repo` does not link it.
pub(crate) async fn of_blob(
    tx: &mut Tx,
    repo: &RepositoryName,
    digest: &Digest,
) -> StoreResult<Option<(i64, Vec<Holder>)>> {
    fetch(tx, BLOB_HOLDERS, repo, digest).await
}

/// The manifest's repository and the manifest with every index above it,
/// all locked; `None` if the manifest does not exist (or was deleted while
/// this waited for its lock).
pub(crate) async fn of_manifest(
    tx: &mut Tx,
    repo: &RepositoryName,
    digest: &Digest,
) -> StoreResult<Option<(i64, Vec<Holder>)>> {
    let found = fetch(tx, MANIFEST_HOLDERS, repo, digest).await?;
    Ok(found.filter(|(_, holders)| holders.iter().any(|h| h.manifest == digest.as_str())))
}

async fn fetch(
    tx: &mut Tx,
    sql: &'static str,
    repo: &RepositoryName,
    digest: &Digest,
) -> StoreResult<Option<(i64, Vec<Holder>)>> {
    let rows: Vec<HolderRow> =
        sqlx::query_as(sql).bind(repo.as_str()).bind(digest.as_str()).fetch_all(&mut **tx).await?;
    Ok(holders_from(rows))
}

/// What a manifest delete approved, for its re-check: every manifest above
/// (and including) it, and every `"<digest> <tag>"` among them. Neither
/// digests nor tags contain a space.
pub(crate) fn approved(holders: &[Holder]) -> (Vec<&str>, Vec<String>) {
    let mut manifests: Vec<&str> = holders.iter().map(|h| h.manifest.as_str()).collect();
    manifests.sort_unstable();
    manifests.dedup();
    let tags = holders.iter().filter_map(|h| h.tag.as_ref().map(|t| format!("{} {t}", h.manifest))).collect();
    (manifests, tags)
}
