use berth_oci::Digest;

use crate::QuotaKind;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A manifest references content the repository does not hold.
    #[error("manifest references unknown or mismatched content")]
    References(RefProblem),
    /// A tag protected by an immutability rule would move or disappear.
    #[error("tag {tag:?} is immutable (rule {rule:?})")]
    ImmutableTag { tag: String, rule: String },
    /// Content that a protected tag reaches (through indexes, transitively)
    /// would be deleted: `repository:tag` matches the immutability `rule`.
    #[error("{digest} is part of {repository}:{tag}, which is immutable (rule {rule:?})")]
    Protected { digest: Digest, repository: String, tag: String, rule: String },
    /// A blob that a manifest of the repository still references (as its
    /// config or a layer) would be unlinked; `by` is one such manifest.
    #[error("blob {digest} is referenced by manifest {by}")]
    Referenced { digest: Digest, by: Digest },
    /// A name is already taken (users and organizations share one namespace).
    #[error("{0} already exists")]
    Conflict(String),
    /// The write would take the repository's owner past a quota; nothing
    /// was written.
    #[error("quota exceeded ({0:?})")]
    QuotaExceeded(QuotaKind),
    /// A named user, organization or token does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The upload session does not exist (finished, cancelled or expired meanwhile).
    #[error("upload session unknown")]
    UploadUnknown,
    /// The database is unreachable or timed out; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else that went wrong inside the backend.
    #[error("database error: {0}")]
    Backend(String),
}

/// What a manifest references that the repository lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefProblem {
    /// Blobs or child manifests not present.
    pub missing: Vec<Digest>,
    /// Blobs present with a size other than the descriptor states.
    pub wrong_size: Vec<Digest>,
}
