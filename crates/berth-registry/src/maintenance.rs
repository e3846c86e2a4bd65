//! What the maintenance jobs share: the stores they work on, and the
//! cluster-wide leases that keep each job to one runner at a time.
//!
//! The jobs themselves are [`crate::gc`], [`crate::retention`],
//! [`crate::expiry`] and [`crate::scrub`]; the server's scheduler and the CLI both call them
//! through a [`Maintenance`]. A lease is a row in the `leases` table, taken
//! with a conditional upsert, renewed in the background while the job runs
//! and released at its end. Correctness never depends on it (every
//! deletion re-checks its conditions in its own transaction), but it keeps
//! replicas, and an operator's `berth gc`, from doing the same work at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_blob::BlobStore;
use berth_meta::maintenance::LeaseOutcome;
use berth_meta::{MaintenanceStore, MetaStore};
use tokio::task::JoinHandle;

use crate::retention::RetentionPolicy;
use crate::{Registry, RegistryError, Result, now_ms};

/// Lease names, one per job.
pub const GC_LEASE: &str = "gc";
pub const RETENTION_LEASE: &str = "retention";
pub const EXPIRY_LEASE: &str = "upload-expiry";
pub const SCRUB_LEASE: &str = "scrub";

/// How long a lease lasts without renewal; a runner that dies frees it
/// after this long.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// The maintenance jobs over one registry's stores. Cheap to clone.
#[derive(Clone)]
pub struct Maintenance {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    registry: Registry,
    store: Arc<dyn MaintenanceStore>,
    holder: String,
    lease_ttl: Duration,
    /// The config file's retention rules; stored ones are read per run.
    config_rules: RetentionPolicy,
}

/// Someone else holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHeld {
    pub holder: String,
    /// When it lapses unless renewed, ms.
    pub expires_at: i64,
}

impl Maintenance {
    /// `store` is the same database as the registry's metadata store.
    pub fn new(registry: Registry, store: Arc<dyn MaintenanceStore>) -> Self {
        Maintenance::with_lease_ttl(registry, store, LEASE_TTL)
    }

    /// The same, with another lease lifetime (tests).
    pub fn with_lease_ttl(registry: Registry, store: Arc<dyn MaintenanceStore>, ttl: Duration) -> Self {
        let config_rules = RetentionPolicy::default();
        Maintenance { inner: Arc::new(Inner { registry, store, holder: holder_id(), lease_ttl: ttl, config_rules }) }
    }

    /// The same, with the config file's retention rules (`[[retention.rules]]`),
    /// which come before the stored ones.
    pub fn with_config_rules(self, rules: RetentionPolicy) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.config_rules = rules;
        Maintenance { inner: Arc::new(inner) }
    }

    /// The config file's retention rules.
    pub fn config_rules(&self) -> &RetentionPolicy {
        &self.inner.config_rules
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn store(&self) -> &Arc<dyn MaintenanceStore> {
        &self.inner.store
    }

    /// When the job holding lease `name` last finished anywhere in the
    /// cluster (ms); `None` if it never did.
    pub async fn last_run(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.inner.store.get_lease(name).await?.and_then(|lease| lease.last_run_at))
    }

    pub(crate) fn meta(&self) -> &Arc<dyn MetaStore> {
        self.inner.registry.meta()
    }

    pub(crate) fn blobs(&self) -> &Arc<dyn BlobStore> {
        self.inner.registry.blob_store()
    }

    /// This process's name in lease rows: host, process id and a random suffix.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// Takes the lease `name` if it is free; `Err(LeaseHeld)` if another
    /// runner holds it.
    pub async fn try_lease(&self, name: &'static str) -> Result<std::result::Result<Lease, LeaseHeld>> {
        let ttl = ttl_ms(self.inner.lease_ttl);
        match self.inner.store.acquire_lease(name, &self.inner.holder, now_ms(), ttl).await? {
            LeaseOutcome::Acquired => Ok(Ok(Lease::start(self, name))),
            LeaseOutcome::Held { holder, expires_at } => Ok(Err(LeaseHeld { holder, expires_at })),
        }
    }

    /// Takes the lease `name`, waiting while another runner holds it;
    /// `on_wait` hears who, once per holder.
    pub async fn lease(&self, name: &'static str, mut on_wait: impl FnMut(&LeaseHeld) + Send) -> Result<Lease> {
        let mut last_holder = String::new();
        loop {
            match self.try_lease(name).await? {
                Ok(lease) => return Ok(lease),
                Err(held) => {
                    if held.holder != last_holder {
                        on_wait(&held);
                        last_holder.clone_from(&held.holder);
                    }
                    let until_expiry = u64::try_from(held.expires_at.saturating_sub(now_ms())).unwrap_or(0);
                    let pause =
                        Duration::from_millis(until_expiry).clamp(Duration::from_millis(100), Duration::from_secs(2));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// A held lease. Renewed in the background until released or dropped (a
/// dropped lease lapses after its lifetime).
pub struct Lease {
    name: &'static str,
    store: Arc<dyn MaintenanceStore>,
    holder: String,
    lost: Arc<AtomicBool>,
    renewer: JoinHandle<()>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("name", &self.name).field("holder", &self.holder).finish_non_exhaustive()
    }
}

impl Lease {
    fn start(maintenance: &Maintenance, name: &'static str) -> Lease {
        let (store, holder, ttl) =
            (maintenance.inner.store.clone(), maintenance.inner.holder.clone(), maintenance.inner.lease_ttl);
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn({
            let (store, holder, lost) = (store.clone(), holder.clone(), lost.clone());
            async move {
                let mut failures = 0;
                loop {
                    tokio::time::sleep(ttl / 4).await;
                    match store.renew_lease(name, &holder, now_ms(), ttl_ms(ttl)).await {
                        Ok(true) => failures = 0,
                        Ok(false) => {
                            tracing::warn!(lease = name, "maintenance lease lost to another runner; stopping");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::warn!(lease = name, error = %e, "cannot renew the maintenance lease");
                            // Two more tries remain before it could lapse.
                            if failures >= 2 {
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            }
        });
        Lease { name, store, holder, lost, renewer }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// An error once the lease may have passed to another runner: the job
    /// stops at its next step (what it did so far stays correct).
    pub fn ensure_held(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(RegistryError::Unavailable(format!("lost the {:?} maintenance lease", self.name)));
        }
        Ok(())
    }

    /// Gives the lease up; `finished` records the job's run (schedules
    /// count the interval from it).
    pub async fn release(self, finished: bool) -> Result<()> {
        self.renewer.abort();
        let at = finished.then(now_ms);
        self.store.release_lease(self.name, &self.holder, at).await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Checks an optional lease (dry runs and tests run without one).
pub(crate) fn ensure_held(lease: Option<&Lease>) -> Result<()> {
    lease.map_or(Ok(()), Lease::ensure_held)
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn holder_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}/{}", std::process::id(), &suffix[..8])
}
