use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use berth_auth::{Principal, grants_catalog};
use http::StatusCode;
use http::header::{CONTENT_TYPE, LINK};
use serde_json::json;

use super::{Page, query_pairs, respond};
use crate::AppState;
use crate::auth::{Caller, auth_error, insufficient_scope, require_any};
use crate::error::{ApiError, Unauthorized};

const CATALOG: &str = "registry:catalog:*";

/// `GET /v2/_catalog?n=&last=`
/// Lists only what the caller may pull.
pub async fn list(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let page = Page::from_query(&query_pairs(req.uri().query())?)?;
    let caller = Caller::of(&req);
    let principal = require_any(&state, &caller, Some(CATALOG)).await?;
    // A bearer token lists the catalog only if it was issued for it.
    if let Principal::Bearer(claims) = &principal
        && !grants_catalog(claims)
    {
        return Err(insufficient_scope(&state, &caller, &principal, CATALOG, Unauthorized::InsufficientScope));
    }
    let repos = match (page.limit, state.auth()) {
        (0, _) => Vec::new(),
        (n, None) => state.registry().list_repositories(page.last.as_deref(), Some(n)).await?,
        (n, Some(auth)) => auth
            .readable_repositories(&principal, page.last.as_deref(), n)
            .await
            .map_err(|e| auth_error(&state, &caller, None, e))?,
    };
    let mut headers = vec![(CONTENT_TYPE, "application/json".to_owned())];
    if let Some(link) = page.next_link("/v2/_catalog", &repos) {
        headers.push((LINK, link));
    }
    let body = serde_json::to_vec(&json!({ "repositories": repos })).unwrap_or_default();
    respond(StatusCode::OK, headers, Body::from(body))
}
