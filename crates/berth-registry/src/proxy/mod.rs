//! The pull-through cache: repositories of upstream registries, filled on
//! demand, behind the same service calls as local repositories
//! ([`Registry::get_manifest`], [`Registry::stat_blob`],
//! [`Registry::read_blob`], [`Registry::list_tags`], [`Registry::referrers`]),
//! so the HTTP handlers do not know the difference.
//!
//! # Names
//! A configured upstream owns a namespace, its name: `hub/alpine` is
//! `alpine` at the upstream `hub` (Docker Hub's `library/alpine`: names
//! with one component get `library/` there). The one upstream with
//! `mirror_root` also answers names whose owner does not exist locally
//! (`library/alpine`, as dockerd's `registry-mirrors` asks); local owners
//! always win. Either way the content is cached in the repository
//! `<upstream>/<upstream repository>` ([`Route::local`]), so both spellings
//! share one copy.
//!
//! # What is asked of the upstream
//! - **By tag** ([`manifests`]): the cached manifest while the tag was
//!   checked within `revalidate_after`; then one HEAD: an unchanged digest
//!   only refreshes the check, a new one is fetched (byte for byte, under
//!   its digest) and the tag moves. A tag never cached is fetched with one GET.
//! - **By digest**: the cached manifest, else one GET. Never re-checked.
//! - **Indexes** are stored as they are; their children and the blobs are
//!   fetched when first asked for, so one platform pulls now and another later.
//! - **Blobs** ([`blobs`], [`fetch`]): streamed to the caller while they
//!   are written to the blob store, through the same upload path and
//!   reservation protocol as a push (so garbage collection never frees a
//!   blob a fetch is committing; see [`crate::gc`]), and committed only
//!   once the upstream's bytes hashed to the digest.
//! - **Tags and referrers** ([`listing`]): asked of the upstream each time,
//!   with the cache's own as the fallback.
//!
//! # Single flight
//! In this process, concurrent requests for one manifest reference or one
//! blob of one cached repository share one upstream request ([`flight`],
//! [`fetch`]). The work runs in a task of its own, so a caller that goes
//! away does not cancel it: a blob fetch nobody reads any more is finished
//! within [`fetch::ORPHAN_LIMIT`], or dropped. Across replicas each may
//! fetch once; content addressing and the reservation protocol make that
//! harmless.
//!
//! # When the upstream fails
//! Down, timing out, 5xx or 429 ([`berth_upstream::UpstreamError::is_transient`]):
//! whatever is cached is served, even a tag past `revalidate_after`, with a
//! warning and `berth_proxy_stale_serves_total`. With nothing cached the
//! caller gets an error naming the upstream and its status, with the
//! upstream's `Retry-After` for a 429. An answer that must not be used
//! (a wrong digest, wrong bytes) stores nothing and is an error.
//!
//! # Rights
//! Who may read an upstream's namespace is decided where every right is,
//! in `berth-auth` (the upstream's `access` level). Here, pushes into the
//! namespace are refused whoever asks (also with authentication off), and
//! deletes (site admins evicting content) act on the cached repository.

pub(crate) mod blobs;
pub(crate) mod fetch;
pub(crate) mod flight;
pub(crate) mod listing;
pub(crate) mod manifests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::RepositoryName;
use berth_upstream::{UpstreamClient, UpstreamError};

use crate::{Registry, RegistryError, Result, now_ms};

/// One configured upstream, as the binary builds it from `[[upstreams]]`.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub client: UpstreamClient,
    /// The namespace (`hub`).
    pub name: String,
    /// A cached tag is served unchecked for this long.
    pub revalidate_after: Duration,
    /// Globs of upstream repositories served (`*` crosses `/`); empty: all.
    pub repositories: Vec<String>,
    /// Also serve names whose owner does not exist locally.
    pub mirror_root: bool,
}

pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) client: UpstreamClient,
    pub(crate) revalidate_after: Duration,
    repositories: Vec<glob::Pattern>,
    mirror_root: bool,
}

impl Upstream {
    fn serves(&self, remote: &RepositoryName) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.repositories.is_empty() || self.repositories.iter().any(|p| p.matches_with(remote.as_str(), opts))
    }

    /// Counts a failed upstream request (once, where it was made; a 404 is
    /// an answer, not a failure).
    pub(crate) fn count_error(&self, e: &UpstreamError) {
        if e.is_not_found() {
            return;
        }
        let status = match e {
            UpstreamError::Invalid { .. } => "invalid".to_owned(),
            other => other.status().map_or_else(|| "network".to_owned(), |s| s.to_string()),
        };
        berth_metrics::metrics().proxy_upstream_error(&self.name, status);
    }

    /// The error a failed upstream request becomes for a caller (nothing
    /// cached could stand in). `missing` is what a 404 means.
    pub(crate) fn failure(&self, e: &UpstreamError, missing: RegistryError) -> RegistryError {
        let (upstream, detail) = (self.name.clone(), e.to_string());
        match e {
            UpstreamError::NotFound { .. } => missing,
            UpstreamError::Unauthorized { .. } | UpstreamError::Denied { .. } => {
                RegistryError::UpstreamRefused { upstream, status: e.status().unwrap_or(403), detail }
            }
            UpstreamError::TooManyRequests { retry_after, .. } => {
                RegistryError::UpstreamUnavailable { upstream, status: Some(429), retry_after: *retry_after, detail }
            }
            UpstreamError::Unavailable { status, .. } => {
                RegistryError::UpstreamUnavailable { upstream, status: *status, retry_after: None, detail }
            }
            UpstreamError::Invalid { .. } => RegistryError::UpstreamInvalid { upstream, detail },
        }
    }
}

/// Where a repository of an upstream's namespace leads.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) upstream: Arc<Upstream>,
    /// The repository's name at the upstream (`library/alpine`).
    pub(crate) remote: RepositoryName,
    /// The cached repository (`hub/library/alpine`).
    pub(crate) local: RepositoryName,
}

/// Why shared upstream work failed: the upstream (which a cached copy may
/// stand in for, if the failure is transient), or this registry.
#[derive(Debug, Clone)]
pub(crate) enum Failed {
    Upstream(UpstreamError),
    Local(RegistryError),
}

impl From<RegistryError> for Failed {
    fn from(e: RegistryError) -> Self {
        Failed::Local(e)
    }
}

impl From<berth_meta::MetaError> for Failed {
    fn from(e: berth_meta::MetaError) -> Self {
        Failed::Local(e.into())
    }
}

impl Failed {
    /// The upstream's failure, if a cached copy may stand in for the answer.
    pub(crate) fn transient(&self) -> Option<&UpstreamError> {
        match self {
            Failed::Upstream(e) if e.is_transient() => Some(e),
            _ => None,
        }
    }

    /// The error for the caller; `missing` is what the upstream's 404 means.
    pub(crate) fn into_error(self, upstream: &Upstream, missing: RegistryError) -> RegistryError {
        match self {
            Failed::Upstream(e) => upstream.failure(&e, missing),
            Failed::Local(e) => e,
        }
    }
}

/// How long the answer to "does this owner exist locally?" is reused.
const OWNER_TTL: Duration = Duration::from_secs(5);
/// A cached repository's last pull is written at most this often per process.
const PULL_RECORD_INTERVAL: Duration = Duration::from_secs(60);
const MAX_MEMO: usize = 10_000;

/// The pull-through cache's state in this process.
pub(crate) struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    owners: Mutex<HashMap<String, (Instant, bool)>>,
    pulls: Mutex<HashMap<RepositoryName, Instant>>,
    pub(crate) manifests: flight::Flights<(RepositoryName, String), std::result::Result<berth_oci::Digest, Failed>>,
    pub(crate) blobs: fetch::BlobFetches,
}

impl Proxy {
    pub(crate) fn new(specs: Vec<UpstreamSpec>) -> std::result::Result<Option<Proxy>, String> {
        if specs.is_empty() {
            return Ok(None);
        }
        let mut upstreams = Vec::new();
        for s in specs {
            let repositories = s
                .repositories
                .iter()
                .map(|p| glob::Pattern::new(p).map_err(|e| format!("upstream {:?}: repositories {p:?}: {e}", s.name)))
                .collect::<std::result::Result<_, _>>()?;
            berth_metrics::metrics().register_upstream(&s.name);
            upstreams.push(Arc::new(Upstream {
                name: s.name,
                client: s.client,
                revalidate_after: s.revalidate_after,
                repositories,
                mirror_root: s.mirror_root,
            }));
        }
        Ok(Some(Proxy {
            upstreams,
            owners: Mutex::default(),
            pulls: Mutex::default(),
            manifests: flight::Flights::default(),
            blobs: fetch::BlobFetches::default(),
        }))
    }

    fn by_prefix(&self, owner: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name == owner)
    }

    fn mirror_root(&self) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.mirror_root)
    }
}

impl Registry {
    fn proxy(&self) -> Option<&Proxy> {
        self.inner.proxy.as_ref()
    }

    /// Whether `owner` exists locally (a user or organization), remembered briefly.
    async fn owner_exists(&self, proxy: &Proxy, owner: &str) -> Result<bool> {
        {
            let owners = proxy.owners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, exists)) = owners.get(owner)
                && at.elapsed() < OWNER_TTL
            {
                return Ok(*exists);
            }
        }
        let exists = self.meta().owner_exists(owner).await?;
        let mut owners = proxy.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.len() >= MAX_MEMO {
            owners.clear();
        }
        owners.insert(owner.to_owned(), (Instant::now(), exists));
        Ok(exists)
    }

    /// The upstream whose namespace `repo` is in, and the rest of the name
    /// (the upstream's repository before Docker Hub's `library/` rule).
    async fn namespace_of<'a>(&self, repo: &'a RepositoryName) -> Result<Option<(Arc<Upstream>, &'a str)>> {
        let Some(proxy) = self.proxy() else { return Ok(None) };
        if let Some(u) = proxy.by_prefix(repo.owner()) {
            let rest = repo.as_str().split_once('/').map_or("", |(_, rest)| rest);
            return Ok(Some((u.clone(), rest)));
        }
        match proxy.mirror_root() {
            Some(u) if !self.owner_exists(proxy, repo.owner()).await? => Ok(Some((u.clone(), repo.as_str()))),
            _ => Ok(None),
        }
    }

    /// Where `repo` leads, if it is in an upstream's namespace (see the
    /// module documentation); refused if the upstream does not serve it.
    pub(crate) async fn route(&self, repo: &RepositoryName) -> Result<Option<Route>> {
        let Some((upstream, rest)) = self.namespace_of(repo).await? else { return Ok(None) };
        // The namespace itself (`hub`) names no upstream repository.
        let name = RepositoryName::parse(rest).map_err(|_| RegistryError::NameUnknown)?;
        let remote = upstream.client.upstream_repository(&name);
        if !upstream.serves(&remote) {
            return Err(RegistryError::UpstreamNotServed {
                upstream: upstream.name.clone(),
                repository: remote.to_string(),
            });
        }
        let local =
            RepositoryName::parse(&format!("{}/{remote}", upstream.name)).map_err(|_| RegistryError::NameUnknown)?;
        Ok(Some(Route { upstream, remote, local }))
    }

    /// Refuses writes into an upstream's namespace.
    pub(crate) async fn refuse_upstream_writes(&self, repo: &RepositoryName) -> Result<()> {
        match self.namespace_of(repo).await? {
            Some((upstream, _)) => {
                Err(RegistryError::UpstreamReadOnly { upstream: upstream.name.clone(), repository: repo.to_string() })
            }
            None => Ok(()),
        }
    }

    /// The repository a delete acts on: the cached one for a name in an
    /// upstream's namespace (site admins evict content), else `repo`.
    pub(crate) async fn stored_name(&self, repo: &RepositoryName) -> Result<RepositoryName> {
        Ok(match self.route(repo).await {
            Ok(Some(route)) => route.local,
            Ok(None) | Err(RegistryError::UpstreamNotServed { .. }) => repo.clone(),
            Err(e) => return Err(e),
        })
    }

    /// Records a pull from a cached repository, at most once a minute per
    /// repository and process, in the background (the pull does not wait).
    pub(crate) fn record_pull(&self, route: &Route) {
        let Some(proxy) = self.proxy() else { return };
        {
            let mut pulls = proxy.pulls.lock().unwrap_or_else(|p| p.into_inner());
            if pulls.get(&route.local).is_some_and(|at| at.elapsed() < PULL_RECORD_INTERVAL) {
                return;
            }
            if pulls.len() >= MAX_MEMO {
                pulls.clear();
            }
            pulls.insert(route.local.clone(), Instant::now());
        }
        let (meta, local, upstream) = (self.meta().clone(), route.local.clone(), route.upstream.name.clone());
        tokio::spawn(async move {
            if let Err(e) = meta.record_pull(&local, &upstream, now_ms()).await {
                tracing::debug!(repository = %local, error = %e, "cannot record a pull");
            }
        });
    }

    /// When the cached repository `repo` was last pulled, if it is one.
    pub async fn last_pulled(&self, repo: &RepositoryName) -> Result<Option<i64>> {
        if self.proxy().is_none() {
            return Ok(None);
        }
        Ok(self.meta().cached_repository(repo).await?.map(|c| c.last_pulled_at))
    }

    /// Whether `repo` is a cached repository of a configured upstream (its
    /// first component is an upstream's name).
    pub fn is_cached_repository(&self, repo: &RepositoryName) -> bool {
        self.proxy().is_some_and(|p| p.by_prefix(repo.owner()).is_some())
    }
}

/// Logs and counts a cached answer served because the upstream failed.
pub(crate) fn serve_stale(route: &Route, kind: &'static str, what: &str, e: &UpstreamError) {
    berth_metrics::metrics().proxy_stale_serve(&route.upstream.name, kind);
    tracing::warn!(upstream = %route.upstream.name, repository = %route.local, what, error = %e,
        "upstream failed; serving the cached copy");
}
