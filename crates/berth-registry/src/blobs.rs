//! Blob reads, mounts and deletes. A blob is visible in a repository only
//! when the metadata store links it there; bytes are shared across repositories.

use std::convert::Infallible;
use std::future::Future;

pub use berth_blob::{BlobBody, ByteRange};
use berth_oci::{Digest, RepositoryName};

use crate::uploads::UploadStatus;
use crate::{Registry, RegistryError, Result};

/// A byte range as a request names it, before the blob's size is known
/// (RFC 9110 §14.1.2: `first-last`, `first-`, `-suffix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`, inclusive.
    FromTo(u64, u64),
    /// `first-`: to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Last(u64),
}

impl RangeSpec {
    /// The bytes of a blob of `size` this names, clamped to its end; `None`
    /// when none of them exist (inverted, past the end, or empty).
    pub fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            RangeSpec::Last(n) if n > 0 && size > 0 => Some(ByteRange { start: size.saturating_sub(n), end: size - 1 }),
            RangeSpec::From(a) if a < size => Some(ByteRange { start: a, end: size - 1 }),
            RangeSpec::FromTo(a, b) if a <= b && a < size => Some(ByteRange { start: a, end: b.min(size - 1) }),
            _ => None,
        }
    }
}

/// A blob visible in a repository, and the part of it a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStat {
    /// The whole blob's size.
    pub size: u64,
    /// The requested bytes; `None` for all of them.
    pub range: Option<ByteRange>,
}

impl BlobStat {
    /// Bytes a read yields.
    pub fn len(&self) -> u64 {
        self.range.map_or(self.size, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open blob: what it is and its bytes (or where to fetch them).
pub struct BlobContent {
    pub stat: BlobStat,
    pub body: BlobBody,
}

impl std::fmt::Debug for BlobContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobContent").field("stat", &self.stat).finish_non_exhaustive()
    }
}

/// Who may take a blob from which repository, for the caller of a mount.
/// The API layer implements it over the caller's credentials; the registry
/// only asks (see [`Registry::mount_or_upload`]).
pub trait MountAuthorizer: Sync {
    type Error: Send;

    /// Whether the caller may pull `repo` now.
    fn may_pull(&self, repo: &RepositoryName) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Whether the caller may not pull `repo` with the credentials it sent
    /// but could get credentials that do (a bearer token lacking the scope
    /// its holder may have): the client is then told which scope to ask for.
    fn could_obtain_pull(&self, repo: &RepositoryName) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// Everyone may mount from everywhere: authentication is disabled.
pub struct AnyoneMounts;

impl MountAuthorizer for AnyoneMounts {
    type Error = Infallible;

    async fn may_pull(&self, _: &RepositoryName) -> Result<bool, Infallible> {
        Ok(true)
    }

    async fn could_obtain_pull(&self, _: &RepositoryName) -> Result<bool, Infallible> {
        Ok(false)
    }
}

/// What a mount request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The blob is now visible in the repository, taken from `source`.
    Mounted { source: RepositoryName, size: u64 },
    /// The caller's credentials lack pull on `source`, which holds the
    /// blob and whose pull the caller could obtain: it should ask for
    /// credentials naming both repositories and retry.
    NeedsScope { source: RepositoryName },
    /// Nothing the caller may mount: an ordinary upload session was started.
    Upload(UploadStatus),
}

/// Why a mount failed: the registry, or the authorizer asked about sources.
#[derive(Debug)]
pub enum MountError<E> {
    Registry(RegistryError),
    Authorizer(E),
}

impl<E> From<RegistryError> for MountError<E> {
    fn from(e: RegistryError) -> Self {
        MountError::Registry(e)
    }
}

/// At most this many repositories are tried as the source of a mount without `from`.
const MOUNT_CANDIDATES: u32 = 100;

impl Registry {
    /// A blob visible in `repo`, with `range` resolved against its size
    /// (for HEAD and conditional requests: nothing is opened). In an
    /// upstream's namespace, an uncached blob is fetched ([`crate::proxy`]).
    pub async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobStat> {
        match self.route(repo).await? {
            Some(route) => self.proxied_stat(&route, digest, range).await,
            None => self.stat_local(repo, digest, range).await,
        }
    }

    /// [`Registry::stat_blob`] of what this registry holds.
    pub(crate) async fn stat_local(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobStat> {
        let entry = self.inner.meta.blob_entry(repo, digest).await?.ok_or(RegistryError::BlobUnknown)?;
        if let Some(damage) = entry.damage {
            berth_metrics::metrics().damaged_blob_refusals.inc();
            tracing::warn!(repository = %repo, %digest, problem = %damage.problem, "refusing a damaged blob");
            return Err(RegistryError::BlobDamaged { digest: digest.clone(), problem: damage.problem });
        }
        let size = entry.size;
        let range = match range {
            None => None,
            Some(r) => Some(r.resolve(size).ok_or(RegistryError::BlobRangeNotSatisfiable { size })?),
        };
        Ok(BlobStat { size, range })
    }

    /// Opens a blob visible in `repo`, or the part `range` names. In an
    /// upstream's namespace, an uncached blob streams from the upstream
    /// while it is stored ([`crate::proxy`]).
    pub async fn read_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobContent> {
        match self.route(repo).await? {
            Some(route) => self.proxied_read(&route, digest, range).await,
            None => self.read_local(repo, digest, range).await,
        }
    }

    /// [`Registry::read_blob`] of what this registry holds.
    pub(crate) async fn read_local(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobContent> {
        let stat = self.stat_local(repo, digest, range).await?;
        let read = self.inner.blobs.read(digest, stat.range).await?;
        if matches!(read.body, BlobBody::Stream(_)) {
            berth_metrics::metrics().bytes_pulled.inc_by(stat.len());
        }
        Ok(BlobContent { stat, body: read.body })
    }

    /// `POST ?mount=<digest>[&from=<repo>]`: makes `digest` visible in
    /// `repo` without uploading it again, from `from` if `authz` says the
    /// caller may pull there, or without `from`, from any repository holding
    /// it that the caller may pull (so a digest alone never opens another
    /// namespace's content). Where it cannot, starts an ordinary upload, as
    /// the spec says, unless the caller could obtain pull on a source (see
    /// [`Mount::NeedsScope`]). An invalid `from` holds nothing.
    pub async fn mount_or_upload<A: MountAuthorizer>(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: Option<&str>,
        authz: &A,
    ) -> std::result::Result<Mount, MountError<A::Error>> {
        self.refuse_upstream_writes(repo).await?;
        let candidates = match from {
            Some(f) => RepositoryName::parse(f).ok().into_iter().collect(),
            None => self.inner.meta.blob_repositories(digest, MOUNT_CANDIDATES).await.map_err(RegistryError::from)?,
        };
        let mut readable = None;
        for source in &candidates {
            if authz.may_pull(source).await.map_err(MountError::Authorizer)? {
                readable = Some(source);
                break;
            }
        }
        if let Some(source) = readable {
            if let Some(size) = self.mount_blob(repo, digest, Some(source)).await? {
                return Ok(Mount::Mounted { source: source.clone(), size });
            }
        } else {
            for source in candidates {
                if authz.could_obtain_pull(&source).await.map_err(MountError::Authorizer)? {
                    return Ok(Mount::NeedsScope { source });
                }
            }
        }
        Ok(Mount::Upload(self.start_upload(repo, digest.algorithm()).await?))
    }

    /// Makes `digest` visible in `repo` without uploading it again, taking it
    /// from `from` or, when `from` is `None`, from wherever the registry holds
    /// it; no authorization (see [`Registry::mount_or_upload`]). Returns the
    /// size, or `None` if there is nothing to mount.
    pub(crate) async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: Option<&RepositoryName>,
    ) -> Result<Option<u64>> {
        let size = match from {
            Some(source) => self.inner.meta.blob_size(source, digest).await?,
            None => self.inner.meta.global_blob_size(digest).await?,
        };
        // Only a blob some repository still links is mountable (one linked
        // nowhere may be collected at any moment); the store re-checks that
        // as it links.
        let Some(size) = size else { return Ok(None) };
        let linked = self.inner.meta.link_blob(repo, digest).await;
        Ok(self.explain(repo, None, linked).await?.then_some(size))
    }

    /// Removes the blob from `repo`. Its bytes stay until garbage collection
    /// finds no repository referencing them. Refused while a manifest of
    /// `repo` references it ([`RegistryError::Referenced`]), or
    /// [`RegistryError::Protected`] when an immutable tag reaches it: the
    /// image would otherwise lose a layer while still being served.
    pub async fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let repo = &self.stored_name(repo).await?;
        let policy = &self.inner.policy;
        let guard = |repo: &RepositoryName, tag: &str| policy.immutable_tags.rule_for(repo, tag);
        if self.inner.meta.unlink_blob(repo, digest, &guard).await? { Ok(()) } else { Err(RegistryError::BlobUnknown) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(RangeSpec::FromTo(0, 4).resolve(10), r(0, 4));
        assert_eq!(RangeSpec::From(5).resolve(10), r(5, 9));
        assert_eq!(RangeSpec::Last(3).resolve(10), r(7, 9));
        assert_eq!(RangeSpec::Last(30).resolve(10), r(0, 9));
        assert_eq!(RangeSpec::FromTo(8, 100).resolve(10), r(8, 9));
        assert_eq!(RangeSpec::From(10).resolve(10), None);
        assert_eq!(RangeSpec::FromTo(10, 20).resolve(10), None);
        assert_eq!(RangeSpec::FromTo(5, 0).resolve(10), None);
        assert_eq!(RangeSpec::Last(0).resolve(10), None);
        assert_eq!(RangeSpec::FromTo(0, 0).resolve(0), None);
        assert_eq!(RangeSpec::Last(1).resolve(0), None);
    }
}
