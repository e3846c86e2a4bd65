//! What `berth sync` tells its operator: a line per tag copied (or, in a
//! dry run, that would be), a progress line on a terminal, the audit log,
//! and the summary at the end.
//!
//! Lines go to stdout; the progress line to stderr, only when stderr is a
//! terminal, redrawn in place (`\r`) at most five times a second and cleared
//! before any other line is printed.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_config::human_size;

/// Counters, shared by every repository being copied at once.
#[derive(Default)]
pub struct Stats {
    pub repositories: AtomicU64,
    pub repositories_done: AtomicU64,
    pub tags_copied: AtomicU64,
    pub tags_current: AtomicU64,
    pub tags_failed: AtomicU64,
    pub manifests_copied: AtomicU64,
    pub manifests_present: AtomicU64,
    pub referrers_copied: AtomicU64,
    pub blobs_copied: AtomicU64,
    pub blob_bytes_copied: AtomicU64,
    pub blobs_present: AtomicU64,
    pub blob_bytes_present: AtomicU64,
    pub blobs_mounted: AtomicU64,
    pub manifest_bytes_copied: AtomicU64,
    /// Blob bytes received so far, including blobs still in flight.
    pub bytes_streamed: AtomicU64,
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Something that could not be copied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `owner/app`, `owner/app:tag`, `owner/app@sha256:...`.
    pub what: String,
    pub reason: String,
}

pub struct Reporter {
    pub stats: Stats,
    failures: Mutex<Vec<Failure>>,
    tty: bool,
    dry_run: bool,
    /// Serialises output, so the progress line and other lines never mix.
    out: Mutex<Option<Instant>>,
    /// The repository most recently started, for the progress line.
    current: Mutex<String>,
    started: Instant,
}

impl Reporter {
    pub fn new(tty: bool, dry_run: bool) -> Self {
        Reporter {
            stats: Stats::default(),
            failures: Mutex::new(Vec::new()),
            tty,
            dry_run,
            out: Mutex::new(None),
            current: Mutex::new(String::new()),
            started: Instant::now(),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Prints `line` on stdout, first clearing the progress line.
    pub fn line(&self, line: &str) {
        let _guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        println!("{line}");
    }

    /// A tag now points here as at the source: said, and audited.
    pub fn tag_copied(&self, source: &str, repository: &str, tag: &str, digest: &str, bytes: u64) {
        add(&self.stats.tags_copied, 1);
        let verb = if self.dry_run { "would copy" } else { "copied" };
        let size = if bytes > 0 { format!(" ({} new)", human_size(bytes)) } else { String::new() };
        self.line(&format!("{verb} {repository}:{tag} {digest}{size}"));
        if !self.dry_run {
            tracing::info!(target: "audit", event = "sync_tag", user = "sync", source, repository, tag, digest, bytes);
        }
    }

    pub fn fail(&self, what: impl Into<String>, reason: impl Into<String>) {
        let failure = Failure { what: what.into(), reason: reason.into() };
        let verb = if self.dry_run { "would fail" } else { "failed" };
        self.line(&format!("{verb}: {}: {}", failure.what, failure.reason));
        tracing::warn!(what = %failure.what, reason = %failure.reason, "sync: not copied");
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn working_on(&self, repository: &str) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = repository.to_owned();
    }

    /// Redraws the progress line if it is due (and stderr is a terminal).
    pub fn progress(&self) {
        if !self.tty {
            return;
        }
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut last = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
            return;
        }
        *last = Some(Instant::now());
        let s = &self.stats;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Ksync: {}/{} repositories, {} tags {}, {} {}, {} failed  {current}",
            get(&s.repositories_done),
            get(&s.repositories),
            get(&s.tags_copied),
            if self.dry_run { "to copy" } else { "copied" },
            human_size(get(&s.bytes_streamed)),
            if self.dry_run { "to fetch" } else { "received" },
            self.failures.lock().map(|f| f.len()).unwrap_or(0),
        );
        let _ = err.flush();
    }

    /// Clears the progress line for good.
    pub fn finish(&self) {
        if self.tty {
            let _guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
            eprint!("\r\x1b[2K");
        }
    }

    /// The report for people. Its last line is the one-line verdict.
    pub fn summary(&self, source: &str, listed_by: &str) -> String {
        let s = &self.stats;
        let failures = self.failures();
        let (copy, copied) = if self.dry_run { ("to copy", "would copy") } else { ("copied", "copied") };
        let mut out = format!(
            "sync {} from {source} ({listed_by}) in {:.1}s{}\n",
            if self.dry_run { "dry run finished" } else { "finished" },
            self.started.elapsed().as_secs_f64(),
            if self.dry_run { ": nothing was copied" } else { "" },
        );
        out.push_str(&format!("  repositories  {} ({} done)\n", get(&s.repositories), get(&s.repositories_done)));
        out.push_str(&format!(
            "  tags          {copy} {}, up to date {}, failed {}\n",
            get(&s.tags_copied),
            get(&s.tags_current),
            get(&s.tags_failed)
        ));
        out.push_str(&format!(
            "  manifests     {copy} {} ({}), already here {}; referrers {copy} {}\n",
            get(&s.manifests_copied),
            human_size(get(&s.manifest_bytes_copied)),
            get(&s.manifests_present),
            get(&s.referrers_copied)
        ));
        out.push_str(&format!(
            "  blobs         {copy} {} ({}), already here {} ({}), linked from other repositories {}\n",
            get(&s.blobs_copied),
            human_size(get(&s.blob_bytes_copied)),
            get(&s.blobs_present),
            human_size(get(&s.blob_bytes_present)),
            get(&s.blobs_mounted)
        ));
        if !failures.is_empty() {
            out.push_str(&format!("{} failure{}:\n", failures.len(), if failures.len() == 1 { "" } else { "s" }));
            for f in &failures {
                out.push_str(&format!("  {}: {}\n", f.what, f.reason));
            }
        }
        out.push_str(&format!(
            "{copied} {} tags, {} manifests, {} blobs, {}; skipped {} tags up to date; {} failed\n",
            get(&s.tags_copied),
            get(&s.manifests_copied),
            get(&s.blobs_copied),
            human_size(get(&s.blob_bytes_copied) + get(&s.manifest_bytes_copied)),
            get(&s.tags_current),
            failures.len()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_figure_and_failure() {
        let r = Reporter::new(false, false);
        add(&r.stats.repositories, 2);
        add(&r.stats.tags_copied, 3);
        add(&r.stats.blob_bytes_copied, 2048);
        r.fail("acme/app:v1", "tag \"v1\" is immutable");
        let text = r.summary("https://git.example.com", "catalog");
        for needle in ["copied 3 tags", "2 KiB", "acme/app:v1: tag \"v1\" is immutable", "1 failed", "1 failure:"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let dry = Reporter::new(false, true).summary("x", "catalog");
        assert!(dry.contains("nothing was copied") && dry.contains("would copy 0 tags"), "{dry}");
    }
}
