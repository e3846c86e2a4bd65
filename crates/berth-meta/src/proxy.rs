//! What the pull-through cache records beyond the cached content itself:
//! when each cached tag was last checked against its upstream, and when
//! each cached repository was last pulled.
//!
//! Cached manifests, tags and blob links live in the ordinary tables, in
//! repositories named `<upstream>/<upstream repository>`; the registry
//! service decides what is cached and when to ask the upstream.

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};

use crate::Result;

/// A cached tag's last check against its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagCheck {
    /// The digest the upstream's tag pointed at.
    pub digest: Digest,
    /// When the upstream was asked, ms.
    pub checked_at: i64,
}

/// A repository filled from an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRepository {
    pub repository: RepositoryName,
    /// The upstream's configured name.
    pub upstream: String,
    /// The last pull of anything in it, ms (recorded at most about once a
    /// minute per repository and process, so it may lag by that much).
    pub last_pulled_at: i64,
}

#[async_trait]
pub trait ProxyStore: Send + Sync + 'static {
    /// The last check of `tag` in the cached repository `repo`, if any.
    async fn tag_check(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<TagCheck>>;

    /// Records that `upstream` said `tag` points at `digest` at `now`, and
    /// counts as a pull of `repo` (see [`ProxyStore::record_pull`]).
    async fn record_tag_check(
        &self,
        repo: &RepositoryName,
        upstream: &str,
        tag: &Tag,
        digest: &Digest,
        now: i64,
    ) -> Result<()>;

    /// Records a pull from the cached repository `repo` (filled from
    /// `upstream`) at `now`; the recorded time never goes back.
    async fn record_pull(&self, repo: &RepositoryName, upstream: &str, now: i64) -> Result<()>;

    /// What the cache knows of `repo`, if it was ever filled from an upstream.
    async fn cached_repository(&self, repo: &RepositoryName) -> Result<Option<CachedRepository>>;

    /// Whether a user or organization named `name` exists (local owners win
    /// over the upstream served at the root).
    async fn owner_exists(&self, name: &str) -> Result<bool>;

    /// Whether a manifest stored in `repo` references `digest` (as its
    /// config, a layer, or a child manifest).
    async fn references(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool>;
}
