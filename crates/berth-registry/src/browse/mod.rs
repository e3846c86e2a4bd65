//! What the web pages show: package and version listings, and one
//! version's details (platforms, image config, layers, referrers). Each
//! call is a fixed number of queries whatever the repository's size; the
//! caller decides visibility (listings take the [`Viewer`], single
//! repositories must already be known readable).

pub mod describe;

use berth_blob::BlobBody;
use berth_oci::{Digest, Reference, RepositoryName};
use futures_util::StreamExt;

pub use berth_meta::browse::{PackageQuery, PackageRow, Page, RecentPush, VersionOrder, VersionRow, Viewer};
pub use describe::{Child, ImageConfig, Layer};

use crate::{Referrer, Registry, RegistryError, Result};

/// Image configs larger than this are not read for a page.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Config media types of ordinary images.
const IMAGE_CONFIG_TYPES: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// How many other tags of a digest a version page lists.
const MAX_TAGS_SHOWN: u32 = 200;

/// A row of the versions page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionListing {
    pub version: String,
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
    pub size: u64,
    /// An index's platforms (empty for a single image).
    pub platforms: Vec<String>,
    /// The immutability rule protecting this tag, if any.
    pub immutable_rule: Option<String>,
}

/// One platform of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformDetails {
    pub platform: String,
    pub digest: Option<Digest>,
    pub media_type: String,
    /// The child with everything it references; `None` if the repository lacks it.
    pub size: Option<u64>,
}

/// An image manifest's config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetails {
    pub config: Option<ImageConfig>,
    /// Why the config is not shown, when it is not.
    pub config_note: Option<String>,
    pub layers: Vec<Layer>,
    pub layers_size: u64,
}

/// Referrers of one artifact type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerGroup {
    pub artifact_type: String,
    pub items: Vec<Referrer>,
}

/// Everything the version page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDetails {
    pub repository: RepositoryName,
    /// The tag or digest asked for.
    pub version: String,
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
    /// The manifest with everything it references.
    pub size: u64,
    /// Every tag on this digest.
    pub tags: Vec<String>,
    /// The rule that makes one of those tags immutable, with the tag.
    pub immutable: Option<(String, String)>,
    pub platforms: Vec<PlatformDetails>,
    pub image: Option<ImageDetails>,
    pub annotations: Vec<(String, String)>,
    pub referrers: Vec<ReferrerGroup>,
}

impl Registry {
    /// What the store holds (the admin page's storage summary).
    pub async fn storage_summary(&self) -> Result<berth_meta::StoreStats> {
        Ok(self.meta().stats().await?)
    }

    /// Packages `viewer` may read, one page.
    pub async fn packages(&self, viewer: Viewer, query: &PackageQuery<'_>) -> Result<Page<PackageRow>> {
        Ok(self.meta().packages(viewer, query).await?)
    }

    /// The latest tag pushes `viewer` may see.
    pub async fn recent_pushes(&self, viewer: Viewer, limit: u32) -> Result<Vec<RecentPush>> {
        Ok(self.meta().recent_pushes(viewer, limit).await?)
    }

    /// One page of `repo`'s versions.
    pub async fn versions(
        &self,
        repo: &RepositoryName,
        order: VersionOrder,
        offset: u64,
        limit: u32,
    ) -> Result<Page<VersionListing>> {
        let page = self.meta().versions(repo, order, offset, limit).await?;
        let items = page.items.into_iter().map(|row| self.listing(repo, row)).collect();
        Ok(Page { total: page.total, items })
    }

    fn listing(&self, repo: &RepositoryName, row: VersionRow) -> VersionListing {
        let platforms = describe::manifest_facts(&row.index_content)
            .map(|f| f.children.into_iter().map(|c| c.platform).collect())
            .unwrap_or_default();
        let immutable_rule =
            if row.version.contains(':') { None } else { self.policy().immutable_tags.rule_for(repo, &row.version) };
        // The stored artifact type falls back to the config's media type (for
        // the referrers API); a plain image's config type is no artifact type.
        let artifact_type = row.artifact_type.filter(|t| !IMAGE_CONFIG_TYPES.contains(&t.as_str()));
        VersionListing {
            version: row.version,
            digest: row.digest,
            media_type: row.media_type,
            artifact_type,
            pushed_at: row.pushed_at,
            pushed_by: row.pushed_by,
            size: row.size,
            platforms,
            immutable_rule,
        }
    }

    /// The details of one version: a tag, an untagged manifest's digest, or
    /// the digest of any manifest of the repository (an index's child, a
    /// referrer).
    pub async fn version_details(&self, repo: &RepositoryName, version: &str) -> Result<VersionDetails> {
        let (digest, pushed_at, pushed_by, size) = match self.meta().version(repo, version).await? {
            Some(row) => (row.digest, row.pushed_at, row.pushed_by, Some(row.size)),
            None => {
                let digest = Digest::parse(version).map_err(|_| RegistryError::ManifestUnknown)?;
                let record = self.get_manifest(repo, &Reference::Digest(digest.clone()), false).await?;
                (digest, record.created_at, None, None)
            }
        };
        let record = self.get_manifest(repo, &Reference::Digest(digest.clone()), true).await?;
        let facts = describe::manifest_facts(&record.content).unwrap_or_default();
        let size = match size {
            Some(s) => s,
            None => self
                .meta()
                .manifest_sizes(repo, std::slice::from_ref(&digest))
                .await?
                .first()
                .map_or(record.size, |s| s.size),
        };
        let tags = self.meta().tags_of(repo, &digest, MAX_TAGS_SHOWN).await?;
        let immutable =
            tags.iter().find_map(|t| self.policy().immutable_tags.rule_for(repo, t).map(|rule| (rule, t.clone())));
        let platforms = self.platforms(repo, &facts.children).await?;
        let image = match &facts.config {
            Some(config) if facts.children.is_empty() => Some(self.image_details(repo, config, &facts.layers).await?),
            _ => None,
        };
        let referrers = group_referrers(self.referrers(repo, &digest, None).await?);
        Ok(VersionDetails {
            repository: repo.clone(),
            version: version.to_owned(),
            digest,
            media_type: record.media_type,
            artifact_type: facts.artifact_type,
            pushed_at,
            pushed_by,
            size,
            tags,
            immutable,
            platforms,
            image,
            annotations: facts.annotations,
            referrers,
        })
    }

    async fn platforms(&self, repo: &RepositoryName, children: &[Child]) -> Result<Vec<PlatformDetails>> {
        let digests: Vec<Digest> = children.iter().filter_map(|c| c.digest.clone()).collect();
        let sizes = self.meta().manifest_sizes(repo, &digests).await?;
        Ok(children
            .iter()
            .map(|c| PlatformDetails {
                platform: c.platform.clone(),
                digest: c.digest.clone(),
                media_type: c.media_type.clone(),
                size: sizes.iter().find(|s| Some(&s.digest) == c.digest.as_ref()).map(|s| s.size),
            })
            .collect())
    }

    async fn image_details(&self, repo: &RepositoryName, config: &Layer, layers: &[Layer]) -> Result<ImageDetails> {
        let (config, config_note) = match self.read_config(repo, config).await {
            Ok(Some(bytes)) => match describe::image_config(&bytes) {
                Some(c) => (Some(c), None),
                None => (None, Some("the config is not a JSON object".to_owned())),
            },
            Ok(None) => (None, Some("the config is too large or stored elsewhere to show here".to_owned())),
            Err(RegistryError::BlobUnknown) => (None, Some("the config blob is not in this repository".to_owned())),
            Err(e) => return Err(e),
        };
        Ok(ImageDetails {
            config,
            config_note,
            layers: layers.to_vec(),
            layers_size: layers.iter().map(|l| l.size).sum(),
        })
    }

    /// The config's bytes, if small enough and readable here.
    async fn read_config(&self, repo: &RepositoryName, config: &Layer) -> Result<Option<Vec<u8>>> {
        let Some(digest) = &config.digest else { return Err(RegistryError::BlobUnknown) };
        if config.size > MAX_CONFIG_BYTES {
            return Ok(None);
        }
        let content = self.read_blob(repo, digest, None).await?;
        let BlobBody::Stream(mut stream) = content.body else { return Ok(None) };
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| RegistryError::Internal(e.to_string()))?);
            if bytes.len() as u64 > MAX_CONFIG_BYTES {
                return Ok(None);
            }
        }
        Ok(Some(bytes))
    }
}

/// Referrers by artifact type, in type order (untyped ones under their media type).
fn group_referrers(referrers: Vec<Referrer>) -> Vec<ReferrerGroup> {
    let mut groups: Vec<ReferrerGroup> = Vec::new();
    for r in referrers {
        let kind = r.artifact_type.clone().unwrap_or_else(|| r.media_type.clone());
        match groups.iter_mut().find(|g| g.artifact_type == kind) {
            Some(g) => g.items.push(r),
            None => groups.push(ReferrerGroup { artifact_type: kind, items: vec![r] }),
        }
    }
    groups.sort_by(|a, b| a.artifact_type.cmp(&b.artifact_type));
    groups
}
