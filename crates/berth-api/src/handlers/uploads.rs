use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use berth_auth::access::scope_string;
use berth_auth::{Action, Actions, Principal};
use berth_oci::{Algorithm, Digest, ErrorCode, RepositoryName};
use berth_registry::uploads::{ChunkInfo, UploadStatus};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, StatusCode};

use super::{query_get, query_pairs, respond};
use crate::AppState;
use crate::auth::{Caller, auth_error, insufficient_scope};
use crate::body::byte_stream;
use crate::error::{ApiError, upload_range};
use crate::headers::{self, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID};
use crate::range::parse_content_range;
use crate::routes::digest_error;

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
        let digest = Digest::parse(mount).map_err(digest_error)?;
        match mount_source(state, who, &digest, query_get(&pairs, "from")).await? {
            MountSource::Readable(source) => {
                if registry.mount_blob(name, &digest, Some(&source)).await?.is_some() {
                    audit_blob(who, name, &digest, "mount");
                    return blob_created(state, name, &digest);
                }
            }
            MountSource::NeedsScope(source) => {
                // The token lacks pull on a source its holder may read: ask
                // for a token naming both, as Distribution does.
                let scopes = format!(
                    "{} {}",
                    scope_string(name, Actions::of(&[Action::Pull, Action::Push])),
                    scope_string(&source, Actions::PULL)
                );
                return Err(insufficient_scope(state, &Caller::of(&req), who, &scopes));
            }
            MountSource::None => {}
        }
        // Nothing the caller may mount: an ordinary upload, as the spec says.
        return new_session(state, name, digest.algorithm()).await;
    }
    if let Some(d) = query_get(&pairs, "digest") {
        let digest = Digest::parse(d).map_err(digest_error)?;
        let length = content_length(req.headers())?;
        let body = byte_stream(req.into_body(), state.settings().body_idle_timeout);
        registry.put_blob(name, &digest, body, length).await?;
        audit_blob(who, name, &digest, "upload");
        return blob_created(state, name, &digest);
    }
    let algorithm = match query_get(&pairs, "digest-algorithm") {
        None | Some("") => Algorithm::Sha256,
        Some(a) => Algorithm::parse(a).map_err(digest_error)?,
    };
    new_session(state, name, algorithm).await
}

/// Where a mount may take its blob from.
enum MountSource {
    /// A repository holding the blob that the caller may pull.
    Readable(RepositoryName),
    /// One the caller's bearer token does not list, but its holder may
    /// pull: the client should get a token naming it.
    NeedsScope(RepositoryName),
    /// None: the caller uploads the blob instead.
    None,
}

/// The repository to mount `digest` from: `from` if the caller may pull it,
/// or without `from`, any repository holding the blob that the caller may
/// pull (so a digest alone never opens another namespace's content).
async fn mount_source(
    state: &AppState,
    who: &Principal,
    digest: &Digest,
    from: Option<&str>,
) -> Result<MountSource, ApiError> {
    let candidates = match from {
        // An invalid `from` cannot hold the blob.
        Some(f) => RepositoryName::parse(f).ok().into_iter().collect(),
        None => state.registry().blob_repositories(digest, 100).await?,
    };
    let Some(auth) = state.auth() else {
        return Ok(candidates.into_iter().next().map_or(MountSource::None, MountSource::Readable));
    };
    let fail = |e| auth_error(state, &Caller::none(), None, e);
    for repo in &candidates {
        if auth.allowed(who, repo, Actions::PULL).await.map_err(fail)?.covers(Actions::PULL) {
            return Ok(MountSource::Readable(repo.clone()));
        }
    }
    if matches!(who, Principal::Bearer(_)) {
        for repo in candidates {
            if auth.could_obtain(who, &repo, Actions::PULL).await.map_err(fail)? {
                return Ok(MountSource::NeedsScope(repo));
            }
        }
    }
    Ok(MountSource::None)
}

fn audit_blob(who: &Principal, name: &RepositoryName, digest: &Digest, how: &str) {
    tracing::info!(target: "audit", event = "blob_push", how, user = who.user_name().unwrap_or("-"), repository = %name, digest = %digest);
}

async fn new_session(state: &AppState, name: &RepositoryName, algorithm: Algorithm) -> Result<Response, ApiError> {
    let status = state.registry().start_upload(name, algorithm).await?;
    session_response(state, name, &status, StatusCode::ACCEPTED)
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
        Some(d) => Digest::parse(d).map_err(digest_error)?,
        None => return Err(ApiError::digest_invalid("the digest query parameter is required")),
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
    respond(StatusCode::NO_CONTENT, &[(CONTENT_LENGTH, "0".into())], Body::empty())
}

/// Upload ids are UUIDs; anything else cannot name a session.
fn check_id(id: &str) -> Result<&str, ApiError> {
    uuid::Uuid::try_parse(id).map(|_| id).map_err(|_| ApiError::new(ErrorCode::BlobUploadUnknown))
}

fn content_length(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers::get(h, CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::new(ErrorCode::SizeInvalid).message("invalid Content-Length")),
    }
}

fn chunk_info(h: &HeaderMap) -> Result<ChunkInfo, ApiError> {
    let range = match headers::get(h, CONTENT_RANGE) {
        None => None,
        Some(v) => Some(parse_content_range(v).ok_or_else(|| {
            ApiError::new(ErrorCode::BlobUploadInvalid)
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .message(format!("malformed Content-Range {v:?}"))
        })?),
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
    respond(code, &hs, Body::empty())
}

fn blob_created(state: &AppState, name: &RepositoryName, digest: &Digest) -> Result<Response, ApiError> {
    let hs = [
        (LOCATION, state.url(&format!("/v2/{name}/blobs/{digest}"))),
        (DOCKER_CONTENT_DIGEST, digest.to_string()),
        (CONTENT_LENGTH, "0".into()),
    ];
    respond(StatusCode::CREATED, &hs, Body::empty())
}
