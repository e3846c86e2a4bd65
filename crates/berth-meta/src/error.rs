use berth_oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A manifest references content the repository does not hold.
    #[error("manifest references unknown or mismatched content")]
    References(RefProblem),
    /// A tag protected by an immutability rule would move or disappear.
    #[error("tag {tag:?} is immutable (rule {rule:?})")]
    ImmutableTag { tag: String, rule: String },
    /// A name is already taken (users and organizations share one namespace).
    #[error("{0} already exists")]
    Conflict(String),
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
