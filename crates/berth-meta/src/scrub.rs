//! What `berth scrub` reads and records: every stored blob and manifest
//! to check, where a damaged one is reachable from, and the damage marks
//! that keep a damaged blob from being served.

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName};

use crate::Result;

/// A blob's damage as scrub recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDamage {
    /// What was wrong (`digest mismatch: ...`, `missing from storage`, ...).
    pub problem: String,
    /// When scrub found it, ms.
    pub found_at: i64,
}

/// A blob visible in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub size: u64,
    /// Set when scrub found the stored bytes damaged: the blob is not served.
    pub damage: Option<BlobDamage>,
}

/// A live blob to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubBlob {
    pub digest: Digest,
    pub size: u64,
    pub damage: Option<BlobDamage>,
}

/// A manifest to check: its digest and the exact bytes stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubManifest {
    pub digest: Digest,
    pub content: Vec<u8>,
}

/// One way a digest is reached: through `manifest` in `repository` (the
/// digest itself, or a manifest or index that references it), which `tag`
/// points at (`None`: that manifest is untagged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub repository: RepositoryName,
    pub manifest: Digest,
    pub tag: Option<String>,
}

#[async_trait]
pub trait ScrubStore: Send + Sync + 'static {
    /// Live blobs some repository links (so their bytes were committed), in
    /// digest order, strictly after `after`, at most `limit`; with
    /// `repository`, only those it links. Unlinked rows are garbage
    /// collection's business (and an upload's reservation has no bytes yet).
    async fn scrub_blobs(
        &self,
        repository: Option<&RepositoryName>,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<ScrubBlob>>;

    /// `repository`'s manifests with their bytes, in digest order, strictly
    /// after `after`, at most `limit`.
    async fn scrub_manifests(
        &self,
        repository: &RepositoryName,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<ScrubManifest>>;

    /// Marks a live blob damaged, from now on refused to readers, and gives
    /// the row a new token: an upload that reserved it before the damage was
    /// found cannot link it (its storage commit may have kept the damaged
    /// bytes) and retries. `false` if there is no live row.
    async fn mark_blob_damaged(&self, digest: &Digest, problem: &str, now: i64) -> Result<bool>;

    /// Clears a blob's damage mark (scrub found its bytes whole again);
    /// `false` if it had none.
    async fn clear_blob_damage(&self, digest: &Digest) -> Result<bool>;

    /// Where `digest` is reached from: the manifests that are it or
    /// reference it, directly or through indexes, with the tags that point
    /// at them; at most `limit` rows, by repository, manifest and tag.
    async fn reach(&self, digest: &Digest, limit: u32) -> Result<Vec<Reach>>;
}
