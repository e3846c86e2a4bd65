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
//!
//! Every `/v2/<name>/...` request passes [`authorize_repository`], which
//! checks what the parsed endpoint needs before any handler runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_auth::access::scope_string;
use berth_auth::{Actions, AuthError, AuthService, Credentials, Principal, granted_by_claims};
use berth_oci::RepositoryName;
use berth_registry::blobs::MountAuthorizer;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, Method, Request};

use crate::AppState;
use crate::client::{ClientInfo, valid_host};
use crate::endpoint::{Endpoint, Parsed};
use crate::error::{ApiError, Unauthorized};
use crate::headers;

/// The client address: the peer, or the client behind a trusted proxy.
pub fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    client_of(req.extensions()).ip
}

fn client_of(ext: &http::Extensions) -> ClientInfo {
    ext.get::<ClientInfo>().cloned().unwrap_or_default()
}

/// Why credentials could not be checked, before or while checking them.
#[derive(Debug)]
pub enum Failure {
    UnsupportedScheme,
    MalformedBasic,
    Auth(AuthError),
}

/// Parses `Authorization`: `Basic`, `Bearer` or Gitea's `token`.
pub fn credentials(h: &HeaderMap) -> Result<Credentials<'_>, Failure> {
    let Some(value) = headers::get(h, AUTHORIZATION) else { return Ok(Credentials::None) };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return Ok(Credentials::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Credentials::Basic { user: "", secret: rest });
    }
    Err(Failure::UnsupportedScheme)
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

/// The `WWW-Authenticate: Bearer realm=...,service=...[,scope=...][,error=...]` challenge.
pub fn challenge(state: &AppState, caller: &Caller<'_>, scope: Option<&str>, error: Option<&str>) -> String {
    let mut value =
        format!("Bearer realm=\"{}/v2/token\",service=\"{}\"", base_url(state, caller), state.settings().auth_service);
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        value.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        value.push_str(&format!(",error=\"{e}\""));
    }
    value
}

/// 401 with the challenge for `scope` (and `error`), saying `why`.
pub fn unauthorized(
    state: &AppState,
    caller: &Caller<'_>,
    scope: Option<&str>,
    error: Option<&str>,
    why: Unauthorized,
) -> ApiError {
    ApiError::Unauthorized { challenge: challenge(state, caller, scope, error), why }
}

/// The situation an authentication failure is, on the distribution API.
pub fn auth_error(state: &AppState, caller: &Caller<'_>, scope: Option<&str>, e: AuthError) -> ApiError {
    match e {
        AuthError::InvalidCredentials => unauthorized(state, caller, scope, None, Unauthorized::InvalidCredentials),
        AuthError::InvalidToken(_) => {
            unauthorized(state, caller, scope, Some("invalid_token"), Unauthorized::InvalidToken)
        }
        // Rounded up: a client that waits exactly this long must not be refused again.
        AuthError::TooManyAttempts(wait) => {
            ApiError::TooManyLogins { retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1) }
        }
        AuthError::Busy => ApiError::LoginsBusy,
        AuthError::Store(e) => ApiError::Registry(e.into()),
        AuthError::Internal(m) => ApiError::Internal(format!("authentication: {m}")),
    }
}

/// [`auth_error`] for any [`Failure`].
fn failure(state: &AppState, caller: &Caller<'_>, scope: Option<&str>, f: Failure) -> ApiError {
    match f {
        Failure::UnsupportedScheme => unauthorized(state, caller, scope, None, Unauthorized::UnsupportedScheme),
        Failure::MalformedBasic => unauthorized(state, caller, scope, None, Unauthorized::MalformedBasic),
        Failure::Auth(e) => auth_error(state, caller, scope, e),
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

/// Authenticates the request's credentials (anonymous without any, or
/// with authentication disabled).
pub async fn authenticate(state: &AppState, caller: &Caller<'_>) -> Result<Principal, Failure> {
    authenticate_for(state, caller, None).await
}

/// [`authenticate`] for a request on `repo`, whose access facts are read
/// with the credentials where they allow it ([`AuthService::authenticate_for`]).
async fn authenticate_for(
    state: &AppState,
    caller: &Caller<'_>,
    repo: Option<&RepositoryName>,
) -> Result<Principal, Failure> {
    let Some(auth) = state.auth() else { return Ok(Principal::Anonymous) };
    let ip = caller.ip();
    let result = match credentials(caller.headers)? {
        Credentials::Basic { secret: encoded, .. } => {
            let (user, secret) = decode_basic(encoded).ok_or(Failure::MalformedBasic)?;
            auth.authenticate_for(Credentials::Basic { user: &user, secret: &secret }, ip, repo).await
        }
        other => auth.authenticate_for(other, ip, repo).await,
    };
    result.map_err(Failure::Auth)
}

/// [`authenticate`] on the distribution API: failures challenge for `scope`.
pub async fn principal(state: &AppState, caller: &Caller<'_>, scope: Option<&str>) -> Result<Principal, ApiError> {
    authenticate(state, caller).await.map_err(|f| failure(state, caller, scope, f))
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
    let principal =
        authenticate_for(state, caller, Some(need.repo)).await.map_err(|f| failure(state, caller, Some(&scope), f))?;
    if let Principal::Bearer(claims) = &principal
        && !granted_by_claims(claims, need.repo).covers(need.actions)
    {
        return Err(insufficient_scope(state, caller, &principal, &scope, Unauthorized::InsufficientScope));
    }
    let allowed = auth
        .allowed(&principal, need.repo, need.actions)
        .await
        .map_err(|e| auth_error(state, caller, Some(&scope), e))?;
    if allowed.covers(need.actions) {
        return Ok(principal);
    }
    if principal.is_authenticated() {
        Err(ApiError::Denied)
    } else {
        // Anonymous (or an anonymous bearer token): log in and try again.
        let error = anonymous_error(&principal);
        Err(unauthorized(state, caller, Some(&scope), error, Unauthorized::CredentialsRequired))
    }
}

/// Authorization of a `/v2/<name>/...` request: the caller must be allowed
/// what the request does to the repository ([`Endpoint::need`]). Returns
/// the endpoint with the [`Principal`] for the handler (mount sources,
/// audit lines); the dispatcher calls this before any handler runs.
pub async fn authorize_repository(
    state: &AppState,
    caller: &Caller<'_>,
    method: &Method,
    parsed: Option<Parsed>,
) -> Result<(Endpoint, Principal), ApiError> {
    let endpoint = match parsed.and_then(|p| p.0) {
        Some(Ok(endpoint)) => endpoint,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::NoSuchRoute),
    };
    let Some(actions) = endpoint.need(method) else { return Err(ApiError::MethodNotAllowed) };
    let principal = require(state, caller, Need { repo: endpoint.name(), actions }).await?;
    Ok((endpoint, principal))
}

/// A bearer token lacks `scope`: refused with a challenge naming the scope
/// to ask for (`error="insufficient_scope"`), 401 as in Docker's token
/// protocol, which Docker-protocol clients (and the OCI conformance suite)
/// answer by fetching a token for that scope. A client that instead repeats
/// the request with the same user's token (oras-py does) gets 403 with the
/// same challenge, the RFC 6750 (3.1) form, on which it drops the token and
/// asks for a new one. Either way nothing beyond the token's claim is granted.
pub fn insufficient_scope(
    state: &AppState,
    caller: &Caller<'_>,
    who: &Principal,
    scope: &str,
    why: Unauthorized,
) -> ApiError {
    match who {
        // An anonymous token's holder must log in: always 401.
        Principal::Bearer(claims) if who.is_authenticated() && state.scope_refusals().repeated(&claims.jti, scope) => {
            ApiError::ScopeStillInsufficient {
                challenge: challenge(state, caller, Some(scope), Some("insufficient_scope")),
            }
        }
        _ => unauthorized(state, caller, Some(scope), Some("insufficient_scope"), why),
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
        return Err(unauthorized(state, caller, scope, None, Unauthorized::CredentialsRequired));
    }
    principal(state, caller, scope).await
}

/// What a mount may take from where, for one caller: the registry asks
/// (see `Registry::mount_or_upload`), the caller's rights answer.
pub struct CallerMounts<'a> {
    pub auth: &'a AuthService,
    pub who: &'a Principal,
}

impl MountAuthorizer for CallerMounts<'_> {
    type Error = AuthError;

    async fn may_pull(&self, repo: &RepositoryName) -> Result<bool, AuthError> {
        Ok(self.auth.allowed(self.who, repo, Actions::PULL).await?.covers(Actions::PULL))
    }

    /// Only a bearer token can lack what its holder may do.
    async fn could_obtain_pull(&self, repo: &RepositoryName) -> Result<bool, AuthError> {
        if !matches!(self.who, Principal::Bearer(_)) {
            return Ok(false);
        }
        self.auth.could_obtain(self.who, repo, Actions::PULL).await
    }
}
