//! [`AuthStore`]: accounts, tokens and visibility.

use async_trait::async_trait;
use berth_meta::auth::{
    AccessFacts, Membership, NewToken, OrgRole, OwnerKind, OwnerRecord, TokenCandidate, TokenRecord, UserRecord,
};
use berth_meta::{AuthStore, MetaError, Result};
use berth_meta_sql::rows::{AccessRow, OwnerRow, TokenRow, TokenUserRow, UserFactsRow, UserRow, parse_role};
use berth_meta_sql::{facts_columns, token_columns, token_user_columns, user_columns};
use berth_oci::RepositoryName;
use rusqlite::{OptionalExtension, params};

use crate::error::StoreError;
use crate::point::PointRow;
use crate::{SqliteMetaStore, manifests};

impl SqliteMetaStore {
    /// Creates an owner and, for a user, its account row.
    async fn create_owner(
        &self,
        name: &str,
        kind: OwnerKind,
        user: Option<(Option<&str>, bool)>,
        now: i64,
    ) -> Result<i64> {
        self.write(async |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO owners (name, kind, is_public, created_at) VALUES (?, ?, 0, ?) RETURNING id",
            )
            .bind(name)
            .bind(kind.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::from(e).conflict_on(name))?;
            if let Some((password_hash, is_admin)) = user {
                sqlx::query("INSERT INTO users (owner_id, password_hash, is_admin, disabled) VALUES (?, ?, ?, 0)")
                    .bind(id)
                    .bind(password_hash)
                    .bind(is_admin)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(id)
        })
        .await
    }

    /// Adds or changes (`Some`) or removes (`None`) a membership; whether a
    /// row changed. [`MetaError::NotFound`] if the organization or the user
    /// is missing (the organization is named first when both are).
    async fn set_member(&self, org: &str, user: &str, role: Option<OrgRole>) -> Result<bool> {
        self.write(async |tx| {
            let org_id: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = ? AND kind = 'org'")
                .bind(org)
                .fetch_optional(&mut *tx)
                .await?;
            let user_id: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = ? AND kind = 'user'")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
            let (Some(org_id), Some(user_id)) = (org_id, user_id) else {
                let missing = if org_id.is_none() { format!("organization {org:?}") } else { format!("user {user:?}") };
                return Err(MetaError::NotFound(missing).into());
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
                    .await?
                }
                None => {
                    sqlx::query("DELETE FROM org_members WHERE org_id = ? AND user_id = ?")
                        .bind(org_id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                }
            };
            Ok(changed.rows_affected() > 0)
        })
        .await
    }

    /// Runs a one-statement update in a write transaction; whether it changed a row.
    async fn update<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<bool> {
        self.write(async |tx| Ok(query.execute(&mut *tx).await?.rows_affected() > 0)).await
    }
}

#[async_trait]
impl AuthStore for SqliteMetaStore {
    async fn create_user(&self, name: &str, password_hash: Option<&str>, is_admin: bool, now: i64) -> Result<i64> {
        self.create_owner(name, OwnerKind::User, Some((password_hash, is_admin)), now).await
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u JOIN owners o ON o.id = u.owner_id WHERE o.name = ?"
                ))
                .bind(name)
                .fetch_optional(&mut *conn)
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
        let row = self.point_read(|conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                ", ",
                facts_columns!("o.id", "?2"),
                " FROM users u JOIN owners o ON o.id = u.owner_id LEFT JOIN owners ro ON ro.name = ?3 \
                 WHERE o.name = ?1"
            ))?
            .query_row(params![name, repo.as_str(), repo.owner()], UserFactsRow::read)
            .optional()
        })?;
        Ok(row.map(Into::into))
    }

    async fn get_user_by_id(&self, id: i64) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u JOIN owners o ON o.id = u.owner_id WHERE o.id = ?"
                ))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        Ok(row.map(UserRecord::from))
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows: Vec<UserRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u JOIN owners o ON o.id = u.owner_id ORDER BY o.name"
                ))
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        Ok(rows.into_iter().map(UserRecord::from).collect())
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        self.update(
            sqlx::query(
                "UPDATE users SET disabled = ? \
                 WHERE owner_id = (SELECT id FROM owners WHERE name = ? AND kind = 'user')",
            )
            .bind(disabled)
            .bind(name),
        )
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        self.update(
            sqlx::query(
                "UPDATE users SET password_hash = ? \
                 WHERE owner_id = (SELECT id FROM owners WHERE name = ? AND kind = 'user')",
            )
            .bind(password_hash)
            .bind(name),
        )
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

    async fn list_org_members(&self, org: &str) -> Result<Vec<Membership>> {
        let rows: Vec<(String, String)> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT u.name, m.role FROM org_members m JOIN owners g ON g.id = m.org_id \
                     JOIN owners u ON u.id = m.user_id WHERE g.name = ? ORDER BY u.name",
                )
                .bind(org)
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        rows.into_iter().map(|(user, role)| Ok(Membership { user, role: parse_role(&role)? })).collect()
    }

    async fn get_owner(&self, name: &str) -> Result<Option<OwnerRecord>> {
        let row: Option<OwnerRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as("SELECT id, name, kind, is_public, created_at FROM owners WHERE name = ?")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?)
            })
            .await?;
        Ok(row.map(OwnerRecord::from))
    }

    async fn set_owner_public(&self, name: &str, public: bool) -> Result<bool> {
        self.update(sqlx::query("UPDATE owners SET is_public = ? WHERE name = ?").bind(public).bind(name)).await
    }

    async fn set_repository_public(&self, repo: &RepositoryName, public: Option<bool>, now: i64) -> Result<()> {
        self.write(async |tx| {
            let id = manifests::upsert_repository(tx, repo, now).await?;
            sqlx::query("UPDATE repositories SET is_public = ? WHERE id = ?")
                .bind(public)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
        .await
    }

    /// The owner named by the repository's first component, the user's role
    /// in it and the repository's own visibility, in one query. Nothing at
    /// all if the owner does not exist.
    async fn access_facts(&self, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts> {
        let row: Option<AccessRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT o.id, o.name, o.kind, o.is_public, o.created_at, \
                       (SELECT m.role FROM org_members m WHERE m.org_id = o.id AND m.user_id = ?1) AS role, \
                       (SELECT r.is_public FROM repositories r WHERE r.name = ?2) AS repository_public, \
                       EXISTS (SELECT 1 FROM repositories r WHERE r.name = ?2) AS repository_exists \
                     FROM owners o WHERE o.name = ?3",
                )
                .bind(user.unwrap_or(-1))
                .bind(repo.as_str())
                .bind(repo.owner())
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        Ok(row.map(AccessFacts::from).unwrap_or_default())
    }

    async fn readable_repositories(
        &self,
        user: Option<&UserRecord>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.read(async |conn| {
            Ok(sqlx::query_scalar(
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
            .fetch_all(&mut *conn)
            .await?)
        })
        .await
    }

    async fn create_token(&self, t: &NewToken) -> Result<i64> {
        self.write(async |tx| {
            sqlx::query_scalar(
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
            .map_err(|e| StoreError::from(e).conflict_on("token"))
        })
        .await
    }

    /// Oldest first, revoked or expired ones too: the caller judges.
    async fn tokens_by_lookup_key(
        &self,
        lookup_key: &[u8],
        repo: Option<&RepositoryName>,
    ) -> Result<Vec<TokenCandidate>> {
        // Without a repository the facts' parameters are NULL: they match
        // nothing, and the facts are dropped.
        let rows = self.point_read(|conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                token_user_columns!("?2"),
                " FROM access_tokens t JOIN owners o ON o.id = t.user_id JOIN users u ON u.owner_id = o.id \
                 LEFT JOIN owners ro ON ro.name = ?3 \
                 WHERE t.lookup_key = ?1 ORDER BY t.id"
            ))?
            .query_map(params![lookup_key, repo.map(|r| r.as_str()), repo.map(|r| r.owner())], TokenUserRow::read)?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().map(|r| r.into_candidate(repo.is_some())).collect())
    }

    async fn get_token(&self, id: i64) -> Result<Option<TokenRecord>> {
        let row: Option<TokenRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM access_tokens t WHERE t.id = ?"))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?)
            })
            .await?;
        Ok(row.map(TokenRecord::from))
    }

    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        let rows: Vec<TokenRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM access_tokens t JOIN owners o ON o.id = t.user_id WHERE o.name = ? ORDER BY t.id"
                ))
                .bind(user)
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }

    async fn revoke_token(&self, id: i64, now: i64) -> Result<bool> {
        self.update(
            sqlx::query("UPDATE access_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(id),
        )
        .await
    }

    async fn touch_token(&self, id: i64, now: i64) -> Result<()> {
        self.update(sqlx::query("UPDATE access_tokens SET last_used_at = ? WHERE id = ?").bind(now).bind(id))
            .await
            .map(|_| ())
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
        let stale = store.tokens_by_lookup_key(&[], None).await.expect("lookup");
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
