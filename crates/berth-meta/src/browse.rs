//! Read models for the web pages: package listings and version listings,
//! paginated in SQL with every per-row figure (tag count, size, last push)
//! computed by the same query, so a page costs a fixed number of queries
//! however many tags or repositories it summarises.

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName};

use crate::Result;

/// Who is looking. Listings include a repository when the viewer could pull
/// it: public ones, the viewer's own namespace, organizations they belong
/// to, and everything for site admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Viewer {
    pub user_id: Option<i64>,
    pub is_admin: bool,
}

impl Viewer {
    pub const ANONYMOUS: Viewer = Viewer { user_id: None, is_admin: false };

    /// Sees every repository (site admins, and every caller when
    /// authentication is off).
    pub const EVERYTHING: Viewer = Viewer { user_id: None, is_admin: true };
}

/// One page of a listing and how many items the whole listing has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub total: u64,
    pub items: Vec<T>,
}

/// Which repositories a package listing covers.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackageQuery<'a> {
    /// Only this owner's repositories (`None`: every owner).
    pub owner: Option<&'a str>,
    /// Only names containing this text (after the owner part), as typed.
    pub contains: Option<&'a str>,
    pub offset: u64,
    pub limit: u32,
}

/// A repository with at least one manifest, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRow {
    pub repository: RepositoryName,
    /// Effective visibility (the repository's own, else its owner's).
    pub is_public: bool,
    pub tag_count: u64,
    /// The tag pushed most recently.
    pub newest_tag: Option<String>,
    /// The latest tag or manifest push, ms.
    pub last_push: i64,
    /// Bytes of every blob linked to the repository (each counted once).
    pub size: u64,
}

/// The order of a version listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// A version of a package: a tag, or a manifest no tag points to that is
/// neither an index's child nor a referrer (those show on their parent's page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// The tag, or the digest of an untagged manifest.
    pub version: String,
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// When the tag was last pointed (or the manifest pushed), ms.
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
    /// The manifest, its blobs, and for an index its children and their blobs.
    pub size: u64,
    /// The manifest's bytes when it is an index (its platforms are listed
    /// there); empty otherwise.
    pub index_content: Vec<u8>,
}

/// A recent tag push, for the home page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentPush {
    pub repository: RepositoryName,
    pub tag: String,
    pub digest: Digest,
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
}

/// A manifest's size with everything it references (for an index's children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSize {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[async_trait]
pub trait BrowseStore: Send + Sync + 'static {
    /// Repositories with at least one manifest that `viewer` may read, in
    /// name order, one page.
    async fn packages(&self, viewer: Viewer, query: &PackageQuery<'_>) -> Result<Page<PackageRow>>;

    /// Latest tag pushes in repositories `viewer` may read, newest first.
    async fn recent_pushes(&self, viewer: Viewer, limit: u32) -> Result<Vec<RecentPush>>;

    /// One page of `repo`'s versions (see [`VersionRow`]); ties in time are
    /// broken by version text. The caller has checked `repo` is readable.
    async fn versions(
        &self,
        repo: &RepositoryName,
        order: VersionOrder,
        offset: u64,
        limit: u32,
    ) -> Result<Page<VersionRow>>;

    /// One version of `repo` by its name (a tag, or an untagged manifest's digest).
    async fn version(&self, repo: &RepositoryName, version: &str) -> Result<Option<VersionRow>>;

    /// Tags pointing at `digest` in `repo`, in byte order, at most `limit`.
    async fn tags_of(&self, repo: &RepositoryName, digest: &Digest, limit: u32) -> Result<Vec<String>>;

    /// For each of `digests` present in `repo`: its media type and its size
    /// with everything it references (one query; absent ones are skipped).
    async fn manifest_sizes(&self, repo: &RepositoryName, digests: &[Digest]) -> Result<Vec<ManifestSize>>;
}
