//! The registry service: every rule of the distribution API that is not
//! HTTP lives here, once, for the server and the CLI alike.
//!
//! - blobs: visibility per repository, mounts, deletes ([`blobs`])
//! - upload sessions: start, append, status, finish, cancel ([`uploads`])
//! - manifests, tags and referrers ([`manifests`])
//! - tag immutability ([`immutability`])
//! - maintenance: garbage collection ([`gc`]), retention rules
//!   ([`retention`], from the config file and the database:
//!   [`retention_rules`]), upload expiry ([`expiry`]), under cluster-wide
//!   leases ([`maintenance`])
//! - usage and quotas ([`quota`])
//! - the pull-through cache of upstream registries ([`proxy`]), behind the
//!   same calls as local repositories

pub mod blobs;
pub mod browse;
mod error;
pub mod expiry;
pub mod gc;
pub mod immutability;
mod locks;
pub mod maintenance;
pub mod manifests;
pub mod packages;
pub mod proxy;
pub mod quota;
pub mod retention;
pub mod retention_rules;
pub mod scrub;
pub mod uploads;
pub mod webhooks;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_blob::BlobStore;
use berth_meta::MetaStore;

pub use error::RegistryError;
pub use immutability::ImmutableTags;
pub use maintenance::Maintenance;

// The stores' types the service hands out, so that callers need only this crate.
pub use berth_blob::ByteStream;
pub use berth_meta::{ManifestRecord, PackageVersionRecord, Referrer};

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Registry rules that come from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub immutable_tags: ImmutableTags,
    /// Accept manifests whose references are not (all) present.
    pub allow_sparse: bool,
    pub max_manifest_size: usize,
    pub quotas: quota::QuotaPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            immutable_tags: ImmutableTags::default(),
            allow_sparse: false,
            max_manifest_size: berth_oci::manifest::MAX_MANIFEST_SIZE,
            quotas: quota::QuotaPolicy::default(),
        }
    }
}

/// Backend names, as the stores report them ("sqlite", "postgres"; "filesystem", "s3").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backends {
    pub database: &'static str,
    pub storage: &'static str,
}

/// The registry service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    policy: Policy,
    upload_locks: locks::KeyedLocks,
    webhooks: Option<webhooks::Webhooks>,
    limits: quota::LimitsCache,
    /// `None` without upstreams.
    proxy: Option<proxy::Proxy>,
}

impl Registry {
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, policy: Policy) -> Self {
        Registry::with_webhooks(meta, blobs, policy, None)
    }

    /// A registry that also reports events to webhooks.
    pub fn with_webhooks(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        policy: Policy,
        webhooks: Option<webhooks::Webhooks>,
    ) -> Self {
        Registry::with_upstreams(meta, blobs, policy, webhooks, Vec::new()).expect("no upstreams, nothing to refuse")
    }

    /// A registry that reports to webhooks and serves `upstreams` through
    /// its pull-through cache ([`proxy`]). Refused: an upstream glob that
    /// does not compile.
    pub fn with_upstreams(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        policy: Policy,
        webhooks: Option<webhooks::Webhooks>,
        upstreams: Vec<proxy::UpstreamSpec>,
    ) -> std::result::Result<Self, String> {
        let webhooks = webhooks.filter(|w| !w.is_empty());
        Ok(Registry {
            inner: Arc::new(Inner {
                meta,
                blobs,
                policy,
                upload_locks: locks::KeyedLocks::default(),
                webhooks,
                limits: quota::LimitsCache::default(),
                proxy: proxy::Proxy::new(upstreams)?,
            }),
        })
    }

    pub fn webhooks(&self) -> Option<&webhooks::Webhooks> {
        self.inner.webhooks.as_ref()
    }

    async fn emit(&self, events: Vec<webhooks::Event>) {
        if let Some(w) = &self.inner.webhooks {
            w.emit(&events).await;
        }
    }

    pub(crate) fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.inner.meta
    }

    pub(crate) fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// Which database and blob storage the registry runs on (for the start-up line).
    pub fn backends(&self) -> Backends {
        Backends { database: self.inner.meta.backend(), storage: self.inner.blobs.backend() }
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Database reachable and storage writable.
    pub async fn readiness(&self) -> Result<()> {
        self.inner.meta.ping().await?;
        self.inner.blobs.check_writable().await?;
        Ok(())
    }

    /// Refreshes the store gauges of `/metrics` (repositories, manifests,
    /// blobs, bytes stored, open uploads, and usage of owners with a quota).
    pub async fn record_stats(&self) -> Result<()> {
        let s = self.inner.meta.stats().await?;
        let m = berth_metrics::metrics();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        m.repositories.set(gauge(s.repositories));
        m.manifests_stored.set(gauge(s.manifests));
        m.blobs_stored.set(gauge(s.blobs));
        m.storage_bytes.set(gauge(s.blob_bytes));
        m.uploads_in_flight.set(gauge(s.uploads));
        // Owners with a quota of their own, and only those (bounded labels).
        let quotas = self.quotas().await?;
        let usage = if quotas.is_empty() { Vec::new() } else { self.inner.meta.all_owner_usage().await? };
        m.owner_bytes.clear();
        m.owner_quota_bytes.clear();
        for q in quotas {
            // In byte order of owner, as the store lists them.
            let found = usage.binary_search_by(|u| u.owner.as_str().cmp(&q.owner));
            let bytes = found.map_or(0, |i| usage[i].bytes);
            let labels = berth_metrics::OwnerLabels { owner: q.owner };
            m.owner_bytes.get_or_create(&labels).set(gauge(bytes));
            m.owner_quota_bytes.get_or_create(&labels).set(gauge(q.limits.bytes));
        }
        Ok(())
    }

    /// Repository names, for the catalog.
    pub async fn list_repositories(&self, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>> {
        Ok(self.inner.meta.list_repositories(after, limit).await?)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests;
