//! `berth scrub`: checks every stored blob and manifest against its digest,
//! through the registry service (no HTTP), under the cluster-wide scrub
//! lease (a second scrub waits for the first).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use berth_config::{Config, Rate, human_size};
use berth_registry::maintenance::{LeaseHeld, SCRUB_LEASE};
use berth_registry::scrub::{Object, Problem, ScrubOptions, ScrubReport};
use clap::Args;

use crate::maintenance::open;

#[derive(Args)]
pub struct ScrubArgs {
    /// Only repositories matching this glob ('*' crosses '/'), e.g. 'acme/*'.
    #[arg(long, value_name = "GLOB")]
    pub repository: Option<String>,
    /// Read at most this many bytes per second, e.g. 100MB/s (default: no limit).
    #[arg(long, value_name = "RATE")]
    pub rate: Option<Rate>,
}

/// Scrub found problems (exit status 4).
#[derive(Debug)]
pub struct ProblemsFound;

pub async fn scrub(config: &Config, args: ScrubArgs) -> Result<Option<ProblemsFound>, String> {
    let maintenance = open(config).await?;
    let waiting = |held: &LeaseHeld| {
        eprintln!("berth: a scrub is already running (held by {}); waiting for it to finish", held.holder);
    };
    let lease = maintenance.lease(SCRUB_LEASE, waiting).await.map_err(|e| e.to_string())?;
    let options = ScrubOptions { repositories: args.repository, rate: args.rate.and_then(Rate::per_second) };
    let tty = std::io::stderr().is_terminal();
    let last_draw = std::sync::Mutex::new(Instant::now());
    let progress = |r: &ScrubReport| {
        let mut last = last_draw.lock().unwrap_or_else(|p| p.into_inner());
        if tty && last.elapsed().as_millis() >= 200 {
            *last = Instant::now();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2Kscrub: {}", progress_line(r));
            let _ = err.flush();
        }
    };
    let result = maintenance.scrub(&options, Some(&lease), &progress).await;
    if tty {
        eprint!("\r\x1b[2K");
    }
    let _ = lease.release(result.is_ok()).await;
    let report = result.map_err(|e| e.to_string())?;
    print!("{}", summary(&report, options.repositories.as_deref()));
    Ok((!report.problems.is_empty()).then_some(ProblemsFound))
}

fn progress_line(r: &ScrubReport) -> String {
    format!(
        "{} blobs ({}), {} manifests, {} problems",
        r.blobs.count,
        human_size(r.blobs.bytes),
        r.manifests.count,
        r.problems.len()
    )
}

/// The report for people: totals, then each problem with what reaches it.
pub fn summary(r: &ScrubReport, glob: Option<&str>) -> String {
    let secs = r.elapsed.as_secs_f64();
    let speed = if secs > 0.0 {
        format!(", {}/s", human_size((r.bytes_checked() as f64 / secs) as u64))
    } else {
        String::new()
    };
    let scope = glob.map_or_else(String::new, |g| format!(" matching {g:?}"));
    let mut out = format!(
        "scrub checked {} repositories{scope}: {} blobs ({}) and {} manifests in {secs:.1}s{speed}\n",
        r.repositories,
        r.blobs.count,
        human_size(r.blobs.bytes),
        r.manifests.count,
    );
    for digest in &r.repaired {
        out.push_str(&format!("repaired: {digest} was marked damaged and is whole again\n"));
    }
    if let Some(u) = r.unreferenced {
        out.push_str(&format!(
            "unreferenced objects: {} ({}), which garbage collection frees\n",
            u.count,
            human_size(u.bytes)
        ));
    }
    if r.problems.is_empty() {
        out.push_str("no problems found\n");
        return out;
    }
    out.push_str(&format!("{} problem{} found:\n", r.problems.len(), if r.problems.len() == 1 { "" } else { "s" }));
    for p in &r.problems {
        out.push_str(&describe(p));
    }
    out.push_str(
        "A damaged blob is refused to pulls from now on; pushing an image that contains it again repairs it.\n",
    );
    out
}

fn describe(p: &Problem) -> String {
    let what = match &p.object {
        Object::Blob => "blob".to_owned(),
        Object::Manifest { repository } => format!("manifest in {repository}"),
    };
    let mut out = format!("  {} ({what}): {}\n", p.digest, p.damage);
    if p.reach.is_empty() {
        out.push_str("    reached by nothing (garbage collection removes it)\n");
    }
    for (repository, reached) in &p.reach {
        let mut parts = Vec::new();
        if !reached.tags.is_empty() {
            parts.push(format!("tags {}", reached.tags.join(", ")));
        }
        if !reached.untagged.is_empty() {
            let digests: Vec<&str> = reached.untagged.iter().map(|d| d.as_str()).collect();
            parts.push(format!("untagged {}", digests.join(", ")));
        }
        if reached.linked_only && parts.is_empty() {
            parts.push("linked, no manifest references it".to_owned());
        }
        out.push_str(&format!("    {repository}: {}\n", parts.join("; ")));
    }
    if let Some(place) = &p.quarantined {
        out.push_str(&format!("    damaged bytes moved to {place}\n"));
    }
    out
}
