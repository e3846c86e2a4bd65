use axum::body::Body;
use axum::response::Response;
use berth_auth::Principal;
use berth_blob::BlobBody;
use berth_oci::{Digest, RepositoryName};
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, RANGE,
};
use http::{HeaderMap, HeaderName, StatusCode};

use super::respond;
use crate::AppState;
use crate::error::ApiError;
use crate::headers::{self, DOCKER_CONTENT_DIGEST};
use crate::range::{self, RangeOutcome};

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with single byte ranges.
pub async fn get(
    state: &AppState,
    name: &RepositoryName,
    digest: &Digest,
    head: bool,
    req_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = state.registry().blob_size(name, digest).await?;
    let etag = format!("\"{digest}\"");
    let mut hs: Vec<(HeaderName, String)> = vec![
        (DOCKER_CONTENT_DIGEST, digest.to_string()),
        (ACCEPT_RANGES, "bytes".into()),
        (CONTENT_TYPE, "application/octet-stream".into()),
        (ETAG, etag.clone()),
        // Content-addressed: the bytes behind this URL never change.
        (CACHE_CONTROL, "max-age=31536000".into()),
    ];
    if headers::get(req_headers, IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return respond(StatusCode::NOT_MODIFIED, &hs, Body::empty());
    }
    let (status, range) = match range::resolve(headers::get(req_headers, RANGE), size) {
        RangeOutcome::Full => (StatusCode::OK, None),
        RangeOutcome::Partial(r) => {
            hs.push((CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end)));
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
        RangeOutcome::Unsatisfiable => {
            // No body: the spec's error codes have none for ranges, and the
            // length must match what is sent.
            let hs = [(CONTENT_RANGE, format!("bytes */{size}")), (CONTENT_LENGTH, "0".to_owned())];
            return respond(StatusCode::RANGE_NOT_SATISFIABLE, &hs, Body::empty());
        }
    };
    let len = range.map_or(size, |r| r.len());
    hs.push((CONTENT_LENGTH, len.to_string()));
    if head {
        return respond(status, &hs, Body::empty());
    }
    let read = state.registry().open_blob(digest, range).await?;
    match read.body {
        BlobBody::Stream(s) => {
            berth_metrics::metrics().bytes_pulled.inc_by(len);
            respond(status, &hs, Body::from_stream(s))
        }
        BlobBody::Redirect(url) => {
            let hs = [(LOCATION, url), (DOCKER_CONTENT_DIGEST, digest.to_string()), (CONTENT_LENGTH, "0".into())];
            respond(StatusCode::TEMPORARY_REDIRECT, &hs, Body::empty())
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
    respond(StatusCode::ACCEPTED, &[(CONTENT_LENGTH, "0".into())], Body::empty())
}
