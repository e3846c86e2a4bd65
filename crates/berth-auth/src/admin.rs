//! Account management: what `berth user|org|token|repo` do. Names follow
//! the repository-name component grammar, since an owner name is the first
//! component of every repository it owns.

use berth_meta::auth::{Membership, NewToken, OrgRole, TokenRecord, UserRecord};
use berth_meta::{AuthStore, MetaError};
use berth_oci::RepositoryName;

use crate::policy::{SCOPE_READ, SCOPE_WRITE};
use crate::secrets;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Store(MetaError),
}

impl From<MetaError> for AdminError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Conflict(m) => AdminError::Exists(m),
            MetaError::NotFound(m) => AdminError::NotFound(m),
            e => AdminError::Store(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, AdminError>;

fn now_ms() -> i64 {
    (crate::jwt::now_secs() as i64) * 1000
}

/// Names the web pages' and APIs' URLs take for themselves (`/user/login`,
/// `/api/v1/...`, `/v2/...`, `/-/admin`, the probes): an owner so named
/// would have its packages page shadowed.
pub const RESERVED_OWNER_NAMES: &[&str] = &["user", "api", "v2", "livez", "readyz", "metrics", "explore", "org"];

/// An owner name: one repository-name component (lowercase letters, digits,
/// separators), and not one of [`RESERVED_OWNER_NAMES`].
pub fn validate_owner_name(name: &str) -> Result<()> {
    if name.contains('/') || RepositoryName::parse(name).is_err() {
        return Err(AdminError::Invalid(format!(
            "{name:?} is not a valid name: use lowercase letters and digits, optionally separated by '.', '_', '__' or '-'"
        )));
    }
    if RESERVED_OWNER_NAMES.contains(&name) {
        return Err(AdminError::Invalid(format!(
            "{name:?} is reserved: the web pages and APIs use /{name}/ for themselves; choose another name"
        )));
    }
    Ok(())
}

pub async fn create_user(store: &dyn AuthStore, name: &str, password: Option<&str>, admin: bool) -> Result<i64> {
    validate_owner_name(name)?;
    let hash = match password {
        Some("") => return Err(AdminError::Invalid("empty password".into())),
        Some(p) => Some(secrets::hash_password(p).map_err(AdminError::Invalid)?),
        None => None,
    };
    Ok(store.create_user(name, hash.as_deref(), admin, now_ms()).await?)
}

/// Creates the `admin` site admin with `password` unless a user of that name exists.
pub async fn ensure_admin(store: &dyn AuthStore, password: &str) -> Result<bool> {
    if store.get_user("admin").await?.is_some() {
        return Ok(false);
    }
    match create_user(store, "admin", Some(password), true).await {
        Ok(_) => Ok(true),
        // Another replica created it at the same moment.
        Err(AdminError::Exists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn set_password(store: &dyn AuthStore, name: &str, password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(AdminError::Invalid("empty password".into()));
    }
    let hash = secrets::hash_password(password).map_err(AdminError::Invalid)?;
    if store.set_user_password(name, Some(&hash)).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("user {name:?}")))
    }
}

pub async fn set_disabled(store: &dyn AuthStore, name: &str, disabled: bool) -> Result<()> {
    if store.set_user_disabled(name, disabled).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("user {name:?}")))
    }
}

pub async fn list_users(store: &dyn AuthStore) -> Result<Vec<UserRecord>> {
    Ok(store.list_users().await?)
}

pub async fn create_org(store: &dyn AuthStore, name: &str) -> Result<i64> {
    validate_owner_name(name)?;
    Ok(store.create_org(name, now_ms()).await?)
}

pub async fn set_member(store: &dyn AuthStore, org: &str, user: &str, role: &str) -> Result<()> {
    let role =
        OrgRole::parse(role).ok_or_else(|| AdminError::Invalid(format!("role {role:?}: use read, write or admin")))?;
    Ok(store.set_org_member(org, user, role).await?)
}

pub async fn remove_member(store: &dyn AuthStore, org: &str, user: &str) -> Result<()> {
    if store.remove_org_member(org, user).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("{user:?} in organization {org:?}")))
    }
}

pub async fn list_members(store: &dyn AuthStore, org: &str) -> Result<Vec<Membership>> {
    Ok(store.list_org_members(org).await?)
}

/// What to create a token with.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    pub repositories: Vec<String>,
    /// Lifetime from now; `None` never expires.
    pub expires_in: Option<std::time::Duration>,
    pub name: String,
}

/// Creates a token for `user`; returns its id and the secret (shown once,
/// never stored: the row holds its argon2id hash and a short lookup key).
pub async fn create_token(store: &dyn AuthStore, user: &str, req: &TokenRequest) -> Result<(i64, String)> {
    let Some(owner) = store.get_user(user).await? else { return Err(AdminError::NotFound(format!("user {user:?}"))) };
    if req.scopes.is_empty() {
        return Err(AdminError::Invalid(format!("a token needs scopes: {SCOPE_READ}, {SCOPE_WRITE}")));
    }
    for s in &req.scopes {
        if s != SCOPE_READ && s != SCOPE_WRITE {
            return Err(AdminError::Invalid(format!("unknown scope {s:?}: use {SCOPE_READ} or {SCOPE_WRITE}")));
        }
    }
    for p in &req.repositories {
        if p.is_empty() || p.contains('\n') || glob::Pattern::new(p).is_err() {
            return Err(AdminError::Invalid(format!("invalid repository pattern {p:?}")));
        }
    }
    let secret = secrets::new_token_secret().map_err(AdminError::Invalid)?;
    let now = now_ms();
    let token = NewToken {
        user_id: owner.id,
        name: req.name.clone(),
        lookup_key: secrets::token_lookup_key(&secret),
        secret_hash: secrets::hash_token(&secret).map_err(AdminError::Invalid)?,
        scopes: req.scopes.clone(),
        repositories: req.repositories.clone(),
        expires_at: req.expires_in.map(|d| now + d.as_millis() as i64),
        created_at: now,
    };
    let id = store.create_token(&token).await?;
    tracing::info!(target: "audit", event = "token_created", user, token_id = id, scopes = %req.scopes.join(","), repositories = %req.repositories.join(" "));
    Ok((id, secret))
}

pub async fn list_tokens(store: &dyn AuthStore, user: &str) -> Result<Vec<TokenRecord>> {
    if store.get_user(user).await?.is_none() {
        return Err(AdminError::NotFound(format!("user {user:?}")));
    }
    Ok(store.list_tokens(user).await?)
}

pub async fn revoke_token(store: &dyn AuthStore, id: i64) -> Result<()> {
    if store.revoke_token(id, now_ms()).await? {
        tracing::info!(target: "audit", event = "token_revoked", token_id = id);
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("active token {id}")))
    }
}

/// `OWNER` or `OWNER/IMAGE...` made public or private.
pub async fn set_visibility(store: &dyn AuthStore, target: &str, public: bool) -> Result<()> {
    if !target.contains('/') {
        validate_owner_name(target)?;
        return if store.set_owner_public(target, public).await? {
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("owner {target:?}")))
        };
    }
    let repo = RepositoryName::parse(target).map_err(|e| AdminError::Invalid(format!("{target:?}: {e}")))?;
    if store.get_owner(repo.owner()).await?.is_none() {
        return Err(AdminError::NotFound(format!("owner {:?}", repo.owner())));
    }
    Ok(store.set_repository_public(&repo, Some(public), now_ms()).await?)
}
