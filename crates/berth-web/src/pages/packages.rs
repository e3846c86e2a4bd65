//! `/<owner>/-/packages`: the owner's container packages the viewer may
//! read, and its storage against its quota for those who may see that.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use berth_api::AppState;
use berth_registry::browse::PackageQuery;
use serde::Deserialize;

use super::usage::owner_line;
use super::{PAGE_SIZE, PackageItem, Pager, page_number, query_value, segment};
use crate::render::{Layout, PageError, page};
use crate::session::Ctx;

#[derive(Deserialize)]
pub struct Params {
    q: Option<String>,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "packages.html")]
struct PackagesPage {
    layout: Layout,
    owner: String,
    query: String,
    items: Vec<PackageItem>,
    pager: Pager,
    /// The owner's storage against its quota, for viewers who may see it.
    usage: Option<String>,
}

pub async fn owner(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(owner): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    if owner.contains('/') || berth_oci::RepositoryName::parse(&owner).is_err() {
        return Err(PageError::NotFound);
    }
    let query = params.q.unwrap_or_default().trim().to_owned();
    let page_no = page_number(params.page.as_deref());
    let q = PackageQuery {
        owner: Some(&owner),
        contains: Some(query.as_str()).filter(|q| !q.is_empty()),
        offset: Pager::offset(page_no),
        limit: PAGE_SIZE,
    };
    let found = state.registry().packages(ctx.viewer(), &q).await?;
    // An owner that does not exist is a 404; one whose packages the viewer
    // may not see shows an empty list (owner names are not secret: they
    // are in every image reference).
    if let Some(auth) = state.auth().filter(|_| found.total == 0) {
        auth.owner(&owner).await?.ok_or(PageError::NotFound)?;
    }
    let usage = owner_line(&state, &ctx, &owner).await?;
    let base = if query.is_empty() {
        format!("/{}/-/packages?", segment(&owner))
    } else {
        format!("/{}/-/packages?q={}&", segment(&owner), query_value(&query))
    };
    let template = PackagesPage {
        layout: ctx.layout(format!("{owner} · Packages")),
        items: found.items.iter().map(PackageItem::of).collect(),
        pager: Pager::new(&base, page_no, found.total),
        usage,
        owner,
        query,
    };
    Ok(page(&template))
}
