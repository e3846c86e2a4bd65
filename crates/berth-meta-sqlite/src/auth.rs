//! Accounts, tokens and visibility (`berth_meta::AuthStore`).

use async_trait::async_trait;
use berth_meta::auth::{
    AccessFacts, Membership, NewToken, OrgRole, OwnerKind, OwnerRecord, TokenCandidate, TokenRecord, UserRecord,
};
use berth_meta::{AuthStore, MetaError, Result};
use berth_oci::RepositoryName;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::db_err;
use crate::{SqliteMetaStore, repositories};

/// Maps a unique-constraint violation to `Conflict`, naming what clashed.
fn conflict(what: &str) -> impl FnOnce(sqlx::Error) -> MetaError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => MetaError::Conflict(what.to_owned()),
        _ => db_err(e),
    }
}

const USER_COLUMNS: &str = "o.id, o.name, u.password_hash, u.is_admin, u.disabled, o.created_at";

fn user_from(row: &SqliteRow, offset: usize) -> Result<UserRecord> {
    Ok(UserRecord {
        id: row.try_get(offset).map_err(db_err)?,
        name: row.try_get(offset + 1).map_err(db_err)?,
        password_hash: row.try_get(offset + 2).map_err(db_err)?,
        is_admin: row.try_get(offset + 3).map_err(db_err)?,
        disabled: row.try_get(offset + 4).map_err(db_err)?,
        created_at: row.try_get(offset + 5).map_err(db_err)?,
    })
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_id, t.name, t.scopes, t.repositories, t.expires_at, t.last_used_at, t.revoked_at, t.created_at";

fn token_from(row: &SqliteRow) -> Result<TokenRecord> {
    let list = |s: String, sep: char| -> Vec<String> {
        s.split(sep).map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
    };
    Ok(TokenRecord {
        id: row.try_get(0).map_err(db_err)?,
        user_id: row.try_get(1).map_err(db_err)?,
        name: row.try_get(2).map_err(db_err)?,
        scopes: list(row.try_get(3).map_err(db_err)?, ','),
        repositories: list(row.try_get(4).map_err(db_err)?, '\n'),
        expires_at: row.try_get(5).map_err(db_err)?,
        last_used_at: row.try_get(6).map_err(db_err)?,
        revoked_at: row.try_get(7).map_err(db_err)?,
        created_at: row.try_get(8).map_err(db_err)?,
    })
}

fn owner_from(row: &SqliteRow) -> Result<OwnerRecord> {
    let kind: String = row.try_get(2).map_err(db_err)?;
    Ok(OwnerRecord {
        id: row.try_get(0).map_err(db_err)?,
        name: row.try_get(1).map_err(db_err)?,
        kind: if kind == "org" { OwnerKind::Org } else { OwnerKind::User },
        is_public: row.try_get(3).map_err(db_err)?,
        created_at: row.try_get(4).map_err(db_err)?,
    })
}

impl SqliteMetaStore {
    pub(crate) async fn auth_create_owner(
        &self,
        name: &str,
        kind: OwnerKind,
        user: Option<(Option<&str>, bool)>,
        now: i64,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO owners (name, kind, is_public, created_at) VALUES (?, ?, 0, ?) RETURNING id",
        )
        .bind(name)
        .bind(kind.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict(name))?;
        if let Some((password_hash, is_admin)) = user {
            sqlx::query("INSERT INTO users (owner_id, password_hash, is_admin, disabled) VALUES (?, ?, ?, 0)")
                .bind(id)
                .bind(password_hash)
                .bind(is_admin)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(id)
    }

    pub(crate) async fn auth_user(&self, by: &str, key: UserKey<'_>) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u JOIN owners o ON o.id = u.owner_id WHERE {by} = ?");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let q = match key {
            UserKey::Name(n) => q.bind(n.to_owned()),
            UserKey::Id(i) => q.bind(i),
        };
        q.fetch_optional(&self.reader).await.map_err(db_err)?.map(|r| user_from(&r, 0)).transpose()
    }

    pub(crate) async fn auth_list_users(&self) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u JOIN owners o ON o.id = u.owner_id ORDER BY o.name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.reader).await.map_err(db_err)?;
        rows.iter().map(|r| user_from(r, 0)).collect()
    }

    pub(crate) async fn auth_update_user(&self, name: &str, column: UserColumn<'_>) -> Result<bool> {
        let q = match column {
            UserColumn::Disabled(d) => sqlx::query(
                "UPDATE users SET disabled = ? WHERE owner_id = (SELECT id FROM owners WHERE name = ? AND kind = 'user')",
            )
            .bind(d),
            UserColumn::Password(p) => sqlx::query(
                "UPDATE users SET password_hash = ? WHERE owner_id = (SELECT id FROM owners WHERE name = ? AND kind = 'user')",
            )
            .bind(p.map(str::to_owned)),
        };
        let mut tx = self.begin_write().await?;
        let n = q.bind(name).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    pub(crate) async fn auth_set_member(&self, org: &str, user: &str, role: Option<OrgRole>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let org_id: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = ? AND kind = 'org'")
            .bind(org)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let user_id: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = ? AND kind = 'user'")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let (Some(org_id), Some(user_id)) = (org_id, user_id) else {
            let missing = if org_id.is_none() { format!("organization {org:?}") } else { format!("user {user:?}") };
            return Err(MetaError::NotFound(missing));
        };
        let changed = match role {
            Some(role) => {
                sqlx::query(
                    "INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?) \
                 ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(org_id)
                .bind(user_id)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await
            }
            None => {
                sqlx::query("DELETE FROM org_members WHERE org_id = ? AND user_id = ?")
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
            }
        }
        .map_err(db_err)?
        .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(changed > 0)
    }

    pub(crate) async fn auth_members(&self, org: &str) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT u.name, m.role FROM org_members m JOIN owners g ON g.id = m.org_id \
             JOIN owners u ON u.id = m.user_id WHERE g.name = ? ORDER BY u.name",
        )
        .bind(org)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get(1).map_err(db_err)?;
                Ok(Membership {
                    user: r.try_get(0).map_err(db_err)?,
                    role: OrgRole::parse(&role).ok_or_else(|| MetaError::Backend(format!("bad role {role:?}")))?,
                })
            })
            .collect()
    }

    pub(crate) async fn auth_owner(&self, name: &str) -> Result<Option<OwnerRecord>> {
        sqlx::query("SELECT id, name, kind, is_public, created_at FROM owners WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .map(|r| owner_from(&r))
            .transpose()
    }

    pub(crate) async fn auth_set_owner_public(&self, name: &str, public: bool) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE owners SET is_public = ? WHERE name = ?")
            .bind(public)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    pub(crate) async fn auth_set_repository_public(
        &self,
        repo: &RepositoryName,
        public: Option<bool>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let id = repositories::upsert(&mut tx, repo, now).await?;
        sqlx::query("UPDATE repositories SET is_public = ? WHERE id = ?")
            .bind(public)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    pub(crate) async fn auth_access_facts(&self, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts> {
        let row = sqlx::query(
            "SELECT o.id, o.name, o.kind, o.is_public, o.created_at, \
               (SELECT m.role FROM org_members m WHERE m.org_id = o.id AND m.user_id = ?1), \
               (SELECT r.is_public FROM repositories r WHERE r.name = ?2), \
               EXISTS (SELECT 1 FROM repositories r WHERE r.name = ?2) \
             FROM owners o WHERE o.name = ?3",
        )
        .bind(user.unwrap_or(-1))
        .bind(repo.as_str())
        .bind(repo.owner())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(AccessFacts::default());
        };
        let role: Option<String> = row.try_get(5).map_err(db_err)?;
        Ok(AccessFacts {
            owner: Some(owner_from(&row)?),
            role: role.as_deref().and_then(OrgRole::parse),
            repository_public: row.try_get(6).map_err(db_err)?,
            repository_exists: row.try_get(7).map_err(db_err)?,
        })
    }

    pub(crate) async fn auth_readable(
        &self,
        user: Option<&UserRecord>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT r.name FROM repositories r \
             LEFT JOIN owners o ON o.name = substr(r.name, 1, instr(r.name || '/', '/') - 1) \
             WHERE r.name > ? AND ( \
               ? OR o.id = ? \
               OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = o.id AND m.user_id = ?) \
               OR COALESCE(r.is_public, o.is_public, 0) = 1) \
             ORDER BY r.name LIMIT ?",
        )
        .bind(after.unwrap_or(""))
        .bind(user.is_some_and(|u| u.is_admin))
        .bind(user.map_or(-1, |u| u.id))
        .bind(user.map_or(-1, |u| u.id))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)
    }

    pub(crate) async fn auth_create_token(&self, t: &NewToken) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO access_tokens \
             (user_id, name, lookup_key, secret_hash, scopes, repositories, expires_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(t.user_id)
        .bind(&t.name)
        .bind(&t.lookup_key)
        .bind(&t.secret_hash)
        .bind(t.scopes.join(","))
        .bind(t.repositories.join("\n"))
        .bind(t.expires_at)
        .bind(t.created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict("token"))?;
        tx.commit().await.map_err(db_err)?;
        Ok(id)
    }

    pub(crate) async fn auth_tokens_by_lookup_key(&self, key: &[u8]) -> Result<Vec<TokenCandidate>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS}, t.secret_hash FROM access_tokens t \
             JOIN owners o ON o.id = t.user_id JOIN users u ON u.owner_id = o.id \
             WHERE t.lookup_key = ? ORDER BY t.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key).fetch_all(&self.reader).await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(TokenCandidate {
                    token: token_from(r)?,
                    user: user_from(r, 9)?,
                    secret_hash: r.try_get(15).map_err(db_err)?,
                })
            })
            .collect()
    }

    pub(crate) async fn auth_token(&self, id: i64) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM access_tokens t WHERE t.id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.reader).await.map_err(db_err)?;
        row.map(|r| token_from(&r)).transpose()
    }

    pub(crate) async fn auth_list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens t JOIN owners o ON o.id = t.user_id \
             WHERE o.name = ? ORDER BY t.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user).fetch_all(&self.reader).await.map_err(db_err)?;
        rows.iter().map(token_from).collect()
    }

    pub(crate) async fn auth_token_update(&self, id: i64, now: i64, revoke: bool) -> Result<bool> {
        let sql = if revoke {
            "UPDATE access_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        } else {
            "UPDATE access_tokens SET last_used_at = ? WHERE id = ?"
        };
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(sql).bind(now).bind(id).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}

pub(crate) enum UserKey<'a> {
    Name(&'a str),
    Id(i64),
}

pub(crate) enum UserColumn<'a> {
    Disabled(bool),
    Password(Option<&'a str>),
}

#[async_trait]
impl AuthStore for SqliteMetaStore {
    async fn create_user(&self, name: &str, password_hash: Option<&str>, is_admin: bool, now: i64) -> Result<i64> {
        self.auth_create_owner(name, OwnerKind::User, Some((password_hash, is_admin)), now).await
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.auth_user("o.name", UserKey::Name(name)).await
    }

    async fn get_user_by_id(&self, id: i64) -> Result<Option<UserRecord>> {
        self.auth_user("o.id", UserKey::Id(id)).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.auth_list_users().await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        self.auth_update_user(name, UserColumn::Disabled(disabled)).await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        self.auth_update_user(name, UserColumn::Password(password_hash)).await
    }

    async fn create_org(&self, name: &str, now: i64) -> Result<i64> {
        self.auth_create_owner(name, OwnerKind::Org, None, now).await
    }

    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> Result<()> {
        self.auth_set_member(org, user, Some(role)).await.map(|_| ())
    }

    async fn remove_org_member(&self, org: &str, user: &str) -> Result<bool> {
        self.auth_set_member(org, user, None).await
    }

    async fn list_org_members(&self, org: &str) -> Result<Vec<Membership>> {
        self.auth_members(org).await
    }

    async fn get_owner(&self, name: &str) -> Result<Option<OwnerRecord>> {
        self.auth_owner(name).await
    }

    async fn set_owner_public(&self, name: &str, public: bool) -> Result<bool> {
        self.auth_set_owner_public(name, public).await
    }

    async fn set_repository_public(&self, repo: &RepositoryName, public: Option<bool>, now: i64) -> Result<()> {
        self.auth_set_repository_public(repo, public, now).await
    }

    async fn access_facts(&self, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts> {
        self.auth_access_facts(repo, user).await
    }

    async fn readable_repositories(
        &self,
        user: Option<&UserRecord>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.auth_readable(user, after, limit).await
    }

    async fn create_token(&self, token: &NewToken) -> Result<i64> {
        self.auth_create_token(token).await
    }

    async fn tokens_by_lookup_key(&self, lookup_key: &[u8]) -> Result<Vec<TokenCandidate>> {
        self.auth_tokens_by_lookup_key(lookup_key).await
    }

    async fn get_token(&self, id: i64) -> Result<Option<TokenRecord>> {
        self.auth_token(id).await
    }

    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        self.auth_list_tokens(user).await
    }

    async fn revoke_token(&self, id: i64, now: i64) -> Result<bool> {
        self.auth_token_update(id, now, true).await
    }

    async fn touch_token(&self, id: i64, now: i64) -> Result<()> {
        self.auth_token_update(id, now, false).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::{MIGRATOR, SqliteSettings};

    /// Migration 6 (argon2 token verifiers) cannot convert tokens stored as
    /// a SHA-256: it revokes them, keeping their ids and revocation times.
    #[tokio::test]
    async fn migration_6_revokes_tokens_stored_the_old_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
        let before = sqlx::migrate::Migrator {
            migrations: Cow::Owned(MIGRATOR.iter().filter(|m| m.version < 6).cloned().collect()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&store.writer).await.expect("migrations 1 to 5");
        sqlx::raw_sql(
            "INSERT INTO owners (id, name, kind, created_at) VALUES (1, 'alice', 'user', 0); \
             INSERT INTO users (owner_id) VALUES (1); \
             INSERT INTO access_tokens (id, user_id, name, secret_hash, scopes, repositories, revoked_at, created_at) \
             VALUES (3, 1, 'old', X'0102', 'read:package', '', 5, 0), \
                    (7, 1, 'live', X'0304', 'read:package', 'alice/*', NULL, 0);",
        )
        .execute(&store.writer)
        .await
        .expect("old tokens");

        store.migrate().await.expect("migration 6");
        let tokens = store.list_tokens("alice").await.expect("list");
        let seen: Vec<_> = tokens.iter().map(|t| (t.id, t.name.as_str(), t.revoked_at.is_some())).collect();
        assert_eq!(seen, vec![(3, "old", true), (7, "live", true)]);
        assert_eq!(tokens[0].revoked_at, Some(5), "an earlier revocation stays");
        assert_eq!(tokens[1].repositories, vec!["alice/*".to_owned()]);
        let stale = store.tokens_by_lookup_key(&[]).await.expect("lookup");
        assert!(stale.iter().all(|c| c.secret_hash.is_empty()), "no verifier: matches no secret");

        // New tokens never reuse an old id.
        let new = NewToken {
            user_id: 1,
            name: "new".into(),
            lookup_key: vec![1; 8],
            secret_hash: "$argon2id$...".into(),
            scopes: vec!["read:package".into()],
            repositories: Vec::new(),
            expires_at: None,
            created_at: 1,
        };
        assert!(store.create_token(&new).await.expect("create") > 7);
    }
}
