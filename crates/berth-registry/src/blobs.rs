//! Blob reads, mounts and deletes. A blob is visible in a repository only
//! when the metadata store links it there; bytes are shared across repositories.

use berth_blob::{BlobRead, ByteRange};
use berth_oci::{Digest, RepositoryName};

use crate::{Registry, RegistryError, Result};

impl Registry {
    /// Size of a blob visible in `repo`.
    pub async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        self.inner.meta.blob_size(repo, digest).await?.ok_or(RegistryError::BlobUnknown)
    }

    /// Opens a blob already known to be visible (see [`Registry::blob_size`]).
    pub async fn open_blob(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead> {
        Ok(self.inner.blobs.read(digest, range).await?)
    }

    /// Makes `digest` visible in `repo` without uploading it again, taking it
    /// from `from` or, when `from` is `None`, from wherever the registry holds
    /// it. Returns the size, or `None` if there is nothing to mount (the
    /// caller then starts an ordinary upload).
    pub async fn mount_blob(
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
        match size {
            Some(size) if self.inner.meta.link_blob(repo, digest).await? => Ok(Some(size)),
            _ => Ok(None),
        }
    }

    /// Repositories holding `digest` (candidates for an anonymous mount).
    pub async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>> {
        Ok(self.inner.meta.blob_repositories(digest, limit).await?)
    }

    /// Removes the blob from `repo`. Its bytes stay until garbage collection
    /// finds no repository referencing them. Refused while a manifest of
    /// `repo` references it ([`RegistryError::Referenced`]), or
    /// [`RegistryError::Protected`] when an immutable tag reaches it: the
    /// image would otherwise lose a layer while still being served.
    pub async fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let policy = &self.inner.policy;
        let guard = |repo: &RepositoryName, tag: &str| policy.immutable_tags.rule_for(repo, tag);
        if self.inner.meta.unlink_blob(repo, digest, &guard).await? { Ok(()) } else { Err(RegistryError::BlobUnknown) }
    }
}
