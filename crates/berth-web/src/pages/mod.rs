//! One module per page (or group of pages), each a thin handler: read the
//! request, check what the viewer may do, call one service, render.

pub mod admin;
pub mod home;
pub mod login;
pub mod package;
pub mod packages;
pub mod tokens;
pub mod usage;

use berth_api::AppState;
use berth_auth::{Action, Actions};
use berth_oci::RepositoryName;
use berth_registry::browse::{PackageRow, RecentPush};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::format;
use crate::render::PageError;
use crate::session::Ctx;

/// Rows per page of every listing.
pub const PAGE_SIZE: u32 = 50;

/// What a path segment must escape (a name's `/` becomes `%2F`, as Gitea writes it).
const SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'/').add(b'%').add(b'?').add(b'#').add(b'"').add(b'<').add(b'>').add(b'&').add(b'\'');

pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// `/<owner>/-/packages/container/<name>` for a repository.
pub fn package_href(repo: &RepositoryName) -> String {
    let name = repo.as_str().split_once('/').map_or("", |(_, n)| n);
    format!("/{}/-/packages/container/{}", segment(repo.owner()), segment(name))
}

pub fn version_href(repo: &RepositoryName, version: &str) -> String {
    format!("{}/{}", package_href(repo), segment(version))
}

/// May the viewer see `repo`? Otherwise the page is a 404, as for a
/// repository that does not exist.
pub async fn check_readable(state: &AppState, ctx: &Ctx, repo: &RepositoryName) -> Result<(), PageError> {
    if may(state, ctx, repo, Action::Pull).await? { Ok(()) } else { Err(PageError::NotFound) }
}

/// Whether the viewer may do `action` on `repo` (pages with authentication
/// off are read-only: no session, so no CSRF token to bind a form to).
pub async fn may(state: &AppState, ctx: &Ctx, repo: &RepositoryName, action: Action) -> Result<bool, PageError> {
    let Some(auth) = state.auth() else { return Ok(action == Action::Pull) };
    let wanted = Actions::of(&[action]);
    Ok(auth.allowed(&ctx.principal(), repo, wanted).await?.covers(wanted))
}

/// A row of a package listing, ready to show.
pub struct PackageItem {
    pub repository: String,
    pub href: String,
    pub public: bool,
    pub tags: u64,
    pub newest_tag: String,
    pub newest_href: String,
    pub last_push: String,
    pub size: String,
}

impl PackageItem {
    pub fn of(row: &PackageRow) -> Self {
        let newest = row.newest_tag.clone().unwrap_or_default();
        PackageItem {
            repository: row.repository.to_string(),
            href: package_href(&row.repository),
            public: row.is_public,
            tags: row.tag_count,
            newest_href: if newest.is_empty() { String::new() } else { version_href(&row.repository, &newest) },
            newest_tag: newest,
            last_push: format::time(row.last_push),
            size: format::size(row.size),
        }
    }
}

pub struct RecentItem {
    pub repository: String,
    pub tag: String,
    pub href: String,
    pub digest: String,
    pub at: String,
    pub by: String,
}

impl RecentItem {
    pub fn of(p: &RecentPush) -> Self {
        RecentItem {
            repository: p.repository.to_string(),
            href: version_href(&p.repository, &p.tag),
            tag: p.tag.clone(),
            digest: format::short_digest(&p.digest.to_string()),
            at: format::time(p.pushed_at),
            by: p.pushed_by.clone().unwrap_or_default(),
        }
    }
}

/// Previous/next links of a paginated listing.
pub struct Pager {
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `base` is the listing's URL with its other query parameters, ending in `?` or `&`.
    pub fn new(base: &str, page: u64, total: u64) -> Pager {
        let pages = total.div_ceil(u64::from(PAGE_SIZE)).max(1);
        Pager {
            page,
            pages,
            total,
            prev: (page > 1).then(|| format!("{base}page={}", page - 1)),
            next: (page < pages).then(|| format!("{base}page={}", page + 1)),
        }
    }

    pub fn offset(page: u64) -> u64 {
        page.saturating_sub(1).saturating_mul(u64::from(PAGE_SIZE))
    }
}

/// A `page` query parameter: 1 unless a positive number.
pub fn page_number(raw: Option<&str>) -> u64 {
    raw.and_then(|p| p.parse::<u64>().ok()).filter(|p| *p >= 1 && *p <= 1_000_000).unwrap_or(1)
}

/// Query-string encoding of a value (for links that carry a filter).
pub fn query_value(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)]).map(|s| s[2..].to_owned()).unwrap_or_default()
}
