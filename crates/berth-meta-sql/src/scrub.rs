//! Rows of the scrub queries ([`berth_meta::ScrubStore`] and
//! [`berth_meta::MetaStore::blob_entry`]), shared by both backends.

use berth_meta::Result;
use berth_meta::scrub::{BlobDamage, BlobEntry, Reach, ScrubBlob, ScrubManifest};

use crate::convert::{from_sql_int, parse_digest, parse_repository};

fn damage(found_at: Option<i64>, problem: Option<String>) -> Option<BlobDamage> {
    found_at.map(|found_at| BlobDamage { problem: problem.unwrap_or_default(), found_at })
}

/// `size, damaged_at, damage` of a blob.
#[derive(sqlx::FromRow)]
pub struct BlobEntryRow {
    pub size: i64,
    pub damaged_at: Option<i64>,
    pub damage: Option<String>,
}

impl BlobEntryRow {
    pub fn into_entry(self) -> Result<BlobEntry> {
        Ok(BlobEntry { size: from_sql_int(self.size, "blob size")?, damage: damage(self.damaged_at, self.damage) })
    }
}

/// `digest, size, damaged_at, damage` of a blob.
#[derive(sqlx::FromRow)]
pub struct ScrubBlobRow {
    pub digest: String,
    pub size: i64,
    pub damaged_at: Option<i64>,
    pub damage: Option<String>,
}

impl ScrubBlobRow {
    pub fn into_blob(self) -> Result<ScrubBlob> {
        Ok(ScrubBlob {
            digest: parse_digest(&self.digest)?,
            size: from_sql_int(self.size, "blob size")?,
            damage: damage(self.damaged_at, self.damage),
        })
    }
}

/// `digest, content` of a manifest.
#[derive(sqlx::FromRow)]
pub struct ScrubManifestRow {
    pub digest: String,
    pub content: Vec<u8>,
}

impl ScrubManifestRow {
    pub fn into_manifest(self) -> Result<ScrubManifest> {
        Ok(ScrubManifest { digest: parse_digest(&self.digest)?, content: self.content })
    }
}

/// `repository, manifest, tag` of the reach query.
#[derive(sqlx::FromRow)]
pub struct ReachRow {
    pub repository: String,
    pub manifest: String,
    pub tag: Option<String>,
}

impl ReachRow {
    pub fn into_reach(self) -> Result<Reach> {
        Ok(Reach {
            repository: parse_repository(&self.repository)?,
            manifest: parse_digest(&self.manifest)?,
            tag: self.tag,
        })
    }
}

/// The reach query, with the dialect's placeholders for the digest (`$d`)
/// and the limit (`$l`): the manifests that are the digest or reference it,
/// then every manifest that references one of those (indexes), to any
/// depth, each with the tags pointing at it.
#[macro_export]
macro_rules! reach_sql {
    ($d:literal, $l:literal) => {
        concat!(
            "WITH RECURSIVE reach (repository_id, digest) AS ( \
               SELECT repository_id, digest FROM manifests WHERE digest = ",
            $d,
            " \
               UNION SELECT repository_id, manifest_digest FROM manifest_references WHERE target_digest = ",
            $d,
            " \
               UNION SELECT mr.repository_id, mr.manifest_digest FROM manifest_references mr \
                 JOIN reach ON mr.repository_id = reach.repository_id AND mr.target_digest = reach.digest \
             ) \
             SELECT r.name AS repository, reach.digest AS manifest, t.name AS tag \
             FROM reach JOIN repositories r ON r.id = reach.repository_id \
             LEFT JOIN tags t ON t.repository_id = reach.repository_id AND t.digest = reach.digest \
             ORDER BY r.name, reach.digest, t.name LIMIT ",
            $l
        )
    };
}
