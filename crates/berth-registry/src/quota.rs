//! Usage and quotas: who stores what, and the limits on it.
//!
//! The metadata store keeps usage exact and enforces the byte and
//! repository limits itself, in the transaction of each write (see
//! `berth_meta::usage`): that is the check that cannot be raced. This
//! module adds what needs the service's knowledge:
//!
//! - the defaults from `[quotas]`, written to the store at start-up;
//! - early refusals, before bytes are stored: an upload that alone would
//!   take its owner past the limit stops as soon as it does (and one
//!   larger than `blob_max_size` too), instead of after the last byte;
//! - the message a refused client prints (`quota exceeded: acme uses
//!   49.8 GiB of 50 GiB`), the audit line and the webhook event.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the front doors (CLI, API, pages) read and write limits in.
pub use berth_config::{Size, human_size};
use berth_meta::{MetaError, OwnerQuota, QuotaKind};
pub use berth_meta::{OwnerUsage, QuotaLimits, RepositoryUsage, UsageDrift};
use berth_oci::RepositoryName;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::webhooks::{Event, EventKind};
use crate::{ByteStream, Registry, RegistryError, Result};

/// How long per-owner limits are cached for the early checks. The store's
/// own check always reads the current limits.
const LIMITS_TTL: Duration = Duration::from_secs(5);

/// Uploads declared smaller than this skip the early quota check (see
/// [`Registry::upload_room`]).
const EARLY_CHECK_FROM: u64 = 1024 * 1024;

/// `[quotas]`: limits for owners without their own; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaPolicy {
    pub owner_bytes: u64,
    pub owner_repositories: u64,
    /// Largest blob an upload may store.
    pub blob_max_size: u64,
}

/// The limits that apply to an owner; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub bytes: u64,
    pub repositories: u64,
}

/// An owner's usage, the limits that apply, and its own limits if it has any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub usage: OwnerUsage,
    pub limits: Limits,
    pub own: Option<QuotaLimits>,
}

impl UsageReport {
    /// The share of the byte limit used, in percent; `None` without a limit.
    pub fn bytes_percent(&self) -> Option<f64> {
        (self.limits.bytes > 0).then(|| self.usage.bytes as f64 * 100.0 / self.limits.bytes as f64)
    }

    /// The one JSON shape of an owner's usage (the `/api/v1` usage
    /// endpoints and `berth usage --json`): figures, the limits that apply
    /// (0 = unlimited), and its own limits (`null` where the default applies).
    pub fn to_json(&self) -> Value {
        let u = &self.usage;
        json!({
            "owner": u.owner,
            "bytes": u.bytes,
            "bytes_human": human_size(u.bytes),
            "repositories": u.repositories,
            "manifests": u.manifests,
            "tags": u.tags,
            "limits": limits_json(self.limits),
            "own_limits": self.own.map(own_limits_json),
        })
    }
}

/// `{"bytes": 0, "repositories": 10}` (0 = unlimited).
pub fn limits_json(l: Limits) -> Value {
    json!({ "bytes": l.bytes, "repositories": l.repositories })
}

/// `{"bytes": null, "repositories": 10}` (`null`: the default applies; 0: unlimited).
pub fn own_limits_json(l: QuotaLimits) -> Value {
    json!({ "bytes": l.bytes, "repositories": l.repositories })
}

/// One repository's usage as JSON.
pub fn repository_usage_json(r: &RepositoryUsage) -> Value {
    json!({
        "repository": r.repository.as_str(),
        "bytes": r.bytes,
        "bytes_human": human_size(r.bytes),
        "manifests": r.manifests,
        "tags": r.tags,
    })
}

/// An owner's own limits with what applies after the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReport {
    pub owner: String,
    pub own: QuotaLimits,
    pub limits: Limits,
}

impl QuotaReport {
    /// `{"owner", "own_limits", "limits"}`.
    pub fn to_json(&self) -> Value {
        json!({ "owner": self.owner, "own_limits": own_limits_json(self.own), "limits": limits_json(self.limits) })
    }
}

/// Each owner with limits of its own, and those limits.
type OwnLimits = Arc<HashMap<String, QuotaLimits>>;

/// The owners' own limits, as last read.
#[derive(Default)]
pub(crate) struct LimitsCache {
    loaded: RwLock<Option<(Instant, OwnLimits)>>,
}

/// The owner of a repository: its first path component.
pub fn owner_of(repo: &RepositoryName) -> &str {
    repo.as_str().split('/').next().unwrap_or_default()
}

/// Marks the body error of an upload stopped by a limit.
#[derive(Debug)]
struct LimitReached;

impl std::fmt::Display for LimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upload stopped at a size limit")
    }
}

impl std::error::Error for LimitReached {}

/// How far an upload may grow before a limit refuses it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    /// The largest total size (offset) the upload may reach.
    max_offset: u64,
    /// Which limit sets `max_offset`.
    by: RoomLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomLimit {
    BlobMaxSize(u64),
    OwnerBytes,
}

impl Registry {
    pub fn quota_policy(&self) -> QuotaPolicy {
        self.inner.policy.quotas
    }

    /// Writes the `[quotas]` defaults to the store, where the write-time
    /// checks read them. Called at start-up (every replica writes the same).
    pub async fn apply_quota_defaults(&self) -> Result<()> {
        let q = self.inner.policy.quotas;
        let defaults = QuotaLimits { bytes: Some(q.owner_bytes), repositories: Some(q.owner_repositories) };
        Ok(self.inner.meta.set_default_quota(defaults).await?)
    }

    /// One owner's usage against its limits.
    /// Read fresh (one query), whatever another process changed.
    pub async fn usage(&self, owner: &str) -> Result<UsageReport> {
        let (usage, own) = self.inner.meta.owner_usage_and_quota(owner).await?;
        Ok(UsageReport { usage, limits: self.effective(own), own })
    }

    /// Every owner's usage against its limits, in name order.
    pub async fn all_usage(&self) -> Result<Vec<UsageReport>> {
        let own = self.own_limits().await?;
        let all = self.inner.meta.all_owner_usage().await?;
        Ok(all
            .into_iter()
            .map(|usage| {
                let own = own.get(&usage.owner).copied();
                UsageReport { limits: self.effective(own), own, usage }
            })
            .collect())
    }

    /// Each repository of `owner`, counted afresh.
    pub async fn repository_usage(&self, owner: &str) -> Result<Vec<RepositoryUsage>> {
        Ok(self.inner.meta.repository_usage(owner).await?)
    }

    /// Owners with limits of their own.
    pub async fn quotas(&self) -> Result<Vec<QuotaReport>> {
        let rows: Vec<OwnerQuota> = self.inner.meta.quotas().await?;
        Ok(rows
            .into_iter()
            .map(|q| QuotaReport { limits: self.effective(Some(q.limits)), owner: q.owner, own: q.limits })
            .collect())
    }

    /// Sets an owner's own limits (`None`: the default applies; `Some(0)`:
    /// unlimited). Takes effect at once for every write.
    pub async fn set_quota(&self, owner: &str, limits: QuotaLimits) -> Result<()> {
        check_owner_name(owner)?;
        self.inner.meta.set_quota(owner, limits).await?;
        *self.inner.limits.loaded.write().await = None;
        tracing::info!(target: "audit", event = "quota_set", owner, bytes = ?limits.bytes, repositories = ?limits.repositories);
        Ok(())
    }

    /// Removes an owner's own limits; `false` if it had none.
    pub async fn remove_quota(&self, owner: &str) -> Result<bool> {
        check_owner_name(owner)?;
        let removed = self.inner.meta.remove_quota(owner).await?;
        *self.inner.limits.loaded.write().await = None;
        if removed {
            tracing::info!(target: "audit", event = "quota_removed", owner);
        }
        Ok(removed)
    }

    /// Rebuilds usage from what is stored; returns every figure that had drifted.
    pub async fn recount_usage(&self) -> Result<Vec<UsageDrift>> {
        let drift = self.inner.meta.recount_usage().await?;
        for d in &drift {
            tracing::warn!(owner = %d.owner, field = d.field, stored = d.stored, actual = d.actual, "usage had drifted; corrected");
        }
        Ok(drift)
    }

    /// Turns the store's refusal into the message a client prints, and
    /// reports it (audit line, webhook). Other errors pass through.
    pub(crate) async fn explain<T>(
        &self,
        repo: &RepositoryName,
        actor: Option<&str>,
        result: std::result::Result<T, MetaError>,
    ) -> Result<T> {
        match result {
            Err(MetaError::QuotaExceeded(kind)) => Err(self.refuse(repo, actor, kind).await),
            other => Ok(other?),
        }
    }

    /// The refusal for `kind` in `repo`'s owner, reported.
    pub(crate) async fn refuse(&self, repo: &RepositoryName, actor: Option<&str>, kind: QuotaKind) -> RegistryError {
        self.refuse_with(repo, actor, kind, "").await
    }

    /// [`Registry::refuse`] with `suffix` after the usage figures.
    async fn refuse_with(
        &self,
        repo: &RepositoryName,
        actor: Option<&str>,
        kind: QuotaKind,
        suffix: &str,
    ) -> RegistryError {
        let owner = owner_of(repo);
        let message = match self.usage(owner).await {
            Ok(report) => refusal_message(&report, kind) + suffix,
            Err(_) => format!("quota exceeded: {owner} is at its limit{suffix}"),
        };
        self.report_refusal(repo, actor, &message).await;
        RegistryError::QuotaExceeded(message)
    }

    async fn report_refusal(&self, repo: &RepositoryName, actor: Option<&str>, message: &str) {
        berth_metrics::metrics().quota_refusals.inc();
        tracing::info!(target: "audit", event = "quota_exceeded", user = actor.unwrap_or("-"), repository = %repo, message);
        let event = Event {
            kind: EventKind::Quota,
            repository: repo.to_string(),
            tag: None,
            digest: None,
            media_type: None,
            size: None,
            tags: Vec::new(),
            actor: actor.map(str::to_owned),
            message: Some(message.to_owned()),
        };
        self.emit(vec![event]).await;
    }

    /// How far an upload into `repo` may grow; `None` when no limit applies.
    /// One store read, and only when the owner has a byte limit.
    /// `declared`: the size the upload will have after this request, if
    /// the request says. A small one is not checked early: the store
    /// refuses it at completion all the same, and a usage read for every
    /// small blob would cost more than storing a refused one.
    pub(crate) async fn upload_room(&self, repo: &RepositoryName, declared: Option<u64>) -> Result<Option<Room>> {
        let max_size = self.inner.policy.quotas.blob_max_size;
        let mut room = (max_size > 0).then_some(Room { max_offset: max_size, by: RoomLimit::BlobMaxSize(max_size) });
        if declared.is_some_and(|n| n < EARLY_CHECK_FROM) {
            return Ok(room);
        }
        let owner = owner_of(repo);
        // The cache only says whether a limit may apply (no query at all
        // for owners without one); the room itself comes from a fresh read,
        // so a limit lifted elsewhere never refuses an upload here. One set
        // elsewhere within the cache's lifetime is still enforced by the
        // store when the upload completes.
        let cached = self.effective(self.own_limits().await?.get(owner).copied());
        if cached.bytes > 0 || self.inner.policy.quotas.owner_bytes > 0 {
            let report = self.usage(owner).await?;
            if report.limits.bytes == 0 {
                return Ok(room);
            }
            let left = report.limits.bytes.saturating_sub(report.usage.bytes);
            if room.is_none_or(|r| left < r.max_offset) {
                room = Some(Room { max_offset: left, by: RoomLimit::OwnerBytes });
            }
        }
        Ok(room)
    }

    /// The refusal for an upload that would grow to `size` bytes, if `room` forbids it.
    pub(crate) async fn check_room(&self, repo: &RepositoryName, room: Option<Room>, size: u64) -> Result<()> {
        match room {
            Some(r) if size > r.max_offset => Err(self.room_refusal(repo, r, size).await),
            _ => Ok(()),
        }
    }

    async fn room_refusal(&self, repo: &RepositoryName, room: Room, size: u64) -> RegistryError {
        match room.by {
            RoomLimit::BlobMaxSize(limit) => {
                let message = format!(
                    "blob too large: the upload reached {} and the limit is {}",
                    human_size(size),
                    human_size(limit)
                );
                self.report_refusal(repo, None, &message).await;
                RegistryError::BlobTooLarge(message)
            }
            RoomLimit::OwnerBytes => {
                // Uploads in progress do not count yet: say why this one cannot finish.
                let suffix = format!("; this upload needs more than the {} left", human_size(room.max_offset));
                self.refuse_with(repo, None, QuotaKind::Bytes, &suffix).await
            }
        }
    }

    /// `body` cut off with an error as soon as the upload (now at `offset`)
    /// would pass `room`; the flag tells that this is why it failed. What the
    /// client still sends is read and dropped (bounded, see [`drain`]) before
    /// the error, so that it reads the refusal instead of a reset connection.
    pub(crate) fn within_room(body: ByteStream, offset: u64, room: Option<Room>) -> (ByteStream, Arc<AtomicBool>) {
        let stopped = Arc::new(AtomicBool::new(false));
        let Some(room) = room else { return (body, stopped) };
        let state = (body, offset, stopped.clone());
        let limited = futures_util::stream::unfold(Some(state), move |state| async move {
            let (mut body, total, flag) = state?;
            match body.next().await {
                Some(Ok(chunk)) if total + chunk.len() as u64 > room.max_offset => {
                    flag.store(true, Ordering::Relaxed);
                    drain(body).await;
                    Some((Err(io::Error::other(LimitReached)), None))
                }
                Some(Ok(chunk)) => {
                    let total = total + chunk.len() as u64;
                    Some((Ok(chunk), Some((body, total, flag))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        });
        (Box::pin(limited), stopped)
    }

    /// An upload stopped by [`Registry::within_room`]: its refusal. `reached` is
    /// at least one byte past the room.
    pub(crate) async fn stopped_by_room(&self, repo: &RepositoryName, room: Option<Room>) -> RegistryError {
        let Some(room) = room else { return RegistryError::Internal("upload stopped without a limit".into()) };
        self.room_refusal(repo, room, room.max_offset.saturating_add(1)).await
    }

    fn effective(&self, own: Option<QuotaLimits>) -> Limits {
        let q = self.inner.policy.quotas;
        let own = own.unwrap_or_default();
        Limits {
            bytes: own.bytes.unwrap_or(q.owner_bytes),
            repositories: own.repositories.unwrap_or(q.owner_repositories),
        }
    }

    /// The owners' own limits, read at most every [`LIMITS_TTL`].
    async fn own_limits(&self) -> Result<OwnLimits> {
        let cache = &self.inner.limits.loaded;
        if let Some((at, map)) = cache.read().await.as_ref()
            && at.elapsed() < LIMITS_TTL
        {
            return Ok(map.clone());
        }
        let map: HashMap<String, QuotaLimits> =
            self.inner.meta.quotas().await?.into_iter().map(|q| (q.owner, q.limits)).collect();
        let map = Arc::new(map);
        *cache.write().await = Some((Instant::now(), map.clone()));
        Ok(map)
    }
}

/// How much of a refused upload is still read (and dropped), and for how
/// long: enough for a client that sent a modest body to read the answer,
/// never the rest of a large one.
const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Reads and drops what is left of a refused upload's body, within bounds.
pub(crate) async fn drain(mut body: ByteStream) {
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_MAX_BYTES {
                return;
            }
        }
    })
    .await;
}

/// `quota exceeded: acme uses 49.8 GiB of 50 GiB`.
pub fn refusal_message(report: &UsageReport, kind: QuotaKind) -> String {
    let owner = &report.usage.owner;
    match kind {
        QuotaKind::Bytes => format!(
            "quota exceeded: {owner} uses {} of {}",
            human_size(report.usage.bytes),
            human_size(report.limits.bytes)
        ),
        QuotaKind::Repositories => format!(
            "quota exceeded: {owner} has {} of {} repositories",
            report.usage.repositories, report.limits.repositories
        ),
    }
}

/// Owner names are one repository-name component: checked so that a typo
/// with a `/` is not silently stored as a limit nobody has.
fn check_owner_name(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.contains('/') || RepositoryName::parse(owner).is_err() {
        return Err(RegistryError::NotFound(format!("owner {owner:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_issue_shows_them() {
        let report = UsageReport {
            usage: OwnerUsage {
                owner: "acme".into(),
                bytes: (49.8 * (1u64 << 30) as f64) as u64,
                ..Default::default()
            },
            limits: Limits { bytes: 50 << 30, repositories: 3 },
            own: None,
        };
        assert_eq!(refusal_message(&report, QuotaKind::Bytes), "quota exceeded: acme uses 49.8 GiB of 50 GiB");
        let report = UsageReport { usage: OwnerUsage { repositories: 3, ..report.usage }, ..report };
        assert_eq!(refusal_message(&report, QuotaKind::Repositories), "quota exceeded: acme has 3 of 3 repositories");
    }

    #[test]
    fn owner_names_are_one_component() {
        assert!(check_owner_name("acme").is_ok());
        for bad in ["", "acme/app", "UPPER", "a b"] {
            assert!(check_owner_name(bad).is_err(), "{bad:?}");
        }
    }
}
