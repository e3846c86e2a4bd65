//! `/v2/token`: the bearer token flow docker, containerd, podman and oras use.
//!
//! - `GET` with optional Basic credentials and `service`/`scope` parameters.
//! - `POST` with the OAuth2 form (`grant_type=password`), which containerd
//!   tries first. Refresh tokens are not issued, so `grant_type=refresh_token`
//!   is refused as unsupported and clients fall back to a password grant.
//!
//! Anonymous requests get a token too: it grants pull on public repositories only.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::{Credentials, Principal, Scope};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::json;

use super::{query_pairs, respond};
use crate::AppState;
use crate::auth::{Caller, auth_error, principal, unauthorized};
use crate::body::{drain, read_limited};
use crate::error::{ApiError, Unauthorized};

/// Requested scopes: every `scope` value, each possibly holding several.
fn scopes(pairs: &[(String, String)]) -> Vec<Scope> {
    pairs.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| Scope::parse_all(v)).collect()
}

pub async fn get(State(state): State<AppState>, req: Request) -> Response {
    let Some(auth) = state.auth().cloned() else { return disabled() };
    let (parts, _body) = req.into_parts();
    let caller = Caller::of_parts(&parts);
    let result = async {
        let pairs = query_pairs(parts.uri.query())?;
        let principal = principal(&state, &caller, None).await?;
        // A bearer token cannot buy a fresh one: that would let a leaked
        // short-lived token renew itself for ever.
        if matches!(principal, Principal::Bearer(_)) {
            return Err(unauthorized(&state, &caller, None, Some("invalid_request"), Unauthorized::TokenCannotRenew));
        }
        issue(&state, &auth, &principal, &scopes(&pairs)).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn post(State(state): State<AppState>, req: Request) -> Response {
    let Some(auth) = state.auth().cloned() else { return disabled() };
    let (parts, mut body) = req.into_parts();
    let caller = Caller::of_parts(&parts);
    let result = async {
        let body = match read_limited(&mut body, 64 * 1024, state.settings().request_timeout).await {
            Ok(Some(form)) => form,
            Ok(None) => {
                drain(&mut body).await;
                return Err(ApiError::TokenRequestInvalid("invalid_request"));
            }
            Err(_) => return Err(ApiError::TokenRequestInvalid("invalid_request")),
        };
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&body).map_err(|_| ApiError::TokenRequestInvalid("invalid_request"))?;
        let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let principal = match field("grant_type") {
            Some("password") => {
                let (user, secret) = (field("username").unwrap_or(""), field("password").unwrap_or(""));
                auth.authenticate(Credentials::Basic { user, secret }, caller.ip())
                    .await
                    .map_err(|e| auth_error(&state, &caller, None, e))?
            }
            _ => return Err(ApiError::TokenRequestInvalid("unsupported_grant_type")),
        };
        issue(&state, &auth, &principal, &scopes(&form)).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn issue(
    state: &AppState,
    auth: &berth_auth::AuthService,
    principal: &Principal,
    scopes: &[Scope],
) -> Result<Response, ApiError> {
    let issued = auth.issue_token(principal, scopes).await.map_err(|e| auth_error(state, &Caller::none(), None, e))?;
    let body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
    });
    respond(
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")],
        Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

fn disabled() -> Response {
    ApiError::AuthDisabled.into_response()
}
