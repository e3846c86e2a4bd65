use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, LINK};
use serde_json::json;

use super::{Page, query_pairs, respond};
use crate::AppState;
use crate::error::ApiError;

/// `GET /v2/_catalog?n=&last=`
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let page = Page::from_query(&query_pairs(query.as_deref())?)?;
    let repos = match page.n {
        Some(0) => Vec::new(),
        n => state.registry().list_repositories(page.last.as_deref(), n).await?,
    };
    let mut headers = vec![(CONTENT_TYPE, "application/json".to_owned())];
    if let Some(link) = page.next_link("/v2/_catalog", &repos) {
        headers.push((LINK, link));
    }
    let body = serde_json::to_vec(&json!({ "repositories": repos })).unwrap_or_default();
    respond(StatusCode::OK, &headers, Body::from(body))
}
