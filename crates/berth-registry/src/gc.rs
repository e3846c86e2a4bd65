//! Online garbage collection: frees what nothing references, while pushes
//! and pulls go on, on every backend and with any number of replicas.
//!
//! # What is garbage
//!
//! Every condition below includes "older than the grace period `min_age`".
//!
//! - **(a) manifests** that no tag points to, that no manifest of their
//!   repository references (an index's children), and that are not a
//!   referrer of a manifest still present there. Deleting an index or a
//!   subject makes its children or referrers garbage in the next pass; the
//!   passes are computed per repository until one finds nothing, then
//!   executed in that order.
//! - **(b) repository links** (`repository_blobs`) that no manifest of the
//!   repository references.
//! - **(c) blobs** that no repository links: bytes deleted from the blob
//!   store, then the row.
//! - **(d) orphan objects** in the blob store that have no blob row at all
//!   (a crash between the storage commit and the database), by their
//!   modification time.
//! - **(e) half-deleted blobs**: rows left in state `deleting` by a run that
//!   crashed; their bytes are deleted again (idempotent) and the row removed.
//!   Only rows marked more than 10 minutes ago (or `min_age`, if shorter)
//!   are resumed, so that a run never finishes another *live* run's
//!   deletion.
//!
//! # Why it is safe
//!
//! The danger is a push that starts using content at the moment the
//! collector decides to delete it. Three races matter; each is closed by a
//! re-check that runs *inside* the deleting transaction, after it has locked
//! (Postgres) or serialized against (SQLite: one writer, `BEGIN IMMEDIATE`,
//! also across processes) everything a concurrent push would write. A plan
//! made from a stale read can therefore only fail to delete, never delete
//! too much.
//!
//! 1. **A manifest push against (a).** The delete re-checks "untagged,
//!    unreferenced, not a referrer of a present subject, old" in the
//!    statement that deletes. On Postgres it first locks the manifest row
//!    `FOR UPDATE`; a push that re-pushes or tags that digest locks the same
//!    row (`ON CONFLICT DO UPDATE`, or the tag's foreign key), and a checked
//!    index push locks its children `FOR KEY SHARE`. So the push either
//!    committed before the lock was granted (the re-check, a new statement
//!    with a new READ COMMITTED snapshot, sees its tag or reference) or it
//!    waits, then re-inserts the manifest (a tag push) or reports the child
//!    missing (an index push) — never a tag or index pointing at nothing.
//!
//! 2. **A manifest push against (b).** Same pattern: the unlink locks the
//!    link row `FOR UPDATE` and re-checks for references in a new
//!    statement; a checked push locks the links it relies on `FOR KEY
//!    SHARE` in the transaction that records its references. Either the
//!    push's references are visible to the re-check, or the push finds the
//!    link gone and fails with `MANIFEST_BLOB_UNKNOWN` (nothing is stored).
//!    A link made or made again within `min_age` (`linked_at`) is kept, so a
//!    client that just uploaded a blob can push its manifest.
//!
//! 3. **An upload or mount against (c) — the storage race.** Committing an
//!    upload *skips the write* when the content-addressed object already
//!    exists. If the collector deleted that object between the skip and the
//!    database update, the blob row would point at missing bytes. Blob rows
//!    therefore carry a state (`live` / `deleting`) and a `last_linked` time:
//!
//!    - Every upload finish and monolithic put first **reserves** the digest
//!      ([`berth_meta::MetaStore::reserve_blob`]: upsert the row as `live`,
//!      `last_linked = now`; refused if it is `deleting`, in which case the
//!      upload waits for the collector to finish and reserves afresh, or
//!      answers a retryable 503) — *before* the storage commit — and only
//!      then commits the bytes and links the blob.
//!    - The collector marks a blob `deleting` only in a transaction that
//!      re-checks it is live, linked nowhere, and `last_linked < now -
//!      min_age` (Postgres: after locking the row `FOR UPDATE`; links and
//!      reservations write that same row first, so they are ordered against
//!      the mark). Only after the mark commits does it delete the bytes,
//!      then the row.
//!    - No link ever creates a blob row. An upload links only the row *it*
//!      reserved: the reservation returns the row's random token, and the
//!      link (in the transaction that ends the upload session) requires a
//!      `live` row with that token. So if the collector took the
//!      reservation (the upload outlived the grace period) the upload fails
//!      with a retryable 503, even if someone has reserved the digest afresh
//!      meanwhile — that newer row's bytes are its own uploader's business.
//!    - A mount links only a blob that some repository links at that moment
//!      (checked in the statement that locks the row). A linked blob is
//!      never marked, and by induction its bytes are present: every link
//!      descends from an upload that committed them under its reservation.
//!
//!    Because a reservation is fresh, the collector cannot mark it within
//!    the grace period: the storage commit that follows may safely keep an
//!    existing object. If a commit ever outlives the grace period (or
//!    `min_age` is 0), the worst case is a failed upload (503, retried by
//!    the client) and possibly an orphan object, which (d) collects later.
//!
//! Orphans (d) go through the same protocol: the collector inserts a
//! `deleting` row for the digest (skipped if any row exists, i.e. someone
//! reserved it), deletes the object, then the row; a reservation meanwhile
//! waits. Objects younger than `min_age` by modification time are left
//! alone. Reads are unaffected: a blob is only served through a link, and a
//! linked blob is never marked.
//!
//! The cluster-wide lease (see [`crate::maintenance`]) keeps collectors
//! from running concurrently. Phases (a) to (d) do not depend on it: each
//! deletion is decided by its own re-checking transaction, and only the run
//! that marked a blob deletes its bytes. Phase (e) deletes bytes of rows
//! another run marked, which is only safe once that run has stopped: it
//! waits until the mark is old (see above), and every run checks it still
//! holds the lease right before each storage delete, so a run that lost
//! its lease (renewed every 15 s, lapsing after 60 s) stops first.
//!
//! Known limit: a manifest or link is only protected from the moment a
//! push *uses* it. A client that checked a blob exists (`HEAD`) or pushed a
//! child manifest that already existed, unreferenced and older than
//! `min_age`, and then pushes the referring manifest, may see
//! `MANIFEST_BLOB_UNKNOWN` if a collection ran in between; clients retry
//! the push, which uploads the content again. Nothing stored is lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use berth_meta::maintenance::RepositoryGraph;
use berth_oci::{Digest, RepositoryName};

use crate::maintenance::{Lease, Maintenance, ensure_held};
use crate::{RegistryError, Result, now_ms};

/// Repositories, blobs or objects handled per page.
const PAGE: u32 = 500;

/// Phase (e) finishes another run's deletions only once they were marked
/// this long ago (or the grace period, if shorter): long after that run has
/// lost its lease and stopped.
const RESUME_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Grace period: nothing younger is collected.
    pub min_age: Duration,
    /// Report what would be freed; change nothing.
    pub dry_run: bool,
}

/// The phases of a run, in order (for progress displays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPhase {
    /// (e) blobs a crashed run left half-deleted.
    Resume,
    /// (a) manifests and (b) links, repository by repository.
    Repositories,
    /// (c) blobs linked nowhere.
    Blobs,
    /// (d) objects without a blob row.
    Orphans,
    Done,
}

impl GcPhase {
    pub fn label(self) -> &'static str {
        match self {
            GcPhase::Resume => "resume",
            GcPhase::Repositories => "manifests and links",
            GcPhase::Blobs => "blobs",
            GcPhase::Orphans => "orphan objects",
            GcPhase::Done => "done",
        }
    }
}

/// A count and the bytes it stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    pub count: u64,
    pub bytes: u64,
}

impl Freed {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What a run freed (or, in a dry run, would free).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: u64,
    /// (e) half-deleted blobs finished.
    pub resumed: Freed,
    /// (a) manifests (bytes: their size in the database).
    pub manifests: Freed,
    /// Most passes one repository needed (index, then its children, ...).
    pub manifest_passes: u32,
    /// (b) repository links (bytes: the linked blobs' sizes; freed only
    /// where (c) follows).
    pub links: Freed,
    /// (c) blobs deleted from storage.
    pub blobs: Freed,
    /// (d) orphan objects deleted from storage.
    pub orphans: Freed,
    /// Storage deletions that failed (retried by the next run).
    pub errors: u64,
    pub elapsed: Duration,
}

impl GcReport {
    /// Bytes removed from the blob store.
    pub fn bytes_freed(&self) -> u64 {
        self.resumed.bytes + self.blobs.bytes + self.orphans.bytes
    }

    /// Objects removed from the blob store.
    pub fn blobs_deleted(&self) -> u64 {
        self.resumed.count + self.blobs.count + self.orphans.count
    }
}

/// Called as the run advances.
pub type Progress<'a> = &'a (dyn Fn(GcPhase, &GcReport) + Send + Sync);

/// A progress callback that ignores everything.
pub fn no_progress(_: GcPhase, _: &GcReport) {}

/// One repository's garbage, in deletion order.
#[derive(Debug, Default, PartialEq, Eq)]
struct RepositoryPlan {
    manifests: Vec<(Digest, u64)>,
    links: Vec<(Digest, u64)>,
    passes: u32,
}

/// Decides a repository's garbage from a snapshot: passes of manifest
/// deletions until one finds nothing, then the links no surviving manifest
/// references. References from manifests not in the snapshot count too
/// (conservative).
fn plan_repository(graph: &RepositoryGraph, cutoff: i64) -> RepositoryPlan {
    let index: HashMap<&str, usize> = graph.manifests.iter().enumerate().map(|(i, m)| (m.digest.as_str(), i)).collect();
    let mut outgoing: Vec<Vec<&str>> = vec![Vec::new(); graph.manifests.len()];
    let mut referenced: HashMap<&str, u32> = HashMap::new();
    for (from, to) in &graph.references {
        *referenced.entry(to.as_str()).or_default() += 1;
        if let Some(&i) = index.get(from.as_str()) {
            outgoing[i].push(to.as_str());
        }
    }
    let mut alive = vec![true; graph.manifests.len()];
    let mut plan = RepositoryPlan::default();
    loop {
        let batch: Vec<usize> = graph
            .manifests
            .iter()
            .enumerate()
            .filter(|&(i, m)| {
                let subject_present =
                    m.subject.as_ref().and_then(|s| index.get(s.as_str())).is_some_and(|&s| alive[s] && s != i);
                alive[i]
                    && !m.tagged
                    && m.created_at < cutoff
                    && referenced.get(m.digest.as_str()).copied().unwrap_or(0) == 0
                    && !subject_present
            })
            .map(|(i, _)| i)
            .collect();
        if batch.is_empty() {
            break;
        }
        plan.passes += 1;
        for &i in &batch {
            alive[i] = false;
            let m = &graph.manifests[i];
            plan.manifests.push((m.digest.clone(), m.size));
        }
        for &i in &batch {
            for target in &outgoing[i] {
                if let Some(n) = referenced.get_mut(target) {
                    *n -= 1;
                }
            }
        }
    }
    for link in &graph.links {
        if link.linked_at < cutoff && referenced.get(link.digest.as_str()).copied().unwrap_or(0) == 0 {
            plan.links.push((link.digest.clone(), link.size));
        }
    }
    plan
}

impl Maintenance {
    /// Runs garbage collection once. Callers that may run concurrently with
    /// another collector (the scheduler, the CLI) hold the [`GC_LEASE`]
    /// and pass it, so the run stops if the lease is lost.
    ///
    /// [`GC_LEASE`]: crate::maintenance::GC_LEASE
    pub async fn collect_garbage(
        &self,
        options: &GcOptions,
        lease: Option<&Lease>,
        progress: Progress<'_>,
    ) -> Result<GcReport> {
        let started = Instant::now();
        let min_age = i64::try_from(options.min_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(min_age);
        let resume_after = options.min_age.min(RESUME_AFTER);
        let resume_before = now_ms().saturating_sub(i64::try_from(resume_after.as_millis()).unwrap_or(i64::MAX));
        let mut run = Run {
            gc: self,
            dry_run: options.dry_run,
            cutoff,
            resume_before,
            lease,
            progress,
            report: GcReport::default(),
        };
        run.report.dry_run = options.dry_run;
        let result = run.all().await;
        run.report.elapsed = started.elapsed();
        let report = run.report;
        progress(GcPhase::Done, &report);
        let outcome = if result.is_ok() { "finished" } else { "stopped" };
        tracing::info!(
            dry_run = report.dry_run,
            repositories = report.repositories,
            manifests = report.manifests.count,
            links = report.links.count,
            blobs = report.blobs.count,
            orphans = report.orphans.count,
            resumed = report.resumed.count,
            bytes_freed = report.bytes_freed(),
            errors = report.errors,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "garbage collection {outcome}"
        );
        if !report.dry_run {
            let m = berth_metrics::metrics();
            m.gc_runs.inc();
            m.gc_bytes_freed.inc_by(report.bytes_freed());
            m.gc_blobs_deleted.inc_by(report.blobs_deleted());
            m.gc_manifests_deleted.inc_by(report.manifests.count);
            m.gc_duration.observe(report.elapsed.as_secs_f64());
        }
        result.map(|()| report)
    }
}

struct Run<'a> {
    gc: &'a Maintenance,
    dry_run: bool,
    cutoff: i64,
    /// (e) resumes rows marked before this.
    resume_before: i64,
    lease: Option<&'a Lease>,
    progress: Progress<'a>,
    report: GcReport,
}

impl Run<'_> {
    async fn all(&mut self) -> Result<()> {
        self.resume().await?;
        // Links a dry run would remove, per digest: which blobs (c) would follow.
        let mut unlinked: HashMap<Digest, u64> = HashMap::new();
        (self.progress)(GcPhase::Repositories, &self.report);
        let mut after: Option<String> = None;
        loop {
            let page = self.gc.meta().list_repositories(after.as_deref(), Some(PAGE)).await?;
            for name in &page {
                ensure_held(self.lease)?;
                let repo = RepositoryName::parse(name)
                    .map_err(|e| RegistryError::Internal(format!("stored repository name {name:?}: {e}")))?;
                self.repository(&repo, &mut unlinked).await?;
                self.report.repositories += 1;
                (self.progress)(GcPhase::Repositories, &self.report);
            }
            if page.len() < PAGE as usize {
                break;
            }
            after = page.last().cloned();
        }
        self.blobs(&unlinked).await?;
        self.orphans().await
    }

    /// (e): rows a crashed run left `deleting`.
    async fn resume(&mut self) -> Result<()> {
        (self.progress)(GcPhase::Resume, &self.report);
        let store = self.gc.store();
        let mut failed: HashSet<Digest> = HashSet::new();
        loop {
            ensure_held(self.lease)?;
            let page = store.deleting_blobs(self.resume_before, PAGE).await?;
            let fresh: Vec<_> = page.iter().filter(|b| !failed.contains(&b.digest)).collect();
            if fresh.is_empty() {
                return Ok(());
            }
            for blob in fresh {
                if self.dry_run {
                    self.report.resumed.add(blob.size);
                    failed.insert(blob.digest.clone());
                } else if self.delete_bytes(&blob.digest).await? {
                    store.gc_forget_blob(&blob.digest).await?;
                    self.report.resumed.add(blob.size);
                } else {
                    failed.insert(blob.digest.clone());
                }
                (self.progress)(GcPhase::Resume, &self.report);
            }
        }
    }

    /// (a) and (b) for one repository.
    async fn repository(&mut self, repo: &RepositoryName, unlinked: &mut HashMap<Digest, u64>) -> Result<()> {
        let store = self.gc.store();
        let graph = store.repository_graph(repo).await?;
        let plan = plan_repository(&graph, self.cutoff);
        self.report.manifest_passes = self.report.manifest_passes.max(plan.passes);
        for (digest, size) in &plan.manifests {
            if self.dry_run {
                self.report.manifests.add(*size);
            } else if let Some(size) = store.gc_delete_manifest(repo, digest, self.cutoff).await? {
                tracing::debug!(repository = %repo, %digest, "gc: manifest deleted");
                self.report.manifests.add(size);
            }
        }
        for (digest, size) in &plan.links {
            if self.dry_run {
                self.report.links.add(*size);
                *unlinked.entry(digest.clone()).or_default() += 1;
            } else if store.gc_unlink_blob(repo, digest, self.cutoff).await? {
                self.report.links.add(*size);
            }
        }
        Ok(())
    }

    /// (c): blobs linked nowhere (in a dry run, also those whose every link
    /// the plan removes).
    async fn blobs(&mut self, unlinked: &HashMap<Digest, u64>) -> Result<()> {
        (self.progress)(GcPhase::Blobs, &self.report);
        let store = self.gc.store();
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut after: Option<Digest> = None;
        loop {
            ensure_held(self.lease)?;
            let page = store.unlinked_blobs(self.cutoff, after.as_ref(), PAGE).await?;
            for blob in &page {
                if self.dry_run {
                    self.report.blobs.add(blob.size);
                    seen.insert(blob.digest.clone());
                    continue;
                }
                let Some(size) = store.gc_mark_blob(&blob.digest, self.cutoff).await? else { continue };
                // Marked: from here on nothing can reserve or link it.
                if self.delete_bytes(&blob.digest).await? {
                    store.gc_forget_blob(&blob.digest).await?;
                    tracing::debug!(digest = %blob.digest, size, "gc: blob deleted");
                    self.report.blobs.add(size);
                }
                (self.progress)(GcPhase::Blobs, &self.report);
            }
            if page.len() < PAGE as usize {
                break;
            }
            after = page.last().map(|b| b.digest.clone());
        }
        if self.dry_run {
            let candidates: Vec<Digest> = unlinked.keys().filter(|d| !seen.contains(*d)).cloned().collect();
            for chunk in candidates.chunks(PAGE as usize) {
                for usage in store.blob_usage(chunk).await? {
                    let removed = unlinked.get(&usage.digest).copied().unwrap_or(0);
                    if !usage.deleting && usage.last_linked < self.cutoff && usage.links <= removed {
                        self.report.blobs.add(usage.size);
                    }
                }
            }
            (self.progress)(GcPhase::Blobs, &self.report);
        }
        Ok(())
    }

    /// (d): objects the database does not know, older than the grace period.
    async fn orphans(&mut self) -> Result<()> {
        (self.progress)(GcPhase::Orphans, &self.report);
        let store = self.gc.store();
        let listed = self.gc.blobs().list().await?;
        let old: Vec<_> = listed.into_iter().filter(|b| b.modified_ms < self.cutoff).collect();
        for chunk in old.chunks(PAGE as usize) {
            ensure_held(self.lease)?;
            let digests: Vec<Digest> = chunk.iter().map(|b| b.digest.clone()).collect();
            let known: HashSet<Digest> = store.known_blobs(&digests).await?.into_iter().collect();
            for object in chunk.iter().filter(|b| !known.contains(&b.digest)) {
                if self.dry_run {
                    self.report.orphans.add(object.size);
                    continue;
                }
                // Marked (a `deleting` row): reservations of this digest now wait.
                if store.gc_mark_orphan(&object.digest, object.size, now_ms()).await?
                    && self.delete_bytes(&object.digest).await?
                {
                    store.gc_forget_blob(&object.digest).await?;
                    tracing::debug!(digest = %object.digest, "gc: orphan object deleted");
                    self.report.orphans.add(object.size);
                }
            }
            (self.progress)(GcPhase::Orphans, &self.report);
        }
        Ok(())
    }

    /// Deletes a marked blob's bytes; on failure the row stays `deleting`
    /// for the next run (and keeps refusing reservations meanwhile). Checks
    /// the lease first: a run that lost it must not delete bytes that a
    /// newer run may have finished with and handed back to uploads.
    async fn delete_bytes(&mut self, digest: &Digest) -> Result<bool> {
        ensure_held(self.lease)?;
        match self.gc.blobs().delete(digest).await {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "gc: cannot delete blob bytes; will retry next run");
                self.report.errors += 1;
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_meta::maintenance::{GcLink, GcManifest};

    use super::*;

    fn d(seed: &str) -> Digest {
        Digest::sha256_of(seed.as_bytes())
    }

    fn m(seed: &str, created_at: i64, tagged: bool, subject: Option<&str>) -> GcManifest {
        GcManifest { digest: d(seed), size: seed.len() as u64, created_at, tagged, subject: subject.map(d) }
    }

    fn link(seed: &str, linked_at: i64) -> GcLink {
        GcLink { digest: d(seed), size: 10, linked_at }
    }

    #[test]
    fn plan_follows_indexes_and_subjects_pass_by_pass() {
        let graph = RepositoryGraph {
            manifests: vec![
                m("tagged", 1, true, None),
                m("index", 1, false, None),
                m("child", 1, false, None),
                m("sig-of-child", 1, false, Some("child")),
                m("young", 50, false, None),
                m("sig-of-tagged", 1, false, Some("tagged")),
            ],
            references: vec![
                (d("index"), d("child")),
                (d("child"), d("layer")),
                (d("tagged"), d("kept-layer")),
                (d("young"), d("young-layer")),
            ],
            links: vec![
                link("layer", 1),
                link("kept-layer", 1),
                link("young-layer", 1),
                link("loose", 1),
                link("new", 60),
            ],
        };
        let plan = plan_repository(&graph, 10);
        let names = |list: &[(Digest, u64)]| list.iter().map(|(x, _)| x.clone()).collect::<Vec<_>>();
        assert_eq!(names(&plan.manifests), vec![d("index"), d("child"), d("sig-of-child")]);
        assert_eq!(plan.passes, 3);
        assert_eq!(names(&plan.links), vec![d("layer"), d("loose")]);
    }

    #[test]
    fn references_from_unknown_manifests_protect_their_targets() {
        let graph = RepositoryGraph {
            manifests: vec![m("child", 1, false, None)],
            references: vec![(d("pushed meanwhile"), d("child")), (d("pushed meanwhile"), d("layer"))],
            links: vec![link("layer", 1)],
        };
        assert_eq!(plan_repository(&graph, 10), RepositoryPlan::default());
    }
}
