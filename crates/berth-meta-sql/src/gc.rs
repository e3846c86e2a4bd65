//! The garbage collector's view of a repository, assembled from query rows.

use berth_meta::Result;
use berth_meta::maintenance::{GcBlob, GcLink, GcManifest, RepositoryGraph};

use crate::convert::{from_sql_int, parse_digest};

/// `(digest, size, created_at, tagged, subject)` from `manifests`.
pub type ManifestRow = (String, i64, i64, bool, Option<String>);
/// `(manifest_digest, target_digest)` from `manifest_references`.
pub type ReferenceRow = (String, String);
/// `(digest, size, linked_at)` from `repository_blobs JOIN blobs`.
pub type LinkRow = (String, i64, i64);
/// `(digest, size)` from `blobs`.
pub type BlobRow = (String, i64);

pub fn graph(
    manifests: Vec<ManifestRow>,
    references: Vec<ReferenceRow>,
    links: Vec<LinkRow>,
) -> Result<RepositoryGraph> {
    Ok(RepositoryGraph {
        manifests: manifests
            .into_iter()
            .map(|(digest, size, created_at, tagged, subject)| {
                Ok(GcManifest {
                    digest: parse_digest(&digest)?,
                    size: from_sql_int(size, "manifest size")?,
                    created_at,
                    tagged,
                    subject: subject.as_deref().map(parse_digest).transpose()?,
                })
            })
            .collect::<Result<_>>()?,
        references: references
            .into_iter()
            .map(|(m, t)| Ok((parse_digest(&m)?, parse_digest(&t)?)))
            .collect::<Result<_>>()?,
        links: links
            .into_iter()
            .map(|(digest, size, linked_at)| {
                Ok(GcLink { digest: parse_digest(&digest)?, size: from_sql_int(size, "blob size")?, linked_at })
            })
            .collect::<Result<_>>()?,
    })
}

pub fn blobs(rows: Vec<BlobRow>) -> Result<Vec<GcBlob>> {
    rows.into_iter()
        .map(|(d, s)| Ok(GcBlob { digest: parse_digest(&d)?, size: from_sql_int(s, "blob size")? }))
        .collect()
}
