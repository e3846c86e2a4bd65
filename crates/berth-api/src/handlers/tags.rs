use axum::body::Body;
use axum::response::Response;
use berth_oci::RepositoryName;
use http::StatusCode;
use http::header::{CONTENT_TYPE, LINK};
use serde_json::json;

use super::{Page, query_pairs, respond};
use crate::AppState;
use crate::error::ApiError;

/// `GET /v2/<name>/tags/list?n=&last=`
pub async fn list(state: &AppState, name: &RepositoryName, query: Option<&str>) -> Result<Response, ApiError> {
    let page = Page::from_query(&query_pairs(query)?)?;
    let tags = match page.limit {
        // n=0 asks for nothing, but the repository must still exist.
        0 => {
            state.registry().list_tags(name, page.last.as_deref(), Some(1)).await?;
            Vec::new()
        }
        n => state.registry().list_tags(name, page.last.as_deref(), Some(n)).await?,
    };
    let mut headers = vec![(CONTENT_TYPE, "application/json".to_owned())];
    if let Some(link) = page.next_link(&format!("/v2/{name}/tags/list"), &tags) {
        headers.push((LINK, link));
    }
    let body = serde_json::to_vec(&json!({ "name": name.as_str(), "tags": tags })).unwrap_or_default();
    respond(StatusCode::OK, headers, Body::from(body))
}
