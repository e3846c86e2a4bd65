//! The machine description and the Markdown and JSON reports.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::MIB;
use crate::cli::Params;
use crate::stats::median;
use crate::suite::Recorder;

#[derive(Debug, Clone)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub load_start: String,
    pub load_end: String,
    pub berth: String,
    pub berth_b: Option<String>,
    /// Extra environment and the `[quotas]` each Berth runs with.
    pub berth_settings: String,
    pub berth_b_settings: Option<String>,
    pub distribution: String,
    pub wall: Duration,
}

fn first_line(out: Option<std::process::Output>) -> Option<String> {
    let out = out?;
    let s = String::from_utf8_lossy(&out.stdout).lines().next()?.trim().to_owned();
    (!s.is_empty() && out.status.success()).then_some(s)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub fn probe(berth: &Path, berth_b: Option<&Path>, distribution: Option<&Path>) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let sha_ni = cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "sha_ni"));
        let memory_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let run = |cmd: &str, args: &[&str]| first_line(Command::new(cmd).args(args).output().ok());
        let berth_version = run(&berth.to_string_lossy(), &["--version"]).unwrap_or_else(|| "unknown version".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let git = run("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
        let dirty = run("git", &["-C", &root, "status", "--porcelain", "--untracked-files=no"]).is_some();
        Machine {
            date: run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            cpu: if sha_ni { format!("{cpu} (SHA-NI)") } else { cpu },
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default(),
            memory_gib,
            load_start: loadavg(),
            load_end: String::new(),
            berth: format!(
                "{} ({berth_version}{})",
                berth.display(),
                git.map(|g| format!(", git {g}{}", if dirty { " + local changes" } else { "" })).unwrap_or_default()
            ),
            berth_b: berth_b.map(|b| {
                format!("{} ({})", b.display(), run(&b.to_string_lossy(), &["--version"]).unwrap_or_default())
            }),
            berth_settings: String::new(),
            berth_b_settings: None,
            distribution: distribution.map_or_else(
                || "not run (--no-distribution)".to_owned(),
                |d| {
                    format!(
                        "{} ({})",
                        d.display(),
                        run(&d.to_string_lossy(), &["--version"]).unwrap_or_else(|| "unknown version".into())
                    )
                },
            ),
            wall: Duration::ZERO,
        }
    }

    pub fn finish(mut self, wall: Duration) -> Machine {
        self.load_end = loadavg();
        self.wall = wall;
        self
    }
}

#[derive(Debug, Clone, Copy)]
enum Goal {
    None,
    /// Berth / Distribution at least this.
    RatioAtLeast(f64),
    /// Berth / Distribution at most this.
    RatioAtMost(f64),
    /// Berth's value below this many milliseconds.
    BelowMs(f64),
    /// Berth's value at least this many percent.
    AtLeastPct(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::None => String::new(),
            Goal::RatioAtLeast(g) => format!("≥ {g}×"),
            Goal::RatioAtMost(g) => {
                format!("≤ {}", if (g - 1.0 / 3.0).abs() < 1e-9 { "1/3".to_owned() } else { format!("{g}×") })
            }
            Goal::BelowMs(ms) => format!("< {ms} ms"),
            Goal::AtLeastPct(pct) => format!("≥ {pct} %"),
        }
    }

    fn met(self, berth: f64, ratio: f64) -> Option<bool> {
        match self {
            Goal::None => None,
            // No ratio without Distribution (--no-distribution): no verdict.
            Goal::RatioAtLeast(g) => (!ratio.is_nan()).then_some(ratio >= g),
            Goal::RatioAtMost(g) => (!ratio.is_nan()).then_some(ratio <= g),
            Goal::BelowMs(ms) => Some(berth < ms),
            Goal::AtLeastPct(pct) => Some(berth >= pct),
        }
    }
}

struct Row {
    key: &'static str,
    label: String,
    unit: &'static str,
    higher_is_better: bool,
    goal: Goal,
}

fn rows(p: &Params) -> Vec<Row> {
    let blob = p.blob / MIB;
    let chunk = p.chunk / MIB;
    let c = p.concurrency;
    let row = |key, label: String, unit, higher_is_better, goal| Row { key, label, unit, higher_is_better, goal };
    vec![
        row(
            "push_mono_mbps",
            format!("Monolithic push, {blob} MiB (POST + PUT with body)"),
            "MB/s",
            true,
            Goal::RatioAtLeast(1.5),
        ),
        row(
            "push_chunked_mbps",
            format!("Chunked push, {blob} MiB in {chunk} MiB PATCHes"),
            "MB/s",
            true,
            Goal::RatioAtLeast(1.5),
        ),
        row("pull_mbps", format!("Blob pull, {blob} MiB (GET, streamed)"), "MB/s", true, Goal::RatioAtLeast(1.5)),
        row("manifest_rps", format!("Manifest GET by tag, {c} connections"), "req/s", true, Goal::RatioAtLeast(10.0)),
        row("manifest_p50_ms", "  manifest GET p50 latency".into(), "ms", false, Goal::None),
        row("manifest_p99_ms", "  manifest GET p99 latency".into(), "ms", false, Goal::BelowMs(5.0)),
        row(
            "manifest_ceiling_rps",
            "  ceiling: minimal hyper server, same answer (one value)".into(),
            "req/s",
            true,
            Goal::None,
        ),
        row(
            "manifest_ceiling_share_pct",
            "  manifest GET as a share of the ceiling".into(),
            "%",
            true,
            Goal::AtLeastPct(50.0),
        ),
        row("head_rps", format!("Blob HEAD, {c} connections"), "req/s", true, Goal::RatioAtLeast(10.0)),
        row("head_p50_ms", "  blob HEAD p50 latency".into(), "ms", false, Goal::None),
        row("head_p99_ms", "  blob HEAD p99 latency".into(), "ms", false, Goal::BelowMs(5.0)),
        row(
            "head_ceiling_rps",
            "  ceiling: minimal hyper server, same answer (one value)".into(),
            "req/s",
            true,
            Goal::None,
        ),
        row(
            "head_ceiling_share_pct",
            "  blob HEAD as a share of the ceiling".into(),
            "%",
            true,
            Goal::AtLeastPct(50.0),
        ),
        row(
            "small_blobs_per_s",
            format!(
                "{} small blobs ({}–{} KiB) one after another (POST + PUT)",
                p.small,
                p.small_min / 1024,
                p.small_max / 1024
            ),
            "blobs/s",
            true,
            Goal::RatioAtLeast(4.0),
        ),
        row("small_cpu_us", "  server CPU time per small blob (user + system, /proc)".into(), "µs", false, Goal::None),
        row(
            "manifest_put_rps",
            format!("Manifest PUT by tag, {} new manifests over {} connection(s)", p.manifest_puts, p.put_concurrency),
            "req/s",
            true,
            Goal::None,
        ),
        row("manifest_put_p50_ms", "  manifest PUT p50 latency".into(), "ms", false, Goal::None),
        row("manifest_put_p99_ms", "  manifest PUT p99 latency".into(), "ms", false, Goal::None),
        row(
            "manifest_put_cpu_us",
            "  server CPU time per manifest PUT (user + system, /proc)".into(),
            "µs",
            false,
            Goal::None,
        ),
        row("tags_list_ms", format!("Tag list of {} tags, median latency", p.tags), "ms", false, Goal::None),
        row("tags_list_rps", "  tag list, sequential req/s".into(), "req/s", true, Goal::None),
        row("rss_idle_mib", "RSS idle (VmRSS after start-up)".into(), "MiB", false, Goal::RatioAtMost(1.0 / 3.0)),
        row("rss_peak_mib", "RSS peak (VmHWM over the suite)".into(), "MiB", false, Goal::RatioAtMost(1.0 / 3.0)),
        row("rss_after_mib", "RSS idle after the load (VmRSS)".into(), "MiB", false, Goal::None),
        row(
            "anon_idle_mib",
            "  private memory idle (RssAnon after start-up)".into(),
            "MiB",
            false,
            Goal::RatioAtMost(1.0 / 3.0),
        ),
        row(
            "anon_peak_mib",
            "  private memory peak (RssAnon, sampled every 50 ms)".into(),
            "MiB",
            false,
            Goal::RatioAtMost(1.0 / 3.0),
        ),
        row(
            "anon_transfer_peak_mib",
            format!("  private memory peak during the {blob} MiB pushes and pull (RssAnon, sampled)"),
            "MiB",
            false,
            Goal::RatioAtMost(1.0 / 3.0),
        ),
        row("anon_after_mib", "  private memory idle after the load (RssAnon)".into(), "MiB", false, Goal::None),
    ]
}

fn fmt_value(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "–".into();
    }
    let digits = match unit {
        "ms" if v < 10.0 => 2,
        "ms" => 1,
        "MiB" => 1,
        _ if v >= 100.0 => 0,
        _ => 1,
    };
    format!("{v:.digits$} {unit}")
}

const DISTRIBUTION: &str = "Distribution";

fn suite_title(s: &str) -> &'static str {
    match s {
        "noauth" => "No auth",
        "auth" => "With auth (Basic credentials on every request)",
        _ => "Suite",
    }
}

pub fn render(m: &Machine, p: &Params, rec: &Recorder) -> (String, Value) {
    let mut md = String::new();
    let push = |md: &mut String, s: &str| {
        md.push_str(s);
        md.push('\n');
    };
    push(&mut md, "# Berth vs CNCF Distribution\n");
    push(&mut md, &format!("- date: {}; wall time {:.0} s", m.date, m.wall.as_secs_f64()));
    push(&mut md, &format!("- machine: {}, {} cores, {:.1} GiB RAM, Linux {}", m.cpu, m.cores, m.memory_gib, m.kernel));
    push(
        &mut md,
        &format!(
            "- load average at start: {}; at end: {} (a busy machine makes every number noisy)",
            m.load_start, m.load_end
        ),
    );
    push(&mut md, &format!("- Berth: {}; {}", m.berth, m.berth_settings));
    if let Some(b) = &m.berth_b {
        push(&mut md, &format!("- Berth B: {b}; {}", m.berth_b_settings.as_deref().unwrap_or_default()));
        push(
            &mut md,
            "- B / A: Berth B's median over Berth's (same credentials), in parentheses the median of the \
             per-round B / A ratios",
        );
    }
    push(&mut md, &format!("- Distribution: {}", m.distribution));
    push(
        &mut md,
        &format!(
            "- {} interleaved round(s){}; each value is the median over rounds; ratio = Berth / Distribution \
             of those medians (above 1 is better for rates, below 1 for latency and memory), in parentheses \
             the median of the per-round ratios (steadier when the load drifts); the goal column judges the \
             ratio of medians; MB = 10^6 bytes, MiB = 2^20 bytes",
            p.rounds,
            if p.quick { ", QUICK mode (tiny sizes: proves the tool works, the numbers mean little)" } else { "" }
        ),
    );
    let mut suites_json = serde_json::Map::new();
    for (suite, clients) in &rec.clients {
        let berths: Vec<&String> = clients.iter().filter(|c| c.as_str() != DISTRIBUTION).collect();
        push(&mut md, &format!("\n## {}\n", suite_title(suite)));
        let mut header = String::from("| metric |");
        let mut sep = String::from("|---|");
        for (i, b) in berths.iter().enumerate() {
            if i == 0 {
                header.push_str(&format!(" {b} | {DISTRIBUTION} | ratio (per-round) |"));
                sep.push_str("---:|---:|---:|");
            } else {
                header.push_str(&format!(" {b} | ratio (per-round) |"));
                sep.push_str("---:|---:|");
            }
            if a_of(b, &berths).is_some() {
                header.push_str(" B / A (per-round) |");
                sep.push_str("---:|");
            }
        }
        header.push_str(" goal |");
        sep.push_str("---|");
        push(&mut md, &header);
        push(&mut md, &sep);
        let mut metrics_json = serde_json::Map::new();
        for row in rows(p) {
            let values = |client: &str| rec.values.get(&(suite.clone(), row.key.to_owned(), client.to_owned()));
            if clients.iter().all(|c| values(c).is_none()) {
                continue;
            }
            let med = |client: &str| values(client).and_then(|v| median(v)).unwrap_or(f64::NAN);
            let dist = med(DISTRIBUTION);
            let mut line = format!("| {} |", row.label);
            let mut verdicts = Vec::new();
            let mut ratios = serde_json::Map::new();
            let mut paired = serde_json::Map::new();
            let mut to_a = serde_json::Map::new();
            let dist_rounds = values(DISTRIBUTION);
            for (i, b) in berths.iter().enumerate() {
                let v = med(b);
                let ratio = v / dist;
                // Per-round ratios: each round ran both servers back to back,
                // so their median is steadier than the ratio of medians when
                // the machine's load drifts during the run.
                let per_round = per_round_ratio(values(b), dist_rounds);
                if i == 0 {
                    line.push_str(&format!(" {} | {} |", fmt_value(v, row.unit), fmt_value(dist, row.unit)));
                } else {
                    line.push_str(&format!(" {} |", fmt_value(v, row.unit)));
                }
                let ratio_text = match (ratio.is_finite(), per_round) {
                    (false, _) => "–".to_owned(),
                    (true, Some(pr)) => format!("{ratio:.2}× ({pr:.2}×)"),
                    (true, None) => format!("{ratio:.2}×"),
                };
                line.push_str(&format!(" {ratio_text} |"));
                if let Some(a) = a_of(b, &berths) {
                    let ab = v / med(a);
                    let pr = per_round_ratio(values(b), values(a));
                    line.push_str(&match (ab.is_finite(), pr) {
                        (false, _) => " – |".to_owned(),
                        (true, Some(pr)) => format!(" {ab:.3} ({pr:.3}) |"),
                        (true, None) => format!(" {ab:.3} |"),
                    });
                    to_a.insert(
                        (*b).clone(),
                        json!({ "ratio": ab.is_finite().then_some(ab), "median_of_per_round_ratios": pr }),
                    );
                }
                if let Some(ok) = row.goal.met(v, ratio).filter(|_| !v.is_nan()) {
                    let who = if berths.len() > 1 { format!("{}: ", short(b)) } else { String::new() };
                    verdicts.push(format!("{who}{}", if ok { "met" } else { "**missed**" }));
                }
                ratios.insert((*b).clone(), json!(if ratio.is_finite() { Some(ratio) } else { None }));
                paired.insert((*b).clone(), json!(per_round));
            }
            let goal = row.goal.text();
            line.push_str(&format!(
                " {} |",
                if goal.is_empty() || verdicts.is_empty() {
                    goal.clone()
                } else {
                    format!("{goal} — {}", verdicts.join(", "))
                }
            ));
            push(&mut md, &line);
            let mut per_client = serde_json::Map::new();
            for c in clients {
                if let Some(v) = values(c) {
                    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    per_client.insert(c.clone(), json!({ "rounds": v, "median": median(v), "min": min, "max": max }));
                }
            }
            metrics_json.insert(
                row.key.to_owned(),
                json!({
                    "label": row.label.trim(),
                    "unit": row.unit,
                    "higher_is_better": row.higher_is_better,
                    "goal": row.goal.text(),
                    "clients": per_client,
                    "ratio_to_distribution": ratios,
                    "median_of_per_round_ratios": paired,
                    "b_over_a": to_a,
                }),
            );
        }
        suites_json.insert(suite.clone(), json!({ "clients": clients, "metrics": metrics_json }));
    }
    if !rec.errors.is_empty() {
        push(&mut md, "\n## Errors\n");
        for e in &rec.errors {
            push(&mut md, &format!("- {}", e.replace('\n', " ")));
        }
    }
    let json = json!({
        "machine": {
            "date": m.date, "cpu": m.cpu, "cores": m.cores, "kernel": m.kernel, "memory_gib": m.memory_gib,
            "load_start": m.load_start, "load_end": m.load_end, "berth": m.berth, "berth_b": m.berth_b,
            "berth_settings": m.berth_settings, "berth_b_settings": m.berth_b_settings,
            "distribution": m.distribution,
            "wall_seconds": m.wall.as_secs_f64(),
        },
        "parameters": {
            "quick": p.quick, "rounds": p.rounds, "blob_bytes": p.blob, "chunk_bytes": p.chunk,
            "small_blobs": p.small, "small_min_bytes": p.small_min, "small_max_bytes": p.small_max,
            "tags": p.tags, "tag_requests": p.tag_requests, "load_seconds": p.duration.as_secs_f64(),
            "concurrency": p.concurrency, "manifest_puts": p.manifest_puts,
            "put_concurrency": p.put_concurrency, "metrics": p.metrics,
        },
        "suites": suites_json,
        "errors": rec.errors,
    });
    (md, json)
}

/// Median of `x[i] / y[i]` over rounds (both measured in the same round).
fn per_round_ratio(x: Option<&Vec<f64>>, y: Option<&Vec<f64>>) -> Option<f64> {
    match (x, y) {
        (Some(x), Some(y)) if x.len() == y.len() && x.len() > 1 => {
            let r: Vec<f64> = x.iter().zip(y).map(|(a, b)| a / b).collect();
            median(&r).filter(|r| r.is_finite())
        }
        _ => None,
    }
}

/// For a Berth B column, the Berth (A) column with the same credentials.
fn a_of<'a>(label: &str, berths: &[&'a String]) -> Option<&'a String> {
    let rest = label.strip_prefix("Berth B")?;
    let a = format!("Berth{rest}");
    berths.iter().find(|b| b.as_str() == a).copied()
}

/// "Berth (PAT)" -> "PAT", "Berth B (PAT)" -> "B (PAT)", "Berth B" -> "B":
/// for verdicts in a row with several Berth columns.
fn short(label: &str) -> &str {
    let rest = label.strip_prefix("Berth ").unwrap_or(label);
    if rest.starts_with('(') { rest.trim_start_matches('(').trim_end_matches(')') } else { rest }
}
