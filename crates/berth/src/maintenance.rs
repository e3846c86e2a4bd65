//! `berth gc` and `berth retention`: the maintenance jobs, run by hand on
//! the configured database and storage (safe while the server runs). They
//! use the registry service directly, not the HTTP API, and take the same
//! cluster-wide leases as the server's schedule: a second collector waits
//! for the first instead of running beside it. `berth retention add` and
//! `remove` change the stored rules, which every replica reads at its next
//! run.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use berth_config::Config;
use berth_registry::gc::{Freed, GcOptions, GcPhase, GcReport};
use berth_registry::maintenance::{GC_LEASE, LeaseHeld, RETENTION_LEASE};
use berth_registry::retention::{RetentionPolicy, RetentionRule, RuleSource};
use berth_registry::retention_rules::{RuleError, SourcedRule};
use berth_registry::{Maintenance, Registry};
use clap::{Args, Subcommand};

use crate::app::registry_policy;
use crate::backends::{open_blobs, open_meta};

#[derive(Args)]
pub struct GcArgs {
    /// Report what would be freed (counts and bytes per kind); delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Grace period: keep anything younger (default: `gc.min_age`). `0s` collects everything unreferenced.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_age: Option<Duration>,
    /// Exit at once (status 3) if another garbage collection is running, instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Apply the retention rules now: print each tag removed, per repository.
    Apply {
        /// Print the tags that would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the effective retention rules: the config file's (and BERTH_RETENTION_RULES), then the stored ones.
    List,
    /// Store a rule (tried after every existing one); prints its id alone on the last line.
    ///
    /// A rule must limit what it removes: --keep-last (at least 1),
    /// --remove-older-than or --remove-tag ('*' to allow every tag).
    Add(RetentionAdd),
    /// Remove a stored rule by id (config file rules are removed from the file).
    Remove { id: i64 },
}

#[derive(Args)]
pub struct RetentionAdd {
    /// Glob over repository names ('*' crosses '/'), e.g. 'acme/*'.
    #[arg(long, value_name = "GLOB")]
    pub repositories: String,
    /// Keep this many most recently pushed tags.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Always keep tags matching this glob (repeatable).
    #[arg(long = "keep-tag", value_name = "GLOB")]
    pub keep_tags: Vec<String>,
    /// Only tags last pushed longer ago than this may be removed, e.g. 30d.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub remove_older_than: Option<Duration>,
    /// Only tags matching this glob may be removed (repeatable).
    #[arg(long = "remove-tag", value_name = "GLOB")]
    pub remove_tags: Vec<String>,
}

/// Who `berth retention add` and `remove` record as the author.
const CLI_AUTHOR: &str = "cli";

/// The rules of `[[retention.rules]]`, validated.
pub fn retention_policy(config: &Config) -> Result<RetentionPolicy, String> {
    let rules = config
        .retention
        .rules
        .iter()
        .map(|r| RetentionRule {
            repositories: r.repositories.clone(),
            keep_last: r.keep_last,
            keep_tags: r.keep_tags.clone(),
            remove_older_than: r.remove_older_than,
            remove_tags: r.remove_tags.clone(),
        })
        .collect();
    RetentionPolicy::new(rules)
}

pub(crate) async fn open(config: &Config) -> Result<Maintenance, String> {
    let rules = retention_policy(config)?;
    let stores = open_meta(config, true).await.map_err(|e| e.to_string())?;
    let blobs = open_blobs(config).await.map_err(|e| e.to_string())?;
    let policy = registry_policy(config).map_err(|e| e.to_string())?;
    Ok(Maintenance::new(Registry::new(stores.meta, blobs, policy), stores.maintenance).with_config_rules(rules))
}

/// A process exit status other than success or failure.
#[derive(Debug)]
pub struct Busy;

pub async fn gc(config: &Config, args: GcArgs) -> Result<Option<Busy>, String> {
    let maintenance = open(config).await?;
    let options = GcOptions { min_age: args.min_age.unwrap_or(config.gc.min_age), dry_run: args.dry_run };
    // A dry run changes nothing and needs no lease.
    let lease = if args.dry_run {
        None
    } else if args.no_wait {
        match maintenance.try_lease(GC_LEASE).await.map_err(|e| e.to_string())? {
            Ok(lease) => Some(lease),
            Err(held) => {
                eprintln!("berth: garbage collection is already running ({}); not waiting", describe(&held));
                return Ok(Some(Busy));
            }
        }
    } else {
        let waiting = |held: &LeaseHeld| {
            eprintln!("berth: garbage collection is already running ({}); waiting for it to finish", describe(held));
        };
        Some(maintenance.lease(GC_LEASE, waiting).await.map_err(|e| e.to_string())?)
    };
    let display = ProgressLine::new(std::io::stdout().is_terminal());
    let progress = |phase: GcPhase, report: &GcReport| display.update(phase, report);
    let result = maintenance.collect_garbage(&options, lease.as_ref(), &progress).await;
    display.finish();
    if let Some(lease) = lease {
        let _ = lease.release(result.is_ok()).await;
    }
    let report = result.map_err(|e| e.to_string())?;
    print!("{}", summary(&report, options.min_age));
    Ok(None)
}

fn describe(held: &LeaseHeld) -> String {
    let left = held.expires_at.saturating_sub(berth_registry::now_ms()).max(0) / 1000;
    format!("by {}, lease renewed for another {left}s", held.holder)
}

/// One line per phase, rewritten in place (`\r`) as it advances; nothing
/// unless stdout is a terminal.
struct ProgressLine {
    tty: bool,
    phase: Mutex<Option<GcPhase>>,
}

impl ProgressLine {
    fn new(tty: bool) -> Self {
        ProgressLine { tty, phase: Mutex::new(None) }
    }

    fn update(&self, phase: GcPhase, r: &GcReport) {
        if !self.tty {
            return;
        }
        let mut current = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        if phase == GcPhase::Done {
            // End the last line before the run's log line and the summary.
            if current.take().is_some() {
                let _ = writeln!(out);
            }
            return;
        }
        if current.is_some_and(|c| c != phase) {
            let _ = writeln!(out);
        }
        *current = Some(phase);
        let detail = match phase {
            GcPhase::Resume => format!("{} half-deleted blobs", r.resumed.count),
            GcPhase::Repositories => {
                format!("{} repositories, {} manifests, {} links", r.repositories, r.manifests.count, r.links.count)
            }
            GcPhase::Blobs => format!("{} blobs, {}", r.blobs.count, bytes(r.blobs.bytes)),
            GcPhase::Orphans => format!("{} objects, {}", r.orphans.count, bytes(r.orphans.bytes)),
            GcPhase::Done => String::new(),
        };
        let _ = write!(out, "\r\x1b[2K{}: {detail}", phase.label());
        let _ = out.flush();
    }

    fn finish(&self) {
        if self.tty && self.phase.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            println!();
        }
    }
}

fn summary(r: &GcReport, min_age: Duration) -> String {
    let verb = if r.dry_run { "would free" } else { "freed" };
    let mut out = format!(
        "garbage collection {} in {:.1}s over {} repositories (grace period {}){}\n",
        if r.dry_run { "dry run finished" } else { "finished" },
        r.elapsed.as_secs_f64(),
        r.repositories,
        humantime::format_duration(min_age),
        if r.dry_run { ": nothing was deleted" } else { "" },
    );
    out.push_str(&format!("  {:<28} {:>10} {:>12}\n", "kind", "count", "bytes"));
    let row = |label: &str, f: Freed| format!("  {label:<28} {:>10} {:>12}\n", f.count, bytes(f.bytes));
    out.push_str(&row("untagged manifests", r.manifests));
    out.push_str(&row("repository links", r.links));
    out.push_str(&row("blobs", r.blobs));
    out.push_str(&row("orphan objects", r.orphans));
    out.push_str(&row("half-deleted blobs (resumed)", r.resumed));
    let storage = Freed { count: r.blobs_deleted(), bytes: r.bytes_freed() };
    out.push_str(&format!("  storage {verb}: {} objects, {}\n", storage.count, bytes(storage.bytes)));
    if r.errors > 0 {
        out.push_str(&format!("  {} storage deletions failed (see the log); the next run retries them\n", r.errors));
    }
    out
}

fn bytes(n: u64) -> String {
    berth_config::human_size(n)
}

fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub async fn retention(config: &Config, command: RetentionCommand) -> Result<(), String> {
    let maintenance = open(config).await?;
    match command {
        RetentionCommand::List => {
            let rules = maintenance.retention_rules().await.map_err(|e| e.to_string())?;
            print!("{}", list(config, &rules));
            Ok(())
        }
        RetentionCommand::Add(a) => {
            let rule = RetentionRule {
                repositories: a.repositories,
                keep_last: a.keep_last,
                keep_tags: a.keep_tags,
                remove_older_than: a.remove_older_than,
                remove_tags: a.remove_tags,
            };
            let stored = maintenance.add_retention_rule(rule, CLI_AUTHOR).await.map_err(|e| match e {
                RuleError::Invalid(m) => format!("rule refused: {m}"),
                RuleError::Registry(e) => e.to_string(),
            })?;
            let RuleSource::Stored { id, .. } = &stored.source else { return Err("no id for the stored rule".into()) };
            print!("added {}, tried after every earlier rule:\n{}", stored.source, describe_rule(&stored.rule));
            println!("it applies from the next run; `berth retention apply --dry-run` shows what it would remove");
            println!("{id}");
            Ok(())
        }
        RetentionCommand::Remove { id } => {
            if !maintenance.remove_retention_rule(id, CLI_AUTHOR).await.map_err(|e| e.to_string())? {
                return Err(format!(
                    "no stored retention rule {id} (`berth retention list` shows them; config file rules are removed from the file)"
                ));
            }
            println!("removed stored rule {id}");
            Ok(())
        }
        RetentionCommand::Apply { dry_run } => {
            // The rules as they are now: the config file's, then the stored ones.
            let policy = maintenance.retention_policy().await.map_err(|e| e.to_string())?;
            if policy.is_empty() {
                println!("no retention rules are configured: nothing to do");
                return Ok(());
            }
            let lease = if dry_run {
                None
            } else {
                let waiting = |held: &LeaseHeld| {
                    eprintln!("berth: retention is already running ({}); waiting for it to finish", describe(held));
                };
                Some(maintenance.lease(RETENTION_LEASE, waiting).await.map_err(|e| e.to_string())?)
            };
            let result = maintenance.apply_retention(&policy, dry_run, lease.as_ref()).await;
            if let Some(lease) = lease {
                let _ = lease.release(result.is_ok()).await;
            }
            let report = result.map_err(|e| e.to_string())?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for repo in &report.repositories {
                println!(
                    "{} ({}): {verb} {}, kept {}{}",
                    repo.repository,
                    repo.source,
                    repo.removed.len(),
                    repo.kept,
                    if repo.immutable.is_empty() {
                        String::new()
                    } else {
                        format!(", {} immutable (skipped): {}", repo.immutable.len(), repo.immutable.join(", "))
                    },
                );
                for t in &repo.removed {
                    println!("  {verb} {}:{}  {}  pushed {}", repo.repository, t.tag, t.digest, time(t.updated_at));
                }
            }
            println!(
                "retention {}: {verb} {} tags in {} repositories, kept {}, {} immutable skipped",
                if dry_run { "dry run" } else { "finished" },
                report.removed(),
                report.repositories.len(),
                report.kept(),
                report.immutable()
            );
            Ok(())
        }
    }
}

/// A rule's settings, one indented line each.
fn describe_rule(r: &RetentionRule) -> String {
    let mut out = format!("   repositories = {:?}\n", r.repositories);
    if let Some(n) = r.keep_last {
        out.push_str(&format!("   keep_last = {n}\n"));
    }
    if !r.keep_tags.is_empty() {
        out.push_str(&format!("   keep_tags = {:?}\n", r.keep_tags));
    }
    if let Some(age) = r.remove_older_than {
        out.push_str(&format!("   remove_older_than = {:?}\n", humantime::format_duration(age).to_string()));
    }
    if !r.remove_tags.is_empty() {
        out.push_str(&format!("   remove_tags = {:?}\n", r.remove_tags));
    }
    out
}

fn list(config: &Config, rules: &[SourcedRule]) -> String {
    let interval = config.retention.interval;
    let schedule = if interval.is_zero() {
        "the server does not apply them on a schedule (retention.interval = 0s)".to_owned()
    } else {
        format!("the server applies them every {}", humantime::format_duration(interval))
    };
    if rules.is_empty() {
        return format!(
            "no retention rules are configured ([[retention.rules]] in the config file, BERTH_RETENTION_RULES, \
             or `berth retention add`)\n{schedule}\n"
        );
    }
    let mut out = format!(
        "retention rules, in the order they are tried (the first whose repositories match governs); {schedule}\n"
    );
    for r in rules {
        let origin = match &r.source {
            RuleSource::Config { .. } => "config file, read-only here".to_owned(),
            RuleSource::Stored { id, created_at, created_by } => {
                format!("added by {created_by} at {}; `berth retention remove {id}`", time(*created_at))
            }
        };
        out.push_str(&format!("{} ({origin}):\n{}", r.source, describe_rule(&r.rule)));
    }
    out.push_str("always kept: \"latest\", immutable tags, tags of manifests an index references, and cosign signatures/attestations of tagged images\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5 GiB");
    }

    #[test]
    fn summary_names_every_kind() {
        let report = GcReport { dry_run: true, blobs: Freed { count: 2, bytes: 2048 }, ..GcReport::default() };
        let text = summary(&report, Duration::from_secs(3600));
        for needle in ["would free", "untagged manifests", "repository links", "orphan objects", "2 KiB", "1h"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
