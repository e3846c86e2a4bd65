use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use berth_auth::access::scope_string;
use berth_auth::{Action, Actions, Principal};
use berth_oci::{Algorithm, Digest, RepositoryName};
use berth_registry::blobs::{AnyoneMounts, Mount, MountError};
use berth_registry::uploads::{ChunkInfo, UploadStatus};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, StatusCode};

use super::{query_get, query_pairs, respond};
use crate::AppState;
use crate::auth::{Caller, CallerMounts, auth_error, insufficient_scope};
use crate::body::byte_stream;
use crate::error::{ApiError, Unauthorized, upload_range};
use crate::headers::{self, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID};
use crate::range::parse_content_range;

/// `POST /v2/<name>/blobs/uploads/`: a mount (`?mount=&from=`), a whole blob
/// in one request (`?digest=`), or a new session (`?digest-algorithm=`).
pub async fn start(
    state: &AppState,
    who: &Principal,
    name: &RepositoryName,
    req: Request,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(req.uri().query())?;
    let registry = state.registry();
    if let Some(mount) = query_get(&pairs, "mount") {
        let digest = Digest::parse(mount)?;
        let from = query_get(&pairs, "from");
        // Which sources the caller may use is decided by its rights, asked by the service.
        let mounted = match state.auth() {
            None => registry.mount_or_upload(name, &digest, from, &AnyoneMounts).await.map_err(|e| match e {
                MountError::Registry(e) => ApiError::from(e),
                MountError::Authorizer(never) => match never {},
            }),
            Some(auth) => {
                let authz = CallerMounts { auth, who };
                registry.mount_or_upload(name, &digest, from, &authz).await.map_err(|e| match e {
                    MountError::Registry(e) => ApiError::from(e),
                    MountError::Authorizer(e) => auth_error(state, &Caller::none(), None, e),
                })
            }
        };
        return match mounted? {
            Mount::Mounted { .. } => {
                audit_blob(who, name, &digest, "mount");
                blob_created(state, name, &digest)
            }
            Mount::NeedsScope { source } => {
                // Ask for a token naming both repositories, as Distribution does.
                let scopes = format!(
                    "{} {}",
                    scope_string(name, Actions::of(&[Action::Pull, Action::Push])),
                    scope_string(&source, Actions::PULL)
                );
                Err(insufficient_scope(state, &Caller::of(&req), who, &scopes, Unauthorized::MountNeedsScope))
            }
            Mount::Upload(status) => session_response(state, name, &status, StatusCode::ACCEPTED),
        };
    }
    if let Some(d) = query_get(&pairs, "digest") {
        let digest = Digest::parse(d)?;
        let length = content_length(req.headers())?;
        let body = byte_stream(req.into_body(), state.settings().body_idle_timeout);
        registry.put_blob(name, &digest, body, length).await?;
        audit_blob(who, name, &digest, "upload");
        return blob_created(state, name, &digest);
    }
    let algorithm = match query_get(&pairs, "digest-algorithm") {
        None | Some("") => Algorithm::Sha256,
        Some(a) => Algorithm::parse(a)?,
    };
    let status = registry.start_upload(name, algorithm).await?;
    session_response(state, name, &status, StatusCode::ACCEPTED)
}

fn audit_blob(who: &Principal, name: &RepositoryName, digest: &Digest, how: &str) {
    tracing::info!(target: "audit", event = "blob_push", how, user = who.user_name().unwrap_or("-"), repository = %name, digest = %digest);
}

/// `GET /v2/<name>/blobs/uploads/<id>`: progress of an upload.
pub async fn status(state: &AppState, name: &RepositoryName, id: &str) -> Result<Response, ApiError> {
    let status = state.registry().upload_status(name, check_id(id)?).await?;
    session_response(state, name, &status, StatusCode::NO_CONTENT)
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a chunk (with `Content-Range`) or a stream.
pub async fn append(state: &AppState, name: &RepositoryName, id: &str, req: Request) -> Result<Response, ApiError> {
    let id = check_id(id)?;
    let chunk = chunk_info(req.headers())?;
    let body = byte_stream(req.into_body(), state.settings().body_idle_timeout);
    let status = state.registry().append_upload(name, id, body, chunk).await?;
    session_response(state, name, &status, StatusCode::ACCEPTED)
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: finishes an upload, with an optional last chunk.
pub async fn finish(
    state: &AppState,
    who: &Principal,
    name: &RepositoryName,
    id: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let id = check_id(id)?;
    let pairs = query_pairs(req.uri().query())?;
    let digest = match query_get(&pairs, "digest") {
        Some(d) => Digest::parse(d)?,
        None => return Err(ApiError::DigestInvalid("the digest query parameter is required".into())),
    };
    let chunk = chunk_info(req.headers())?;
    let has_body = chunk.length.is_some_and(|n| n > 0) || req.headers().contains_key(TRANSFER_ENCODING);
    let last = has_body.then(|| (byte_stream(req.into_body(), state.settings().body_idle_timeout), chunk));
    state.registry().finish_upload(name, id, &digest, last).await?;
    audit_blob(who, name, &digest, "upload");
    blob_created(state, name, &digest)
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancels an upload.
pub async fn cancel(state: &AppState, name: &RepositoryName, id: &str) -> Result<Response, ApiError> {
    state.registry().cancel_upload(name, check_id(id)?).await?;
    respond(StatusCode::NO_CONTENT, [(CONTENT_LENGTH, "0")], Body::empty())
}

/// Upload ids are UUIDs; anything else cannot name a session.
fn check_id(id: &str) -> Result<&str, ApiError> {
    uuid::Uuid::try_parse(id).map(|_| id).map_err(|_| ApiError::UploadIdInvalid)
}

fn content_length(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers::get(h, CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| ApiError::ContentLengthInvalid),
    }
}

fn chunk_info(h: &HeaderMap) -> Result<ChunkInfo, ApiError> {
    let range = match headers::get(h, CONTENT_RANGE) {
        None => None,
        Some(v) => Some(parse_content_range(v).ok_or_else(|| ApiError::ContentRangeInvalid(v.to_owned()))?),
    };
    Ok(ChunkInfo { range, length: content_length(h)? })
}

fn session_response(
    state: &AppState,
    name: &RepositoryName,
    status: &UploadStatus,
    code: StatusCode,
) -> Result<Response, ApiError> {
    let hs: [(HeaderName, String); 4] = [
        (LOCATION, state.url(&format!("/v2/{name}/blobs/uploads/{}", status.id))),
        (RANGE, upload_range(status.offset)),
        (DOCKER_UPLOAD_UUID, status.id.clone()),
        (CONTENT_LENGTH, "0".into()),
    ];
    respond(code, hs, Body::empty())
}

fn blob_created(state: &AppState, name: &RepositoryName, digest: &Digest) -> Result<Response, ApiError> {
    let hs = [
        (LOCATION, state.url(&format!("/v2/{name}/blobs/{digest}"))),
        (DOCKER_CONTENT_DIGEST, digest.to_string()),
        (CONTENT_LENGTH, "0".into()),
    ];
    respond(StatusCode::CREATED, hs, Body::empty())
}
