//! Storage usage and quotas:
//!
//! - `GET /api/v1/admin/usage`: every owner's usage with its limits (site admins);
//! - `GET /api/v1/owners/{owner}/usage`: one owner's usage, limits and
//!   repositories, for site admins, the user of that name, and `admin`
//!   members of the organization of that name
//!   (`AuthService::may_administer_owner`); an owner that stores nothing
//!   shows zeros;
//! - `GET /api/v1/admin/quotas`: owners with limits of their own;
//! - `PUT /api/v1/admin/quotas/{owner}` with `{"bytes": "50GiB" | 53687091200
//!   | null, "repositories": 10 | null}` (`null` or absent: the `[quotas]`
//!   default applies; 0: unlimited): 200 with the owner's usage;
//! - `DELETE /api/v1/admin/quotas/{owner}`: 204, or 404 if it had none.
//!
//! Usage figures: `bytes` (each distinct blob once, plus manifests; see
//! `berth_meta::usage`), `repositories`, `manifests`, `tags`; `limits` are
//! what applies (0 = unlimited), `own_limits` the owner's own (`null`
//! without). Credentials and errors as in `handlers::retention`: 401 without
//! valid credentials, 403 without the right; quota changes need a token
//! with `write:package`. With authentication disabled anyone may.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::{Actions, Principal};
use berth_registry::quota::{QuotaLimits, Size, repository_usage_json};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::Value;

use super::json_api::{caller, json_response};
use crate::AppState;
use crate::auth::Caller;
use crate::body::{drain, drain_unread, read_limited};
use crate::error::json::JsonError;

/// Two figures: far below this.
const MAX_BODY: usize = 16 * 1024;

const ADMINS_ONLY: JsonError = JsonError::Forbidden("only site admins may see every owner's usage or manage quotas");
const NOT_THEIRS: JsonError =
    JsonError::Forbidden("only site admins, the user themself and admins of the organization may see an owner's usage");
const NO_SUCH_OWNER: JsonError = JsonError::NotFound("owner does not exist");
const NO_QUOTA: JsonError = JsonError::NotFound("owner has no quota of its own");

/// Limits as put. Unknown fields are refused: a misspelt limit must not
/// pass for "the default applies".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    /// A size: `"50GiB"`, `"500MB"`, a number of bytes, or `null`.
    #[serde(default)]
    bytes: Option<Value>,
    #[serde(default)]
    repositories: Option<u64>,
}

impl QuotaBody {
    fn into_limits(self) -> Result<QuotaLimits, JsonError> {
        let bytes = match self.bytes {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                JsonError::BadRequest(format!("bytes: {n} is not a size (a whole number of bytes, or like \"50GiB\")"))
            })?),
            Some(Value::String(text)) => {
                Some(text.parse::<Size>().map_err(|e| JsonError::BadRequest(format!("bytes: {e}")))?.bytes())
            }
            Some(other) => {
                return Err(JsonError::BadRequest(format!(
                    "bytes: {other} is not a size (examples: \"50GiB\", \"500MB\", 1048576, null)"
                )));
            }
        };
        Ok(QuotaLimits { bytes, repositories: self.repositories })
    }
}

/// The caller, if a site admin may do `wanted` (the one check, as for retention rules).
async fn admin(state: &AppState, req: &Parts, wanted: Actions) -> Result<Principal, JsonError> {
    let who = caller(state, &Caller::of_parts(req)).await?;
    match state.auth() {
        Some(auth) if !auth.is_site_admin(&who, wanted) => Err(ADMINS_ONLY),
        _ => Ok(who),
    }
}

/// An owner name as the path gives it: one repository-name component.
fn owner_name(owner: &str) -> Result<&str, JsonError> {
    if owner.contains('/') || berth_oci::RepositoryName::parse(owner).is_err() {
        return Err(NO_SUCH_OWNER);
    }
    Ok(owner)
}

/// `GET /api/v1/admin/usage`
pub async fn all(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        admin(&state, &req, Actions::PULL).await?;
        let all = state.registry().all_usage().await?;
        Ok::<_, JsonError>(json_response(StatusCode::OK, &Value::Array(all.iter().map(|r| r.to_json()).collect())))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/owners/{owner}/usage`
pub async fn owner(State(state): State<AppState>, Path(owner): Path<String>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        let who = caller(&state, &Caller::of_parts(&req)).await?;
        let owner = owner_name(&owner)?;
        if let Some(auth) = state.auth()
            && !auth
                .may_administer_owner(&who, owner, Actions::PULL)
                .await
                .map_err(|e| JsonError::AuthorizationFailed(e.to_string()))?
        {
            return Err(NOT_THEIRS);
        }
        let registry = state.registry();
        let mut body = registry.usage(owner).await?.to_json();
        let repositories = registry.repository_usage(owner).await?;
        body["repositories_usage"] = Value::Array(repositories.iter().map(repository_usage_json).collect());
        Ok::<_, JsonError>(json_response(StatusCode::OK, &body))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/admin/quotas`
pub async fn quotas(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        admin(&state, &req, Actions::PULL).await?;
        let quotas = state.registry().quotas().await?;
        Ok::<_, JsonError>(json_response(StatusCode::OK, &Value::Array(quotas.iter().map(|q| q.to_json()).collect())))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /api/v1/admin/quotas/{owner}`
pub async fn set(State(state): State<AppState>, Path(owner): Path<String>, req: Request) -> Response {
    let (req, mut body) = req.into_parts();
    async {
        if let Err(e) = admin(&state, &req, Actions::READ_WRITE).await {
            drain_unread(&req.headers, &mut body).await;
            return Err(e);
        }
        let read = read_limited(&mut body, MAX_BODY, state.settings().body_idle_timeout).await;
        let Some(bytes) = read.map_err(|e| JsonError::BadRequest(format!("reading the request body: {e}")))? else {
            drain(&mut body).await;
            return Err(JsonError::TooLarge("a quota is at most 16 KiB of JSON"));
        };
        let body: QuotaBody =
            serde_json::from_slice(&bytes).map_err(|e| JsonError::BadRequest(format!("invalid quota JSON: {e}")))?;
        let owner = owner_name(&owner)?;
        let registry = state.registry();
        registry.set_quota(owner, body.into_limits()?).await?;
        Ok::<_, JsonError>(json_response(StatusCode::OK, &registry.usage(owner).await?.to_json()))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/v1/admin/quotas/{owner}`
pub async fn remove(State(state): State<AppState>, Path(owner): Path<String>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        admin(&state, &req, Actions::READ_WRITE).await?;
        if !state.registry().remove_quota(owner_name(&owner).map_err(|_| NO_QUOTA)?).await? {
            return Err(NO_QUOTA);
        }
        Ok::<_, JsonError>(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(body: &str) -> Result<QuotaLimits, String> {
        let body: QuotaBody = serde_json::from_str(body).map_err(|e| e.to_string())?;
        body.into_limits().map_err(|e| e.describe().1)
    }

    #[test]
    fn sizes_are_numbers_or_human_strings_and_null_means_the_default() {
        assert_eq!(limits(r#"{"bytes":"50GiB"}"#), Ok(QuotaLimits { bytes: Some(50 << 30), repositories: None }));
        assert_eq!(
            limits(r#"{"bytes":1024,"repositories":3}"#),
            Ok(QuotaLimits { bytes: Some(1024), repositories: Some(3) })
        );
        assert_eq!(
            limits(r#"{"bytes":null,"repositories":0}"#),
            Ok(QuotaLimits { bytes: None, repositories: Some(0) })
        );
        assert_eq!(limits("{}"), Ok(QuotaLimits::default()));
        let bad = limits(r#"{"bytes":"lots"}"#).unwrap_err();
        assert!(bad.contains("\"lots\" is not a size") && bad.contains("50GiB"), "{bad}");
        for body in
            [r#"{"bytes":-1}"#, r#"{"bytes":1.5}"#, r#"{"bytes":true}"#, r#"{"byte":1}"#, r#"{"repositories":-1}"#]
        {
            assert!(limits(body).is_err(), "{body}");
        }
    }
}
