use std::borrow::Cow;

use axum::body::Body;
use axum::response::Response;
use berth_auth::Principal;
use berth_oci::{Digest, RepositoryName};
use berth_registry::blobs::{BlobBody, BlobStat};
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, RANGE,
};
use http::{HeaderMap, HeaderName, StatusCode};

use super::respond;
use crate::AppState;
use crate::error::ApiError;
use crate::headers::{self, DOCKER_CONTENT_DIGEST};
use crate::range;

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with single byte ranges. One
/// service call: `stat_blob` for HEAD and unchanged conditional requests,
/// `read_blob` otherwise; both check the blob is visible in `name`.
pub async fn get(
    state: &AppState,
    name: &RepositoryName,
    digest: &Digest,
    head: bool,
    req_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = format!("\"{digest}\"");
    let mut hs: Vec<(HeaderName, Cow<'static, str>)> = Vec::with_capacity(7);
    hs.extend([
        (DOCKER_CONTENT_DIGEST, digest.to_string().into()),
        (ACCEPT_RANGES, "bytes".into()),
        (CONTENT_TYPE, "application/octet-stream".into()),
        (ETAG, etag.clone().into()),
        // Content-addressed: the bytes behind this URL never change.
        (CACHE_CONTROL, "max-age=31536000".into()),
    ]);
    let registry = state.registry();
    let unchanged = headers::get(req_headers, IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        registry.stat_blob(name, digest, None).await?;
        return respond(StatusCode::NOT_MODIFIED, hs, Body::empty());
    }
    let range = range::parse(headers::get(req_headers, RANGE));
    if head {
        let stat = registry.stat_blob(name, digest, range).await?;
        let status = length_headers(&mut hs, &stat);
        return respond(status, hs, Body::empty());
    }
    let content = registry.read_blob(name, digest, range).await?;
    match content.body {
        BlobBody::Stream(s) => {
            let status = length_headers(&mut hs, &content.stat);
            respond(status, hs, Body::from_stream(s))
        }
        BlobBody::Redirect(url) => {
            let hs = [(LOCATION, url), (DOCKER_CONTENT_DIGEST, digest.to_string()), (CONTENT_LENGTH, "0".into())];
            respond(StatusCode::TEMPORARY_REDIRECT, hs, Body::empty())
        }
    }
}

/// `Content-Length`, and `Content-Range` for a part; the status that goes with them.
fn length_headers(hs: &mut Vec<(HeaderName, Cow<'static, str>)>, stat: &BlobStat) -> StatusCode {
    hs.push((CONTENT_LENGTH, stat.len().to_string().into()));
    match stat.range {
        None => StatusCode::OK,
        Some(r) => {
            hs.push((CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, stat.size).into()));
            StatusCode::PARTIAL_CONTENT
        }
    }
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from the repository
/// (403 `DENIED` while a manifest there references it; see `delete_blob`).
pub async fn delete(
    state: &AppState,
    who: &Principal,
    name: &RepositoryName,
    digest: &Digest,
) -> Result<Response, ApiError> {
    state.registry().delete_blob(name, digest).await?;
    tracing::info!(target: "audit", event = "blob_delete", user = who.user_name().unwrap_or("-"), repository = %name, digest = %digest);
    respond(StatusCode::ACCEPTED, [(CONTENT_LENGTH, "0")], Body::empty())
}
