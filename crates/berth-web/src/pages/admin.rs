//! `/-/admin`: users, organizations and their members, retention rules
//! with a preview (`?preview=1`, a dry run), a storage summary and each
//! owner's usage against its quota, for site admins.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use berth_api::AppState;
use berth_auth::{Action, Actions};
use berth_registry::retention::RuleSource;
use serde::Deserialize;

use super::usage::UsageRow;
use crate::format;
use crate::render::{Layout, PageError, page, see_other};
use crate::session::Ctx;

struct UserItem {
    name: String,
    admin: bool,
    disabled: bool,
    created: String,
}

struct RuleItem {
    source: String,
    repositories: String,
    keep_last: String,
    keep_tags: String,
    remove_tags: String,
    older_than: String,
}

struct OrgItem {
    name: String,
    members: Vec<(String, String)>,
}

/// A repository's planned removals in the retention preview.
struct PreviewItem {
    repository: String,
    removed: String,
    kept: u64,
    immutable: String,
}

/// How many organizations the page lists.
const ORGS_SHOWN: usize = 200;
/// How many owners the usage table lists (the largest first).
const OWNERS_SHOWN: usize = 200;

#[derive(Deserialize)]
pub struct Params {
    preview: Option<String>,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    layout: Layout,
    users: Vec<UserItem>,
    orgs: Vec<OrgItem>,
    rules: Vec<RuleItem>,
    preview: Option<Vec<PreviewItem>>,
    repositories: u64,
    manifests: u64,
    blobs: u64,
    bytes: String,
    uploads: u64,
    usage: Vec<UsageRow>,
    /// Owners not in `usage` (beyond [`OWNERS_SHOWN`]).
    usage_more: usize,
    error: String,
}

/// Only site admins signed in on the web; others see a 404.
fn require_admin(state: &AppState, ctx: &Ctx) -> Result<(), PageError> {
    let auth = state.auth().ok_or(PageError::NotFound)?;
    let all = Actions::of(&[Action::Pull, Action::Push, Action::Delete]);
    if auth.is_site_admin(&ctx.principal(), all) { Ok(()) } else { Err(PageError::NotFound) }
}

async fn render(state: &AppState, ctx: &Ctx, error: String, preview: bool) -> Result<Response, PageError> {
    let auth = state.auth().ok_or(PageError::NotFound)?;
    let users = auth
        .users()
        .await?
        .into_iter()
        .map(|u| UserItem {
            name: u.name,
            admin: u.is_admin,
            disabled: u.disabled,
            created: format::time(u.created_at),
        })
        .collect();
    let rules = state
        .maintenance()
        .retention_rules()
        .await?
        .into_iter()
        .map(|r| RuleItem {
            source: match r.source {
                RuleSource::Config { position } => format!("config file, rule {position}"),
                RuleSource::Stored { id, created_by, .. } => format!("stored #{id} by {created_by}"),
            },
            repositories: r.rule.repositories,
            keep_last: r.rule.keep_last.map(|n| n.to_string()).unwrap_or_default(),
            keep_tags: r.rule.keep_tags.join(" "),
            remove_tags: r.rule.remove_tags.join(" "),
            older_than: r.rule.remove_older_than.map(|d| humantime::format_duration(d).to_string()).unwrap_or_default(),
        })
        .collect();
    let orgs = auth
        .orgs(ORGS_SHOWN)
        .await?
        .into_iter()
        .map(|o| OrgItem {
            name: o.org.name,
            members: o.members.into_iter().map(|m| (m.user, m.role.as_str().to_owned())).collect(),
        })
        .collect();
    let preview = if preview {
        let m = state.maintenance();
        // A dry run takes no lease: it changes nothing.
        let report = m.apply_retention(&m.retention_policy().await?, true, None).await?;
        Some(
            report
                .repositories
                .into_iter()
                .filter(|r| !r.removed.is_empty() || !r.immutable.is_empty())
                .map(|r| PreviewItem {
                    repository: r.repository.to_string(),
                    removed: r.removed.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>().join(" "),
                    kept: r.kept,
                    immutable: r.immutable.join(" "),
                })
                .collect(),
        )
    } else {
        None
    };
    let s = state.registry().storage_summary().await?;
    let mut owners = state.registry().all_usage().await?;
    owners.sort_by(|a, b| b.usage.bytes.cmp(&a.usage.bytes).then_with(|| a.usage.owner.cmp(&b.usage.owner)));
    let usage_more = owners.len().saturating_sub(OWNERS_SHOWN);
    let usage = owners.iter().take(OWNERS_SHOWN).map(UsageRow::of).collect();
    let template = AdminPage {
        layout: ctx.layout("Site administration"),
        users,
        orgs,
        rules,
        preview,
        repositories: s.repositories,
        manifests: s.manifests,
        blobs: s.blobs,
        bytes: format::size(s.blob_bytes),
        uploads: s.uploads,
        usage,
        usage_more,
        error,
    };
    Ok(page(&template))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    require_admin(&state, &ctx)?;
    render(&state, &ctx, String::new(), params.preview.is_some()).await
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    admin: Option<String>,
    #[serde(default)]
    org: String,
    #[serde(default)]
    role: String,
}

pub async fn change(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ChangeForm>,
) -> Result<Response, PageError> {
    require_admin(&state, &ctx)?;
    let session = ctx.check_csrf(&form.csrf)?;
    let auth = state.auth().ok_or(PageError::NotFound)?;
    let name = form.name.trim();
    let outcome = match form.action.as_str() {
        "create_user" => auth.create_user(name, &form.password, form.admin.is_some()).await.map(|_| ()),
        "disable" | "revoke_admin" if name == session.user.name => {
            return render(&state, &ctx, "You cannot do that to yourself.".into(), false).await;
        }
        "disable" => auth.set_user_disabled(name, true).await,
        "enable" => auth.set_user_disabled(name, false).await,
        "make_admin" => auth.set_site_admin(name, true).await,
        "revoke_admin" => auth.set_site_admin(name, false).await,
        "create_org" => auth.create_org(name).await.map(|_| ()),
        "set_member" => auth.set_org_member(form.org.trim(), name, form.role.trim()).await,
        "remove_member" => auth.remove_org_member(form.org.trim(), name).await,
        _ => return Err(PageError::BadRequest("unknown action".into())),
    };
    match outcome {
        Ok(()) => Ok(see_other("/-/admin")),
        Err(e) => render(&state, &ctx, e.to_string(), false).await,
    }
}
