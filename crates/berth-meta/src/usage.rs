//! Storage accounting and quotas.
//!
//! Usage per owner (the first component of a repository name) is kept by
//! the database itself, in the transactions that change what is stored,
//! whichever call made them: see `migrations/*/0009_usage_quotas.sql`. The
//! same place refuses growth past a limit, with
//! [`MetaError::QuotaExceeded`](crate::MetaError::QuotaExceeded), so a
//! refused write leaves nothing behind and racing writers cannot pass a
//! limit together.
//!
//! An owner's bytes count each distinct blob once however many of its
//! repositories link it, plus the bytes of every manifest (stored per
//! repository). A blob two owners hold counts for each.

use async_trait::async_trait;
use berth_oci::RepositoryName;

use crate::Result;

/// Which limit a write would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    Bytes,
    Repositories,
}

/// One owner's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    pub owner: String,
    pub bytes: u64,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
}

/// One repository's usage: its linked blobs and its manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryUsage {
    pub repository: RepositoryName,
    pub bytes: u64,
    pub manifests: u64,
    pub tags: u64,
}

/// Limits as stored: `None` means "the default applies", `Some(0)` "unlimited".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub bytes: Option<u64>,
    pub repositories: Option<u64>,
}

/// An owner's own limits (overriding the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerQuota {
    pub owner: String,
    pub limits: QuotaLimits,
}

/// A stored figure that differed from a recount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDrift {
    pub owner: String,
    /// "bytes", "repositories", "manifests" or "tags".
    pub field: &'static str,
    pub stored: i64,
    pub actual: i64,
}

#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// An owner's usage (zeros if it stores nothing).
    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage>;

    /// An owner's usage and its own limits (`None`: it has none), read
    /// together, fresh: what an early check or a refusal message needs.
    async fn owner_usage_and_quota(&self, owner: &str) -> Result<(OwnerUsage, Option<QuotaLimits>)>;

    /// Every owner that stores something or did, in name order.
    async fn all_owner_usage(&self) -> Result<Vec<OwnerUsage>>;

    /// Each repository of `owner`, in name order, computed afresh.
    async fn repository_usage(&self, owner: &str) -> Result<Vec<RepositoryUsage>>;

    /// The defaults (`[quotas]`), which apply where an owner has no limit of its own.
    async fn set_default_quota(&self, limits: QuotaLimits) -> Result<()>;

    /// Sets an owner's own limits (replacing earlier ones).
    async fn set_quota(&self, owner: &str, limits: QuotaLimits) -> Result<()>;

    /// Removes an owner's own limits; `false` if it had none.
    async fn remove_quota(&self, owner: &str) -> Result<bool>;

    /// Owners with limits of their own, in name order.
    async fn quotas(&self) -> Result<Vec<OwnerQuota>>;

    /// Rebuilds the stored usage from the content tables, in one
    /// transaction that writes wait for, and returns what differed.
    async fn recount_usage(&self) -> Result<Vec<UsageDrift>>;
}
