//! Authentication at the HTTP edge: reading credentials, challenging, and
//! checking that the caller may do what the endpoint does. The rules
//! themselves are in `berth-auth`.
//!
//! - No credentials and not allowed: 401 with a Bearer challenge naming the
//!   scope the request needs (private and missing repositories look the same).
//! - A bearer token lacking the scope: 401 `insufficient_scope` naming it
//!   (403 with the same challenge if the client repeats it with that token).
//! - Credentials valid but not allowed: 403 DENIED, saying nothing more.
//! - Invalid credentials: 401; locked out or too many logins in progress:
//!   429 with Retry-After.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_auth::access::scope_string;
use berth_auth::{Actions, AuthError, Credentials, Principal, granted_by_claims};
use berth_oci::{ErrorCode, RepositoryName};
use http::header::{AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, StatusCode};

use crate::AppState;
use crate::client::{ClientInfo, valid_host};
use crate::error::ApiError;
use crate::headers;

/// The client address: the peer, or the client behind a trusted proxy.
pub fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    client_of(req.extensions()).ip
}

fn client_of(ext: &http::Extensions) -> ClientInfo {
    ext.get::<ClientInfo>()
        .cloned()
        .unwrap_or_else(|| ClientInfo { ip: ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()), origin: None })
}

/// Parses `Authorization`: `Basic`, `Bearer` or Gitea's `token`.
pub fn credentials(h: &HeaderMap) -> Result<Credentials<'_>, ApiError> {
    let Some(value) = headers::get(h, AUTHORIZATION) else { return Ok(Credentials::None) };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return Ok(Credentials::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Credentials::Basic { user: "", secret: rest });
    }
    Err(ApiError::new(ErrorCode::Unauthorized).message("unsupported authorization scheme"))
}

/// Decodes Basic credentials into owned strings (the header holds base64).
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}

/// The externally visible base URL: configured; else the scheme and host a
/// trusted proxy reports; else derived from `Host`.
pub fn base_url(state: &AppState, caller: &Caller<'_>) -> String {
    let configured = &state.settings().public_url;
    if !configured.is_empty() {
        return configured.clone();
    }
    if let Some(origin) = &caller.client.origin {
        return origin.clone();
    }
    let scheme = if state.settings().tls { "https" } else { "http" };
    let host = headers::get(caller.headers, HOST).filter(|h| valid_host(h)).unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// 401 with `WWW-Authenticate: Bearer realm=...,service=...[,scope=...][,error=...]`.
pub fn challenge(state: &AppState, caller: &Caller<'_>, scope: Option<&str>, error: Option<&str>) -> ApiError {
    let mut value =
        format!("Bearer realm=\"{}/v2/token\",service=\"{}\"", base_url(state, caller), state.settings().auth_service);
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        value.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        value.push_str(&format!(",error=\"{e}\""));
    }
    ApiError::new(ErrorCode::Unauthorized).header(WWW_AUTHENTICATE, &value)
}

/// Maps an authentication failure to its response.
pub fn auth_error(state: &AppState, caller: &Caller<'_>, scope: Option<&str>, e: AuthError) -> ApiError {
    match e {
        AuthError::InvalidCredentials => {
            challenge(state, caller, scope, None).message("invalid username, password or token")
        }
        AuthError::InvalidToken(_) => {
            challenge(state, caller, scope, Some("invalid_token")).message("invalid or expired token")
        }
        AuthError::TooManyAttempts(wait) => ApiError::new(ErrorCode::TooManyRequests)
            .message("too many failed logins; try again later")
            // Rounded up: a client that waits exactly this long must not be refused again.
            .header(RETRY_AFTER, &(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1).to_string()),
        AuthError::Busy => ApiError::new(ErrorCode::TooManyRequests)
            .message("too many logins in progress; try again in a second")
            .header(RETRY_AFTER, "1"),
        AuthError::Store(e) => ApiError::from(berth_registry::RegistryError::from(e)),
        AuthError::Internal(m) => ApiError::internal("authentication", m),
    }
}

/// The parts of a request authentication looks at (borrowed across awaits,
/// so they must be `Sync`, which a request body is not).
#[derive(Clone)]
pub struct Caller<'a> {
    pub headers: &'a HeaderMap,
    pub client: ClientInfo,
}

static NO_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);

impl<'a> Caller<'a> {
    pub fn of<B>(req: &'a Request<B>) -> Self {
        Caller { headers: req.headers(), client: client_of(req.extensions()) }
    }

    pub fn of_parts(parts: &'a http::request::Parts) -> Self {
        Caller { headers: &parts.headers, client: client_of(&parts.extensions) }
    }

    /// A caller with no request at hand (errors past authentication).
    pub fn none() -> Caller<'static> {
        Caller { headers: &NO_HEADERS, client: ClientInfo::default() }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.client.ip
    }
}

/// Authenticates the request's credentials (anonymous without any).
pub async fn principal(state: &AppState, caller: &Caller<'_>, scope: Option<&str>) -> Result<Principal, ApiError> {
    let Some(auth) = state.auth() else { return Ok(Principal::Anonymous) };
    let (h, ip) = (caller.headers, caller.ip());
    let creds = credentials(h)
        .map_err(|_| challenge(state, caller, scope, None).message("unsupported authorization scheme"))?;
    let result = match creds {
        Credentials::Basic { secret: encoded, .. } => {
            let (user, secret) = decode_basic(encoded)
                .ok_or_else(|| challenge(state, caller, scope, None).message("malformed Basic credentials"))?;
            auth.authenticate(Credentials::Basic { user: &user, secret: &secret }, ip).await
        }
        other => auth.authenticate(other, ip).await,
    };
    result.map_err(|e| auth_error(state, caller, scope, e))
}

/// What one request needs: `actions` on `repo`.
pub struct Need<'a> {
    pub repo: &'a RepositoryName,
    pub actions: Actions,
}

/// Authenticates and checks `need`; returns the principal for handlers that
/// need it (mount sources, audit lines). With auth disabled everything passes.
///
/// A bearer token that does not list what the request needs is answered 401
/// `insufficient_scope` with the scope to ask for, whoever holds it: it
/// grants exactly its claim, never its holder's other rights.
pub async fn require(state: &AppState, caller: &Caller<'_>, need: Need<'_>) -> Result<Principal, ApiError> {
    let Some(auth) = state.auth() else { return Ok(Principal::Anonymous) };
    let scope = scope_string(need.repo, need.actions);
    let principal = principal(state, caller, Some(&scope)).await?;
    if let Principal::Bearer(claims) = &principal
        && !granted_by_claims(claims, need.repo).covers(need.actions)
    {
        return Err(insufficient_scope(state, caller, &principal, &scope));
    }
    let allowed = auth
        .allowed(&principal, need.repo, need.actions)
        .await
        .map_err(|e| auth_error(state, caller, Some(&scope), e))?;
    if allowed.covers(need.actions) {
        return Ok(principal);
    }
    if principal.is_authenticated() {
        Err(ApiError::new(ErrorCode::Denied).with_status(StatusCode::FORBIDDEN))
    } else {
        // Anonymous (or an anonymous bearer token): log in and try again.
        Err(challenge(state, caller, Some(&scope), anonymous_error(&principal)))
    }
}

/// A bearer token lacks `scope`: refused with a challenge naming the scope
/// to ask for (`error="insufficient_scope"`), 401 as in Docker's token
/// protocol, which Docker-protocol clients (and the OCI conformance suite)
/// answer by fetching a token for that scope. A client that instead repeats
/// the request with the same user's token (oras-py does) gets 403 with the
/// same challenge, the RFC 6750 (3.1) form, on which it drops the token and
/// asks for a new one. Either way nothing beyond the token's claim is granted.
pub fn insufficient_scope(state: &AppState, caller: &Caller<'_>, who: &Principal, scope: &str) -> ApiError {
    let e = challenge(state, caller, Some(scope), Some("insufficient_scope"))
        .message("the bearer token does not grant this; request a token for the scope named in the challenge");
    match who {
        // An anonymous token's holder must log in: always 401.
        Principal::Bearer(claims) if who.is_authenticated() && state.scope_refusals().repeated(&claims.jti, scope) => {
            e.with_status(StatusCode::FORBIDDEN).with_code(ErrorCode::Denied)
        }
        _ => e,
    }
}

/// Which (token, scope) pairs were recently refused, to tell a first
/// refusal from a repeat (see [`insufficient_scope`]). Per process.
#[derive(Default)]
pub struct ScopeRefusals {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl ScopeRefusals {
    const KEEP: Duration = Duration::from_secs(600);
    const MAX: usize = 10_000;

    /// Records a refusal; whether the same one happened recently.
    fn repeated(&self, jti: &str, scope: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= Self::MAX {
            seen.retain(|_, t| now.duration_since(*t) < Self::KEEP);
            if seen.len() >= Self::MAX {
                seen.clear();
            }
        }
        let before = seen.insert((jti.to_owned(), scope.to_owned()), now);
        before.is_some_and(|t| now.duration_since(t) < Self::KEEP)
    }
}

fn anonymous_error(p: &Principal) -> Option<&'static str> {
    matches!(p, Principal::Bearer(_)).then_some("insufficient_scope")
}

/// `/v2/` and the catalog: any valid credentials (an anonymous bearer token
/// counts), but a request without any is challenged so `docker login` can
/// check a password.
pub async fn require_any(state: &AppState, caller: &Caller<'_>, scope: Option<&str>) -> Result<Principal, ApiError> {
    if state.auth().is_none() {
        return Ok(Principal::Anonymous);
    }
    if !caller.headers.contains_key(AUTHORIZATION) {
        return Err(challenge(state, caller, scope, None));
    }
    principal(state, caller, scope).await
}
