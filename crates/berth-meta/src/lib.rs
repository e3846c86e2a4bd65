//! The metadata store: what the registry knows about repositories, blobs,
//! manifests, tags, referrers and upload sessions. Backends (SQLite,
//! Postgres) implement [`MetaStore`]; the registry service is their only
//! caller. Blob bytes live in the blob store; a blob is visible in a
//! repository exactly when this store links it there.
//!
//! Time is stored as milliseconds since the Unix epoch.

pub mod auth;
mod error;
mod types;

/// The conformance suite every backend runs; see [`meta_store_suite!`].
#[cfg(feature = "testsuite")]
pub mod testsuite;

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};

pub use auth::AuthStore;
pub use error::{MetaError, RefProblem};
pub use types::*;

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Decides whether a tag is immutable; returns the matching rule for the
/// error detail. The registry service owns the rules; the store applies the
/// check inside its transaction so a concurrent push cannot slip past it.
pub type TagGuard<'a> = &'a (dyn Fn(&RepositoryName, &str) -> Option<String> + Send + Sync);

/// A guard that protects nothing.
pub fn no_guard(_: &RepositoryName, _: &str) -> Option<String> {
    None
}

#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Backend name for logs and metrics ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Cheap liveness query for `/readyz`.
    async fn ping(&self) -> Result<()>;

    // --- repositories -------------------------------------------------

    /// Repository names in lexical order, strictly after `after`, at most `limit`.
    async fn list_repositories(&self, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>>;

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool>;

    // --- blobs ------------------------------------------------------------

    /// Size of `digest` if it is linked to `repo`.
    async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>>;

    /// Size of `digest` if any repository holds it (for anonymous mounts).
    async fn global_blob_size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Repositories linking `digest`, in name order, at most `limit` (to find
    /// a mount source the caller may read).
    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>>;

    /// Records that the blob store holds `digest` and links it to `repo`,
    /// creating the repository if needed. Idempotent.
    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest, size: u64) -> Result<()>;

    /// Removes the link; `false` if there was none.
    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool>;

    // --- upload sessions -------------------------------------------------------

    async fn create_upload(&self, upload: &UploadSession) -> Result<()>;

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>>;

    /// Stores the progress of an upload if its offset is still
    /// `expected_offset` (another request may have moved it); `false` otherwise.
    async fn update_upload(&self, id: &str, expected_offset: u64, progress: &UploadProgress) -> Result<bool>;

    /// Removes a session; `false` if it did not exist.
    async fn delete_upload(&self, id: &str) -> Result<bool>;

    /// In one transaction: links the finished blob to the upload's
    /// repository (as [`MetaStore::link_blob`]) and removes the session.
    async fn complete_upload(&self, id: &str, digest: &Digest, size: u64) -> Result<()>;

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
    /// Refused with [`MetaError::ImmutableTag`] if `guard` protects one of those tags.
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
