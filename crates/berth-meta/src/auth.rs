//! Accounts and access facts: users, organizations and their members,
//! personal access tokens, and public/private visibility of owners and
//! repositories. The rules that combine these facts live in `berth-auth`;
//! this trait only stores and fetches them.

use async_trait::async_trait;
use berth_oci::RepositoryName;

use crate::Result;

/// Whether an owner name belongs to a user or an organization. Both share one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    User,
    Org,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::User => "user",
            OwnerKind::Org => "org",
        }
    }
}

/// A member's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrgRole {
    Read,
    Write,
    Admin,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Read => "read",
            OrgRole::Write => "write",
            OrgRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(OrgRole::Read),
            "write" => Some(OrgRole::Write),
            "admin" => Some(OrgRole::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's owner id (users and orgs share the owner id space).
    pub id: i64,
    pub name: String,
    /// argon2id PHC string; `None` for token-only accounts.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub id: i64,
    pub name: String,
    pub kind: OwnerKind,
    pub is_public: bool,
    pub created_at: i64,
}

/// Everything needed to decide one user's access to one repository, fetched together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessFacts {
    /// The repository's owner, if it exists.
    pub owner: Option<OwnerRecord>,
    /// The user's role if the owner is an organization they belong to.
    pub role: Option<OrgRole>,
    /// Whether the repository exists. Visibility applies to existing
    /// repositories only, so a missing repository looks exactly like a
    /// private one, even in a public namespace.
    pub repository_exists: bool,
    /// The repository's own visibility, if set (overrides the owner's).
    pub repository_public: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    /// `read:package`, `write:package`.
    pub scopes: Vec<String>,
    /// Repository globs the token is restricted to; empty means all.
    pub repositories: Vec<String>,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub user_id: i64,
    pub name: String,
    /// A short, non-secret key derived from the secret that finds the token
    /// (`berth_auth::secrets::token_lookup_key`); not unique.
    pub lookup_key: Vec<u8>,
    /// argon2id PHC string of the secret (the secret itself is never stored).
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub repositories: Vec<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

/// A token found by its lookup key: the record, its user as it is now, the
/// stored verifier of its secret, and the user's access facts on the
/// repository the request is for, if one was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCandidate {
    pub token: TokenRecord,
    pub user: UserRecord,
    /// argon2id PHC string of the secret.
    pub secret_hash: String,
    /// What [`AuthStore::access_facts`] says of the token's user and the
    /// repository named in the lookup, read in the same query; `None` when
    /// no repository was named.
    pub access: Option<AccessFacts>,
}

/// A member of an organization, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub user: String,
    pub role: OrgRole,
}

/// Web sessions and the admin page's listings come with every account store
/// ([`crate::SessionStore`], [`crate::DirectoryStore`]).
#[async_trait]
pub trait AuthStore: crate::SessionStore + crate::DirectoryStore + Send + Sync + 'static {
    /// Creates a user; [`crate::MetaError::Conflict`] if the name is taken by a user or an org.
    async fn create_user(&self, name: &str, password_hash: Option<&str>, is_admin: bool, now: i64) -> Result<i64>;

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>>;

    /// [`Self::get_user`] with the user's access facts on `repo` (as
    /// [`Self::access_facts`] returns them), in one query: a password login
    /// and the authorization of its request cost one round trip.
    async fn get_user_with_access(
        &self,
        name: &str,
        repo: &RepositoryName,
    ) -> Result<Option<(UserRecord, AccessFacts)>>;

    async fn get_user_by_id(&self, id: i64) -> Result<Option<UserRecord>>;

    async fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// `false` if there is no such user.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool>;

    /// `false` if there is no such user.
    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool>;

    /// Creates an organization; [`crate::MetaError::Conflict`] if the name is taken.
    async fn create_org(&self, name: &str, now: i64) -> Result<i64>;

    /// Adds a member or changes their role; [`crate::MetaError::NotFound`] if either is missing.
    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> Result<()>;

    /// `false` if the user was not a member.
    async fn remove_org_member(&self, org: &str, user: &str) -> Result<bool>;

    async fn list_org_members(&self, org: &str) -> Result<Vec<Membership>>;

    async fn get_owner(&self, name: &str) -> Result<Option<OwnerRecord>>;

    /// `false` if there is no such owner.
    async fn set_owner_public(&self, name: &str, public: bool) -> Result<bool>;

    /// Sets a repository's own visibility (`None` inherits the owner's),
    /// creating the repository if needed.
    async fn set_repository_public(&self, repo: &RepositoryName, public: Option<bool>, now: i64) -> Result<()>;

    /// The facts deciding `user`'s access to `repo` (anonymous when `user` is `None`), in one query.
    async fn access_facts(&self, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts>;

    /// Repositories in lexical order after `after` that `user` may list
    /// (own namespace, organizations they belong to, public ones; admins see
    /// all). Token repository patterns are applied by the caller.
    async fn readable_repositories(
        &self,
        user: Option<&UserRecord>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;

    async fn create_token(&self, token: &NewToken) -> Result<i64>;

    /// Every token whose lookup key is `lookup_key` (usually none or one;
    /// several only if keys collide), oldest first, with its user and stored
    /// verifier and, when `repo` is named, its user's access facts on `repo`,
    /// in one indexed query: a request carrying a token costs one round trip
    /// to authenticate and authorize. Revoked and expired tokens, and
    /// disabled users, are returned too: the caller judges them.
    async fn tokens_by_lookup_key(
        &self,
        lookup_key: &[u8],
        repo: Option<&RepositoryName>,
    ) -> Result<Vec<TokenCandidate>>;

    async fn get_token(&self, id: i64) -> Result<Option<TokenRecord>>;

    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>>;

    /// `false` if there is no such token (or it was already revoked).
    async fn revoke_token(&self, id: i64, now: i64) -> Result<bool>;

    async fn touch_token(&self, id: i64, now: i64) -> Result<()>;
}
