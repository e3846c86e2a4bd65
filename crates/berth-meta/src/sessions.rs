//! Web sign-in sessions, kept in the metadata database so that every
//! replica honours them. Only a hash of the cookie's secret is stored.

use async_trait::async_trait;

use crate::Result;
use crate::auth::UserRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebSession {
    /// SHA-256 of the cookie's secret.
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    /// The token every state-changing form of this session carries.
    pub csrf_token: String,
    /// Derived from the user's password hash at sign-in: a password change
    /// makes it stale, which ends the session.
    pub password_stamp: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A stored session with its user as the user is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRecord {
    pub user: UserRecord,
    pub csrf_token: String,
    pub password_stamp: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn create_web_session(&self, session: &NewWebSession) -> Result<()>;

    /// The session and its user, in one query; `None` if unknown or expired at `now`.
    async fn web_session(&self, id_hash: &[u8], now: i64) -> Result<Option<WebSessionRecord>>;

    /// `false` if there was no such session.
    async fn delete_web_session(&self, id_hash: &[u8]) -> Result<bool>;

    /// Forgets sessions that expired before `now`; returns how many.
    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64>;
}
