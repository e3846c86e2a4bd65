//! Web sign-in sessions ([`berth_meta::SessionStore`]).

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::auth::UserRecord;
use berth_meta::sessions::{NewWebSession, SessionStore, WebSessionRecord};
use sqlx::Row;

use crate::PostgresMetaStore;
use crate::error::db_err;

#[async_trait]
impl SessionStore for PostgresMetaStore {
    async fn create_web_session(&self, s: &NewWebSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, csrf_token, password_stamp, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id_hash)
        .bind(s.user_id)
        .bind(&s.csrf_token)
        .bind(&s.password_stamp)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn web_session(&self, id_hash: &[u8], now: i64) -> Result<Option<WebSessionRecord>> {
        let row = sqlx::query(
            "SELECT o.id, o.name, u.password_hash, u.is_admin, u.disabled, o.created_at, \
                    s.csrf_token, s.password_stamp, s.created_at, s.expires_at \
             FROM web_sessions s JOIN users u ON u.owner_id = s.user_id JOIN owners o ON o.id = u.owner_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(WebSessionRecord {
            user: UserRecord {
                id: r.try_get(0).map_err(db_err)?,
                name: r.try_get(1).map_err(db_err)?,
                password_hash: r.try_get(2).map_err(db_err)?,
                is_admin: r.try_get(3).map_err(db_err)?,
                disabled: r.try_get(4).map_err(db_err)?,
                created_at: r.try_get(5).map_err(db_err)?,
            },
            csrf_token: r.try_get(6).map_err(db_err)?,
            password_stamp: r.try_get(7).map_err(db_err)?,
            created_at: r.try_get(8).map_err(db_err)?,
            expires_at: r.try_get(9).map_err(db_err)?,
        }))
    }

    async fn delete_web_session(&self, id_hash: &[u8]) -> Result<bool> {
        let n = sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64> {
        let n = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n)
    }
}
