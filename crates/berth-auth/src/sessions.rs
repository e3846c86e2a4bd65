//! Web sign-in: a password checked through the same limiter as Basic auth
//! ([`crate::limiter`]) opens a server-side session (stored in the metadata
//! database, so every replica honours it) named by a random cookie secret
//! of which only a SHA-256 is stored. Each session carries its own CSRF
//! token. It ends when it expires, at sign-out, when the user is disabled,
//! or when their password changes (the stored stamp no longer matches).

use std::net::IpAddr;

use berth_meta::auth::UserRecord;
use berth_meta::browse::Viewer;
use berth_meta::sessions::NewWebSession;
use sha2::{Digest as _, Sha256};

use crate::login::now_ms;
use crate::secrets::hashes_equal;
use crate::{AuthError, AuthService, Principal, Result};

/// A fresh sign-in: the cookie's value and how long it lasts.
#[derive(Debug)]
pub struct SignedIn {
    pub cookie_secret: String,
    pub max_age_secs: u64,
    pub user: UserRecord,
}

/// The signed-in user behind a cookie, and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub user: UserRecord,
    pub csrf_token: String,
}

impl WebSession {
    /// The principal a page acts as (the user's own rights; no token limits).
    pub fn principal(&self) -> Principal {
        Principal::User { user: Box::new(self.user.clone()), token: None, access: None }
    }
}

/// What listings may show a user (or an anonymous visitor).
pub fn viewer_of(user: Option<&UserRecord>) -> Viewer {
    match user {
        Some(u) => Viewer { user_id: Some(u.id), is_admin: u.is_admin },
        None => Viewer::ANONYMOUS,
    }
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

fn id_hash(cookie_secret: &str) -> Vec<u8> {
    Sha256::digest(cookie_secret.as_bytes()).to_vec()
}

/// Changes whenever the password does (each argon2 hash has its own salt).
fn password_stamp(user: &UserRecord) -> String {
    let hash = user.password_hash.as_deref().unwrap_or("");
    hex::encode(&Sha256::digest(hash.as_bytes())[..16])
}

impl AuthService {
    /// Checks a password exactly as a Basic login does (same lockouts and
    /// queue) and opens a session. Token secrets are not accepted here.
    pub async fn sign_in(&self, name: &str, password: &str, ip: Option<IpAddr>) -> Result<SignedIn> {
        if !self.settings.allow_password {
            return Err(AuthError::InvalidCredentials);
        }
        let Principal::User { user, .. } = self.login_password(name, password, ip, None).await? else {
            return Err(AuthError::InvalidCredentials);
        };
        let now = now_ms();
        // Sweeping here keeps the table small without a scheduler job.
        self.store.delete_expired_web_sessions(now).await?;
        let cookie_secret = random_hex()?;
        let ttl_ms = i64::try_from(self.settings.session_ttl.as_millis()).unwrap_or(i64::MAX);
        self.store
            .create_web_session(&NewWebSession {
                id_hash: id_hash(&cookie_secret),
                user_id: user.id,
                csrf_token: random_hex()?,
                password_stamp: password_stamp(&user),
                created_at: now,
                expires_at: now.saturating_add(ttl_ms),
            })
            .await?;
        tracing::info!(target: "audit", event = "web_sign_in", user = %user.name, ip = %crate::login::ip_text(ip));
        Ok(SignedIn { cookie_secret, max_age_secs: self.settings.session_ttl.as_secs(), user: *user })
    }

    /// The live session a cookie names, if any. A session whose user is
    /// disabled or changed password since sign-in is ended here.
    pub async fn web_session(&self, cookie_secret: &str) -> Result<Option<WebSession>> {
        if cookie_secret.len() != 64 || !cookie_secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hash = id_hash(cookie_secret);
        let Some(record) = self.store.web_session(&hash, now_ms()).await? else { return Ok(None) };
        let current = password_stamp(&record.user);
        if record.user.disabled || !hashes_equal(current.as_bytes(), record.password_stamp.as_bytes()) {
            self.store.delete_web_session(&hash).await?;
            return Ok(None);
        }
        Ok(Some(WebSession { user: record.user, csrf_token: record.csrf_token }))
    }

    /// Ends the session a cookie names (nothing if there is none).
    pub async fn sign_out(&self, cookie_secret: &str) -> Result<()> {
        self.store.delete_web_session(&id_hash(cookie_secret)).await?;
        Ok(())
    }
}

/// A signed-in user's own personal access tokens (the tokens page).
impl AuthService {
    pub async fn own_tokens(&self, user: &UserRecord) -> Result<Vec<berth_meta::auth::TokenRecord>> {
        Ok(self.store.list_tokens(&user.name).await?)
    }

    /// Creates a token for `user`; returns the secret (shown once).
    pub async fn create_own_token(
        &self,
        user: &UserRecord,
        request: &crate::admin::TokenRequest,
    ) -> Result<String, crate::admin::AdminError> {
        crate::admin::create_token(self.store.as_ref(), &user.name, request).await.map(|(_, secret)| secret)
    }

    /// Revokes one of `user`'s tokens; `false` if it is not theirs or already revoked.
    pub async fn revoke_own_token(&self, user: &UserRecord, id: i64) -> Result<bool> {
        match self.store.get_token(id).await? {
            Some(t) if t.user_id == user.id && t.revoked_at.is_none() => {
                let revoked = self.store.revoke_token(id, now_ms()).await?;
                if revoked {
                    tracing::info!(target: "audit", event = "token_revoked", user = %user.name, token_id = id);
                }
                Ok(revoked)
            }
            _ => Ok(false),
        }
    }
}

/// Site administration from the web pages: the caller has checked
/// [`AuthService::is_site_admin`].
impl AuthService {
    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        Ok(self.store.list_users().await?)
    }

    pub async fn create_user(&self, name: &str, password: &str, admin: bool) -> Result<i64, crate::admin::AdminError> {
        crate::admin::create_user(self.store.as_ref(), name, Some(password), admin).await
    }

    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), crate::admin::AdminError> {
        crate::admin::set_disabled(self.store.as_ref(), name, disabled).await
    }
}

/// An organization with its members, for the admin page.
#[derive(Debug, Clone)]
pub struct OrgListing {
    pub org: berth_meta::auth::OwnerRecord,
    pub members: Vec<berth_meta::auth::Membership>,
}

/// Organizations from the web pages (site admins only; the caller checked).
impl AuthService {
    /// At most `limit` organizations, each with its members.
    pub async fn orgs(&self, limit: usize) -> Result<Vec<OrgListing>> {
        let mut out = Vec::new();
        for org in self.store.list_orgs().await?.into_iter().take(limit) {
            let members = self.store.list_org_members(&org.name).await?;
            out.push(OrgListing { org, members });
        }
        Ok(out)
    }

    pub async fn set_site_admin(&self, name: &str, admin: bool) -> Result<(), crate::admin::AdminError> {
        if self.store.set_user_admin(name, admin).await? {
            tracing::info!(target: "audit", event = "site_admin_changed", user = name, admin);
            Ok(())
        } else {
            Err(crate::admin::AdminError::NotFound(format!("user {name:?}")))
        }
    }

    pub async fn create_org(&self, name: &str) -> Result<i64, crate::admin::AdminError> {
        crate::admin::create_org(self.store.as_ref(), name).await
    }

    pub async fn set_org_member(&self, org: &str, user: &str, role: &str) -> Result<(), crate::admin::AdminError> {
        crate::admin::set_member(self.store.as_ref(), org, user, role).await
    }

    pub async fn remove_org_member(&self, org: &str, user: &str) -> Result<(), crate::admin::AdminError> {
        crate::admin::remove_member(self.store.as_ref(), org, user).await
    }
}
