//! Authentication and authorization.
//!
//! - [`AuthService::authenticate`] turns request credentials (Basic with a
//!   password or personal access token, Bearer with a JWT or a token) into a
//!   [`Principal`].
//! - [`AuthService::authorize`] decides whether a principal may act on a
//!   repository ([`policy`] holds the rules).
//! - [`AuthService::issue_token`] implements the token endpoint's grant:
//!   the intersection of what was asked, the token's scopes and repository
//!   patterns, and the user's rights.
//! - [`admin`] manages users, organizations, tokens and visibility (CLI).
//!
//! Audit events are logged with tracing target `audit`; secrets never are.

pub mod access;
pub mod admin;
pub mod jwt;
pub mod limiter;
pub mod policy;
pub mod secrets;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_meta::auth::{TokenCandidate, TokenRecord, UserRecord};
use berth_meta::{AuthStore, MetaError};
use berth_oci::RepositoryName;

pub use access::{Action, Actions, Scope};
pub use jwt::{AccessEntry, Claims, IssuedToken, JwtKeys};

use crate::limiter::FailureLimiter;
use crate::secrets::{Subject, VerifiedCache};

/// Settings taken from `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub allow_password: bool,
    pub failed_login_limit: u32,
    pub lockout_max: Duration,
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    /// Authenticated for this request by a password or personal access token.
    User {
        user: Box<UserRecord>,
        token: Option<Box<TokenRecord>>,
    },
    /// Holds a bearer token from `/v2/token` (possibly an anonymous one).
    Bearer(Box<Claims>),
}

impl Principal {
    /// The user name, if any (for audit lines and `creator` fields).
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User { user, .. } => Some(&user.name),
            Principal::Bearer(c) if c.sub.is_empty() => None,
            Principal::Bearer(c) => Some(&c.sub),
        }
    }

    /// Whether the caller proved an identity (an anonymous bearer token did not).
    pub fn is_authenticated(&self) -> bool {
        self.user_name().is_some()
    }
}

/// Credentials as presented.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    None,
    Basic {
        user: &'a str,
        secret: &'a str,
    },
    /// `Authorization: Bearer <jwt or token>` or `token <token>`.
    Bearer(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    #[error("too many failed logins; retry after {0:?}")]
    TooManyAttempts(Duration),
    #[error(transparent)]
    Store(#[from] MetaError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

pub struct AuthService {
    store: Arc<dyn AuthStore>,
    keys: JwtKeys,
    settings: AuthSettings,
    limiter: FailureLimiter,
    /// Recent successful argon2 checks of passwords and token secrets.
    verified: Arc<VerifiedCache>,
    /// Bounds concurrent argon2 checks, of passwords and token secrets
    /// alike (each takes ~19 MiB and a core).
    argon2_slots: Arc<tokio::sync::Semaphore>,
}

/// A valid argon2id hash (default cost) of a password nobody has, verified
/// when the user does not exist so unknown and known names take equal time.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$30XBP3ya3tldfhUXfBwKDw$WUXdxewXtt1osJ+vneIH+2G3EpLSb8mRYs6v04lSylM";

/// How often a token's `last_used_at` is written at most.
const TOUCH_INTERVAL_MS: i64 = 60_000;

fn now_ms() -> i64 {
    (jwt::now_secs() as i64) * 1000
}

impl AuthService {
    pub fn new(store: Arc<dyn AuthStore>, keys: JwtKeys, settings: AuthSettings) -> Result<Self> {
        debug_assert!(DECOY_HASH.starts_with("$argon2id$"));
        Ok(AuthService {
            store,
            keys,
            limiter: FailureLimiter::new(settings.failed_login_limit, settings.lockout_max),
            verified: Arc::new(VerifiedCache::new(Duration::from_secs(60))),
            argon2_slots: Arc::new(tokio::sync::Semaphore::new(
                // Half the cores: logins must not starve the registry's own work.
                (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).clamp(1, 4),
            )),
            settings,
        })
    }

    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.store
    }

    pub fn keys(&self) -> &JwtKeys {
        &self.keys
    }

    /// Turns credentials into a principal. Failed logins are rate limited
    /// per user and per client address.
    pub async fn authenticate(&self, creds: Credentials<'_>, ip: Option<IpAddr>) -> Result<Principal> {
        match creds {
            Credentials::None => Ok(Principal::Anonymous),
            Credentials::Bearer(t) if t.matches('.').count() == 2 => {
                self.keys.verify(t).map(|c| Principal::Bearer(Box::new(c))).map_err(|e| {
                    berth_metrics::metrics().auth_failure("bearer");
                    tracing::info!(target: "audit", event = "auth_failure", kind = "bearer", ip = %ip_text(ip), reason = %e);
                    AuthError::InvalidToken(e)
                })
            }
            Credentials::Bearer(t) => self.login(None, t, ip).await,
            // Gitea also accepts the token as the user name.
            Credentials::Basic { user, secret } if secrets::looks_like_token(user) && !secrets::looks_like_token(secret) => {
                self.login(None, user, ip).await
            }
            Credentials::Basic { user, secret } => self.login(Some(user), secret, ip).await,
        }
    }

    async fn login(&self, user: Option<&str>, secret: &str, ip: Option<IpAddr>) -> Result<Principal> {
        let is_token = secrets::looks_like_token(secret);
        // Tokens carry 256 random bits: guessing one is hopeless, so a
        // failed token login only counts against the address, and a user's
        // mistyped password never locks out their CI tokens.
        let limited_user = if is_token { None } else { user };
        if let Some(wait) = self.limiter.check(limited_user, ip) {
            berth_metrics::metrics().auth_failure("throttled");
            tracing::info!(target: "audit", event = "auth_throttled", user = loggable_user(user), ip = %ip_text(ip));
            return Err(AuthError::TooManyAttempts(wait));
        }
        let outcome = if is_token {
            self.login_token(secret).await?
        } else if let Some(name) = user.filter(|_| self.settings.allow_password) {
            self.login_password(name, secret).await?
        } else {
            None
        };
        match outcome {
            Some(p) => {
                if let Some(u) = p.user_name().filter(|_| !is_token) {
                    self.limiter.record_success(u);
                }
                Ok(p)
            }
            None => {
                berth_metrics::metrics().auth_failure(if is_token { "token" } else { "password" });
                self.limiter.record_failure(limited_user, ip);
                tracing::info!(target: "audit", event = "auth_failure", kind = if is_token { "token" } else { "password" }, user = loggable_user(user), ip = %ip_text(ip));
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// A token login: one indexed query by the secret's lookup key, then
    /// for each row carrying that key (several only if keys collide) that
    /// is usable right now, an argon2 check of the secret against the row's
    /// verifier. Revocation, expiry and a disabled user are read from the
    /// row on every request, before and independently of the verified-cache,
    /// so they take effect at once; the cache only spares argon2 when this
    /// secret matched this row within the last minute.
    ///
    /// An unknown token costs no argon2 check (unlike an unknown user name,
    /// which gets the decoy hash): timing can at most reveal whether some
    /// row carries the presented secret's lookup key, which an attacker
    /// could only exploit by guessing 64 random bits, and even then 192
    /// bits of the secret remain. A decoy would only let well-formed garbage
    /// tokens buy argon2 work. Failed token logins are throttled per address.
    async fn login_token(&self, secret: &str) -> Result<Option<Principal>> {
        let key = secrets::token_lookup_key(secret);
        let now = now_ms();
        for candidate in self.store.tokens_by_lookup_key(&key).await? {
            let TokenCandidate { token, user, secret_hash } = candidate;
            if !token_usable(&token, now) || user.disabled {
                continue;
            }
            if !self.verify_blocking(Subject::Token(token.id), secret_hash, secret).await? {
                continue;
            }
            if token.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL_MS) {
                // Best effort: failing to record use must not fail the request.
                if let Err(e) = self.store.touch_token(token.id, now).await {
                    tracing::warn!(error = %e, "could not record token use");
                }
            }
            return Ok(Some(Principal::User { user: Box::new(user), token: Some(Box::new(token)) }));
        }
        Ok(None)
    }

    async fn login_password(&self, name: &str, password: &str) -> Result<Option<Principal>> {
        let user = self.store.get_user(name).await?;
        let ok = match &user {
            Some(u) if !u.disabled => match &u.password_hash {
                Some(h) => self.verify_blocking(Subject::Password(u.id), h.clone(), password).await?,
                None => false,
            },
            _ => {
                // Same work as a real check, so timing does not reveal which names exist.
                self.verify_blocking(Subject::Password(-1), DECOY_HASH.to_owned(), password).await?;
                false
            }
        };
        Ok(if ok { user.map(|user| Principal::User { user: Box::new(user), token: None }) } else { None })
    }

    /// Checks a password or token secret against its argon2 hash. argon2
    /// takes tens of milliseconds and ~19 MiB: recent successes are
    /// answered from the cache inline; otherwise at most a few checks run at
    /// once (per core), off the async workers. A caller that waited for a
    /// slot re-checks the cache, so a burst of identical logins costs one check.
    async fn verify_blocking(&self, subject: Subject, hash: String, secret: &str) -> Result<bool> {
        if self.verified.recently_verified(subject, &hash, secret) {
            return Ok(true);
        }
        let slot = self.argon2_slots.clone().acquire_owned().await.map_err(|e| AuthError::Internal(e.to_string()))?;
        let (cache, secret) = (self.verified.clone(), secret.to_owned());
        // The slot goes with the check: a request dropped at its deadline
        // must not free it while argon2 still runs.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            cache.verify(subject, &hash, &secret)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("argon2 check failed: {e}")))
    }

    /// What `principal` may do to `repo`, at most `wanted` (checked without
    /// the database when a bearer token already grants it).
    pub async fn allowed(&self, principal: &Principal, repo: &RepositoryName, wanted: Actions) -> Result<Actions> {
        if let Principal::Bearer(claims) = principal {
            let granted = granted_by_claims(claims, repo);
            if granted.covers(wanted) {
                return Ok(wanted);
            }
        }
        Ok(self.rights(principal, repo).await?.and(wanted))
    }

    /// Everything `principal` may do to `repo`, from the accounts' current state.
    pub async fn rights(&self, principal: &Principal, repo: &RepositoryName) -> Result<Actions> {
        let (user, token) = match principal {
            Principal::Anonymous => (None, None),
            Principal::User { user, token } => (Some((**user).clone()), token.as_deref().cloned()),
            Principal::Bearer(claims) => self.bearer_identity(claims).await?,
        };
        let facts = self.store.access_facts(repo, user.as_ref().map(|u| u.id)).await?;
        let mut rights = policy::user_rights(user.as_ref(), &facts);
        if let Some(t) = &token {
            rights = rights.and(policy::token_limit(t, repo));
        }
        Ok(rights)
    }

    /// The user and token behind a bearer token, reloaded so that a revoked
    /// token or disabled user loses the rights not already in the JWT.
    async fn bearer_identity(&self, claims: &Claims) -> Result<(Option<UserRecord>, Option<TokenRecord>)> {
        if claims.sub.is_empty() {
            return Ok((None, None));
        }
        let Some(user) = self.store.get_user(&claims.sub).await?.filter(|u| !u.disabled) else {
            return Ok((None, None));
        };
        let token = match claims.pat {
            None => None,
            Some(id) => match self.store.get_token(id).await? {
                Some(t) if t.user_id == user.id && token_usable(&t, now_ms()) => Some(t),
                // The token is gone: nothing beyond anonymous rights.
                _ => return Ok((None, None)),
            },
        };
        Ok((Some(user), token))
    }

    /// Whether `principal` may administer the whole registry (the
    /// `/api/v1/admin/...` endpoints), doing `wanted` (`PULL` to read,
    /// `READ_WRITE` to change): an enabled site admin, by password, or by a
    /// personal access token whose scopes cover `wanted` and that is not
    /// limited to some repositories (such a token never acts on the whole
    /// site). Bearer JWTs from `/v2/token` grant repository access only, so
    /// they never do. The user record was read when the request authenticated.
    pub fn is_site_admin(&self, principal: &Principal, wanted: Actions) -> bool {
        let Principal::User { user, token } = principal else { return false };
        if !user.is_admin || user.disabled {
            return false;
        }
        token.as_deref().is_none_or(|t| t.repositories.is_empty() && policy::scope_actions(&t.scopes).covers(wanted))
    }

    /// The token endpoint's grant for `scopes`.
    pub async fn issue_token(&self, principal: &Principal, scopes: &[Scope]) -> Result<IssuedToken> {
        let mut access = Vec::new();
        for scope in scopes {
            match scope {
                Scope::Repository { name, actions } => {
                    let granted = self.rights(principal, name).await?.and(*actions);
                    if !granted.is_empty() {
                        access.push(AccessEntry {
                            kind: "repository".into(),
                            name: name.to_string(),
                            actions: granted.names(),
                        });
                    }
                }
                Scope::Catalog if principal.is_authenticated() => {
                    access.push(AccessEntry {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                    });
                }
                Scope::Catalog => {}
            }
        }
        let (sub, pat) = match principal {
            Principal::Anonymous => (String::new(), None),
            Principal::User { user, token } => (user.name.clone(), token.as_ref().map(|t| t.id)),
            Principal::Bearer(c) => (c.sub.clone(), c.pat),
        };
        let issued = self.keys.issue(&sub, access.clone(), pat).map_err(AuthError::Internal)?;
        let granted: Vec<String> =
            access.iter().map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))).collect();
        tracing::info!(target: "audit", event = "token_issued", user = %sub, token_id = pat.unwrap_or(0), granted = %granted.join(" "));
        Ok(issued)
    }

    /// Repositories the principal may list, in order after `after`.
    pub async fn readable_repositories(
        &self,
        principal: &Principal,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let (user, token) = match principal {
            Principal::Anonymous => (None, None),
            Principal::User { user, token } => (Some((**user).clone()), token.as_deref().cloned()),
            Principal::Bearer(c) => self.bearer_identity(c).await?,
        };
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        // Token patterns are applied here, so pages may need refilling.
        loop {
            let page = self.store.readable_repositories(user.as_ref(), cursor.as_deref(), limit).await?;
            let exhausted = (page.len() as u32) < limit;
            cursor = page.last().cloned();
            for name in page {
                let keep = match (&token, RepositoryName::parse(&name)) {
                    (Some(t), Ok(repo)) => !policy::token_limit(t, &repo).is_empty(),
                    (None, Ok(_)) => true,
                    (_, Err(_)) => false,
                };
                if keep && (out.len() as u32) < limit {
                    out.push(name);
                }
            }
            if exhausted || out.len() as u32 >= limit {
                return Ok(out);
            }
        }
    }
}

/// The user name for audit lines: a name as presented may be a secret (a
/// token or password typed into the user field), so only one that could be
/// an account name, and does not start like a token, is logged.
fn loggable_user(name: Option<&str>) -> &str {
    match name {
        None | Some("") => "-",
        Some(n) if !n.starts_with(secrets::TOKEN_PREFIX) && admin::validate_owner_name(n).is_ok() => n,
        Some(_) => "<invalid>",
    }
}

/// A client address for audit lines.
fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "-".to_owned(), |i| i.to_string())
}

fn token_usable(t: &TokenRecord, now: i64) -> bool {
    t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now)
}

/// The actions a bearer token's `access` claim grants on `repo`.
pub fn granted_by_claims(claims: &Claims, repo: &RepositoryName) -> Actions {
    claims
        .access
        .iter()
        .filter(|a| a.kind == "repository" && a.name == repo.as_str())
        .fold(Actions::NONE, |acc, a| acc.or(Actions::parse_list(&a.actions.join(","))))
}

#[cfg(test)]
mod tests;
