//! Package versions, as Gitea's package API presents a container image:
//! one version per tag, plus one per untagged manifest (named by digest).
//! Deleting a version deletes the tag, or the untagged manifest; what it
//! leaves unreferenced is garbage for the collector.

use berth_meta::PackageVersionRecord;
use berth_oci::{Digest, Reference, RepositoryName, Tag};

use crate::browse::describe;
use crate::{Registry, RegistryError, Result};

/// A file of a package version, as Gitea's package API lists them: the
/// manifest (`manifest.json`) and every blob or child manifest it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

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

    /// The files of a version: the manifest, then (for an index) each
    /// child manifest, or (for an image) its config and layers, with the
    /// sizes their descriptors state.
    pub async fn version_files(&self, repo: &RepositoryName, version: &str) -> Result<Vec<PackageFile>> {
        let v = self.package_version(repo, version).await?;
        let record = self.get_manifest(repo, &Reference::Digest(v.digest.clone()), true).await?;
        let facts = describe::manifest_facts(&record.content).unwrap_or_default();
        let mut files = vec![PackageFile { name: "manifest.json".into(), digest: record.digest, size: record.size }];
        let named = |digest: Digest, size: u64| PackageFile { name: digest.to_string(), digest, size };
        for child in facts.children {
            files.extend(child.digest.map(|d| named(d, child.descriptor_size)));
        }
        for blob in facts.config.into_iter().chain(facts.layers) {
            files.extend(blob.digest.map(|d| named(d, blob.size)));
        }
        Ok(files)
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
