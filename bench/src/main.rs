//! berth-bench: runs Berth and CNCF Distribution (`docker-registry`) side by
//! side on loopback with equivalent settings, measures both interleaved
//! (every round runs each metric on each server back to back, alternating
//! who goes first), and reports medians and the ratio Berth / Distribution.
//!
//! See `bench/README.md` for what each number means.

mod client;
mod report;
mod servers;
mod stats;
mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use http::{Method, StatusCode};

use crate::client::{Endpoint, Result};
use crate::servers::Server;
use crate::workloads::{BigBlobSource, Blob, MANIFEST_ACCEPT};

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

/// Benchmark Berth against CNCF Distribution on loopback.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Berth binary (build it with `cargo build --release -p berth`).
    #[arg(long, env = "BERTH_BIN")]
    berth: Option<PathBuf>,
    /// Distribution binary (Debian: `apt-get install docker-registry`).
    #[arg(long, env = "DISTRIBUTION_BIN", default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// htpasswd (apache2-utils), for Distribution's bcrypt password file.
    #[arg(long, env = "HTPASSWD_BIN", default_value = "htpasswd")]
    htpasswd: PathBuf,
    /// Tiny sizes and few rounds: proves the tool works in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Interleaved rounds (medians are taken over them). Full: 5, quick: 2.
    #[arg(long)]
    rounds: Option<usize>,
    /// Size of the large blob in MiB (pushes and pull). Full: 256, quick: 8.
    #[arg(long)]
    blob_mib: Option<u64>,
    /// Chunk size of the chunked push in MiB. Full: 16, quick: 2.
    #[arg(long)]
    chunk_mib: Option<u64>,
    /// Small blobs pushed one after another per round. Full: 500, quick: 20.
    #[arg(long)]
    small_blobs: Option<usize>,
    /// Smallest and largest small blob in KiB.
    #[arg(long, default_value_t = 4)]
    small_min_kib: usize,
    #[arg(long, default_value_t = 16)]
    small_max_kib: usize,
    /// Tags created for the tag-list metric. Full: 1000, quick: 20.
    #[arg(long)]
    tags: Option<usize>,
    /// Sequential tag-list requests per round. Full: 50, quick: 5.
    #[arg(long)]
    tag_requests: Option<usize>,
    /// Seconds each req/s measurement runs. Full: 5, quick: 0.3.
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent connections for the manifest GET and blob HEAD loads.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Suites to run: `noauth`, `auth`.
    #[arg(long, value_delimiter = ',', default_value = "noauth,auth")]
    suites: Vec<String>,
    /// Only these metrics (comma-separated): push_mono, push_chunked, pull,
    /// manifest, head, small, tags. Default: all. Memory is always reported.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// In the auth suite, measure Berth with the user's password as well as
    /// with a personal access token.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    berth_password: bool,
    /// Directory for the servers' data (default: a new directory under $TMPDIR).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Keep the servers' data and logs after the run.
    #[arg(long)]
    keep: bool,
    /// Markdown report path; the raw numbers go to the same path with `.json`.
    /// Default: <workspace>/target/bench/report.md (quick: report-quick.md).
    #[arg(long)]
    output: Option<PathBuf>,
}

pub const METRICS: [&str; 7] = ["push_mono", "push_chunked", "pull", "manifest", "head", "small", "tags"];

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
    pub metrics: Vec<String>,
}

impl Params {
    fn from_cli(c: &Cli) -> Result<Self> {
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
            metrics,
        };
        if p.rounds == 0 || p.blob == 0 || p.chunk == 0 || p.small_min == 0 || p.small_min > p.small_max {
            return Err("rounds, sizes and counts must be positive (and small-min-kib <= small-max-kib)".into());
        }
        Ok(p)
    }

    fn on(&self, metric: &str) -> bool {
        self.metrics.iter().any(|m| m == metric)
    }
}

/// Every number measured: (suite, metric key, client label) -> one value per round.
#[derive(Debug, Default)]
pub struct Recorder {
    pub values: BTreeMap<(String, String, String), Vec<f64>>,
    /// Client labels per suite (suites in run order), Berth's first, in column order.
    pub clients: Vec<(String, Vec<String>)>,
    pub errors: Vec<String>,
}

impl Recorder {
    fn add(&mut self, suite: &str, key: &str, client: &str, v: f64) {
        self.values.entry((suite.to_owned(), key.to_owned(), client.to_owned())).or_default().push(v);
    }

    fn error(&mut self, what: String) {
        eprintln!("  ERROR {what}");
        self.errors.push(what);
    }
}

/// A client: a label, the server it talks to, and how.
struct ClientRef {
    label: String,
    server: usize,
    ep: Endpoint,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Flushes dirty pages (untimed) so one server's writeback does not land in
/// the other's measurement, then lets the machine settle briefly.
async fn settle() {
    let _ = tokio::task::spawn_blocking(|| Command::new("sync").status()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Samples the servers' RssAnon in the background and keeps the maximum.
struct AnonSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl AnonSampler {
    fn start(pids: Vec<u32>) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Some(m) = servers::memory_of(*pid) {
                        *peak = (*peak).max(m.anon);
                    }
                }
                tokio::select! {
                    _ = stopped.changed() => return peaks,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        AnonSampler { stop, task }
    }

    async fn stop(self) -> Vec<u64> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Runs one suite (both servers, every client, every round).
async fn run_suite(
    suite: &str,
    cli: &Cli,
    berth_bin: &Path,
    p: &Params,
    big: &BigBlobSource,
    workdir: &Path,
    rec: &mut Recorder,
) -> Result<()> {
    let auth = suite == "auth";
    eprintln!("== suite {suite}: starting servers");
    let berth = servers::start_berth(berth_bin, &workdir.join(format!("{suite}-berth")), auth).await?;
    let dist = servers::start_distribution(
        &cli.distribution,
        &cli.htpasswd,
        &workdir.join(format!("{suite}-distribution")),
        auth,
    )
    .await?;
    eprintln!("   Berth pid {} on {}, Distribution pid {} on {}", berth.pid(), berth.addr, dist.pid(), dist.addr);
    let servers: Vec<Server> = vec![berth, dist];

    let mut clients = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        for (label, ep) in &s.clients {
            if label == "Berth (password)" && !cli.berth_password {
                continue;
            }
            clients.push(ClientRef { label: label.clone(), server: i, ep: ep.clone() });
        }
    }
    rec.clients.push((suite.to_owned(), clients.iter().map(|c| c.label.clone()).collect()));
    let labels_of = |server: usize| -> Vec<String> {
        clients.iter().filter(|c| c.server == server).map(|c| c.label.clone()).collect()
    };

    // Idle memory: after start-up, before any request but the readiness probe.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, s) in servers.iter().enumerate() {
        if let Some(m) = s.memory() {
            for l in labels_of(i) {
                rec.add(suite, "rss_idle_mib", &l, mib(m.rss));
                rec.add(suite, "anon_idle_mib", &l, mib(m.anon));
            }
        }
    }
    // Peak private memory has no /proc counter: sample it every 50 ms.
    let sampler = AnonSampler::start(servers.iter().map(Server::pid).collect());

    // Fixtures: an image (config + 3 layers) tagged `latest` in bench/app,
    // and the same manifest under `tags` tags in bench/tags.
    let config = workloads::image_config(3);
    let layers = workloads::small_blobs("layers", 3, 8 * 1024, 8 * 1024, 42);
    let manifest = workloads::image_manifest(&config, &layers);
    let mut fixtures: Vec<Blob> = vec![config];
    fixtures.extend(layers.iter().cloned());
    let tag_names: Vec<String> = (0..p.tags).map(|i| format!("t{i:05}")).collect();
    for (i, s) in servers.iter().enumerate() {
        let ep = &clients.iter().find(|c| c.server == i).expect("each server has a client").ep;
        let t0 = std::time::Instant::now();
        workloads::push_image(ep, "bench/app", &fixtures, &manifest, &["latest".to_owned()], 1).await?;
        if p.on("tags") {
            workloads::push_image(ep, "bench/tags", &fixtures, &manifest, &tag_names, 4).await?;
        }
        eprintln!("   {} fixtures pushed in {:.1} s", s.kind.name(), t0.elapsed().as_secs_f64());
    }
    let manifest_path = "/v2/bench/app/manifests/latest".to_owned();
    let head_path = format!("/v2/bench/app/blobs/{}", layers[0].digest);

    // Warm-up (not recorded): connections, caches, lazy initialisation.
    for c in &clients {
        let d = Duration::from_millis(300);
        let conc = p.concurrency.min(8);
        if p.on("manifest") {
            workloads::load(&c.ep, Method::GET, &manifest_path, Some(MANIFEST_ACCEPT), StatusCode::OK, conc, d).await?;
        }
        if p.on("head") {
            workloads::load(&c.ep, Method::HEAD, &head_path, None, StatusCode::OK, conc, d).await?;
        }
        if p.on("small") || p.on("push_mono") || p.on("push_chunked") {
            let warm = workloads::small_blobs(&format!("{suite}/warm/{}", c.label), 5, 4096, 4096, 3);
            workloads::push_many(&c.ep, "bench/small", &warm).await?;
        }
    }

    for round in 0..p.rounds {
        // Rotate who goes first so no client always follows the same one.
        let mut order: Vec<&ClientRef> = clients.iter().collect();
        order.rotate_left(round % clients.len());
        let tag = |c: &ClientRef| format!("[{suite} {}/{}] {:<17}", round + 1, p.rounds, c.label);
        let mut pushed: BTreeMap<String, Blob> = BTreeMap::new();

        if p.on("push_mono") {
            for c in &order {
                let blob = big.variant(&format!("{suite}/{round}/{}/mono", c.label));
                settle().await;
                match workloads::push_monolithic(&c.ep, "bench/big", &blob).await {
                    Ok(d) => {
                        let v = blob.len as f64 / MB / d.as_secs_f64();
                        eprintln!("  {} push_mono     {v:>9.1} MB/s", tag(c));
                        rec.add(suite, "push_mono_mbps", &c.label, v);
                        pushed.insert(c.label.clone(), blob);
                    }
                    Err(e) => rec.error(format!("{suite} round {round} {} push_mono: {e}", c.label)),
                }
            }
        }
        if p.on("push_chunked") {
            for c in &order {
                let blob = big.variant(&format!("{suite}/{round}/{}/chunked", c.label));
                settle().await;
                match workloads::push_chunked(&c.ep, "bench/big", &blob, p.chunk).await {
                    Ok(d) => {
                        let v = blob.len as f64 / MB / d.as_secs_f64();
                        eprintln!("  {} push_chunked  {v:>9.1} MB/s", tag(c));
                        rec.add(suite, "push_chunked_mbps", &c.label, v);
                        pushed.entry(c.label.clone()).or_insert(blob);
                    }
                    Err(e) => rec.error(format!("{suite} round {round} {} push_chunked: {e}", c.label)),
                }
            }
        }
        if p.on("pull") {
            for c in &order {
                let blob = match pushed.get(&c.label) {
                    Some(b) => b.clone(),
                    None => {
                        let b = big.variant(&format!("{suite}/{round}/{}/pull", c.label));
                        if let Err(e) = workloads::push_monolithic(&c.ep, "bench/big", &b).await {
                            rec.error(format!("{suite} round {round} {} push for pull: {e}", c.label));
                            continue;
                        }
                        b
                    }
                };
                settle().await;
                match workloads::pull(&c.ep, "bench/big", &blob).await {
                    Ok(d) => {
                        let v = blob.len as f64 / MB / d.as_secs_f64();
                        eprintln!("  {} pull          {v:>9.1} MB/s", tag(c));
                        rec.add(suite, "pull_mbps", &c.label, v);
                    }
                    Err(e) => rec.error(format!("{suite} round {round} {} pull: {e}", c.label)),
                }
            }
        }
        for (metric, method, path, accept) in
            [("manifest", Method::GET, &manifest_path, Some(MANIFEST_ACCEPT)), ("head", Method::HEAD, &head_path, None)]
        {
            if !p.on(metric) {
                continue;
            }
            for c in &order {
                match workloads::load(&c.ep, method.clone(), path, accept, StatusCode::OK, p.concurrency, p.duration)
                    .await
                {
                    Ok(r) => {
                        eprintln!(
                            "  {} {metric:<13} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms{}",
                            tag(c),
                            r.rps(),
                            r.p50_ms,
                            r.p99_ms,
                            if r.errors > 0 { format!("  ({} errors)", r.errors) } else { String::new() }
                        );
                        rec.add(suite, &format!("{metric}_rps"), &c.label, r.rps());
                        rec.add(suite, &format!("{metric}_p50_ms"), &c.label, r.p50_ms);
                        rec.add(suite, &format!("{metric}_p99_ms"), &c.label, r.p99_ms);
                        if r.errors > 0 {
                            rec.error(format!(
                                "{suite} round {round} {} {metric}: {} failed requests, first: {}",
                                c.label,
                                r.errors,
                                r.first_error.unwrap_or_default()
                            ));
                        }
                    }
                    Err(e) => rec.error(format!("{suite} round {round} {} {metric}: {e}", c.label)),
                }
            }
        }
        if p.on("small") {
            for c in &order {
                let blobs = workloads::small_blobs(
                    &format!("{suite}/{round}/{}", c.label),
                    p.small,
                    p.small_min,
                    p.small_max,
                    round as u64,
                );
                settle().await;
                match workloads::push_many(&c.ep, "bench/small", &blobs).await {
                    Ok(d) => {
                        let v = blobs.len() as f64 / d.as_secs_f64();
                        eprintln!("  {} small         {v:>9.1} blobs/s", tag(c));
                        rec.add(suite, "small_blobs_per_s", &c.label, v);
                    }
                    Err(e) => rec.error(format!("{suite} round {round} {} small blobs: {e}", c.label)),
                }
            }
        }
        if p.on("tags") {
            for c in &order {
                match workloads::list_tags(&c.ep, "bench/tags", p.tag_requests).await {
                    Ok((lat, n)) => {
                        let med = stats::median(&lat).unwrap_or(f64::NAN);
                        eprintln!("  {} tags          {med:>9.2} ms median ({n} tags)", tag(c));
                        if n != p.tags {
                            rec.error(format!(
                                "{suite} round {round} {} tags/list: {n} tags, expected {}",
                                c.label, p.tags
                            ));
                        }
                        rec.add(suite, "tags_list_ms", &c.label, med);
                        rec.add(suite, "tags_list_rps", &c.label, 1000.0 / med);
                    }
                    Err(e) => rec.error(format!("{suite} round {round} {} tags/list: {e}", c.label)),
                }
            }
        }
    }

    // Memory after the load, once the servers had a moment to go idle, and the peak.
    tokio::time::sleep(Duration::from_secs(if p.quick { 1 } else { 3 })).await;
    let anon_peaks = sampler.stop().await;
    for (i, s) in servers.iter().enumerate() {
        match s.memory() {
            Some(m) => {
                for l in labels_of(i) {
                    rec.add(suite, "rss_peak_mib", &l, mib(m.hwm));
                    rec.add(suite, "anon_peak_mib", &l, mib(anon_peaks[i].max(m.anon)));
                    rec.add(suite, "rss_after_mib", &l, mib(m.rss));
                    rec.add(suite, "anon_after_mib", &l, mib(m.anon));
                }
            }
            None => rec.error(format!("{suite}: {} exited during the run (see {})", s.kind.name(), s.dir.display())),
        }
    }
    for s in servers {
        let dir = s.dir.clone();
        let kind = s.kind;
        s.stop();
        if !cli.keep {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("   could not remove {}: {e}", dir.display());
            }
        } else {
            eprintln!("   {} data and log kept in {}", kind.name(), dir.display());
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let p = Params::from_cli(&cli)?;
    for s in &cli.suites {
        if s != "noauth" && s != "auth" {
            return Err(format!("unknown suite {s:?}; known: noauth, auth").into());
        }
    }
    let berth_bin = cli.berth.clone().unwrap_or_else(|| workspace_root().join("target/release/berth"));
    if !berth_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p berth` or pass --berth",
            berth_bin.display()
        )
        .into());
    }
    if !cli.distribution.exists() {
        return Err(format!(
            "{} not found: `apt-get install -y docker-registry` or pass --distribution",
            cli.distribution.display()
        )
        .into());
    }
    let own_workdir = cli.workdir.is_none();
    let workdir =
        cli.workdir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("berth-bench-{}", std::process::id())));
    std::fs::create_dir_all(&workdir)?;
    let output = cli.output.clone().unwrap_or_else(|| {
        workspace_root().join("target/bench").join(if p.quick { "report-quick.md" } else { "report.md" })
    });

    let machine = report::Machine::probe(&berth_bin, &cli.distribution);
    eprintln!(
        "machine: {} ({} cores), kernel {}, load {}",
        machine.cpu, machine.cores, machine.kernel, machine.load_start
    );
    eprintln!("generating the {} MiB blob", p.blob / MIB);
    let big = tokio::task::spawn_blocking({
        let size = p.blob as usize;
        move || BigBlobSource::new(size, 0xB1B)
    })
    .await?;

    let started = std::time::Instant::now();
    let mut rec = Recorder::default();
    for suite in &cli.suites {
        if let Err(e) = run_suite(suite, &cli, &berth_bin, &p, &big, &workdir, &mut rec).await {
            rec.error(format!("suite {suite} aborted: {e}"));
        }
    }
    if own_workdir && !cli.keep {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    let machine = machine.finish(started.elapsed());
    let (markdown, json) = report::render(&machine, &p, &rec);
    println!("{markdown}");
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&output, &markdown)?;
    let json_path = output.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    eprintln!("report: {}\nraw numbers: {}", output.display(), json_path.display());
    if !rec.errors.is_empty() {
        return Err(format!("{} measurement(s) failed (listed in the report)", rec.errors.len()).into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
