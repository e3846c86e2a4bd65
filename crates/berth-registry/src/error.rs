use std::time::Duration;

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
    /// The repository is a cache of the upstream registry `upstream`: only
    /// the upstream's content goes there.
    #[error("{repository} is a cache of upstream {upstream:?}: pushes are refused")]
    UpstreamReadOnly { upstream: String, repository: String },
    /// The upstream's `repositories` globs do not include this repository.
    #[error("upstream {upstream:?} does not serve {repository}")]
    UpstreamNotServed { upstream: String, repository: String },
    /// The upstream could not answer (down, timed out, 5xx, 429) and nothing
    /// cached could stand in; `detail` names the upstream and what was asked.
    #[error("{detail}")]
    UpstreamUnavailable { upstream: String, status: Option<u16>, retry_after: Option<Duration>, detail: String },
    /// The upstream refused Berth (401, 403): its credentials do not reach
    /// the repository, or (Docker Hub) it does not exist.
    #[error("{detail}")]
    UpstreamRefused { upstream: String, status: u16, detail: String },
    /// The upstream answered something that must not be used (a digest
    /// that does not match, wrong bytes, an unusable manifest): nothing was stored.
    #[error("{detail}")]
    UpstreamInvalid { upstream: String, detail: String },
}

/// Errors travel between the requests that share one upstream fetch, so
/// they are cloned; an I/O error is cloned as its kind and text.
impl Clone for RegistryError {
    fn clone(&self) -> Self {
        use RegistryError as E;
        match self {
            E::BlobUnknown => E::BlobUnknown,
            E::BlobDamaged { digest, problem } => E::BlobDamaged { digest: digest.clone(), problem: problem.clone() },
            E::ManifestUnknown => E::ManifestUnknown,
            E::NameUnknown => E::NameUnknown,
            E::UploadUnknown => E::UploadUnknown,
            E::DigestMismatch { computed } => E::DigestMismatch { computed: computed.clone() },
            E::DigestUnsupported(a) => E::DigestUnsupported(a.clone()),
            E::RangeNotSatisfiable { offset } => E::RangeNotSatisfiable { offset: *offset },
            E::BlobRangeNotSatisfiable { size } => E::BlobRangeNotSatisfiable { size: *size },
            E::SizeInvalid(m) => E::SizeInvalid(m.clone()),
            E::ManifestInvalid(m) => E::ManifestInvalid(m.clone()),
            E::ManifestTooLarge { size, limit } => E::ManifestTooLarge { size: *size, limit: *limit },
            E::ManifestBlobUnknown(p) => E::ManifestBlobUnknown(p.clone()),
            E::ImmutableTag { tag, rule } => E::ImmutableTag { tag: tag.clone(), rule: rule.clone() },
            E::Protected { digest, repository, tag, rule } => E::Protected {
                digest: digest.clone(),
                repository: repository.clone(),
                tag: tag.clone(),
                rule: rule.clone(),
            },
            E::Referenced { digest, by } => E::Referenced { digest: digest.clone(), by: by.clone() },
            E::Body(e) => E::Body(std::io::Error::new(e.kind(), e.to_string())),
            E::QuotaExceeded(m) => E::QuotaExceeded(m.clone()),
            E::BlobTooLarge(m) => E::BlobTooLarge(m.clone()),
            E::NotFound(m) => E::NotFound(m.clone()),
            E::Conflict(m) => E::Conflict(m.clone()),
            E::Unavailable(m) => E::Unavailable(m.clone()),
            E::StorageFull(m) => E::StorageFull(m.clone()),
            E::Internal(m) => E::Internal(m.clone()),
            E::UpstreamReadOnly { upstream, repository } => {
                E::UpstreamReadOnly { upstream: upstream.clone(), repository: repository.clone() }
            }
            E::UpstreamNotServed { upstream, repository } => {
                E::UpstreamNotServed { upstream: upstream.clone(), repository: repository.clone() }
            }
            E::UpstreamUnavailable { upstream, status, retry_after, detail } => E::UpstreamUnavailable {
                upstream: upstream.clone(),
                status: *status,
                retry_after: *retry_after,
                detail: detail.clone(),
            },
            E::UpstreamRefused { upstream, status, detail } => {
                E::UpstreamRefused { upstream: upstream.clone(), status: *status, detail: detail.clone() }
            }
            E::UpstreamInvalid { upstream, detail } => {
                E::UpstreamInvalid { upstream: upstream.clone(), detail: detail.clone() }
            }
        }
    }
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
