use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use berth_auth::Principal;
use berth_oci::media_type::{MANIFEST_TYPES, essence};
use berth_oci::{Reference, RepositoryName, Tag};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, HeaderName, StatusCode};

use super::{query_pairs, respond};
use crate::AppState;
use crate::body::{drain, drain_unread, read_limited};
use crate::endpoint::ManifestReference;
use crate::error::ApiError;
use crate::headers::{self, DOCKER_CONTENT_DIGEST, OCI_SUBJECT, OCI_TAG};

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`
pub async fn get(
    state: &AppState,
    name: &RepositoryName,
    reference: ManifestReference,
    head: bool,
    req_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let reference = reference.resolve(false)?;
    let m = state.registry().get_manifest(name, &reference, !head).await?;
    if !acceptable(req_headers, &m.media_type) {
        return Err(ApiError::ManifestNotAcceptable { media_type: m.media_type });
    }
    let hs = [
        (DOCKER_CONTENT_DIGEST, m.digest.to_string()),
        (CONTENT_LENGTH, m.size.to_string()),
        (ETAG, format!("\"{}\"", m.digest)),
        (CONTENT_TYPE, m.media_type),
    ];
    let body = if head { Body::empty() } else { Body::from(m.content) };
    respond(StatusCode::OK, hs, body)
}

/// Content negotiation, lenient on purpose: only a client that lists manifest
/// types and none of ours is refused (as Distribution does), so tools that
/// send `*/*`, nothing, or unrelated types still get the manifest.
fn acceptable(h: &HeaderMap, media_type: &str) -> bool {
    let mut listed_manifest_type = false;
    for value in h.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            let t = essence(item);
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
            listed_manifest_type |= MANIFEST_TYPES.contains(&t);
        }
    }
    !listed_manifest_type
}

/// `PUT /v2/<name>/manifests/<reference>[?tag=a&tag=b]`
pub async fn put(
    state: &AppState,
    who: &Principal,
    name: &RepositoryName,
    reference: ManifestReference,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, mut body) = req.into_parts();
    let limit = state.registry().policy().max_manifest_size;
    let (reference, extra_tags) = match put_target(reference, &parts.headers, parts.uri.query(), limit) {
        Ok(target) => target,
        Err(e) => {
            // Refused before reading: the client still gets to see why.
            drain_unread(&parts.headers, &mut body).await;
            return Err(e);
        }
    };
    let content_type = headers::get(&parts.headers, CONTENT_TYPE).map(str::to_owned);
    let content = match read_limited(&mut body, limit, state.settings().request_timeout).await {
        Ok(Some(content)) => content,
        Ok(None) => {
            drain(&mut body).await;
            return Err(ApiError::ManifestTooLarge { limit });
        }
        Err(e) => return Err(ApiError::ManifestUnreadable(e.to_string())),
    };
    let pushed = state
        .registry()
        .put_manifest(name, &reference, content, content_type.as_deref(), extra_tags, who.user_name())
        .await?;
    let tags: Vec<&str> = pushed.tags.iter().map(|t| t.as_str()).collect();
    tracing::info!(target: "audit", event = "manifest_push", user = who.user_name().unwrap_or("-"), repository = %name, digest = %pushed.digest, tags = %tags.join(","));
    let mut hs: Vec<(HeaderName, String)> = vec![
        (LOCATION, state.url(&format!("/v2/{name}/manifests/{}", pushed.digest))),
        (DOCKER_CONTENT_DIGEST, pushed.digest.to_string()),
        (CONTENT_LENGTH, "0".into()),
    ];
    if let Some(subject) = &pushed.subject {
        hs.push((OCI_SUBJECT, subject.to_string()));
    }
    hs.extend(pushed.tags.iter().map(|t| (OCI_TAG, t.to_string())));
    respond(StatusCode::CREATED, hs, Body::empty())
}

/// What a manifest PUT targets (its reference and `?tag=`s), and whether its
/// declared length fits `limit`: checked before its body is read.
fn put_target(
    reference: ManifestReference,
    h: &HeaderMap,
    query: Option<&str>,
    limit: usize,
) -> Result<(Reference, Vec<Tag>), ApiError> {
    let reference = reference.resolve(true)?;
    let extra_tags = query_pairs(query)?
        .into_iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| Tag::parse(&v).map_err(|_| ApiError::TagInvalid(Some(v))))
        .collect::<Result<Vec<_>, _>>()?;
    if headers::get(h, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::ManifestTooLarge { limit });
    }
    Ok((reference, extra_tags))
}

/// `DELETE /v2/<name>/manifests/<reference>`: by digest the manifest, by tag only the tag.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    name: &RepositoryName,
    reference: ManifestReference,
) -> Result<Response, ApiError> {
    let reference = reference.resolve(false)?;
    state.registry().delete_manifest_as(name, &reference, who.user_name()).await?;
    tracing::info!(target: "audit", event = "manifest_delete", user = who.user_name().unwrap_or("-"), repository = %name, reference = %reference);
    respond(StatusCode::ACCEPTED, [(CONTENT_LENGTH, "0")], Body::empty())
}
