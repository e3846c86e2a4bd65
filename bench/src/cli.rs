//! Command-line flags and the run's parameters (`--quick` defaults applied).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::MIB;
use crate::client::Result;

/// Benchmark Berth against CNCF Distribution on loopback.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Berth binary (build it with `cargo build --release -p berth`).
    #[arg(long, env = "BERTH_BIN")]
    pub berth: Option<PathBuf>,
    /// A second Berth binary (say, another build profile) measured beside the
    /// first in the same interleaved rounds, with the same settings: its
    /// columns are labelled "Berth B".
    #[arg(long, env = "BERTH_B_BIN")]
    pub berth_b: Option<PathBuf>,
    /// Extra environment for Berth (A), `KEY=VALUE`, repeatable; applied
    /// after the bench's own settings, so it can override them.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub berth_env: Vec<(String, String)>,
    /// Extra environment for Berth B, `KEY=VALUE`, repeatable: say
    /// `--berth-b-env BERTH_QUOTAS_OWNER_BYTES=1TiB` to measure the same
    /// binary with and without a quota (`--berth-b` defaults to `--berth`
    /// when this is given).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub berth_b_env: Vec<(String, String)>,
    /// Distribution binary (Debian: `apt-get install docker-registry`).
    #[arg(long, env = "DISTRIBUTION_BIN", default_value = "/usr/bin/docker-registry")]
    pub distribution: PathBuf,
    /// Leave Distribution out: Berth against Berth B only (say, to measure a
    /// setting with `--berth-b-env`), in about half the time. The columns
    /// that compare with Distribution show "–".
    #[arg(long)]
    pub no_distribution: bool,
    /// htpasswd (apache2-utils), for Distribution's bcrypt password file.
    #[arg(long, env = "HTPASSWD_BIN", default_value = "htpasswd")]
    pub htpasswd: PathBuf,
    /// Tiny sizes and few rounds: proves the tool works in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Interleaved rounds (medians are taken over them). Full: 5, quick: 2.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Size of the large blob in MiB (pushes and pull). Full: 256, quick: 8.
    #[arg(long)]
    pub blob_mib: Option<u64>,
    /// Chunk size of the chunked push in MiB. Full: 16, quick: 2.
    #[arg(long)]
    pub chunk_mib: Option<u64>,
    /// Small blobs pushed one after another per round. Full: 500, quick: 20.
    #[arg(long)]
    pub small_blobs: Option<usize>,
    /// Smallest and largest small blob in KiB.
    #[arg(long, default_value_t = 4)]
    pub small_min_kib: usize,
    #[arg(long, default_value_t = 16)]
    pub small_max_kib: usize,
    /// Tags created for the tag-list metric. Full: 1000, quick: 20.
    #[arg(long)]
    pub tags: Option<usize>,
    /// Sequential tag-list requests per round. Full: 50, quick: 5.
    #[arg(long)]
    pub tag_requests: Option<usize>,
    /// Seconds each req/s measurement runs. Full: 5, quick: 0.3.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Concurrent connections for the manifest GET and blob HEAD loads.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Distinct manifests PUT by tag per round (manifest_put). Full: 500, quick: 20.
    #[arg(long)]
    pub manifest_puts: Option<usize>,
    /// Connections sharing the manifest PUTs (1: strictly sequential).
    #[arg(long, default_value_t = 4)]
    pub put_concurrency: usize,
    /// Suites to run: `noauth`, `auth`.
    #[arg(long, value_delimiter = ',', default_value = "noauth,auth")]
    pub suites: Vec<String>,
    /// Only these metrics (comma-separated): push_mono, push_chunked, pull,
    /// manifest, head, small, manifest_put, tags. Default: all. Memory is
    /// always reported.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// In the auth suite, measure Berth with the user's password as well as
    /// with a personal access token.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub berth_password: bool,
    /// Directory for the servers' data (default: a new directory under $TMPDIR).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the servers' data and logs after the run.
    #[arg(long)]
    pub keep: bool,
    /// Markdown report path; the raw numbers go to the same path with `.json`.
    /// Default: <workspace>/target/bench/report.md (quick: report-quick.md).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Internal: run as the ceiling server with the answers in FILE (the
    /// bench starts itself this way; see `ceiling.rs`).
    #[arg(long, hide = true, value_name = "FILE")]
    pub serve_ceiling: Option<PathBuf>,
}

pub const METRICS: [&str; 8] =
    ["push_mono", "push_chunked", "pull", "manifest", "head", "small", "manifest_put", "tags"];

/// `KEY=VALUE` of `--berth-env` and `--berth-b-env`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The run's parameters after applying `--quick` defaults.
#[derive(Debug, Clone)]
pub struct Params {
    pub quick: bool,
    pub rounds: usize,
    pub blob: u64,
    pub chunk: u64,
    pub small: usize,
    pub small_min: usize,
    pub small_max: usize,
    pub tags: usize,
    pub tag_requests: usize,
    pub duration: Duration,
    pub concurrency: usize,
    pub manifest_puts: usize,
    pub put_concurrency: usize,
    pub metrics: Vec<String>,
}

impl Params {
    pub fn from_cli(c: &Cli) -> Result<Self> {
        let q = c.quick;
        let metrics =
            if c.metrics.is_empty() { METRICS.iter().map(|s| s.to_string()).collect() } else { c.metrics.clone() };
        if let Some(bad) = metrics.iter().find(|m| !METRICS.contains(&m.as_str())) {
            return Err(format!("unknown metric {bad:?}; known: {}", METRICS.join(", ")).into());
        }
        let p = Params {
            quick: q,
            rounds: c.rounds.unwrap_or(if q { 2 } else { 5 }),
            blob: c.blob_mib.unwrap_or(if q { 8 } else { 256 }) * MIB,
            chunk: c.chunk_mib.unwrap_or(if q { 2 } else { 16 }) * MIB,
            small: c.small_blobs.unwrap_or(if q { 20 } else { 500 }),
            small_min: c.small_min_kib * 1024,
            small_max: c.small_max_kib * 1024,
            tags: c.tags.unwrap_or(if q { 20 } else { 1000 }),
            tag_requests: c.tag_requests.unwrap_or(if q { 5 } else { 50 }),
            duration: Duration::from_secs_f64(c.duration.unwrap_or(if q { 0.3 } else { 5.0 })),
            concurrency: c.concurrency.max(1),
            manifest_puts: c.manifest_puts.unwrap_or(if q { 20 } else { 500 }),
            put_concurrency: c.put_concurrency.max(1),
            metrics,
        };
        if p.rounds == 0
            || p.blob == 0
            || p.chunk == 0
            || p.small_min == 0
            || p.small_min > p.small_max
            || p.manifest_puts == 0
        {
            return Err("rounds, sizes and counts must be positive (and small-min-kib <= small-max-kib)".into());
        }
        Ok(p)
    }

    pub fn on(&self, metric: &str) -> bool {
        self.metrics.iter().any(|m| m == metric)
    }
}
