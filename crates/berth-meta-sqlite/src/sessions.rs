//! Web sign-in sessions ([`berth_meta::SessionStore`]).

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::auth::UserRecord;
use berth_meta::sessions::{NewWebSession, SessionStore, WebSessionRecord};
use sqlx::Row;

use crate::SqliteMetaStore;
use crate::error::db_err;

#[async_trait]
impl SessionStore for SqliteMetaStore {
    async fn create_web_session(&self, s: &NewWebSession) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, csrf_token, password_stamp, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(s.user_id)
        .bind(&s.csrf_token)
        .bind(&s.password_stamp)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn web_session(&self, id_hash: &[u8], now: i64) -> Result<Option<WebSessionRecord>> {
        let row = sqlx::query(
            "SELECT o.id, o.name, u.password_hash, u.is_admin, u.disabled, o.created_at, \
                    s.csrf_token, s.password_stamp, s.created_at, s.expires_at \
             FROM web_sessions s JOIN users u ON u.owner_id = s.user_id JOIN owners o ON o.id = u.owner_id \
             WHERE s.id_hash = ? AND s.expires_at > ?",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }
}
