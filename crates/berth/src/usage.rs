//! `berth usage` and `berth quota`: storage used per owner and the limits on
//! it, on the configured database (safe while the server runs). Like
//! `berth gc`, they call the registry service directly, not the HTTP API;
//! the admin API (`/api/v1/admin/usage`, `/api/v1/admin/quotas`) and the
//! web pages call the same methods.

use berth_config::Config;
use berth_registry::Registry;
use berth_registry::quota::{
    Limits, QuotaLimits, QuotaReport, Size, UsageDrift, UsageReport, human_size, repository_usage_json,
};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::app::registry_policy;
use crate::backends::{open_blobs, open_meta};

#[derive(Args)]
pub struct UsageArgs {
    /// One owner (user or organization): its figures, limits, and each of its repositories.
    pub owner: Option<String>,
    /// First rebuild the usage figures from what is stored (they are kept
    /// exact as writes happen; this checks that), and print every figure that
    /// had drifted, or "no drift".
    #[arg(long)]
    pub recount: bool,
    /// Print JSON instead of tables: the shape of `GET /api/v1/admin/usage`,
    /// or with OWNER of `GET /api/v1/owners/<owner>/usage`; with --recount,
    /// `{"drift": [...], "usage": ...}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Give an owner limits of its own, replacing earlier ones; every write checks them at once.
    ///
    /// A flag left out keeps the `[quotas]` default for that figure; 0 means
    /// unlimited. A push that would pass a limit is refused (403 DENIED,
    /// "quota exceeded: acme uses 49.8 GiB of 50 GiB"); what is stored
    /// already stays. Examples: `berth quota set acme --bytes 50GiB
    /// --repositories 20`; `berth quota set bigcorp --bytes 0` (no byte limit).
    Set {
        /// The user or organization (the first part of its repository names).
        owner: String,
        /// Bytes the owner may store (each distinct blob once, plus manifests),
        /// e.g. 50GiB, 500MB, or a number of bytes; 0 = unlimited.
        #[arg(long, value_name = "SIZE")]
        bytes: Option<Size>,
        /// Repositories the owner may have; 0 = unlimited.
        #[arg(long, value_name = "N")]
        repositories: Option<u64>,
    },
    /// List owners with limits of their own: their own values and what applies after the defaults.
    List {
        /// Print JSON (the shape of `GET /api/v1/admin/quotas`).
        #[arg(long)]
        json: bool,
    },
    /// Remove an owner's own limits: the `[quotas]` defaults apply to it again.
    Remove {
        /// The user or organization.
        owner: String,
    },
}

async fn open(config: &Config) -> Result<Registry, String> {
    let stores = open_meta(config, true).await.map_err(|e| e.to_string())?;
    let blobs = open_blobs(config).await.map_err(|e| e.to_string())?;
    let policy = registry_policy(config).map_err(|e| e.to_string())?;
    Ok(Registry::new(stores.meta, blobs, policy))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn usage(config: &Config, args: UsageArgs) -> Result<(), String> {
    if let Some((first, _)) = args.owner.as_deref().and_then(|o| o.split_once('/')) {
        return Err(format!("give an owner, the first part of a repository name ({first:?})"));
    }
    let registry = open(config).await?;
    let drift = if args.recount { Some(registry.recount_usage().await.map_err(err)?) } else { None };
    let (text, value) = match &args.owner {
        Some(owner) => {
            let report = registry.usage(owner).await.map_err(err)?;
            let repositories = registry.repository_usage(owner).await.map_err(err)?;
            let mut value = report.to_json();
            value["repositories_usage"] = Value::Array(repositories.iter().map(repository_usage_json).collect());
            let rows = repositories
                .iter()
                .map(|r| {
                    vec![r.repository.to_string(), human_size(r.bytes), r.manifests.to_string(), r.tags.to_string()]
                })
                .collect::<Vec<_>>();
            let mut text = format!("{}\n{}\n", owner_line(&report), limits_line(&report));
            if rows.is_empty() {
                text.push_str("no repositories\n");
            } else {
                text.push('\n');
                text.push_str(&table(
                    &["repository", "stored", "manifests", "tags"],
                    &[false, true, true, true],
                    &rows,
                ));
            }
            (text, value)
        }
        None => {
            let all = registry.all_usage().await.map_err(err)?;
            let value = Value::Array(all.iter().map(UsageReport::to_json).collect());
            let text = if all.is_empty() {
                "no owner stores anything yet\n".to_owned()
            } else {
                let head = ["owner", "stored", "quota", "used", "repositories", "manifests", "tags"];
                let rows = all.iter().map(owner_row).collect::<Vec<_>>();
                table(&head, &[false, true, true, true, true, true, true], &rows)
            };
            (text, value)
        }
    };
    if args.json {
        let out = match drift {
            Some(d) => json!({ "drift": d.iter().map(drift_json).collect::<Vec<_>>(), "usage": value }),
            None => value,
        };
        println!("{}", serde_json::to_string_pretty(&out).map_err(err)?);
        return Ok(());
    }
    if let Some(d) = drift {
        print!("{}", drift_text(&d));
    }
    print!("{text}");
    Ok(())
}

pub async fn quota(config: &Config, command: QuotaCommand) -> Result<(), String> {
    let registry = open(config).await?;
    match command {
        QuotaCommand::Set { owner, bytes, repositories } => {
            if bytes.is_none() && repositories.is_none() {
                return Err(format!(
                    "give --bytes and/or --repositories (0 = unlimited); `berth quota remove {owner}` returns it to the defaults"
                ));
            }
            let own = QuotaLimits { bytes: bytes.map(Size::bytes), repositories };
            registry.set_quota(&owner, own).await.map_err(err)?;
            let report = registry.usage(&owner).await.map_err(err)?;
            println!("set {owner}'s own limits; every write checks them from now on");
            println!("{}", limits_line(&report));
            println!("{}", owner_line(&report));
            Ok(())
        }
        QuotaCommand::List { json } => {
            let quotas = registry.quotas().await.map_err(err)?;
            if json {
                let out = Value::Array(quotas.iter().map(QuotaReport::to_json).collect());
                println!("{}", serde_json::to_string_pretty(&out).map_err(err)?);
                return Ok(());
            }
            println!("{}", defaults_line(&registry));
            if quotas.is_empty() {
                println!("no owner has limits of its own (`berth quota set OWNER --bytes SIZE --repositories N`)");
                return Ok(());
            }
            let head = ["owner", "own bytes", "own repositories", "applies: bytes", "applies: repositories"];
            let rows = quotas
                .iter()
                .map(|q| {
                    vec![
                        q.owner.clone(),
                        q.own.bytes.map_or("default".into(), bytes_limit),
                        q.own.repositories.map_or("default".into(), count_limit),
                        bytes_limit(q.limits.bytes),
                        count_limit(q.limits.repositories),
                    ]
                })
                .collect::<Vec<_>>();
            print!("{}", table(&head, &[false; 5], &rows));
            Ok(())
        }
        QuotaCommand::Remove { owner } => {
            if !registry.remove_quota(&owner).await.map_err(err)? {
                return Err(format!("{owner} has no limits of its own (`berth quota list` shows those that do)"));
            }
            let report = registry.usage(&owner).await.map_err(err)?;
            println!("removed {owner}'s own limits");
            println!("{}", limits_line(&report));
            Ok(())
        }
    }
}

/// A byte limit: `50 GiB` or `unlimited` (0).
fn bytes_limit(n: u64) -> String {
    if n == 0 { "unlimited".into() } else { human_size(n) }
}

/// A count limit: `10` or `unlimited` (0).
fn count_limit(n: u64) -> String {
    if n == 0 { "unlimited".into() } else { n.to_string() }
}

fn percent(r: &UsageReport) -> String {
    r.bytes_percent().map_or("-".into(), |p| format!("{p:.1} %"))
}

/// `3 of 10` with a limit, else `3`.
fn repositories(r: &UsageReport) -> String {
    match r.limits.repositories {
        0 => r.usage.repositories.to_string(),
        limit => format!("{} of {limit}", r.usage.repositories),
    }
}

fn owner_row(r: &UsageReport) -> Vec<String> {
    let own = if r.own.is_some_and(|o| o.bytes.is_some()) { " (own)" } else { "" };
    vec![
        r.usage.owner.clone(),
        human_size(r.usage.bytes),
        format!("{}{own}", bytes_limit(r.limits.bytes)),
        percent(r),
        repositories(r),
        r.usage.manifests.to_string(),
        r.usage.tags.to_string(),
    ]
}

/// `acme: 1.2 GiB of 50 GiB (2.4 %), 3 of 10 repositories, 12 manifests, 30 tags`.
fn owner_line(r: &UsageReport) -> String {
    let u = &r.usage;
    let stored = match r.limits.bytes {
        0 => format!("{} stored (no byte limit)", human_size(u.bytes)),
        limit => format!("{} of {} ({})", human_size(u.bytes), human_size(limit), percent(r)),
    };
    let repos = match r.limits.repositories {
        0 => counted(u.repositories, "repository", "repositories"),
        limit => format!("{} of {limit} repositories", u.repositories),
    };
    let manifests = counted(u.manifests, "manifest", "manifests");
    format!("{}: {stored}, {repos}, {manifests}, {}", u.owner, counted(u.tags, "tag", "tags"))
}

/// `1 tag`, `2 tags`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `limits: bytes 50 GiB (own), repositories unlimited (default from [quotas])`.
fn limits_line(r: &UsageReport) -> String {
    let own = r.own.unwrap_or_default();
    let source = |own: Option<u64>| if own.is_some() { "own" } else { "default from [quotas]" };
    format!(
        "limits: bytes {} ({}), repositories {} ({})",
        bytes_limit(r.limits.bytes),
        source(own.bytes),
        count_limit(r.limits.repositories),
        source(own.repositories)
    )
}

fn defaults_line(registry: &Registry) -> String {
    let d = registry.quota_policy();
    let limits = Limits { bytes: d.owner_bytes, repositories: d.owner_repositories };
    format!(
        "defaults ([quotas]): bytes {}, repositories {}",
        bytes_limit(limits.bytes),
        count_limit(limits.repositories)
    )
}

fn drift_json(d: &UsageDrift) -> Value {
    json!({ "owner": d.owner, "field": d.field, "stored": d.stored, "actual": d.actual })
}

fn drift_text(drift: &[UsageDrift]) -> String {
    if drift.is_empty() {
        return "recount: no drift\n".into();
    }
    let figures = if drift.len() == 1 { "figure has" } else { "figures have" };
    let mut out = format!("recount: {} {figures} drifted (now corrected):\n", drift.len());
    for d in drift {
        out.push_str(&format!("  {} {}: stored {} → actual {}\n", d.owner, d.field, d.stored, d.actual));
    }
    out
}

/// Columns padded to their widest cell; `right` aligns the numeric ones.
fn table(head: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((c, w), r)| if *r { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(head.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use berth_registry::quota::OwnerUsage;

    use super::*;

    #[test]
    fn tables_align_and_lines_read_well() {
        let t = table(&["owner", "stored"], &[false, true], &[vec!["acme".into(), "1.2 GiB".into()]]);
        assert_eq!(t, "owner   stored\nacme   1.2 GiB\n");
        let report = UsageReport {
            usage: OwnerUsage { owner: "acme".into(), bytes: 512, repositories: 2, manifests: 3, tags: 4 },
            limits: Limits { bytes: 1024, repositories: 0 },
            own: Some(QuotaLimits { bytes: Some(1024), repositories: None }),
        };
        assert_eq!(owner_line(&report), "acme: 512 B of 1 KiB (50.0 %), 2 repositories, 3 manifests, 4 tags");
        assert_eq!(owner_row(&report)[2], "1 KiB (own)");
        let drift = [UsageDrift { owner: "acme".into(), field: "bytes", stored: 10, actual: 12 }];
        assert_eq!(
            drift_text(&drift),
            "recount: 1 figure has drifted (now corrected):\n  acme bytes: stored 10 → actual 12\n"
        );
        assert_eq!(drift_text(&[]), "recount: no drift\n");
    }
}
