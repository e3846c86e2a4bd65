//! `berth sync`: copies repositories from another registry (Gitea's, or
//! any OCI registry) into this one, byte for byte, for the move off Gitea
//! and for running both side by side until the switch.
//!
//! The source is read with `berth-upstream`'s client (Basic or the Bearer
//! token flow); this registry is written through the registry service, as
//! `berth gc` does, not through the local server's HTTP API: no local
//! credentials are needed, and what is copied is recorded as pushed by
//! `sync`. The source's password comes from stdin or `BERTH_SYNC_PASSWORD`
//! and is never printed or logged.
//!
//! Exit status: 0 when everything was copied (or was here already), 4 when
//! something failed (each failure is named with its reason in the summary),
//! 1 when the sync could not run at all (no listing, bad arguments).

mod copy;
mod listing;
mod report;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_config::Config;
use berth_oci::RepositoryName;
use berth_registry::Registry;
use berth_upstream::{Secret, UpstreamClient, UpstreamSettings};
use clap::Args;
use futures_util::StreamExt;

use crate::app::registry_policy;
use crate::backends::{open_blobs, open_meta};

pub use copy::ACTOR;

/// The variable `berth sync` reads the source's password from (instead of
/// `--password-stdin`), e.g. from a Kubernetes Secret.
pub const PASSWORD_VAR: &str = "BERTH_SYNC_PASSWORD";

#[derive(Args)]
pub struct SyncArgs {
    /// The registry to copy from: its base URL, e.g. Gitea's root URL (https://gitea.example.com).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// User name at the source (with a password or access token from
    /// --password-stdin or BERTH_SYNC_PASSWORD); anonymous without it.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the source's password (or access token) from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Only repositories matching this glob ('*' crosses '/'), e.g. 'admin/*'; repeatable.
    /// A glob without wildcards names one repository, which is then not listed.
    #[arg(long = "repository", value_name = "GLOB")]
    pub repositories: Vec<String>,
    /// Copy into this owner (user or organization) instead of the source's:
    /// admin/app becomes OWNER/app.
    #[arg(long, value_name = "OWNER")]
    pub to: Option<String>,
    /// List what would be copied (repositories, tags, bytes); copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repositories copied at once, and blobs transferred at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Extra CA certificates (PEM) to trust for the source, besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Something failed (exit status 4); the summary names each failure.
#[derive(Debug)]
pub struct Failed;

/// The source's credentials: `--username` with a password from stdin or
/// [`PASSWORD_VAR`].
fn credentials(args: &SyncArgs, env_password: Option<String>) -> Result<Option<(String, Secret)>, String> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading stdin: {e}"))?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err("--password-stdin: no password on stdin".into());
        }
        Some(password)
    } else {
        env_password.filter(|p| !p.is_empty())
    };
    match (&args.username, password) {
        (Some(user), Some(password)) => Ok(Some((user.clone(), Secret::new(password)))),
        (Some(_), None) => Err(format!("--username needs a password: --password-stdin or {PASSWORD_VAR}")),
        (None, Some(_)) => Err(format!("a password was given (--password-stdin or {PASSWORD_VAR}) without --username")),
        (None, None) => Ok(None),
    }
}

fn client(args: &SyncArgs, credentials: Option<(String, Secret)>) -> Result<UpstreamClient, String> {
    let mut settings = UpstreamSettings::new("source", args.from.trim_end_matches('/'));
    if let Some((user, password)) = credentials {
        settings = settings.with_credentials(user, password);
    }
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        settings.ca_certificates_pem = Some(pem);
    }
    UpstreamClient::new(settings).map_err(|e| e.to_string())
}

pub async fn sync(config: &Config, args: SyncArgs) -> Result<Option<Failed>, String> {
    let credentials = credentials(&args, std::env::var(PASSWORD_VAR).ok())?;
    let filter = listing::Filter::new(&args.repositories)?;
    if let Some(to) = &args.to
        && (to.contains('/') || RepositoryName::parse(to).is_err())
    {
        return Err(format!("--to {to:?} is not an owner name (one lowercase name component)"));
    }
    let upstream = client(&args, credentials)?;
    let stores = open_meta(config, true).await.map_err(|e| e.to_string())?;
    let blobs = open_blobs(config).await.map_err(|e| e.to_string())?;
    let policy = registry_policy(config).map_err(|e| e.to_string())?;
    let registry = Registry::new(stores.meta.clone(), blobs, policy);

    let (repos, listed_by) = listing::list(&upstream, &filter).await?;
    let pairs = listing::rename(repos, args.to.as_deref())?;
    let report = Arc::new(report::Reporter::new(std::io::stderr().is_terminal(), args.dry_run));
    report::add(&report.stats.repositories, pairs.len() as u64);
    let source = upstream.base_url().as_str().trim_end_matches('/').to_owned();
    tracing::info!(source = %source, repositories = pairs.len(), dry_run = args.dry_run, "sync: starting ({listed_by})");

    let concurrency = usize::from(args.concurrency);
    let mut ctx = copy::Ctx::new(upstream, registry, report.clone(), concurrency);
    ctx.accounts = config.auth.enabled.then(|| stores.auth.clone());
    ctx.source = source.clone();
    ctx.named = listed_by == listing::Listed::Named;
    let ticker = {
        let report = report.clone();
        tokio::spawn(async move {
            loop {
                report.progress();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    futures_util::stream::iter(pairs).for_each_concurrent(concurrency, |pair| ctx.copy_repository(pair)).await;
    ticker.abort();
    report.finish();
    print!("{}", report.summary(&source, &listed_by.to_string()));
    let failures = report.failures().len();
    if !args.dry_run {
        let s = &report.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            target: "audit",
            event = "sync",
            user = copy::ACTOR,
            source = %source,
            tags = load(&s.tags_copied),
            manifests = load(&s.manifests_copied),
            blobs = load(&s.blobs_copied),
            bytes = load(&s.blob_bytes_copied) + load(&s.manifest_bytes_copied),
            failures,
        );
    }
    Ok((failures > 0).then_some(Failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(username: Option<&str>) -> SyncArgs {
        SyncArgs {
            from: "https://git.example.com".into(),
            username: username.map(str::to_owned),
            password_stdin: false,
            repositories: Vec::new(),
            to: None,
            dry_run: false,
            concurrency: 4,
            ca_file: None,
        }
    }

    #[test]
    fn credentials_need_both_parts() {
        let (user, password) = credentials(&args(Some("admin")), Some("pw-123".into())).unwrap().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("admin", "pw-123"));
        assert!(credentials(&args(None), None).unwrap().is_none());
        assert!(credentials(&args(Some("admin")), None).unwrap_err().contains("needs a password"));
        assert!(credentials(&args(Some("admin")), Some(String::new())).is_err());
        let e = credentials(&args(None), Some("pw-123".into())).unwrap_err();
        assert!(!e.contains("pw-123"), "{e}");
    }
}
