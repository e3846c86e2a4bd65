//! Storage usage against quotas, as the owner's packages page and the admin
//! page show it. Who may see an owner's usage is the JSON API's rule
//! (`AuthService::may_administer_owner`); the figures come from the same
//! service calls (`Registry::usage`, `Registry::all_usage`).

use berth_api::AppState;
use berth_auth::Actions;
use berth_registry::quota::{UsageReport, human_size};

use crate::render::PageError;
use crate::session::Ctx;

/// Whether the viewer may see `owner`'s usage (anyone with authentication
/// off, as on the JSON API).
pub async fn may_see(state: &AppState, ctx: &Ctx, owner: &str) -> Result<bool, PageError> {
    let Some(auth) = state.auth() else { return Ok(true) };
    Ok(auth.may_administer_owner(&ctx.principal(), owner, Actions::PULL).await?)
}

/// `Storage: 1.2 GiB of 50 GiB (2.4 %) · 3 of 10 repositories`, or
/// `Storage: 1.2 GiB stored · 3 repositories` without limits; `None` if the
/// viewer may not see it.
pub async fn owner_line(state: &AppState, ctx: &Ctx, owner: &str) -> Result<Option<String>, PageError> {
    if !may_see(state, ctx, owner).await? {
        return Ok(None);
    }
    Ok(Some(line(&state.registry().usage(owner).await?)))
}

/// The line for a report (see [`owner_line`]).
pub fn line(r: &UsageReport) -> String {
    let stored = match r.bytes_percent() {
        Some(p) => format!("{} of {} ({})", human_size(r.usage.bytes), human_size(r.limits.bytes), percent(p)),
        None => format!("{} stored", human_size(r.usage.bytes)),
    };
    let repositories = match r.limits.repositories {
        0 => format!("{} {}", r.usage.repositories, plural(r.usage.repositories, "repository", "repositories")),
        limit => format!("{} of {limit} repositories", r.usage.repositories),
    };
    format!("Storage: {stored} · {repositories}")
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// `2.4 %`.
pub fn percent(p: f64) -> String {
    format!("{p:.1} %")
}

/// A row of the admin page's usage table.
pub struct UsageRow {
    pub owner: String,
    pub stored: String,
    /// The byte limit, or `unlimited`.
    pub quota: String,
    /// The share of it used, or empty.
    pub used: String,
    /// Over 90 % of the byte limit.
    pub near_limit: bool,
    /// `3` or `3 of 10`.
    pub repositories: String,
    pub manifests: u64,
    pub tags: u64,
    /// The owner has limits of its own.
    pub own: bool,
}

impl UsageRow {
    pub fn of(r: &UsageReport) -> Self {
        let used = r.bytes_percent();
        UsageRow {
            owner: r.usage.owner.clone(),
            stored: human_size(r.usage.bytes),
            quota: if r.limits.bytes == 0 { "unlimited".into() } else { human_size(r.limits.bytes) },
            used: used.map(percent).unwrap_or_default(),
            near_limit: used.is_some_and(|p| p >= 90.0),
            repositories: match r.limits.repositories {
                0 => r.usage.repositories.to_string(),
                limit => format!("{} of {limit}", r.usage.repositories),
            },
            manifests: r.usage.manifests,
            tags: r.usage.tags,
            own: r.own.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::quota::{Limits, OwnerUsage};

    use super::*;

    fn report(bytes: u64, repositories: u64, limits: Limits) -> UsageReport {
        let usage = OwnerUsage { owner: "acme".into(), bytes, repositories, ..Default::default() };
        UsageReport { usage, limits, own: None }
    }

    #[test]
    fn lines_read_as_the_issue_shows_them() {
        let gib = 1u64 << 30;
        let r = report(gib + gib / 5, 3, Limits { bytes: 50 * gib, repositories: 10 });
        assert_eq!(line(&r), "Storage: 1.2 GiB of 50 GiB (2.4 %) · 3 of 10 repositories");
        assert_eq!(line(&report(gib + gib / 5, 1, Limits::default())), "Storage: 1.2 GiB stored · 1 repository");
        let row = UsageRow::of(&report(95, 2, Limits { bytes: 100, repositories: 0 }));
        assert_eq!((row.quota.as_str(), row.used.as_str(), row.near_limit), ("100 B", "95.0 %", true));
        assert_eq!(row.repositories, "2");
        assert_eq!(UsageRow::of(&report(5, 0, Limits::default())).quota, "unlimited");
    }
}
