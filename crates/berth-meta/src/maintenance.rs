//! Store operations of the maintenance jobs: garbage collection, retention
//! and upload expiry, plus the cluster-wide leases that keep each job to one
//! runner at a time. The rules live in the registry service
//! (`berth_registry::{gc, retention, expiry}`); the store offers reads to
//! plan with and writes that re-check their conditions inside their own
//! transaction, so a plan made from a stale read can never delete anything
//! a concurrent push has started to use. Each backend documents how its
//! transactions make those re-checks hold (SQLite: one writer; Postgres: row
//! locks taken before the re-checking statement).
//!
//! The store also keeps the retention rules added through the CLI or the
//! API (`retention_rules`); those of the config file are never stored.

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};

use crate::{MetaError, Result};

/// What [`MaintenanceStore::acquire_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease until it expires (or is renewed).
    Acquired,
    /// Someone else holds it.
    Held { holder: String, expires_at: i64 },
}

/// A lease row, for schedulers deciding whether a job is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    /// 0 once released.
    pub expires_at: i64,
    /// When a holder last released it after finishing the job.
    pub last_run_at: Option<i64>,
}

/// A manifest as garbage collection sees it (no content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcManifest {
    pub digest: Digest,
    pub size: u64,
    pub created_at: i64,
    /// At least one tag points at it.
    pub tagged: bool,
    pub subject: Option<Digest>,
}

/// A repository's link to a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcLink {
    pub digest: Digest,
    pub size: u64,
    pub linked_at: i64,
}

/// Everything garbage collection needs to know about one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryGraph {
    pub manifests: Vec<GcManifest>,
    /// `(manifest, target)`: blobs and child manifests each manifest references.
    pub references: Vec<(Digest, Digest)>,
    pub links: Vec<GcLink>,
}

/// A blob row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcBlob {
    pub digest: Digest,
    pub size: u64,
}

/// How much a blob is in use (for dry runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUsage {
    pub digest: Digest,
    pub size: u64,
    pub last_linked: i64,
    /// Repositories linking it.
    pub links: u64,
    pub deleting: bool,
}

/// A tag, as retention rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub name: Tag,
    pub digest: Digest,
    /// Last time a push set the tag, ms.
    pub updated_at: i64,
    /// An index in the same repository references the tagged manifest.
    pub in_index: bool,
}

/// A retention rule added through the CLI or the API, as stored. The
/// registry service validates it before it is stored and compiles it when
/// it builds the effective policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRuleRecord {
    /// Assigned by the store, increasing, never reused.
    pub id: i64,
    /// Glob over repository names.
    pub repositories: String,
    pub keep_last: Option<u32>,
    /// Tag globs always kept.
    pub keep_tags: Vec<String>,
    /// Tag globs that alone may be removed (empty: any).
    pub remove_tags: Vec<String>,
    /// Only tags older than this (ms) may be removed.
    pub remove_older_than: Option<i64>,
    pub created_at: i64,
    /// Who added it: a user name, or `cli`.
    pub created_by: String,
}

/// The columns of a stored rule as both SQL backends keep them, in this
/// order: id, repositories, keep_last, keep_tags, remove_tags,
/// remove_older_than, created_at, created_by (tag globs as JSON arrays in
/// TEXT, durations and times in ms).
pub type RetentionRuleRow = (i64, String, Option<i64>, String, String, Option<i64>, i64, String);

impl RetentionRuleRecord {
    /// Decodes a stored row.
    pub fn from_row(row: RetentionRuleRow) -> Result<Self> {
        let (id, repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, created_by) = row;
        let keep_last = keep_last
            .map(|n| u32::try_from(n).map_err(|_| MetaError::Backend(format!("stored keep_last {n} out of range"))))
            .transpose()?;
        Ok(RetentionRuleRecord {
            id,
            repositories,
            keep_last,
            keep_tags: globs_from_json(&keep_tags)?,
            remove_tags: globs_from_json(&remove_tags)?,
            remove_older_than,
            created_at,
            created_by,
        })
    }
}

/// A rule's tag globs as stored: a JSON array of strings.
pub fn globs_json(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(|e| MetaError::Backend(format!("retention rule globs: {e}")))
}

fn globs_from_json(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| MetaError::Backend(format!("stored retention rule globs: {e}")))
}

/// A retention rule to store; the store assigns its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRetentionRule {
    pub repositories: String,
    pub keep_last: Option<u32>,
    pub keep_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub remove_older_than: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
}

#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    // --- leases -------------------------------------------------------------

    /// Takes the lease `name` for `holder` until `now + ttl_ms` if it is free,
    /// expired, or already `holder`'s. One conditional upsert: of two
    /// callers racing for a free lease exactly one gets it.
    async fn acquire_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<LeaseOutcome>;

    /// Extends `holder`'s lease to `now + ttl_ms`; `false` if it lost it.
    async fn renew_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool>;

    /// Gives the lease up (`expires_at = 0`), recording `finished_at` as the
    /// job's last run if given; `false` if `holder` no longer held it.
    async fn release_lease(&self, name: &str, holder: &str, finished_at: Option<i64>) -> Result<bool>;

    async fn get_lease(&self, name: &str) -> Result<Option<LeaseRecord>>;

    // --- garbage collection: reads to plan with --------------------------------

    /// The repository's manifests, references and blob links.
    async fn repository_graph(&self, repo: &RepositoryName) -> Result<RepositoryGraph>;

    /// Live blobs linked nowhere whose `last_linked` is before `cutoff`, in
    /// digest order strictly after `after`, at most `limit`.
    async fn unlinked_blobs(&self, cutoff: i64, after: Option<&Digest>, limit: u32) -> Result<Vec<GcBlob>>;

    /// Blobs in state `deleting` marked before `marked_before` (left by a
    /// run that crashed), at most `limit`.
    async fn deleting_blobs(&self, marked_before: i64, limit: u32) -> Result<Vec<GcBlob>>;

    /// Usage of those of `digests` that have a blob row.
    async fn blob_usage(&self, digests: &[Digest]) -> Result<Vec<BlobUsage>>;

    /// Those of `digests` that have a blob row, in any state.
    async fn known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>>;

    // --- garbage collection: writes that re-check -----------------------------

    /// Deletes the manifest if, inside the transaction, it is still
    /// untagged, referenced by no manifest of the repository, not a referrer
    /// of a manifest present there, and created before `cutoff`. Returns its
    /// size if deleted.
    async fn gc_delete_manifest(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<Option<u64>>;

    /// Removes the repository's link to `digest` if, inside the transaction,
    /// no manifest of the repository references it and it was last linked
    /// before `cutoff`.
    async fn gc_unlink_blob(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<bool>;

    /// Marks the blob `deleting` if, inside the transaction, it is live,
    /// linked nowhere and `last_linked < cutoff`. Returns its size if
    /// marked. From then on reservations and links refuse it, so its bytes
    /// may be deleted.
    async fn gc_mark_blob(&self, digest: &Digest, cutoff: i64) -> Result<Option<u64>>;

    /// Inserts a `deleting` row (marked at `now`) for an object the blob
    /// store holds but the database does not know; `false` if a row exists
    /// (someone reserved it).
    async fn gc_mark_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool>;

    /// Removes a `deleting` blob row once its bytes are gone.
    async fn gc_forget_blob(&self, digest: &Digest) -> Result<bool>;

    // --- retention ----------------------------------------------------------------

    /// Every tag of the repository (empty if it does not exist).
    async fn repository_tags(&self, repo: &RepositoryName) -> Result<Vec<TagRecord>>;

    /// Deletes the tag if it still points at `digest` and was last set at
    /// `updated_at` (a push since then keeps it); `false` otherwise.
    async fn delete_tag_if_unchanged(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool>;

    // --- stored retention rules ----------------------------------------------------------

    /// Every stored rule, by id (the order in which they were added).
    async fn list_retention_rules(&self) -> Result<Vec<RetentionRuleRecord>>;

    /// Stores a rule; returns its id, greater than any id given out before.
    async fn add_retention_rule(&self, rule: &NewRetentionRule) -> Result<i64>;

    /// Deletes the rule `id`; `false` if there is none.
    async fn remove_retention_rule(&self, id: i64) -> Result<bool>;

    // --- upload expiry ----------------------------------------------------------------

    /// Deletes the session if it was last updated before `before`; `false`
    /// if it is gone or was used since.
    async fn expire_upload(&self, id: &str, before: i64) -> Result<bool>;
}
