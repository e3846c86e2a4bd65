//! Package versions, as Gitea's package API presents a container image:
//! one version per tag, plus one per untagged manifest (named by digest).
//! Deleting a version deletes the tag, or the untagged manifest; what it
//! leaves unreferenced is garbage for the collector.

use berth_meta::PackageVersionRecord;
use berth_oci::{Digest, Reference, RepositoryName, Tag};

use crate::{Registry, RegistryError, Result};

impl Registry {
    /// Every version of every repository of `owner`, newest first.
    pub async fn package_versions(&self, owner: &str) -> Result<Vec<PackageVersionRecord>> {
        Ok(self.inner.meta.package_versions(owner, None).await?)
    }

    /// One version of `repo`: a tag, or the digest of an untagged manifest.
    pub async fn package_version(&self, repo: &RepositoryName, version: &str) -> Result<PackageVersionRecord> {
        let versions = self.inner.meta.package_versions(repo.owner(), Some(repo)).await?;
        versions.into_iter().find(|v| v.version == version).ok_or(RegistryError::ManifestUnknown)
    }

    /// Deletes a version (immutability rules apply as for any delete).
    pub async fn delete_package_version(
        &self,
        repo: &RepositoryName,
        version: &str,
        actor: Option<&str>,
    ) -> Result<()> {
        let reference = if version.contains(':') {
            Reference::Digest(Digest::parse(version).map_err(|_| RegistryError::ManifestUnknown)?)
        } else {
            Reference::Tag(Tag::parse(version).map_err(|_| RegistryError::ManifestUnknown)?)
        };
        self.delete_manifest_as(repo, &reference, actor).await
    }
}
