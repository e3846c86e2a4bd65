//! berth-bench: runs Berth and CNCF Distribution (`docker-registry`) side by
//! side on loopback with equivalent settings, measures both interleaved
//! (every round runs each metric on each server back to back, alternating
//! who goes first), and reports medians and the ratio Berth / Distribution,
//! plus manifest GET and blob HEAD as a share of a minimal hyper server's.
//!
//! See `bench/README.md` for what each number means. Modules: `cli` (flags),
//! `servers` (starting the registries), `ceiling` (the minimal server),
//! `suite` (one suite's set-up and memory), `rounds` (one interleaved round),
//! `workloads` and `client` (the requests), `memory` (RssAnon sampling),
//! `stats`, `report`.

mod ceiling;
mod cli;
mod client;
mod memory;
mod report;
mod rounds;
mod servers;
mod stats;
mod suite;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Params};
use crate::client::Result;
use crate::servers::BerthSpec;
use crate::suite::Recorder;
use crate::workloads::BigBlobSource;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

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

async fn run(mut cli: Cli) -> Result<()> {
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
    // Extra environment for B alone means: the same binary, other settings.
    if cli.berth_b.is_none() && !cli.berth_b_env.is_empty() {
        cli.berth_b = Some(berth_bin.clone());
    }
    if let Some(b) = cli.berth_b.as_ref().filter(|b| !b.exists()) {
        return Err(format!("--berth-b {} not found", b.display()).into());
    }
    if !cli.no_distribution && !cli.distribution.exists() {
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

    let distribution = (!cli.no_distribution).then_some(cli.distribution.as_path());
    let mut machine = report::Machine::probe(&berth_bin, cli.berth_b.as_deref(), distribution);
    eprintln!(
        "machine: {} ({} cores), kernel {}, load {}",
        machine.cpu, machine.cores, machine.kernel, machine.load_start
    );
    let settings = |spec: BerthSpec<'_>| {
        let env = if spec.env.is_empty() {
            "none".to_owned()
        } else {
            spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        };
        format!("extra env: {env}; [quotas] as it reads them: {}", servers::berth_quotas(spec, &workdir, false))
    };
    machine.berth_settings = settings(BerthSpec { bin: &berth_bin, env: &cli.berth_env });
    eprintln!("Berth {}", machine.berth_settings);
    if let Some(b) = &cli.berth_b {
        let s = settings(BerthSpec { bin: b, env: &cli.berth_b_env });
        eprintln!("Berth B {s}");
        machine.berth_b_settings = Some(s);
    }
    eprintln!("generating the {} MiB blob", p.blob / MIB);
    let big = tokio::task::spawn_blocking({
        let size = p.blob as usize;
        move || BigBlobSource::new(size, 0xB1B)
    })
    .await?;

    let started = std::time::Instant::now();
    let mut rec = Recorder::default();
    for suite in &cli.suites {
        if let Err(e) = suite::run_suite(suite, &cli, &berth_bin, &p, &big, &workdir, &mut rec).await {
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
    let result = match &cli.serve_ceiling {
        Some(answers) => rt.block_on(ceiling::serve(answers)),
        None => rt.block_on(run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
