use berth_oci::{Algorithm, Digest, RepositoryName, Tag};

/// An upload session: the repository it belongs to and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    /// Random, unguessable id (a UUID in text form).
    pub id: String,
    pub repository: RepositoryName,
    pub algorithm: Algorithm,
    pub progress: UploadProgress,
    pub created_at: i64,
}

/// What changes on every append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadProgress {
    /// Bytes received so far.
    pub offset: u64,
    /// Saved hasher state after `offset` bytes (empty when nothing was hashed yet).
    pub hash_state: Vec<u8>,
    /// Blob-store specific state (e.g. S3 multipart id and parts), opaque here.
    pub backend_state: String,
    pub updated_at: i64,
}

/// How a manifest is looked up.
#[derive(Debug, Clone, Copy)]
pub enum ManifestRef<'a> {
    Tag(&'a Tag),
    Digest(&'a Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The exact bytes pushed; empty unless requested.
    pub content: Vec<u8>,
    pub created_at: i64,
}

/// A blob a manifest needs, with the size its descriptor claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
    /// Effective artifact type for the referrers API.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// Annotations as a JSON object string, returned verbatim by referrers.
    pub annotations: Option<String>,
    /// Config and distributable layers.
    pub blobs: Vec<BlobRef>,
    /// Child manifests of an index.
    pub manifests: Vec<Digest>,
    /// Tags to point at this manifest.
    pub tags: Vec<Tag>,
    /// The user who pushed it, if known.
    pub pushed_by: Option<String>,
    pub created_at: i64,
}

/// A version in the package API's sense: a tag, or the digest of an untagged manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageVersionRecord {
    pub repository: RepositoryName,
    /// The tag, or the digest for an untagged manifest.
    pub version: String,
    pub digest: Digest,
    /// When the tag was last pointed (or the manifest pushed), ms.
    pub created_at: i64,
    pub pushed_by: Option<String>,
}

/// One entry of a referrers response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// Totals for the metrics gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub repositories: u64,
    pub manifests: u64,
    /// Blobs the blob store holds (by the database's account).
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Open upload sessions.
    pub uploads: u64,
}
