//! `/<owner>/-/packages/container/<name>[/versions | /<version>[/delete]]`:
//! a package's newest version, its versions, one version, and deleting one.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use berth_api::AppState;
use berth_auth::Action;
use berth_oci::RepositoryName;
use berth_registry::browse::{VersionDetails, VersionListing, VersionOrder};
use serde::Deserialize;

use super::{PAGE_SIZE, Pager, check_readable, may, package_href, page_number, version_href};
use crate::format;
use crate::render::{Layout, PageError, page, see_other};
use crate::session::Ctx;

/// What the path names.
enum Target {
    Newest(RepositoryName),
    Versions(RepositoryName),
    Version(RepositoryName, String),
    Delete(RepositoryName, String),
}

fn repository(owner: &str, name: &[&str]) -> Result<RepositoryName, PageError> {
    if name.is_empty() || owner.contains('/') {
        return Err(PageError::NotFound);
    }
    RepositoryName::parse(&format!("{owner}/{}", name.join("/"))).map_err(|_| PageError::NotFound)
}

/// Reads the path (already percent-decoded, so `group%2Fimage` and
/// `group/image` read the same). A last segment that could be a version or
/// part of the name is the name when that package exists.
async fn target(state: &AppState, ctx: &Ctx, owner: &str, rest: &str) -> Result<Target, PageError> {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let n = parts.len();
    match parts.as_slice() {
        [name @ .., "versions"] if n >= 2 => Ok(Target::Versions(repository(owner, name)?)),
        [name @ .., version, "delete"] if n >= 3 => Ok(Target::Delete(repository(owner, name)?, (*version).to_owned())),
        [name @ .., version] if n >= 2 && version.contains(':') => {
            Ok(Target::Version(repository(owner, name)?, (*version).to_owned()))
        }
        [_] => Ok(Target::Newest(repository(owner, &parts)?)),
        [name @ .., version] => {
            if let Ok(whole) = repository(owner, &parts) {
                let exists = super::may(state, ctx, &whole, Action::Pull).await?
                    && state.registry().versions(&whole, VersionOrder::NewestFirst, 0, 1).await?.total > 0;
                if exists {
                    return Ok(Target::Newest(whole));
                }
            }
            Ok(Target::Version(repository(owner, name)?, (*version).to_owned()))
        }
        [] => Err(PageError::NotFound),
    }
}

#[derive(Deserialize)]
pub struct Params {
    page: Option<String>,
    sort: Option<String>,
    deleted: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, rest)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    match target(&state, &ctx, &owner, &rest).await? {
        Target::Versions(repo) => versions(&state, &ctx, repo, &params).await,
        Target::Newest(repo) => {
            check_readable(&state, &ctx, &repo).await?;
            let newest = state.registry().versions(&repo, VersionOrder::NewestFirst, 0, 1).await?;
            let first = newest.items.into_iter().next().ok_or(PageError::NotFound)?;
            version(&state, &ctx, repo, &first.version, true).await
        }
        Target::Version(repo, v) => version(&state, &ctx, repo, &v, false).await,
        Target::Delete(repo, v) => confirm_delete(&state, &ctx, repo, &v).await,
    }
}

/// The common head of every package page.
struct PackageHead {
    repository: String,
    owner: String,
    owner_href: String,
    package_href: String,
    versions_href: String,
}

impl PackageHead {
    fn of(repo: &RepositoryName) -> Self {
        PackageHead {
            repository: repo.to_string(),
            owner: repo.owner().to_owned(),
            owner_href: format!("/{}/-/packages", super::segment(repo.owner())),
            package_href: package_href(repo),
            versions_href: format!("{}/versions", package_href(repo)),
        }
    }
}

struct VersionItem {
    version: String,
    href: String,
    untagged: bool,
    digest: String,
    platforms: String,
    artifact_type: String,
    size: String,
    pushed_at: String,
    pushed_by: String,
    immutable_rule: String,
}

impl VersionItem {
    fn of(repo: &RepositoryName, v: &VersionListing) -> Self {
        VersionItem {
            href: version_href(repo, &v.version),
            untagged: v.version.contains(':'),
            version: v.version.clone(),
            digest: format::short_digest(&v.digest.to_string()),
            platforms: v.platforms.join(", "),
            artifact_type: v.artifact_type.clone().unwrap_or_default(),
            size: format::size(v.size),
            pushed_at: format::time(v.pushed_at),
            pushed_by: v.pushed_by.clone().unwrap_or_default(),
            immutable_rule: v.immutable_rule.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "versions.html")]
struct VersionsPage {
    layout: Layout,
    head: PackageHead,
    items: Vec<VersionItem>,
    pager: Pager,
    oldest_first: bool,
    deleted: String,
}

async fn versions(state: &AppState, ctx: &Ctx, repo: RepositoryName, params: &Params) -> Result<Response, PageError> {
    check_readable(state, ctx, &repo).await?;
    let oldest_first = params.sort.as_deref() == Some("oldest");
    let order = if oldest_first { VersionOrder::OldestFirst } else { VersionOrder::NewestFirst };
    let page_no = page_number(params.page.as_deref());
    let found = state.registry().versions(&repo, order, Pager::offset(page_no), PAGE_SIZE).await?;
    if found.total == 0 {
        return Err(PageError::NotFound);
    }
    let head = PackageHead::of(&repo);
    let base =
        if oldest_first { format!("{}?sort=oldest&", head.versions_href) } else { format!("{}?", head.versions_href) };
    let template = VersionsPage {
        layout: ctx.layout(format!("{repo} · Versions")),
        items: found.items.iter().map(|v| VersionItem::of(&repo, v)).collect(),
        pager: Pager::new(&base, page_no, found.total),
        head,
        oldest_first,
        deleted: params.deleted.clone().unwrap_or_default(),
    };
    Ok(page(&template))
}

struct Link {
    text: String,
    href: String,
}

struct PlatformItem {
    platform: String,
    digest: String,
    href: String,
    size: String,
}

struct LayerItem {
    digest: String,
    media_type: String,
    size: String,
}

struct ReferrerItem {
    digest: String,
    href: String,
    media_type: String,
    size: String,
}

struct ReferrerGroupItem {
    artifact_type: String,
    items: Vec<ReferrerItem>,
}

struct ImageItem {
    platform: String,
    created: String,
    entrypoint: String,
    cmd: String,
    workdir: String,
    user: String,
    ports: String,
    env: Vec<String>,
    labels: Vec<(String, String)>,
    note: String,
    layers: Vec<LayerItem>,
    layers_size: String,
}

struct PullCommand {
    label: &'static str,
    command: String,
}

#[derive(Template)]
#[template(path = "version.html")]
struct VersionPage {
    layout: Layout,
    head: PackageHead,
    /// The package's own page (newest version) rather than one version's.
    newest: bool,
    version: String,
    digest: String,
    media_type: String,
    artifact_type: String,
    pushed_at: String,
    pushed_by: String,
    size: String,
    tags: Vec<Link>,
    immutable: String,
    pulls: Vec<PullCommand>,
    platforms: Vec<PlatformItem>,
    image: Option<ImageItem>,
    annotations: Vec<(String, String)>,
    referrers: Vec<ReferrerGroupItem>,
    delete_href: String,
}

async fn version(
    state: &AppState,
    ctx: &Ctx,
    repo: RepositoryName,
    v: &str,
    newest: bool,
) -> Result<Response, PageError> {
    check_readable(state, ctx, &repo).await?;
    let d = state.registry().version_details(&repo, v).await?;
    let can_delete = ctx.session.is_some() && may(state, ctx, &repo, Action::Delete).await?;
    let template = version_page(ctx, &repo, d, newest, can_delete);
    Ok(page(&template))
}

fn version_page(ctx: &Ctx, repo: &RepositoryName, d: VersionDetails, newest: bool, can_delete: bool) -> VersionPage {
    let digest = d.digest.to_string();
    let reference = if d.version.contains(':') {
        format!("{}/{}@{}", ctx.registry_host, repo, d.version)
    } else {
        format!("{}/{}:{}", ctx.registry_host, repo, d.version)
    };
    let pulls = vec![
        PullCommand { label: "docker", command: format!("docker pull {reference}") },
        PullCommand { label: "podman", command: format!("podman pull {reference}") },
        PullCommand { label: "Kubernetes", command: format!("image: {reference}") },
    ];
    let image = d.image.map(|i| {
        let c = i.config.unwrap_or_default();
        ImageItem {
            platform: c.platform.unwrap_or_default(),
            created: c
                .created
                .map(|t| {
                    humantime::parse_rfc3339_weak(&t)
                        .ok()
                        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(t, |d| format::time(d.as_millis() as i64))
                })
                .unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            workdir: c.workdir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            ports: c.exposed_ports.join(", "),
            env: c.env,
            labels: c.labels,
            note: i.config_note.unwrap_or_default(),
            layers: i
                .layers
                .iter()
                .map(|l| LayerItem {
                    digest: l.digest.as_ref().map(ToString::to_string).unwrap_or_default(),
                    media_type: l.media_type.clone(),
                    size: format::size(l.size),
                })
                .collect(),
            layers_size: format::size(i.layers_size),
        }
    });
    let platforms = d
        .platforms
        .iter()
        .map(|p| {
            let digest = p.digest.as_ref().map(ToString::to_string).unwrap_or_default();
            PlatformItem {
                platform: p.platform.clone(),
                href: if digest.is_empty() { String::new() } else { version_href(repo, &digest) },
                digest,
                size: p.size.map_or_else(|| "not in this repository".to_owned(), format::size),
            }
        })
        .collect();
    let referrers = d
        .referrers
        .iter()
        .map(|g| ReferrerGroupItem {
            artifact_type: g.artifact_type.clone(),
            items: g
                .items
                .iter()
                .map(|r| ReferrerItem {
                    digest: r.digest.to_string(),
                    href: version_href(repo, &r.digest.to_string()),
                    media_type: r.media_type.clone(),
                    size: format::size(r.size),
                })
                .collect(),
        })
        .collect();
    VersionPage {
        layout: ctx.layout(format!("{repo}:{}", d.version)),
        head: PackageHead::of(repo),
        newest,
        tags: d.tags.iter().map(|t| Link { text: t.clone(), href: version_href(repo, t) }).collect(),
        immutable: d.immutable.map(|(rule, tag)| format!("{tag} is immutable (rule {rule})")).unwrap_or_default(),
        delete_href: if can_delete { format!("{}/delete", version_href(repo, &d.version)) } else { String::new() },
        version: d.version,
        digest,
        media_type: d.media_type,
        artifact_type: d.artifact_type.unwrap_or_default(),
        pushed_at: format::time(d.pushed_at),
        pushed_by: d.pushed_by.unwrap_or_default(),
        size: format::size(d.size),
        pulls,
        platforms,
        image,
        annotations: d.annotations,
        referrers,
    }
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmDeletePage {
    layout: Layout,
    head: PackageHead,
    version: String,
    version_href: String,
    action: String,
    immutable: String,
}

async fn confirm_delete(state: &AppState, ctx: &Ctx, repo: RepositoryName, v: &str) -> Result<Response, PageError> {
    check_readable(state, ctx, &repo).await?;
    let d = state.registry().version_details(&repo, v).await?;
    ctx.require_session()?;
    if !may(state, ctx, &repo, Action::Delete).await? {
        return Err(PageError::Forbidden("You may not delete in this repository.".into()));
    }
    let template = ConfirmDeletePage {
        layout: ctx.layout(format!("Delete {repo}:{v}")),
        head: PackageHead::of(&repo),
        version: v.to_owned(),
        version_href: version_href(&repo, v),
        action: format!("{}/delete", version_href(&repo, v)),
        immutable: d.immutable.map(|(rule, tag)| format!("{tag} is immutable (rule {rule})")).unwrap_or_default(),
    };
    Ok(page(&template))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
}

/// `POST .../<version>/delete`: deletes the version (the tag, or the
/// untagged manifest), as the Gitea API's delete does.
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, rest)): Path<(String, String)>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, PageError> {
    let Target::Delete(repo, v) = target(&state, &ctx, &owner, &rest).await? else {
        return Err(PageError::NotFound);
    };
    let session = ctx.check_csrf(&form.csrf)?;
    check_readable(&state, &ctx, &repo).await?;
    if !may(&state, &ctx, &repo, Action::Delete).await? {
        return Err(PageError::Forbidden("You may not delete in this repository.".into()));
    }
    state.registry().delete_package_version(&repo, &v, Some(&session.user.name)).await?;
    let versions = format!("{}/versions?deleted={}", package_href(&repo), super::query_value(&v));
    Ok(see_other(&versions))
}
