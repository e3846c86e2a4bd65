//! [`AuthStore`]: accounts, tokens and visibility, with the SQLite
//! backend's semantics.
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

use async_trait::async_trait;
use berth_meta::auth::{
    AccessFacts, Membership, NewToken, OrgRole, OwnerKind, OwnerRecord, TokenCandidate, TokenRecord, UserRecord,
};
use berth_meta::{AuthStore, MetaError, Result};
use berth_meta_sql::rows::{AccessRow, OwnerRow, TokenRow, TokenUserRow, UserFactsRow, UserRow, parse_role};
use berth_meta_sql::{facts_columns, token_columns, token_user_columns, user_columns};
use berth_oci::RepositoryName;

use crate::PostgresMetaStore;
use crate::error::StoreError;
use crate::retry::retrying;

impl PostgresMetaStore {
    /// Creates an owner and, for a user, its account row, in one statement.
    async fn create_owner(
        &self,
        name: &str,
        kind: OwnerKind,
        user: Option<(Option<&str>, bool)>,
        now: i64,
    ) -> Result<i64> {
        let (password_hash, is_admin) = user.unwrap_or_default();
        retrying("create_owner", || async {
            // The users row's foreign key is checked at the end of the
            // statement, after the CTE's insert of the owner.
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
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::from(e).conflict_on(name))
        })
        .await
    }

    /// Adds or changes (`Some`) or removes (`None`) a membership; whether a
    /// row changed. [`MetaError::NotFound`] if the organization or the user
    /// is missing (the organization is named first when both are).
    ///
    /// One statement: the ids are looked up and the membership written
    /// together, and the lookup's result tells a missing name from an
    /// unchanged row.
    async fn set_member(&self, org: &str, user: &str, role: Option<OrgRole>) -> Result<bool> {
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
        retrying("set_org_member", || async {
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
            .fetch_one(&self.pool)
            .await?;
            if !org_found {
                return Err(MetaError::NotFound(format!("organization {org:?}")).into());
            }
            if !user_found {
                return Err(MetaError::NotFound(format!("user {user:?}")).into());
            }
            Ok(changed > 0)
        })
        .await
    }

    /// Runs a one-statement update (autocommit, retried on conflicts);
    /// whether it changed a row.
    async fn update(
        &self,
        operation: &'static str,
        query: impl Fn() -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<bool> {
        retrying(operation, || async { Ok(query().execute(&self.pool).await?.rows_affected() > 0) }).await
    }
}

#[async_trait]
impl AuthStore for PostgresMetaStore {
    async fn create_user(&self, name: &str, password_hash: Option<&str>, is_admin: bool, now: i64) -> Result<i64> {
        self.create_owner(name, OwnerKind::User, Some((password_hash, is_admin)), now).await
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u JOIN owners o ON o.id = u.owner_id WHERE o.name = $1"
                ))
                .bind(name)
                .fetch_optional(pool)
                .await?)
            })
            .await?;
        Ok(row.map(UserRecord::from))
    }

    async fn get_user_with_access(
        &self,
        name: &str,
        repo: &RepositoryName,
    ) -> Result<Option<(UserRecord, AccessFacts)>> {
        let row: Option<UserFactsRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    ", ",
                    facts_columns!("o.id", "$2"),
                    " FROM users u JOIN owners o ON o.id = u.owner_id LEFT JOIN owners ro ON ro.name = $3 \
                     WHERE o.name = $1"
                ))
                .bind(name)
                .bind(repo.as_str())
                .bind(repo.owner())
                .fetch_optional(pool)
                .await?)
            })
            .await?;
        Ok(row.map(Into::into))
    }

    async fn get_user_by_id(&self, id: i64) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u JOIN owners o ON o.id = u.owner_id WHERE o.id = $1"
                ))
                .bind(id)
                .fetch_optional(pool)
                .await?)
            })
            .await?;
        Ok(row.map(UserRecord::from))
    }

    /// Users in name (byte) order.
    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows: Vec<UserRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u JOIN owners o ON o.id = u.owner_id ORDER BY o.name"
                ))
                .fetch_all(pool)
                .await?)
            })
            .await?;
        Ok(rows.into_iter().map(UserRecord::from).collect())
    }

    /// `false` if there is no such user (an organization of that name does not count).
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let name = name.to_owned();
        self.update("set_user_disabled", || {
            sqlx::query(
                "UPDATE users SET disabled = $1 \
                 WHERE owner_id = (SELECT id FROM owners WHERE name = $2 AND kind = 'user')",
            )
            .bind(disabled)
            .bind(name.clone())
        })
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        let (name, hash) = (name.to_owned(), password_hash.map(str::to_owned));
        self.update("set_user_password", || {
            sqlx::query(
                "UPDATE users SET password_hash = $1 \
                 WHERE owner_id = (SELECT id FROM owners WHERE name = $2 AND kind = 'user')",
            )
            .bind(hash.clone())
            .bind(name.clone())
        })
        .await
    }

    async fn create_org(&self, name: &str, now: i64) -> Result<i64> {
        self.create_owner(name, OwnerKind::Org, None, now).await
    }

    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> Result<()> {
        self.set_member(org, user, Some(role)).await.map(|_| ())
    }

    async fn remove_org_member(&self, org: &str, user: &str) -> Result<bool> {
        self.set_member(org, user, None).await
    }

    /// Members of `org` in user name order.
    async fn list_org_members(&self, org: &str) -> Result<Vec<Membership>> {
        let rows: Vec<(String, String)> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT u.name, m.role FROM org_members m JOIN owners g ON g.id = m.org_id \
                     JOIN owners u ON u.id = m.user_id WHERE g.name = $1 ORDER BY u.name",
                )
                .bind(org)
                .fetch_all(pool)
                .await?)
            })
            .await?;
        rows.into_iter().map(|(user, role)| Ok(Membership { user, role: parse_role(&role)? })).collect()
    }

    async fn get_owner(&self, name: &str) -> Result<Option<OwnerRecord>> {
        let row: Option<OwnerRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as("SELECT id, name, kind, is_public, created_at FROM owners WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?)
            })
            .await?;
        Ok(row.map(OwnerRecord::from))
    }

    /// `false` if there is no such owner.
    async fn set_owner_public(&self, name: &str, public: bool) -> Result<bool> {
        let name = name.to_owned();
        self.update("set_owner_public", || {
            sqlx::query("UPDATE owners SET is_public = $1 WHERE name = $2").bind(public).bind(name.clone())
        })
        .await
    }

    /// Sets the repository's own visibility, creating the repository if
    /// needed: one upsert (a concurrent creator is waited for, then updated).
    async fn set_repository_public(&self, repo: &RepositoryName, public: Option<bool>, now: i64) -> Result<()> {
        retrying("set_repository_public", || async {
            sqlx::query(
                "INSERT INTO repositories (name, created_at, is_public) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET is_public = excluded.is_public",
            )
            .bind(repo.as_str())
            .bind(now)
            .bind(public)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// The owner named by the repository's first component, the user's role
    /// in it and the repository's own visibility, in one query. Nothing at
    /// all if the owner does not exist.
    async fn access_facts(&self, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts> {
        // A NULL user matches no membership: anonymous has no role.
        let row: Option<AccessRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
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
                .await?)
            })
            .await?;
        Ok(row.map(AccessFacts::from).unwrap_or_default())
    }

    /// Repositories `user` may list, in byte order after `after`.
    ///
    /// A repository's owner is its first path component (`split_part`
    /// keeps the "C" collation of `repositories.name`, matching
    /// `owners.name`, so the join probes the owners' name index). Admins
    /// see everything; others their own namespace, their organizations',
    /// and public repositories (the repository's flag, else its owner's;
    /// private when neither exists).
    async fn readable_repositories(
        &self,
        user: Option<&UserRecord>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.read(async |pool| {
            Ok(sqlx::query_scalar(
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
            .await?)
        })
        .await
    }

    /// Lookup keys need not be unique: nothing here conflicts.
    async fn create_token(&self, t: &NewToken) -> Result<i64> {
        retrying("create_token", || async {
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
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::from(e).conflict_on("token"))
        })
        .await
    }

    /// The tokens with this lookup key (revoked or expired ones too: the
    /// caller judges), oldest first, each with its user and verifier.
    async fn tokens_by_lookup_key(
        &self,
        lookup_key: &[u8],
        repo: Option<&RepositoryName>,
    ) -> Result<Vec<TokenCandidate>> {
        // Without a repository the facts' parameters are NULL: they match
        // nothing, and the facts are dropped.
        let rows: Vec<TokenUserRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    token_user_columns!("$2"),
                    " FROM access_tokens t JOIN owners o ON o.id = t.user_id JOIN users u ON u.owner_id = o.id \
                     LEFT JOIN owners ro ON ro.name = $3 \
                     WHERE t.lookup_key = $1 ORDER BY t.id"
                ))
                .bind(lookup_key)
                .bind(repo.map(|r| r.as_str()))
                .bind(repo.map(|r| r.owner()))
                .fetch_all(pool)
                .await?)
            })
            .await?;
        Ok(rows.into_iter().map(|r| r.into_candidate(repo.is_some())).collect())
    }

    async fn get_token(&self, id: i64) -> Result<Option<TokenRecord>> {
        let row: Option<TokenRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM access_tokens t WHERE t.id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?)
            })
            .await?;
        Ok(row.map(TokenRecord::from))
    }

    /// The user's tokens, oldest first.
    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        let rows: Vec<TokenRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM access_tokens t JOIN owners o ON o.id = t.user_id WHERE o.name = $1 ORDER BY t.id"
                ))
                .bind(user)
                .fetch_all(pool)
                .await?)
            })
            .await?;
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }

    /// `false` if there is no such token or it was already revoked.
    async fn revoke_token(&self, id: i64, now: i64) -> Result<bool> {
        self.update("revoke_token", || {
            sqlx::query("UPDATE access_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
        })
        .await
    }

    /// Records a use; nothing happens for an unknown token.
    async fn touch_token(&self, id: i64, now: i64) -> Result<()> {
        self.update("touch_token", || {
            sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2").bind(now).bind(id)
        })
        .await
        .map(|_| ())
    }
}
