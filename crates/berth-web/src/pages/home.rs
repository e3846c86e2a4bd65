//! `/`: who is signed in, a search across readable packages, latest pushes.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use berth_api::AppState;
use berth_registry::browse::PackageQuery;
use serde::Deserialize;

use super::{PAGE_SIZE, PackageItem, RecentItem};
use crate::render::{Layout, PageError, page};
use crate::session::Ctx;

const RECENT: u32 = 15;

#[derive(Deserialize)]
pub struct Params {
    q: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    query: String,
    results: Option<Vec<PackageItem>>,
    more: bool,
    recent: Vec<RecentItem>,
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    let registry = state.registry();
    let query = params.q.unwrap_or_default().trim().to_owned();
    let (results, more) = if query.is_empty() {
        (None, false)
    } else {
        let q = PackageQuery { owner: None, contains: Some(&query), offset: 0, limit: PAGE_SIZE };
        let found = registry.packages(ctx.viewer(), &q).await?;
        (Some(found.items.iter().map(PackageItem::of).collect()), found.total > u64::from(PAGE_SIZE))
    };
    let recent = registry.recent_pushes(ctx.viewer(), RECENT).await?.iter().map(RecentItem::of).collect();
    Ok(page(&HomePage { layout: ctx.layout("Berth"), query, results, more, recent }))
}
