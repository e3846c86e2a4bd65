//! Copying one repository through the registry service: every tag, the
//! manifests it reaches (children before parents, byte for byte), their
//! blobs (streamed from the source into an upload session, verified
//! against the digest before anything is committed), and their referrers.
//!
//! What is already here is not copied again: a tag pointing at the same
//! digest, a manifest present by digest (a moved tag is re-pointed from the
//! local bytes), a blob linked in the repository, or one stored for another
//! repository (linked, as a mount would). So a second run copies nothing,
//! and a killed run resumes where it stopped, losing at most the blobs that
//! were in flight.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_meta::AuthStore;
use berth_oci::manifest::{self, Descriptor};
use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_registry::blobs::{AnyoneMounts, Mount, MountError};
use berth_registry::uploads::ChunkInfo;
use berth_registry::{ByteStream, Registry, RegistryError};
use berth_upstream::{UpstreamClient, UpstreamError};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::listing::Pair;
use super::report::{Reporter, add};

/// Who the copies are recorded as pushed by (and the audit log's user).
pub const ACTOR: &str = "sync";
/// Tries of one request that fails transiently (429, 5xx, network).
const ATTEMPTS: u32 = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Indexes of indexes, and referrers of referrers, followed this deep.
const MAX_DEPTH: usize = 8;

/// Why something was not copied.
#[derive(Debug)]
pub enum CopyError {
    Upstream(UpstreamError),
    Local(RegistryError),
    /// The source served something Berth cannot store as it is.
    Source(String),
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyError::Upstream(e) => write!(f, "{e}"),
            CopyError::Local(e) => write!(f, "here: {e}"),
            CopyError::Source(m) => write!(f, "{m}"),
        }
    }
}

impl From<UpstreamError> for CopyError {
    fn from(e: UpstreamError) -> Self {
        CopyError::Upstream(e)
    }
}

impl From<RegistryError> for CopyError {
    fn from(e: RegistryError) -> Self {
        CopyError::Local(e)
    }
}

/// Errors worth another try, and how long to wait first.
pub trait Transient: fmt::Display {
    fn transient(&self) -> Option<Option<Duration>>;
}

impl Transient for UpstreamError {
    fn transient(&self) -> Option<Option<Duration>> {
        self.is_transient().then(|| self.retry_after())
    }
}

impl Transient for CopyError {
    fn transient(&self) -> Option<Option<Duration>> {
        match self {
            CopyError::Upstream(e) => e.transient(),
            // The collector was deleting the blob, or the database was busy.
            CopyError::Local(RegistryError::Unavailable(_)) => Some(None),
            _ => None,
        }
    }
}

/// Runs `f` until it succeeds, fails for good, or has been tried
/// [`ATTEMPTS`] times; waits between tries (`Retry-After`, else 1, 2, 4 s).
pub async fn retry<T, E: Transient, F, Fut>(mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if attempt + 1 < ATTEMPTS && e.transient().is_some() => {
                let wait = e.transient().flatten().unwrap_or(Duration::from_secs(1 << attempt)).min(MAX_BACKOFF);
                tracing::warn!(error = %e, attempt = attempt + 1, "sync: retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// What every repository's copy shares.
pub struct Ctx {
    pub upstream: UpstreamClient,
    pub registry: Registry,
    /// The local account store when authentication is on: owners must exist.
    pub accounts: Option<Arc<dyn AuthStore>>,
    pub report: Arc<Reporter>,
    /// Blob transfers at once, across repositories.
    pub transfers: Semaphore,
    /// The source URL, for the audit log.
    pub source: String,
    /// Repositories were named exactly: one missing at the source is a failure.
    pub named: bool,
    /// Cleared at the source's first 404 for a referrers query.
    referrers_api: AtomicBool,
    owners: Mutex<HashMap<String, bool>>,
}

impl Ctx {
    pub fn new(upstream: UpstreamClient, registry: Registry, report: Arc<Reporter>, concurrency: usize) -> Ctx {
        Ctx {
            upstream,
            registry,
            accounts: None,
            report,
            transfers: Semaphore::new(concurrency),
            source: String::new(),
            named: false,
            referrers_api: AtomicBool::new(true),
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// Copies one repository; problems are reported, never returned.
    pub async fn copy_repository(&self, pair: Pair) {
        let repo = Repo {
            ctx: self,
            src: pair.source,
            dst: pair.target,
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashSet::new()),
            failed_blobs: Mutex::new(HashMap::new()),
            referrers: Mutex::new(HashSet::new()),
        };
        repo.run().await;
        add(&self.report.stats.repositories_done, 1);
    }

    /// Whether the owner exists here (always, with authentication off).
    async fn owner_exists(&self, owner: &str) -> Result<bool, String> {
        let Some(accounts) = &self.accounts else { return Ok(true) };
        if let Some(known) = self.owners.lock().unwrap_or_else(|p| p.into_inner()).get(owner) {
            return Ok(*known);
        }
        let exists = accounts.get_owner(owner).await.map_err(|e| e.to_string())?.is_some();
        self.owners.lock().unwrap_or_else(|p| p.into_inner()).insert(owner.to_owned(), exists);
        Ok(exists)
    }
}

/// One repository's copy in progress.
struct Repo<'a> {
    ctx: &'a Ctx,
    src: RepositoryName,
    dst: RepositoryName,
    /// Manifests handled in this run (copied, found here, or planned in a
    /// dry run), each with its children.
    manifests: Mutex<HashMap<Digest, Vec<Digest>>>,
    /// Blobs handled (or being handled) in this run.
    blobs: Mutex<HashSet<Digest>>,
    /// Blobs that failed in this run, with why: not tried again for the
    /// next tag that needs them (a quota refusal would only repeat).
    failed_blobs: Mutex<HashMap<Digest, String>>,
    /// Subjects whose referrers were asked for.
    referrers: Mutex<HashSet<Digest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags (and the referrers tag
/// schema's `sha256-<hex>`): copied after the tags of the images they name.
fn is_cosign_tag(tag: &Tag) -> bool {
    tag.as_str().starts_with("sha256-") || tag.as_str().starts_with("sha512-")
}

impl Repo<'_> {
    fn report(&self) -> &Reporter {
        &self.ctx.report
    }

    fn dry_run(&self) -> bool {
        self.ctx.report.dry_run()
    }

    async fn run(&self) {
        self.report().working_on(self.dst.as_str());
        match self.ctx.owner_exists(self.dst.owner()).await {
            Ok(true) => {}
            Ok(false) => {
                let owner = self.dst.owner();
                let reason = format!(
                    "owner {owner:?} does not exist here: create it first (`berth user add {owner}` or \
                     `berth org add {owner}`), or choose another with --to"
                );
                return self.report().fail(self.dst.as_str(), reason);
            }
            Err(e) => return self.report().fail(self.dst.as_str(), format!("here: looking up the owner: {e}")),
        }
        let mut tags = match retry(|| self.ctx.upstream.list_tags(&self.src)).await {
            Ok(tags) => tags,
            Err(e) if e.is_not_found() && !self.ctx.named => {
                tracing::info!(repository = %self.src, "the source lists no tags here; nothing to copy");
                return;
            }
            Err(e) => return self.report().fail(self.dst.as_str(), e.to_string()),
        };
        tags.sort_by_key(|t| (is_cosign_tag(t), t.as_str().to_owned()));
        for tag in &tags {
            self.tag(tag).await;
        }
    }

    /// Makes `tag` point here where it points at the source.
    async fn tag(&self, tag: &Tag) {
        let what = format!("{}:{tag}", self.dst);
        let reference = Reference::Tag(tag.clone());
        let head = match retry(|| self.ctx.upstream.head_manifest(&self.src, &reference)).await {
            Ok(head) => head,
            Err(e) => return self.tag_failed(&what, e.to_string()),
        };
        let current = match self.ctx.registry.get_manifest(&self.dst, &reference, false).await {
            Ok(here) => here.digest == head.digest,
            Err(RegistryError::ManifestUnknown | RegistryError::NameUnknown) => false,
            Err(e) => return self.tag_failed(&what, CopyError::Local(e).to_string()),
        };
        let outcome = self.manifest(&head.digest, (!current).then_some(tag), 0).await;
        match outcome {
            Ok(_) if current => add(&self.report().stats.tags_current, 1),
            Ok(bytes) => {
                let digest = head.digest.as_str();
                self.report().tag_copied(&self.ctx.source, self.dst.as_str(), tag.as_str(), digest, bytes);
            }
            Err(e) => return self.tag_failed(&what, e.to_string()),
        }
        for digest in self.closure(&head.digest) {
            self.referrers(&digest, 0).await;
        }
    }

    fn tag_failed(&self, what: &str, reason: String) {
        add(&self.report().stats.tags_failed, 1);
        self.report().fail(what, reason);
    }

    /// `digest` and every manifest below it handled in this run.
    fn closure(&self, digest: &Digest) -> Vec<Digest> {
        let manifests = lock(&self.manifests);
        let mut out = vec![digest.clone()];
        let mut i = 0;
        while i < out.len() {
            for child in manifests.get(&out[i]).into_iter().flatten() {
                if !out.contains(child) {
                    out.push(child.clone());
                }
            }
            i += 1;
        }
        out
    }

    /// Makes manifest `digest` (and what it references) present here,
    /// tagged `tag` if given. Returns the bytes copied (or, in a dry run,
    /// that would be).
    async fn manifest(&self, digest: &Digest, tag: Option<&Tag>, depth: usize) -> Result<u64, CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::Source(format!("indexes nested more than {MAX_DEPTH} deep at {digest}")));
        }
        if tag.is_none() && lock(&self.manifests).contains_key(digest) {
            return Ok(0);
        }
        let by_digest = Reference::Digest(digest.clone());
        match self.ctx.registry.get_manifest(&self.dst, &by_digest, true).await {
            Ok(here) => {
                let children = manifest::parse(&here.content, Some(&here.media_type))
                    .map(|p| p.manifests.into_iter().map(|d| d.digest).collect::<Vec<_>>())
                    .unwrap_or_default();
                let mut bytes = 0;
                for child in &children {
                    bytes += Box::pin(self.manifest(child, None, depth + 1)).await?;
                }
                if let Some(tag) = tag.filter(|_| !self.dry_run()) {
                    let tags = vec![tag.clone()];
                    let (content, media_type) = (here.content, here.media_type);
                    let pushed = self.ctx.registry.put_manifest(
                        &self.dst,
                        &by_digest,
                        content,
                        Some(&media_type),
                        tags,
                        Some(ACTOR),
                    );
                    pushed.await?;
                }
                if lock(&self.manifests).insert(digest.clone(), children).is_none() {
                    add(&self.report().stats.manifests_present, 1);
                }
                return Ok(bytes);
            }
            Err(RegistryError::ManifestUnknown | RegistryError::NameUnknown) => {}
            Err(e) => return Err(e.into()),
        }
        if self.dry_run() && lock(&self.manifests).contains_key(digest) {
            // Planned already; a second tag on it would only be re-pointed.
            return Ok(0);
        }
        let fetched = retry(|| self.ctx.upstream.get_manifest(&self.src, &by_digest, &[])).await?;
        let parsed = manifest::parse(&fetched.bytes, Some(&fetched.media_type))
            .map_err(|e| CopyError::Source(format!("manifest {digest} from the source: {e}")))?;
        let children: Vec<Digest> = parsed.manifests.iter().map(|d| d.digest.clone()).collect();
        let mut bytes = 0;
        for child in &children {
            bytes += Box::pin(self.manifest(child, None, depth + 1)).await?;
        }
        bytes += self.blobs(&parsed.blobs).await?;
        if !self.dry_run() {
            let tags = tag.into_iter().cloned().collect();
            let content = fetched.bytes.to_vec();
            let pushed = self.ctx.registry.put_manifest(
                &self.dst,
                &by_digest,
                content,
                Some(&fetched.media_type),
                tags,
                Some(ACTOR),
            );
            pushed.await?;
        }
        let stats = &self.report().stats;
        add(&stats.manifests_copied, 1);
        add(&stats.manifest_bytes_copied, fetched.size());
        lock(&self.manifests).insert(digest.clone(), children);
        Ok(bytes + fetched.size())
    }

    /// Makes each blob present here, several at once (bounded across
    /// repositories by `--concurrency`). Returns the bytes copied.
    async fn blobs(&self, blobs: &[Descriptor]) -> Result<u64, CopyError> {
        if let Some((digest, reason)) =
            blobs.iter().find_map(|d| lock(&self.failed_blobs).get(&d.digest).map(|r| (&d.digest, r.clone())))
        {
            return Err(CopyError::Source(format!("blob {digest} failed earlier in this run: {reason}")));
        }
        let todo: Vec<&Descriptor> = blobs.iter().filter(|d| lock(&self.blobs).insert(d.digest.clone())).collect();
        let results = futures_util::future::join_all(todo.iter().map(|d| self.blob(d))).await;
        let mut total = 0;
        let mut first_error = None;
        for (d, result) in todo.iter().zip(results) {
            match result {
                Ok(n) => total += n,
                Err(e) => {
                    lock(&self.blobs).remove(&d.digest);
                    lock(&self.failed_blobs).insert(d.digest.clone(), e.to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    async fn blob(&self, d: &Descriptor) -> Result<u64, CopyError> {
        let stats = &self.report().stats;
        let damaged = match self.ctx.registry.stat_blob(&self.dst, &d.digest, None).await {
            Ok(stat) => {
                add(&stats.blobs_present, 1);
                add(&stats.blob_bytes_present, stat.size);
                return Ok(0);
            }
            Err(RegistryError::BlobUnknown) => false,
            // Scrub found the stored bytes damaged: copying them again repairs them.
            Err(RegistryError::BlobDamaged { .. }) => true,
            Err(e) => return Err(e.into()),
        };
        if self.dry_run() {
            add(&stats.blobs_copied, 1);
            add(&stats.blob_bytes_copied, d.size);
            return Ok(d.size);
        }
        let _permit = self.ctx.transfers.acquire().await.map_err(|e| CopyError::Source(e.to_string()))?;
        retry(|| self.transfer(d, damaged)).await
    }

    /// One try at copying a blob: linked from another repository here if
    /// the registry holds it, else streamed from the source into an upload
    /// session that the registry commits only if the digest verifies.
    async fn transfer(&self, d: &Descriptor, damaged: bool) -> Result<u64, CopyError> {
        let registry = &self.ctx.registry;
        let stats = &self.report().stats;
        let session = if damaged {
            registry.start_upload(&self.dst, d.digest.algorithm()).await?
        } else {
            match registry.mount_or_upload(&self.dst, &d.digest, None, &AnyoneMounts).await {
                Ok(Mount::Mounted { .. }) => {
                    add(&stats.blobs_mounted, 1);
                    return Ok(0);
                }
                Ok(Mount::Upload(session)) => session,
                Ok(Mount::NeedsScope { .. }) => registry.start_upload(&self.dst, d.digest.algorithm()).await?,
                Err(MountError::Registry(e)) => return Err(e.into()),
                Err(MountError::Authorizer(never)) => match never {},
            }
        };
        let stream = match self.ctx.upstream.get_blob(&self.src, &d.digest).await.and_then(|s| s.expect_size(d.size)) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = registry.cancel_upload(&self.dst, &session.id).await;
                return Err(e.into());
            }
        };
        // The registry sees an I/O error; the upstream's own error is kept
        // to report (and to decide on a retry).
        let upstream_error: Arc<Mutex<Option<UpstreamError>>> = Arc::default();
        let (slot, report) = (upstream_error.clone(), self.ctx.report.clone());
        let body: ByteStream = Box::pin(stream.map(move |item| match item {
            Ok(chunk) => {
                add(&report.stats.bytes_streamed, chunk.len() as u64);
                Ok(chunk)
            }
            Err(e) => {
                let text = e.to_string();
                *lock(&slot) = Some(e);
                Err(std::io::Error::other(text))
            }
        }));
        let chunk = ChunkInfo { range: None, length: Some(d.size) };
        match registry.finish_upload(&self.dst, &session.id, &d.digest, Some((body, chunk))).await {
            Ok(size) => {
                add(&stats.blobs_copied, 1);
                add(&stats.blob_bytes_copied, size);
                Ok(size)
            }
            Err(e) => {
                let _ = registry.cancel_upload(&self.dst, &session.id).await;
                match lock(&upstream_error).take() {
                    Some(upstream) => Err(upstream.into()),
                    None => Err(e.into()),
                }
            }
        }
    }

    /// Copies the manifests that name `subject` as theirs, per the source's
    /// referrers API, and their referrers in turn. A source without that
    /// API (404: Gitea, Distribution) is not asked again; cosign's tags
    /// carry its signatures there.
    async fn referrers(&self, subject: &Digest, depth: usize) {
        if depth > MAX_DEPTH || !self.ctx.referrers_api.load(Ordering::Relaxed) {
            return;
        }
        if !lock(&self.referrers).insert(subject.clone()) {
            return;
        }
        let list = match retry(|| self.ctx.upstream.referrers(&self.src, subject)).await {
            Ok(Some(list)) => list,
            Ok(None) => {
                if self.ctx.referrers_api.swap(false, Ordering::Relaxed) {
                    tracing::info!("the source has no referrers API; cosign's tags are copied as tags");
                }
                return;
            }
            Err(e) => return self.report().fail(format!("{}@{subject} (its referrers)", self.dst), e.to_string()),
        };
        for r in list {
            match Box::pin(self.manifest(&r.digest, None, 0)).await {
                Ok(0) => {}
                Ok(_) => {
                    add(&self.report().stats.referrers_copied, 1);
                    let verb = if self.dry_run() { "would copy" } else { "copied" };
                    let kind = r.artifact_type.as_deref().unwrap_or(&r.media_type);
                    self.report().line(&format!("{verb} referrer {}@{} ({kind}) of {subject}", self.dst, r.digest));
                }
                Err(e) => {
                    let what = format!("{}@{} (referrer of {subject})", self.dst, r.digest);
                    self.report().fail(what, e.to_string());
                    continue;
                }
            }
            Box::pin(self.referrers(&r.digest, depth + 1)).await;
        }
    }
}
