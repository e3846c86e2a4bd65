//! Scrub: checks that what is stored still matches its digests.
//!
//! - Every blob some repository links is read from the blob store,
//!   streaming, and hashed; its size must match the recorded one.
//! - Every manifest's stored bytes are hashed.
//! - Objects in the blob store that nothing links are counted (garbage
//!   collection removes them).
//!
//! A problem is confirmed before anything is done about it: a mismatch is
//! read and hashed a second time, a missing object is looked up again. A
//! confirmed bad blob is then moved to `quarantine/` in the blob store and
//! marked damaged in the database (in that order, see below). A damaged
//! blob is never served: reads answer `BLOB_UNKNOWN` with the damage in the
//! message, so a client that pushes the image again uploads the blob, and
//! that upload's link clears the mark. A later scrub that finds the bytes
//! whole again (an operator put them back) clears it too.
//!
//! # Why quarantine first, then mark
//!
//! The mark also gives the blob row a new reservation token, so an upload
//! that reserved the digest before the mark cannot link it (it retries, and
//! reserves afresh). An upload holding the new token reserved after the
//! mark, hence after the damaged object left the blob namespace: whatever
//! object its storage commit finds or writes is verified bytes, so its link
//! may clear the mark. An upload that wrote fresh bytes between the move
//! and the mark is caught by the look after the mark: scrub checks the
//! digest's object once more and clears the mark if it is whole.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_blob::{BlobError, ByteStream};
use berth_meta::scrub::{Reach, ScrubBlob};
use berth_oci::{Digest, RepositoryName};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::maintenance::{Lease, Maintenance, ensure_held};
use crate::{RegistryError, Result, now_ms};

/// Blobs, manifests or objects per page.
const PAGE: u32 = 200;
/// Blobs checked at once (one reads while the other hashes).
const JOBS: usize = 2;
/// At most this many places are named per problem.
const REACH_LIMIT: u32 = 50;

#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// Only repositories matching this glob ('*' crosses '/'); `None`: all,
    /// and objects nothing links are counted too.
    pub repositories: Option<String>,
    /// Bytes read per second at most; `None`: as fast as storage and CPU go.
    pub rate: Option<u64>,
}

/// What is wrong with a blob or manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The stored bytes hash to another digest.
    DigestMismatch { computed: Digest },
    /// The stored object's size is not the recorded one.
    SizeMismatch { recorded: u64, stored: u64 },
    /// The blob store has no object for a blob the metadata links.
    Missing,
    /// Reading failed (an I/O error from the disk, say); not marked, since
    /// it may pass. The next run looks again.
    Unreadable(String),
    /// An earlier run found the blob damaged and nothing has repaired it.
    StillDamaged { problem: String, found_at: i64 },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::DigestMismatch { computed } => write!(f, "digest mismatch: the stored bytes hash to {computed}"),
            Damage::SizeMismatch { recorded, stored } => {
                write!(f, "size mismatch: {stored} bytes stored, {recorded} recorded")
            }
            Damage::Missing => f.write_str("missing from storage"),
            Damage::Unreadable(e) => write!(f, "unreadable: {e}"),
            Damage::StillDamaged { problem, found_at } => {
                let when = humantime::format_rfc3339_seconds(ms_to_time(*found_at));
                write!(f, "damaged since {when} ({problem}); not repaired")
            }
        }
    }
}

fn ms_to_time(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What was found damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Blob,
    /// A manifest, stored in the database for this repository.
    Manifest {
        repository: RepositoryName,
    },
}

/// A repository that reaches a damaged digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    /// Tags whose image is or contains it.
    pub tags: Vec<String>,
    /// Untagged manifests that are or contain it.
    pub untagged: Vec<Digest>,
    /// The repository links the blob but no manifest of it references it.
    pub linked_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub digest: Digest,
    pub object: Object,
    pub damage: Damage,
    /// Repositories reaching it, by name.
    pub reach: BTreeMap<RepositoryName, Reached>,
    /// Where the damaged bytes were moved, if they were.
    pub quarantined: Option<String>,
}

/// A count and the bytes it stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub repositories: u64,
    pub blobs: Tally,
    pub manifests: Tally,
    /// Objects in the blob store that no repository links (only counted
    /// when every repository is scrubbed).
    pub unreferenced: Option<Tally>,
    pub problems: Vec<Problem>,
    /// Blobs marked damaged by an earlier run whose bytes are whole again.
    pub repaired: Vec<Digest>,
    pub elapsed: Duration,
}

impl ScrubReport {
    /// Bytes read and hashed.
    pub fn bytes_checked(&self) -> u64 {
        self.blobs.bytes + self.manifests.bytes
    }
}

/// Called after each blob, manifest page and phase.
pub type ScrubProgress<'a> = &'a (dyn Fn(&ScrubReport) + Send + Sync);

/// A progress callback that ignores everything.
pub fn no_progress(_: &ScrubReport) {}

/// Keeps reads to a rate, across the blobs checked at once.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    consumed: AtomicU64,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Self {
        Pacer { rate: rate.filter(|r| *r > 0), started: Instant::now(), consumed: AtomicU64::new(0) }
    }

    async fn take(&self, bytes: u64) {
        let Some(rate) = self.rate else { return };
        let total = self.consumed.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let due = Duration::from_secs_f64(total as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What reading one blob found.
enum Check {
    Whole,
    Bad(Damage),
}

impl Maintenance {
    /// Checks the stored bytes of every linked blob and every manifest (of
    /// the repositories `options` names). Callers that may run beside
    /// another scrub (the scheduler, the CLI) hold the [`SCRUB_LEASE`] and
    /// pass it, so the run stops if the lease is lost.
    ///
    /// [`SCRUB_LEASE`]: crate::maintenance::SCRUB_LEASE
    pub async fn scrub(
        &self,
        options: &ScrubOptions,
        lease: Option<&Lease>,
        progress: ScrubProgress<'_>,
    ) -> Result<ScrubReport> {
        let started = Instant::now();
        let filter = match &options.repositories {
            None => None,
            Some(glob) => Some(
                glob::Pattern::new(glob)
                    .map_err(|e| RegistryError::Internal(format!("invalid repository glob {glob:?}: {e}")))?,
            ),
        };
        let pacer = Pacer::new(options.rate);
        let mut report = ScrubReport::default();
        let repositories = self.scrub_repositories(filter.as_ref()).await?;
        report.repositories = repositories.len() as u64;
        match filter {
            None => self.scrub_blob_pages(None, lease, &pacer, &mut HashSet::new(), &mut report, progress).await?,
            Some(_) => {
                // A blob two repositories link is checked (and reported) once.
                let mut seen = HashSet::new();
                for repo in &repositories {
                    self.scrub_blob_pages(Some(repo), lease, &pacer, &mut seen, &mut report, progress).await?;
                }
            }
        }
        for repo in &repositories {
            self.scrub_manifests(repo, lease, &pacer, &mut report, progress).await?;
        }
        if options.repositories.is_none() {
            report.unreferenced = Some(self.unreferenced_objects(lease).await?);
        }
        report.elapsed = started.elapsed();
        let m = berth_metrics::metrics();
        m.scrub_runs.inc();
        m.scrub_problems.set(i64::try_from(report.problems.len()).unwrap_or(i64::MAX));
        if options.repositories.is_none() {
            m.scrub_last_run.set(now_ms() / 1000);
        }
        tracing::info!(
            blobs = report.blobs.count,
            manifests = report.manifests.count,
            bytes = report.bytes_checked(),
            problems = report.problems.len(),
            repaired = report.repaired.len(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "scrub finished"
        );
        progress(&report);
        Ok(report)
    }

    async fn scrub_repositories(&self, filter: Option<&glob::Pattern>) -> Result<Vec<RepositoryName>> {
        const MATCH: glob::MatchOptions = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.meta().list_repositories(after.as_deref(), Some(PAGE)).await?;
            for name in &page {
                if filter.is_none_or(|f| f.matches_with(name, MATCH)) {
                    out.push(RepositoryName::parse(name).map_err(|e| RegistryError::Internal(e.to_string()))?);
                }
            }
            if page.len() < PAGE as usize {
                return Ok(out);
            }
            after = page.last().cloned();
        }
    }

    async fn scrub_blob_pages(
        &self,
        repository: Option<&RepositoryName>,
        lease: Option<&Lease>,
        pacer: &Pacer,
        seen: &mut HashSet<Digest>,
        report: &mut ScrubReport,
        progress: ScrubProgress<'_>,
    ) -> Result<()> {
        let mut after: Option<Digest> = None;
        loop {
            ensure_held(lease)?;
            let page = self.meta().scrub_blobs(repository, after.as_ref(), PAGE).await?;
            // Over all blobs each comes once; per repository, a shared one again.
            let todo: Vec<&ScrubBlob> =
                page.iter().filter(|b| repository.is_none() || seen.insert(b.digest.clone())).collect();
            for group in todo.chunks(JOBS) {
                let checks =
                    futures_util::future::join_all(group.iter().map(|blob| self.check_blob(blob, pacer))).await;
                for (blob, check) in group.iter().zip(checks) {
                    report.blobs.add(blob.size);
                    berth_metrics::metrics().scrub_objects_checked.inc();
                    match check? {
                        Check::Whole if blob.damage.is_some() => {
                            if self.meta().clear_blob_damage(&blob.digest).await? {
                                tracing::info!(digest = %blob.digest, "scrub: a blob marked damaged is whole again");
                                report.repaired.push(blob.digest.clone());
                            }
                        }
                        Check::Whole => {}
                        Check::Bad(damage) => {
                            if let Some(problem) = self.confirm_blob_problem(blob, damage, pacer).await? {
                                report.problems.push(problem);
                            }
                        }
                    }
                    progress(report);
                }
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
            after = page.last().map(|b| b.digest.clone());
        }
    }

    /// Reads and hashes a blob (boxed: several run at once, and a boxed
    /// future is plainly `Send` for the scheduler's task).
    fn check_blob<'a>(
        &'a self,
        blob: &'a ScrubBlob,
        pacer: &'a Pacer,
    ) -> Pin<Box<dyn Future<Output = Result<Check>> + Send + 'a>> {
        Box::pin(async move {
            let (len, stream) = match self.blobs().read_stream(&blob.digest).await {
                Ok(opened) => opened,
                Err(BlobError::NotFound) => return Ok(Check::Bad(Damage::Missing)),
                Err(e) => return Ok(Check::Bad(Damage::Unreadable(e.to_string()))),
            };
            if len != blob.size {
                return Ok(Check::Bad(Damage::SizeMismatch { recorded: blob.size, stored: len }));
            }
            Ok(match hash_stream(&blob.digest, stream, pacer).await {
                Ok((computed, _)) if computed == blob.digest => Check::Whole,
                Ok((_, read)) if read != blob.size => {
                    Check::Bad(Damage::SizeMismatch { recorded: blob.size, stored: read })
                }
                Ok((computed, _)) => Check::Bad(Damage::DigestMismatch { computed }),
                Err(e) => Check::Bad(Damage::Unreadable(e.to_string())),
            })
        })
    }

    /// Acts on a blob that failed its check: looks once more, then
    /// quarantines and marks it (see the module docs). `None` if the second
    /// look found it whole, or the blob is no longer live (collected).
    async fn confirm_blob_problem(&self, blob: &ScrubBlob, first: Damage, pacer: &Pacer) -> Result<Option<Problem>> {
        let damage = match self.check_blob(blob, pacer).await? {
            Check::Whole => {
                tracing::warn!(digest = %blob.digest, first = %first, "scrub: a blob failed one check and passed the next");
                return Ok(None);
            }
            Check::Bad(damage) => damage,
        };
        let mut quarantined = None;
        let damage = match (damage, &blob.damage) {
            (Damage::Unreadable(e), _) => Damage::Unreadable(e),
            // Already marked by an earlier run (and its bytes quarantined).
            (Damage::Missing, Some(earlier)) => {
                Damage::StillDamaged { problem: earlier.problem.clone(), found_at: earlier.found_at }
            }
            (damage, _) => {
                if !matches!(damage, Damage::Missing) {
                    quarantined = self.blobs().quarantine(&blob.digest).await?;
                }
                if !self.meta().mark_blob_damaged(&blob.digest, &damage.to_string(), now_ms()).await? {
                    // Collected meanwhile: nothing left to report.
                    return Ok(None);
                }
                // An upload may have written fresh bytes since the move.
                if matches!(self.check_blob(blob, pacer).await?, Check::Whole) {
                    self.meta().clear_blob_damage(&blob.digest).await?;
                    return Ok(None);
                }
                damage
            }
        };
        tracing::error!(digest = %blob.digest, damage = %damage, quarantined = quarantined.as_deref(), "scrub: damaged blob");
        let reach = self.reach_of(&blob.digest).await?;
        Ok(Some(Problem { digest: blob.digest.clone(), object: Object::Blob, damage, reach, quarantined }))
    }

    async fn scrub_manifests(
        &self,
        repo: &RepositoryName,
        lease: Option<&Lease>,
        pacer: &Pacer,
        report: &mut ScrubReport,
        progress: ScrubProgress<'_>,
    ) -> Result<()> {
        let mut after: Option<Digest> = None;
        loop {
            ensure_held(lease)?;
            let page = self.meta().scrub_manifests(repo, after.as_ref(), PAGE).await?;
            for manifest in &page {
                let bytes = manifest.content.len() as u64;
                pacer.take(bytes).await;
                report.manifests.add(bytes);
                let m = berth_metrics::metrics();
                m.scrub_objects_checked.inc();
                m.scrub_bytes_checked.inc_by(bytes);
                let computed = Digest::of(manifest.digest.algorithm(), &manifest.content);
                if computed != manifest.digest {
                    let damage = Damage::DigestMismatch { computed };
                    tracing::error!(repository = %repo, digest = %manifest.digest, damage = %damage, "scrub: damaged manifest");
                    let reach = self.reach_of(&manifest.digest).await?;
                    report.problems.push(Problem {
                        digest: manifest.digest.clone(),
                        object: Object::Manifest { repository: repo.clone() },
                        damage,
                        reach: reach.into_iter().filter(|(r, _)| r == repo).collect(),
                        quarantined: None,
                    });
                }
            }
            progress(report);
            if page.len() < PAGE as usize {
                return Ok(());
            }
            after = page.last().map(|m| m.digest.clone());
        }
    }

    /// The repositories, tags and untagged manifests that reach `digest`.
    async fn reach_of(&self, digest: &Digest) -> Result<BTreeMap<RepositoryName, Reached>> {
        let mut out: BTreeMap<RepositoryName, Reached> = BTreeMap::new();
        for Reach { repository, manifest, tag } in self.meta().reach(digest, REACH_LIMIT).await? {
            let entry = out.entry(repository).or_default();
            match tag {
                Some(tag) => entry.tags.push(tag),
                None => entry.untagged.push(manifest),
            }
        }
        for repository in self.meta().blob_repositories(digest, REACH_LIMIT).await? {
            out.entry(repository).or_insert_with(|| Reached { linked_only: true, ..Reached::default() });
        }
        for reached in out.values_mut() {
            reached.tags.sort();
            reached.tags.dedup();
        }
        Ok(out)
    }

    /// Objects in the blob store that no repository links.
    async fn unreferenced_objects(&self, lease: Option<&Lease>) -> Result<Tally> {
        let mut tally = Tally::default();
        let listed = self.blobs().list().await?;
        for chunk in listed.chunks(PAGE as usize) {
            ensure_held(lease)?;
            let digests: Vec<Digest> = chunk.iter().map(|b| b.digest.clone()).collect();
            let linked: HashSet<Digest> = self
                .store()
                .blob_usage(&digests)
                .await?
                .into_iter()
                .filter(|u| u.links > 0)
                .map(|u| u.digest)
                .collect();
            for object in chunk.iter().filter(|b| !linked.contains(&b.digest)) {
                tally.add(object.size);
            }
        }
        Ok(tally)
    }
}

/// Hashes a stream with `expected`'s algorithm on a blocking thread (so a
/// runtime worker never spends milliseconds hashing), reading the next
/// chunk while the last one is hashed, at the pacer's rate. Returns the
/// digest and the length.
async fn hash_stream(expected: &Digest, mut stream: ByteStream, pacer: &Pacer) -> std::io::Result<(Digest, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let mut hasher = expected.algorithm().hasher();
    let hashing = tokio::task::spawn_blocking(move || {
        let mut len = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        (hasher.finish(), len)
    });
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                pacer.take(chunk.len() as u64).await;
                berth_metrics::metrics().scrub_bytes_checked.inc_by(chunk.len() as u64);
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let result = hashing.await.map_err(|e| std::io::Error::other(format!("hashing task failed: {e}")))?;
    match failed {
        Some(e) => Err(e),
        None => Ok(result),
    }
}
