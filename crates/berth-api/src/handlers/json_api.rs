//! What the `/api/v1` JSON handlers share (the package API and the admin
//! API): who the caller is, what it may do, and how answers look. Errors
//! are [`JsonError`]s (Gitea's `{"message": ...}` shape).
//!
//! Credentials: `Authorization: token <PAT>`, `Bearer <PAT>` or Basic; they
//! are required when authentication is on.

use std::time::{Duration, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use berth_auth::{Actions, AuthError, Principal};
use berth_oci::RepositoryName;
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Failure, authenticate};
use crate::error::json::JsonError;

/// The caller: credentials are required when auth is on.
pub async fn caller(state: &AppState, c: &Caller<'_>) -> Result<Principal, JsonError> {
    if state.auth().is_none() {
        return Ok(Principal::Anonymous);
    }
    if !c.headers.contains_key(AUTHORIZATION) {
        return Err(JsonError::CredentialsRequired);
    }
    match authenticate(state, c).await {
        Ok(p) if p.is_authenticated() => Ok(p),
        Ok(_) => Err(JsonError::CredentialsRequired),
        Err(Failure::Auth(e)) => Err(auth_error(e)),
        Err(Failure::UnsupportedScheme | Failure::MalformedBasic) => Err(JsonError::InvalidCredentials),
    }
}

/// The situation an authentication failure is, on the JSON API.
pub fn auth_error(e: AuthError) -> JsonError {
    match e {
        AuthError::InvalidCredentials | AuthError::InvalidToken(_) => JsonError::InvalidCredentials,
        AuthError::TooManyAttempts(_) | AuthError::Busy => JsonError::TooManyLogins,
        AuthError::Store(e) => JsonError::Registry(e.into()),
        AuthError::Internal(m) => JsonError::Internal(format!("authentication: {m}")),
    }
}

/// Whether `who` may do `actions` to `repo` (anyone may with auth off).
pub async fn may(
    state: &AppState,
    who: &Principal,
    repo: &RepositoryName,
    actions: Actions,
) -> Result<bool, JsonError> {
    let Some(auth) = state.auth() else { return Ok(true) };
    let allowed = auth.allowed(who, repo, actions).await.map_err(|e| JsonError::AuthorizationFailed(e.to_string()))?;
    Ok(allowed.covers(actions))
}

pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A route of the JSON API exists, not with this method.
pub async fn method_not_allowed() -> JsonError {
    JsonError::MethodNotAllowed
}
