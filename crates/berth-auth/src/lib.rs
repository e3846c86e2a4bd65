//! Authentication and authorization.
//!
//! - [`AuthService::authenticate`] turns request credentials (Basic with a
//!   password or personal access token, Bearer with a JWT or a token) into a
//!   [`Principal`] ([`login`]); password logins are bounded before any
//!   argon2 work ([`limiter`]).
//! - [`AuthService::allowed`] decides whether a principal may act on a
//!   repository ([`policy`] holds the rules; a bearer JWT grants exactly its
//!   claim, checked against live rights: [`bearer`]).
//! - [`AuthService::issue_token`] implements the token endpoint's grant:
//!   the intersection of what was asked, the token's scopes and repository
//!   patterns, and the user's rights.
//! - [`admin`] manages users, organizations, tokens and visibility (CLI).
//!
//! Audit events are logged with tracing target `audit`; secrets never are.

pub mod access;
pub mod admin;
mod bearer;
pub mod jwt;
pub mod limiter;
mod login;
pub mod policy;
pub mod secrets;
mod sessions;
pub mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use berth_meta::auth::{AccessFacts, OwnerKind, TokenRecord, UserRecord};
use berth_meta::{AuthStore, MetaError};
use berth_oci::RepositoryName;

pub use access::{Action, Actions, Scope};
/// A user or organization, as the package API shows owners and creators.
pub use berth_meta::auth::OwnerRecord;
pub use jwt::{AccessEntry, Claims, IssuedToken, JwtKeys};

use crate::limiter::LoginLimiter;
use crate::login::HashingPool;
use crate::secrets::VerifiedCache;

pub use bearer::{LIVE_CHECK_TTL, granted_by_claims, grants_catalog};
pub use login::loggable_user;
pub use sessions::{OrgListing, SignedIn, WebSession, viewer_of};
pub use upstreams::{UpstreamAccess, UpstreamNamespace, UpstreamNamespaces};

/// Settings taken from `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub allow_password: bool,
    pub failed_login_limit: u32,
    pub lockout_max: Duration,
    /// How long a web sign-in lasts.
    pub session_ttl: Duration,
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    /// Authenticated for this request by a password or personal access token.
    User {
        user: Box<UserRecord>,
        token: Option<Box<TokenRecord>>,
        /// The user's access facts on the request's repository, when they
        /// were read with the credentials ([`AuthService::authenticate_for`]).
        access: Option<Box<KnownAccess>>,
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

/// A user's access facts on one repository, read in the same query as the
/// credentials, as the user record was: deciding the request's rights on
/// that repository needs no query of its own. Only this crate makes them.
#[derive(Debug, Clone)]
pub struct KnownAccess {
    repo: RepositoryName,
    facts: AccessFacts,
}

impl KnownAccess {
    /// The facts, if they are `repo`'s.
    fn of(&self, repo: &RepositoryName) -> Option<&AccessFacts> {
        (self.repo == *repo).then_some(&self.facts)
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
    /// Too many logins are being checked right now (for this address, this
    /// user, or the whole process): retry shortly.
    #[error("too many logins in progress")]
    Busy,
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
    limiter: LoginLimiter,
    /// Recent successful argon2 checks of passwords and token secrets.
    verified: Arc<VerifiedCache>,
    /// The bounded queue of argon2 checks.
    hashing: HashingPool,
    /// argon2 checks under way, shared by identical concurrent logins.
    in_flight: login::InFlight,
    /// Recent live checks of bearer tokens.
    live: bearer::LiveChecks,
    /// Namespaces of upstream registries, whose rights follow their access level.
    upstreams: UpstreamNamespaces,
}

pub(crate) fn login_now_ms() -> i64 {
    (jwt::now_secs() as i64) * 1000
}

impl AuthService {
    pub fn new(store: Arc<dyn AuthStore>, keys: JwtKeys, settings: AuthSettings) -> Result<Self> {
        Ok(AuthService {
            store,
            keys,
            limiter: LoginLimiter::new(settings.failed_login_limit, settings.lockout_max),
            verified: login::verified_cache(),
            hashing: HashingPool::new(),
            in_flight: login::InFlight::default(),
            live: bearer::LiveChecks::default(),
            upstreams: UpstreamNamespaces::default(),
            settings,
        })
    }

    /// The service with the namespaces of upstream registries (see [`upstreams`]).
    pub fn with_upstreams(mut self, upstreams: UpstreamNamespaces) -> Self {
        self.upstreams = upstreams;
        self
    }

    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.store
    }

    pub fn keys(&self) -> &JwtKeys {
        &self.keys
    }

    /// The user or organization named `name`, if there is one.
    pub async fn owner(&self, name: &str) -> Result<Option<OwnerRecord>> {
        Ok(self.store.get_owner(name).await?)
    }

    /// What `principal` may do to `repo`, at most `wanted`. A bearer token
    /// grants exactly its `access` claim, intersected with the live rights
    /// of the user and token behind it (see [`bearer`]): what the claim
    /// lacks is refused even where the user could do it.
    pub async fn allowed(&self, principal: &Principal, repo: &RepositoryName, wanted: Actions) -> Result<Actions> {
        Ok(self.rights(principal, repo).await?.and(wanted))
    }

    /// Everything `principal` may do to `repo`, from the accounts' current state.
    pub async fn rights(&self, principal: &Principal, repo: &RepositoryName) -> Result<Actions> {
        match principal {
            Principal::Anonymous => self.rights_of(None, None, repo, None).await,
            Principal::User { user, token, access } => {
                let known = access.as_deref().and_then(|a| a.of(repo));
                self.rights_of(Some(user), token.as_deref(), repo, known).await
            }
            Principal::Bearer(claims) => {
                let claimed = granted_by_claims(claims, repo);
                if claimed.is_empty() {
                    return Ok(Actions::NONE);
                }
                Ok(self.bearer_rights(claims, repo).await?.and(claimed))
            }
        }
    }

    /// Whether `principal`'s holder could obtain `wanted` on `repo` at the
    /// token endpoint now: for a bearer token, the live rights behind it,
    /// regardless of its claim (to tell a client which scope to ask for;
    /// never to grant). For other principals, the same as [`Self::allowed`].
    pub async fn could_obtain(&self, principal: &Principal, repo: &RepositoryName, wanted: Actions) -> Result<bool> {
        match principal {
            Principal::Bearer(claims) => Ok(self.bearer_rights(claims, repo).await?.covers(wanted)),
            other => Ok(self.allowed(other, repo, wanted).await?.covers(wanted)),
        }
    }

    /// Whether `principal` may administer the whole registry (the
    /// `/api/v1/admin/...` endpoints), doing `wanted` (`PULL` to read,
    /// `READ_WRITE` to change): an enabled site admin, by password, or by a
    /// personal access token whose scopes cover `wanted` and that is not
    /// limited to some repositories (such a token never acts on the whole
    /// site). Bearer JWTs from `/v2/token` grant repository access only, so
    /// they never do. The user record was read when the request authenticated.
    pub fn is_site_admin(&self, principal: &Principal, wanted: Actions) -> bool {
        let Principal::User { user, token, .. } = principal else { return false };
        if !user.is_admin || user.disabled {
            return false;
        }
        acts_beyond_repositories(token.as_deref(), wanted)
    }

    /// Whether `principal` may administer the owner (user or organization)
    /// named `owner`, doing `wanted` (`PULL` to see its storage usage): a
    /// site admin (see [`Self::is_site_admin`]), the user of that name, or
    /// an `admin` member of the organization of that name
    /// ([`policy::administers_owner`]). As for site admins: by password or
    /// by a personal access token whose scopes cover `wanted` and that is not
    /// limited to some repositories; never by a bearer JWT from `/v2/token`.
    pub async fn may_administer_owner(&self, principal: &Principal, owner: &str, wanted: Actions) -> Result<bool> {
        if self.is_site_admin(principal, wanted) {
            return Ok(true);
        }
        let Principal::User { user, token, .. } = principal else { return Ok(false) };
        if user.disabled || !acts_beyond_repositories(token.as_deref(), wanted) {
            return Ok(false);
        }
        let Some(record) = self.store.get_owner(owner).await? else { return Ok(false) };
        let role = match record.kind {
            OwnerKind::Org => {
                self.store.list_org_members(owner).await?.into_iter().find(|m| m.user == user.name).map(|m| m.role)
            }
            OwnerKind::User => None,
        };
        Ok(policy::administers_owner(user, &record, role))
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
            Principal::User { user, token, .. } => (user.name.clone(), token.as_ref().map(|t| t.id)),
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
            Principal::User { user, token, .. } => (Some((**user).clone()), token.as_deref().cloned()),
            Principal::Bearer(c) => self.bearer_identity(c).await?.map_err(AuthError::InvalidToken)?,
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

/// Whether a request authenticated with `token` (none: a password) may act
/// beyond single repositories, doing `wanted`: a token must not be limited
/// to some repositories, and its scopes must cover `wanted`.
fn acts_beyond_repositories(token: Option<&TokenRecord>, wanted: Actions) -> bool {
    token.is_none_or(|t| t.repositories.is_empty() && policy::scope_actions(&t.scopes).covers(wanted))
}

fn token_usable(t: &TokenRecord, now: i64) -> bool {
    t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now)
}

#[cfg(test)]
mod tests;
