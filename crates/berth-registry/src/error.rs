use berth_blob::BlobError;
use berth_meta::{MetaError, RefProblem};
use berth_oci::Digest;

/// What can go wrong in a registry operation, in the registry's terms.
/// The API layer maps each variant to an OCI error code and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown")]
    BlobUnknown,
    /// Scrub found the stored bytes damaged; nothing is served until a push
    /// of the same digest replaces them.
    #[error("blob {digest} is damaged in storage ({problem}); push it again to repair it")]
    BlobDamaged { digest: Digest, problem: String },
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("repository unknown")]
    NameUnknown,
    #[error("upload unknown")]
    UploadUnknown,
    #[error("digest mismatch: computed {computed}")]
    DigestMismatch { computed: Digest },
    #[error("unsupported digest algorithm {0:?}")]
    DigestUnsupported(String),
    /// A chunk does not start where the upload stands.
    #[error("chunk out of order: upload is at offset {offset}")]
    RangeNotSatisfiable { offset: u64 },
    /// A read asked for bytes the blob does not have.
    #[error("no byte of the requested range exists in the blob's {size} bytes")]
    BlobRangeNotSatisfiable { size: u64 },
    /// The body's length differs from what the request declared.
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest of {size} bytes exceeds the limit of {limit}")]
    ManifestTooLarge { size: u64, limit: usize },
    #[error("manifest references unknown content")]
    ManifestBlobUnknown(RefProblem),
    #[error("tag {tag:?} is immutable (rule {rule:?})")]
    ImmutableTag { tag: String, rule: String },
    /// The blob or manifest is part of what an immutable tag points at
    /// (`repository:tag`, matched by `rule`), directly or through indexes.
    #[error("{digest} is part of {repository}:{tag}, which is immutable (rule {rule:?})")]
    Protected { digest: Digest, repository: String, tag: String, rule: String },
    /// The blob is the config or a layer of manifest `by` in the repository.
    #[error("blob {digest} is referenced by manifest {by}; delete the manifest first")]
    Referenced { digest: Digest, by: Digest },
    /// Reading the request body failed: client disconnect or timeout.
    #[error("request body: {0}")]
    Body(std::io::Error),
    /// The write would take the owner past a quota; the text is what the
    /// client shows (`quota exceeded: acme uses 49.8 GiB of 50 GiB`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// An upload passed `quotas.blob_max_size`.
    #[error("{0}")]
    BlobTooLarge(String),
    /// A named user, organization or token does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A name is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The blob store has no room left (ENOSPC, quota): the operator's
    /// problem, reported as such rather than as an unknown error.
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::References(p) => RegistryError::ManifestBlobUnknown(p),
            MetaError::ImmutableTag { tag, rule } => RegistryError::ImmutableTag { tag, rule },
            MetaError::Protected { digest, repository, tag, rule } => {
                RegistryError::Protected { digest, repository, tag, rule }
            }
            MetaError::Referenced { digest, by } => RegistryError::Referenced { digest, by },
            MetaError::UploadUnknown => RegistryError::UploadUnknown,
            MetaError::Unavailable(m) => RegistryError::Unavailable(m),
            MetaError::Backend(m) => RegistryError::Internal(m),
            MetaError::NotFound(m) => RegistryError::NotFound(m),
            // Callers that know the repository explain it (`Registry::explain`).
            MetaError::QuotaExceeded(kind) => RegistryError::QuotaExceeded(format!("quota exceeded ({kind:?})")),
            MetaError::Conflict(m) => RegistryError::Conflict(m),
        }
    }
}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => RegistryError::BlobUnknown,
            BlobError::UploadLost => RegistryError::UploadUnknown,
            // The body exceeded its declared length (see `uploads::limit_body`).
            BlobError::Source(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                RegistryError::SizeInvalid(e.to_string())
            }
            BlobError::Source(e) => RegistryError::Body(e),
            BlobError::Io(e) if is_storage_full(&e) => RegistryError::StorageFull(e.to_string()),
            BlobError::Io(e) => RegistryError::Internal(format!("storage: {e}")),
            BlobError::Backend(m) => RegistryError::Internal(format!("storage: {m}")),
        }
    }
}

/// ENOSPC or EDQUOT: out of disk or over quota.
fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}
