use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, LINK};
use serde_json::json;

use super::{Page, query_pairs, respond};
use crate::AppState;
use crate::auth::{Caller, auth_error, require_any};
use crate::error::ApiError;

/// `GET /v2/_catalog?n=&last=`
/// Lists only what the caller may pull.
pub async fn list(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let page = Page::from_query(&query_pairs(req.uri().query())?)?;
    let principal = require_any(&state, Caller::of(&req), Some("registry:catalog:*")).await?;
    let repos = match (page.n, state.auth()) {
        (Some(0), _) => Vec::new(),
        (n, None) => state.registry().list_repositories(page.last.as_deref(), n).await?,
        (n, Some(auth)) => auth
            .readable_repositories(&principal, page.last.as_deref(), n.unwrap_or(u32::MAX))
            .await
            .map_err(|e| auth_error(&state, req.headers(), None, e))?,
    };
    let mut headers = vec![(CONTENT_TYPE, "application/json".to_owned())];
    if let Some(link) = page.next_link("/v2/_catalog", &repos) {
        headers.push((LINK, link));
    }
    let body = serde_json::to_vec(&json!({ "repositories": repos })).unwrap_or_default();
    respond(StatusCode::OK, &headers, Body::from(body))
}
