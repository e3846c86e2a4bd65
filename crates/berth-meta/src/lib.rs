//! The metadata store: what the registry knows about repositories, blobs,
//! manifests, tags, referrers and upload sessions. Backends (SQLite,
//! Postgres) implement [`MetaStore`]; the registry service is their only
//! caller. Blob bytes live in the blob store; a blob is visible in a
//! repository exactly when this store links it there.
//!
//! Time is stored as milliseconds since the Unix epoch.

pub mod auth;
pub mod browse;
pub mod directory;
mod error;
pub mod events;
pub mod maintenance;
pub mod protection;
pub mod proxy;
pub mod scrub;
pub mod sessions;
mod types;
pub mod usage;

/// The conformance suite every backend runs; see [`meta_store_suite!`].
#[cfg(feature = "testsuite")]
pub mod testsuite;

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};

pub use auth::AuthStore;
pub use browse::BrowseStore;
pub use directory::DirectoryStore;
pub use error::{MetaError, RefProblem};
pub use events::EventStore;
pub use maintenance::MaintenanceStore;
pub use proxy::{CachedRepository, ProxyStore, TagCheck};
pub use scrub::{BlobDamage, BlobEntry, ScrubStore};
pub use sessions::SessionStore;
pub use types::*;
pub use usage::{OwnerQuota, OwnerUsage, QuotaKind, QuotaLimits, RepositoryUsage, UsageDrift, UsageStore};

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Decides whether a tag is immutable; returns the matching rule for the
/// error detail. The registry service owns the rules; the store applies the
/// check inside its transaction so a concurrent push cannot slip past it.
pub type TagGuard<'a> = &'a (dyn Fn(&RepositoryName, &str) -> Option<String> + Send + Sync);

/// A guard that protects nothing.
pub fn no_guard(_: &RepositoryName, _: &str) -> Option<String> {
    None
}

/// Read models for the web pages ([`BrowseStore`]), storage accounting
/// ([`UsageStore`]), scrub ([`ScrubStore`]) and the pull-through cache's
/// records ([`ProxyStore`]) come with every store.
#[async_trait]
pub trait MetaStore: BrowseStore + UsageStore + ScrubStore + ProxyStore + Send + Sync + 'static {
    /// Backend name for logs and metrics ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Cheap liveness query for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// Counts for the metrics gauges (one query; called every few seconds).
    async fn stats(&self) -> Result<StoreStats>;

    // --- repositories -------------------------------------------------

    /// Repository names in lexical order, strictly after `after`, at most `limit`.
    async fn list_repositories(&self, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>>;

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool>;

    // --- blobs ------------------------------------------------------------

    /// `digest` if it is linked to `repo`: its size, and its damage if
    /// scrub found any.
    async fn blob_entry(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<BlobEntry>>;

    /// Size of `digest` if it is linked to `repo` and not damaged.
    async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.blob_entry(repo, digest).await?.filter(|e| e.damage.is_none()).map(|e| e.size))
    }

    /// Size of `digest` if any repository holds it and it is not damaged
    /// (for anonymous mounts).
    async fn global_blob_size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Repositories linking `digest`, in name order, at most `limit` (to find
    /// a mount source the caller may read).
    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>>;

    /// Reserves `digest` before its bytes are committed to the blob store:
    /// creates the blob row (state `live`, with a fresh random token) or
    /// refreshes its `last_linked` time, so that garbage collection leaves
    /// it alone for its grace period. Returns the row's token, which the
    /// caller presents when it links the blob ([`MetaStore::link_reserved_blob`],
    /// [`MetaStore::complete_upload`]); `None` if garbage collection is
    /// deleting the blob right now (the caller waits for the row to go, then
    /// reserves afresh). Every path that commits blob bytes reserves first;
    /// see `berth_registry::gc` for why that makes collection safe.
    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<Option<String>>;

    /// Links a blob the caller reserved (`reservation` is the token
    /// [`MetaStore::reserve_blob`] returned) and whose bytes it has since
    /// committed, creating the repository if needed, and refreshes the
    /// blob's `last_linked` time. Idempotent. `false` (nothing written) if
    /// the row is gone, being deleted, or another incarnation than the one
    /// reserved (garbage collection took it meanwhile).
    async fn link_reserved_blob(&self, repo: &RepositoryName, digest: &Digest, reservation: &str) -> Result<bool>;

    /// Mounts: links a blob that some repository already links to `repo`
    /// (creating the repository if needed). `false` (nothing written) if no
    /// repository links it any more: a blob linked nowhere is awaiting
    /// garbage collection and must not be mounted.
    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool>;

    /// Removes the link; `false` if there was none. Refused, in the
    /// transaction that would unlink, while any manifest of the repository
    /// references the blob: with [`MetaError::Protected`] if a tag that
    /// `guard` protects reaches it (directly or through indexes), else with
    /// [`MetaError::Referenced`]. Deleting the manifests first frees it.
    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool>;

    // --- upload sessions -------------------------------------------------------

    async fn create_upload(&self, upload: &UploadSession) -> Result<()>;

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>>;

    /// Stores the progress of an upload if its offset is still
    /// `expected_offset` (another request may have moved it); `false` otherwise.
    async fn update_upload(&self, id: &str, expected_offset: u64, progress: &UploadProgress) -> Result<bool>;

    /// Removes a session; `false` if it did not exist.
    async fn delete_upload(&self, id: &str) -> Result<bool>;

    /// In one transaction: links the finished blob to the upload's
    /// repository (as [`MetaStore::link_reserved_blob`]) and removes the
    /// session. The blob must have been reserved before its bytes were
    /// committed; if that reservation is gone nothing is written and the
    /// answer is [`MetaError::Unavailable`] (retry).
    async fn complete_upload(&self, id: &str, digest: &Digest, reservation: &str) -> Result<()>;

    /// Sessions not updated since `before` (ms), for expiry.
    async fn stale_uploads(&self, before: i64, limit: u32) -> Result<Vec<UploadSession>>;

    // --- manifests and tags ---------------------------------------------------

    /// Looks up a manifest by tag or digest; `with_content` also loads its bytes.
    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef<'_>,
        with_content: bool,
    ) -> Result<Option<ManifestRecord>>;

    /// Stores a manifest, its references and tags in one transaction.
    ///
    /// With `check_references`, every blob in `manifest.blobs` must be linked
    /// to the repository with the stated size and every child manifest must
    /// exist there, else [`MetaError::References`]. A tag that `guard` marks
    /// immutable may only be (re)pointed at the digest it already has, else
    /// [`MetaError::ImmutableTag`]. Pushing an existing digest again is a no-op
    /// for the manifest itself and still applies the tags.
    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        manifest: &NewManifest,
        check_references: bool,
        guard: TagGuard<'_>,
    ) -> Result<()>;

    /// Deletes a manifest and every tag pointing to it; `false` if absent.
    /// Refused with [`MetaError::ImmutableTag`] if `guard` protects one of
    /// those tags, and with [`MetaError::Protected`] if it protects a tag of
    /// an index that reaches the manifest (transitively). An unprotected
    /// index does not keep its children: they may be deleted.
    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool>;

    /// Deletes a tag (not the manifest); `false` if absent.
    /// Refused with [`MetaError::ImmutableTag`] if `guard` protects it.
    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag, guard: TagGuard<'_>) -> Result<bool>;

    /// Tags in lexical (byte) order strictly after `after`, at most `limit`;
    /// `None` if the repository does not exist.
    async fn list_tags(
        &self,
        repo: &RepositoryName,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Vec<String>>>;

    /// Package versions of every repository of `owner` (or only of
    /// `repository`): each tag, plus each manifest no tag points to.
    /// Newest first, then by repository and version.
    async fn package_versions(
        &self,
        owner: &str,
        repository: Option<&RepositoryName>,
    ) -> Result<Vec<PackageVersionRecord>>;

    /// Manifests in `repo` whose subject is `subject`, optionally only those
    /// with the given artifact type; ordered by digest.
    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;
}
