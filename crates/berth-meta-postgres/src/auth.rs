//! Accounts, tokens and visibility (`berth_meta::AuthStore`), mirroring the
//! SQLite backend's semantics.
//!
//! Every write is a single statement (data-modifying CTEs where SQLite uses
//! a short transaction), so it is atomic without a transaction of its own
//! and safe at READ COMMITTED:
//!
//! - a name taken concurrently is found by the unique constraint: the second
//!   insert waits for the first to commit, then fails with a unique
//!   violation, reported as [`MetaError::Conflict`];
//! - membership changes upsert on the primary key;
//! - revoking checks `revoked_at IS NULL` in its `WHERE`, which Postgres
//!   re-evaluates against a concurrent revoker's row, so only one succeeds.

use berth_meta::auth::{
    AccessFacts, Membership, NewToken, OrgRole, OwnerKind, OwnerRecord, TokenCandidate, TokenRecord, UserRecord,
};
use berth_meta::{MetaError, Result};
use berth_oci::RepositoryName;
use sqlx::PgPool;

use crate::error::{StoreError, StoreResult, db_err};

/// The columns of [`UserRow`], from `users u JOIN owners o`.
macro_rules! user_columns {
    () => {
        "o.id, o.name, u.password_hash, u.is_admin, u.disabled, o.created_at"
    };
}

/// The columns of [`TokenRow`], from `access_tokens t`.
macro_rules! token_columns {
    () => {
        "t.id, t.user_id, t.name, t.scopes, t.repositories, t.expires_at, t.last_used_at, t.revoked_at, t.created_at"
    };
}

/// Maps a unique violation (a name already taken) to
/// `Conflict`, naming what clashed; other errors stay to be classified.
fn conflict(what: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => MetaError::Conflict(what.to_owned()).into(),
        _ => e.into(),
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    name: String,
    password_hash: Option<String>,
    is_admin: bool,
    disabled: bool,
    created_at: i64,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: r.id,
            name: r.name,
            password_hash: r.password_hash,
            is_admin: r.is_admin,
            disabled: r.disabled,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    user_id: i64,
    name: String,
    /// Comma-separated.
    scopes: String,
    /// Newline-separated.
    repositories: String,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    created_at: i64,
}

impl From<TokenRow> for TokenRecord {
    fn from(r: TokenRow) -> Self {
        let list = |s: &str, sep: char| -> Vec<String> {
            s.split(sep).map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
        };
        TokenRecord {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            scopes: list(&r.scopes, ','),
            repositories: list(&r.repositories, '\n'),
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            created_at: r.created_at,
        }
    }
}

/// A token and the user it belongs to (whose id is the token's `user_id`).
#[derive(sqlx::FromRow)]
struct TokenUserRow {
    #[sqlx(flatten)]
    token: TokenRow,
    user_name: String,
    password_hash: Option<String>,
    is_admin: bool,
    disabled: bool,
    user_created_at: i64,
    /// The token's argon2id PHC string.
    secret_hash: String,
}

#[derive(sqlx::FromRow)]
struct OwnerRow {
    id: i64,
    name: String,
    kind: String,
    is_public: bool,
    created_at: i64,
}

impl From<OwnerRow> for OwnerRecord {
    fn from(r: OwnerRow) -> Self {
        OwnerRecord {
            id: r.id,
            name: r.name,
            kind: if r.kind == "org" { OwnerKind::Org } else { OwnerKind::User },
            is_public: r.is_public,
            created_at: r.created_at,
        }
    }
}

/// An owner with the facts about one user and one repository.
#[derive(sqlx::FromRow)]
struct AccessRow {
    #[sqlx(flatten)]
    owner: OwnerRow,
    role: Option<String>,
    repository_public: Option<bool>,
    repository_exists: bool,
}

fn parse_role(role: &str) -> Result<OrgRole> {
    OrgRole::parse(role).ok_or_else(|| MetaError::Backend(format!("bad role {role:?}")))
}

// --- users and organizations ---------------------------------------------------

/// Creates an owner and, for a user, its account row, in one statement.
pub(crate) async fn create_owner(
    pool: &PgPool,
    name: &str,
    kind: OwnerKind,
    user: Option<(Option<&str>, bool)>,
    now: i64,
) -> StoreResult<i64> {
    let (password_hash, is_admin) = user.unwrap_or_default();
    // The users row's foreign key is checked at the end of the statement,
    // after the CTE's insert of the owner.
    sqlx::query_scalar(
        "WITH owner AS ( \
             INSERT INTO owners (name, kind, is_public, created_at) VALUES ($1, $2, false, $3) RETURNING id), \
         account AS ( \
             INSERT INTO users (owner_id, password_hash, is_admin, disabled) \
             SELECT id, $4, $5, false FROM owner WHERE $6) \
         SELECT id FROM owner",
    )
    .bind(name)
    .bind(kind.as_str())
    .bind(now)
    .bind(password_hash)
    .bind(is_admin)
    .bind(user.is_some())
    .fetch_one(pool)
    .await
    .map_err(conflict(name))
}

pub(crate) async fn user_by_name(pool: &PgPool, name: &str) -> Result<Option<UserRecord>> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u JOIN owners o ON o.id = u.owner_id WHERE o.name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    Ok(row.map(UserRecord::from))
}

pub(crate) async fn user_by_id(pool: &PgPool, id: i64) -> Result<Option<UserRecord>> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u JOIN owners o ON o.id = u.owner_id WHERE o.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    Ok(row.map(UserRecord::from))
}

/// Users in name (byte) order.
pub(crate) async fn list_users(pool: &PgPool) -> Result<Vec<UserRecord>> {
    let rows: Vec<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u JOIN owners o ON o.id = u.owner_id ORDER BY o.name"
    ))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    Ok(rows.into_iter().map(UserRecord::from).collect())
}

/// `false` if there is no such user (an organization of that name does not count).
pub(crate) async fn set_disabled(pool: &PgPool, name: &str, disabled: bool) -> StoreResult<bool> {
    let result = sqlx::query(
        "UPDATE users SET disabled = $1 \
         WHERE owner_id = (SELECT id FROM owners WHERE name = $2 AND kind = 'user')",
    )
    .bind(disabled)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// `false` if there is no such user.
pub(crate) async fn set_password(pool: &PgPool, name: &str, password_hash: Option<&str>) -> StoreResult<bool> {
    let result = sqlx::query(
        "UPDATE users SET password_hash = $1 \
         WHERE owner_id = (SELECT id FROM owners WHERE name = $2 AND kind = 'user')",
    )
    .bind(password_hash)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Adds or changes (`Some`) or removes (`None`) a membership; whether a row
/// changed. [`MetaError::NotFound`] if the organization or the user is
/// missing (the organization is named first when both are).
///
/// One statement: the ids are looked up and the membership written together,
/// and the lookup's result tells a missing name from an unchanged row.
pub(crate) async fn set_member(pool: &PgPool, org: &str, user: &str, role: Option<OrgRole>) -> StoreResult<bool> {
    macro_rules! with_ids {
        ($changed:literal) => {
            concat!(
                "WITH ids AS (SELECT \
                   (SELECT id FROM owners WHERE name = $1 AND kind = 'org') AS org_id, \
                   (SELECT id FROM owners WHERE name = $2 AND kind = 'user') AS user_id), \
                 changed AS (",
                $changed,
                " RETURNING 1) \
                 SELECT org_id IS NOT NULL, user_id IS NOT NULL, (SELECT count(*) FROM changed) FROM ids"
            )
        };
    }
    let (org_found, user_found, changed): (bool, bool, i64) = match role {
        Some(role) => sqlx::query_as(with_ids!(
            "INSERT INTO org_members (org_id, user_id, role) \
             SELECT org_id, user_id, $3 FROM ids WHERE org_id IS NOT NULL AND user_id IS NOT NULL \
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role"
        ))
        .bind(org)
        .bind(user)
        .bind(role.as_str()),
        None => sqlx::query_as(with_ids!(
            "DELETE FROM org_members m USING ids WHERE m.org_id = ids.org_id AND m.user_id = ids.user_id"
        ))
        .bind(org)
        .bind(user),
    }
    .fetch_one(pool)
    .await?;
    if !org_found {
        return Err(MetaError::NotFound(format!("organization {org:?}")).into());
    }
    if !user_found {
        return Err(MetaError::NotFound(format!("user {user:?}")).into());
    }
    Ok(changed > 0)
}

/// Members of `org` in user name order.
pub(crate) async fn members(pool: &PgPool, org: &str) -> Result<Vec<Membership>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT u.name, m.role FROM org_members m JOIN owners g ON g.id = m.org_id \
         JOIN owners u ON u.id = m.user_id WHERE g.name = $1 ORDER BY u.name",
    )
    .bind(org)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.into_iter().map(|(user, role)| Ok(Membership { user, role: parse_role(&role)? })).collect()
}

// --- visibility and access -------------------------------------------------------

pub(crate) async fn owner(pool: &PgPool, name: &str) -> Result<Option<OwnerRecord>> {
    let row: Option<OwnerRow> =
        sqlx::query_as("SELECT id, name, kind, is_public, created_at FROM owners WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
    Ok(row.map(OwnerRecord::from))
}

/// `false` if there is no such owner.
pub(crate) async fn set_owner_public(pool: &PgPool, name: &str, public: bool) -> StoreResult<bool> {
    let result =
        sqlx::query("UPDATE owners SET is_public = $1 WHERE name = $2").bind(public).bind(name).execute(pool).await?;
    Ok(result.rows_affected() > 0)
}

/// Sets the repository's own visibility, creating the repository if needed:
/// one upsert (a concurrent creator is waited for, then updated).
pub(crate) async fn set_repository_public(
    pool: &PgPool,
    repo: &RepositoryName,
    public: Option<bool>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at, is_public) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET is_public = excluded.is_public",
    )
    .bind(repo.as_str())
    .bind(now)
    .bind(public)
    .execute(pool)
    .await?;
    Ok(())
}

/// The owner named by the repository's first component, the user's role in
/// it and the repository's own visibility, in one query. Nothing at all if
/// the owner does not exist.
pub(crate) async fn access_facts(pool: &PgPool, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts> {
    // A NULL user matches no membership: anonymous has no role.
    let row: Option<AccessRow> = sqlx::query_as(
        "SELECT o.id, o.name, o.kind, o.is_public, o.created_at, \
           (SELECT m.role FROM org_members m WHERE m.org_id = o.id AND m.user_id = $1) AS role, \
           (SELECT r.is_public FROM repositories r WHERE r.name = $2) AS repository_public, \
           EXISTS (SELECT 1 FROM repositories r WHERE r.name = $2) AS repository_exists \
         FROM owners o WHERE o.name = $3",
    )
    .bind(user)
    .bind(repo.as_str())
    .bind(repo.owner())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(AccessFacts::default());
    };
    Ok(AccessFacts {
        owner: Some(row.owner.into()),
        // As in SQLite, an unknown role stored by hand grants nothing.
        role: row.role.as_deref().and_then(OrgRole::parse),
        repository_public: row.repository_public,
        repository_exists: row.repository_exists,
    })
}

/// Repositories `user` may list, in byte order after `after`.
///
/// A repository's owner is its first path component (`split_part` keeps
/// the "C" collation of `repositories.name`, matching `owners.name`, so the
/// join probes the owners' name index). Admins see everything; others their
/// own namespace, their organizations', and public repositories (the
/// repository's flag, else its owner's; private when neither exists).
pub(crate) async fn readable_repositories(
    pool: &PgPool,
    user: Option<&UserRecord>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT r.name FROM repositories r \
         LEFT JOIN owners o ON o.name = split_part(r.name, '/', 1) \
         WHERE r.name > $1 AND ( \
           $2 OR o.id = $3 \
           OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = o.id AND m.user_id = $3) \
           OR COALESCE(r.is_public, o.is_public, false)) \
         ORDER BY r.name LIMIT $4",
    )
    .bind(after.unwrap_or(""))
    .bind(user.is_some_and(|u| u.is_admin))
    .bind(user.map(|u| u.id))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)
}

// --- tokens ------------------------------------------------------------------------

/// Lookup keys need not be unique: nothing here conflicts.
pub(crate) async fn create_token(pool: &PgPool, t: &NewToken) -> StoreResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO access_tokens \
         (user_id, name, lookup_key, secret_hash, scopes, repositories, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(t.user_id)
    .bind(&t.name)
    .bind(&t.lookup_key)
    .bind(&t.secret_hash)
    .bind(t.scopes.join(","))
    .bind(t.repositories.join("\n"))
    .bind(t.expires_at)
    .bind(t.created_at)
    .fetch_one(pool)
    .await
    .map_err(conflict("token"))
}

/// The tokens with this lookup key (revoked or expired ones too: the caller
/// judges), oldest first, each with its user and verifier.
pub(crate) async fn tokens_by_lookup_key(pool: &PgPool, key: &[u8]) -> Result<Vec<TokenCandidate>> {
    let rows: Vec<TokenUserRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        ", o.name AS user_name, u.password_hash, u.is_admin, u.disabled, o.created_at AS user_created_at, \
         t.secret_hash \
         FROM access_tokens t JOIN owners o ON o.id = t.user_id JOIN users u ON u.owner_id = o.id \
         WHERE t.lookup_key = $1 ORDER BY t.id"
    ))
    .bind(key)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let user = UserRecord {
                id: r.token.user_id,
                name: r.user_name,
                password_hash: r.password_hash,
                is_admin: r.is_admin,
                disabled: r.disabled,
                created_at: r.user_created_at,
            };
            TokenCandidate { token: r.token.into(), user, secret_hash: r.secret_hash }
        })
        .collect())
}

pub(crate) async fn token(pool: &PgPool, id: i64) -> Result<Option<TokenRecord>> {
    let row: Option<TokenRow> =
        sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM access_tokens t WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
    Ok(row.map(TokenRecord::from))
}

/// The user's tokens, oldest first.
pub(crate) async fn list_tokens(pool: &PgPool, user: &str) -> Result<Vec<TokenRecord>> {
    let rows: Vec<TokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM access_tokens t JOIN owners o ON o.id = t.user_id WHERE o.name = $1 ORDER BY t.id"
    ))
    .bind(user)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    Ok(rows.into_iter().map(TokenRecord::from).collect())
}

/// `false` if there is no such token or it was already revoked.
pub(crate) async fn revoke_token(pool: &PgPool, id: i64, now: i64) -> StoreResult<bool> {
    let result = sqlx::query("UPDATE access_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Records a use; nothing happens for an unknown token.
pub(crate) async fn touch_token(pool: &PgPool, id: i64, now: i64) -> StoreResult<()> {
    sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2").bind(now).bind(id).execute(pool).await?;
    Ok(())
}
