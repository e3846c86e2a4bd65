//! `berth`: the registry server and its operator commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use berth::{accounts, backup, maintenance, scrub, sync, usage};
use berth_config::Config;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a self-hosted OCI container registry",
    long_about = "Berth: a self-hosted OCI container registry.\n\n\
        Configuration comes from built-in defaults, then the TOML file given with --config, \
        then BERTH_* environment variables (BERTH_<KEY>, BERTH_<SECTION>_<KEY>), then flags. \
        See config.example.toml for every key."
)]
struct Cli {
    /// TOML configuration file (every subcommand reads the same file and BERTH_* variables).
    #[arg(short, long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve {
        /// Listen address (overrides `listen`).
        #[arg(short, long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Data directory for the embedded defaults (overrides `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets masked) as JSON.
    Config,
    /// Manage users.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage organizations and their members.
    #[command(subcommand)]
    Org(accounts::OrgCommand),
    /// Manage personal access tokens.
    #[command(subcommand)]
    Token(accounts::TokenCommand),
    /// Manage repositories (visibility).
    #[command(subcommand)]
    Repo(accounts::RepoCommand),
    /// Collect garbage now: untagged manifests no index references, unreferenced
    /// repository links, blobs no repository links, and orphan storage objects.
    ///
    /// Safe while the server runs (pushes in progress are never undercut), and
    /// never beside another collection: if the server's schedule or another
    /// `berth gc` is running, this waits for it (or, with --no-wait, exits with
    /// status 3). Prints what it freed, per kind; progress on a terminal.
    Gc(maintenance::GcArgs),
    /// Retention rules ([[retention.rules]] and stored ones): list, add, remove, or apply them now.
    #[command(subcommand)]
    Retention(maintenance::RetentionCommand),
    /// Storage used per owner (user or organization) against its quota; with OWNER, per repository.
    ///
    /// Bytes count each distinct blob an owner's repositories link once, plus
    /// its manifests. Without OWNER, a table of every owner: stored, quota,
    /// share used, repositories (with the limit), manifests, tags. The figures
    /// are kept exact as writes happen; --recount rebuilds them from what is
    /// stored and reports any drift.
    Usage(usage::UsageArgs),
    /// Per-owner quotas: set, list or remove an owner's own limits on bytes
    /// and repositories (defaults: `[quotas]` in the config file).
    #[command(subcommand)]
    Quota(usage::QuotaCommand),
    /// Back up the metadata and every blob it references into DIR, while the
    /// server serves (SQLite and filesystem storage; for Postgres and S3 see
    /// the README).
    ///
    /// Garbage collection is held off for the duration (through its lease).
    /// Blobs are hard-linked where DIR is on the same filesystem, copied
    /// otherwise; a later backup into the same DIR adds only new blobs.
    /// DIR/backup.json lists versions, counts and every digest.
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty data directory, verifying every blob's digest.
    Restore(backup::RestoreArgs),
    /// Check that every stored blob and manifest still matches its digest.
    ///
    /// Reads every blob that a repository links (streaming, from the
    /// filesystem or S3) and hashes it, checks its size, hashes every
    /// manifest, and counts stored objects nothing links. Each problem is
    /// named by digest with the repositories and tags that reach it. A blob
    /// found damaged (after a second read confirms it) is moved to
    /// quarantine/ in the storage and refused to pulls from then on; pushing
    /// an image that contains it again repairs it. Safe while the server
    /// runs; waits for another scrub. Exit status: 0 clean, 4 problems found,
    /// 1 the scrub itself failed.
    Scrub(scrub::ScrubArgs),
    /// Copy repositories from another registry (Gitea's, or any OCI registry) into this one.
    ///
    /// Every tag, byte for byte with its digest: indexes and all their
    /// platforms, configs and layers (streamed, verified), referrers (through
    /// the referrers API where the source has it) and cosign's
    /// sha256-<hex>.sig/.att/.sbom tags. Repositories come from /v2/_catalog,
    /// or, where the source refuses it, from Gitea's package API. What is
    /// here already is skipped, so a second run copies nothing new and a
    /// killed run resumes; nothing here is ever deleted. Writes through the
    /// registry service (no local credentials; recorded as pushed by "sync").
    /// Exit status: 0 all copied, 4 something failed (named in the summary),
    /// 1 the sync could not run.
    Sync(sync::SyncArgs),
    /// Probe a running server's /livez (for container health checks); exit 0 if alive.
    Health {
        /// Base URL to probe (default: http://127.0.0.1:<port of `listen`>).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    // Flags are the last layer: feed them as the variables they override.
    if let Command::Serve { listen, data_dir } = &cli.command {
        if let Some(l) = listen {
            vars.push(("BERTH_LISTEN".into(), l.to_string()));
        }
        if let Some(d) = data_dir {
            vars.push(("BERTH_DATA_DIR".into(), d.display().to_string()));
        }
    }
    Config::load(cli.config.as_deref(), vars).map_err(|e| e.to_string())
}

/// glibc keeps freed memory in per-thread arenas, and after the first large
/// free it raises its mmap threshold so later large blocks (argon2's 19 MiB
/// working area, 4 MiB manifests) come from those arenas too and stay
/// resident. A fixed threshold hands every block of 1 MiB or more back to the
/// kernel when freed, and two arenas are plenty for two cores' worth of threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called first thing
    // in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Descriptors the server needs besides client connections: listeners,
/// database connections, blob files being read and written.
const FD_RESERVE: u64 = 128;

/// Raises the open-file soft limit to the hard limit (every connection is a
/// descriptor, and soft limits default to as few as 1024), and warns when
/// `http.max_connections` cannot fit in it: the limit would then be the
/// kernel's EMFILE, not a clean 503.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn raise_fd_limit(config: &Config) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(from = limit.rlim_cur, to = limit.rlim_max, "raised the open-file limit");
            limit.rlim_cur = limit.rlim_max;
        }
    }
    let wanted = config.http.max_connections as u64 + u64::from(config.database.max_connections) + FD_RESERVE;
    if limit.rlim_cur != libc::RLIM_INFINITY && wanted > limit.rlim_cur {
        tracing::warn!(
            max_connections = config.http.max_connections,
            open_file_limit = limit.rlim_cur,
            "http.max_connections does not fit in the open-file limit (RLIMIT_NOFILE): lower it or raise the limit"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit(_: &Config) {}

fn main() -> ExitCode {
    // Everything Berth creates (database, keys, blobs, backups) is private.
    berth::files::private_umask();
    tune_allocator();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("berth: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    // A mistyped variable sets nothing; say so at every start, whatever the subcommand.
    let unknown = berth_config::unknown_vars(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()));
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            for u in &unknown {
                eprintln!("berth: warning: {u}");
            }
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    berth::telemetry::init(&config);
    for u in &unknown {
        tracing::warn!(variable = %u.name, closest = u.closest.as_deref(), "{u}");
    }
    let result = match cli.command {
        Command::Serve { .. } => {
            raise_fd_limit(&config);
            berth::run(config, shutdown_signal()).await.map_err(|e| e.to_string())
        }
        Command::Migrate => berth::backends::open_meta(&config, true).await.map(|_| ()).map_err(|e| e.to_string()),
        Command::User(c) => accounts::user(&config, c).await,
        Command::Org(c) => accounts::org(&config, c).await,
        Command::Token(c) => accounts::token(&config, c).await,
        Command::Repo(c) => accounts::repo(&config, c).await,
        Command::Gc(args) => match maintenance::gc(&config, args).await {
            Ok(Some(maintenance::Busy)) => return ExitCode::from(3),
            other => other.map(|_| ()),
        },
        Command::Retention(c) => maintenance::retention(&config, c).await,
        Command::Backup(args) => backup::backup(&config, args).await,
        Command::Restore(args) => backup::restore(&config, args).await,
        Command::Scrub(args) => match scrub::scrub(&config, args).await {
            Ok(Some(scrub::ProblemsFound)) => return ExitCode::from(4),
            other => other.map(|_| ()),
        },
        Command::Sync(args) => match sync::sync(&config, args).await {
            Ok(Some(sync::Failed)) => return ExitCode::from(4),
            other => other.map(|_| ()),
        },
        Command::Usage(args) => usage::usage(&config, args).await,
        Command::Quota(c) => usage::quota(&config, c).await,
        Command::Health { url } => berth::health::probe(&config, url.as_deref()),
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&config.to_masked_json()).unwrap_or_default());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
