//! Web sign-in sessions ([`berth_meta::SessionStore`]).

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::sessions::{NewWebSession, SessionStore, WebSessionRecord};
use berth_meta_sql::rows::UserRow;
use sqlx::Row;

use crate::SqliteMetaStore;

#[async_trait]
impl SessionStore for SqliteMetaStore {
    async fn create_web_session(&self, s: &NewWebSession) -> Result<()> {
        self.write(async |tx| {
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
            .await?;
            Ok(())
        })
        .await
    }

    async fn web_session(&self, id_hash: &[u8], now: i64) -> Result<Option<WebSessionRecord>> {
        self.read(async |conn| {
            let row = sqlx::query(concat!(
                "SELECT ",
                berth_meta_sql::user_columns!(),
                ", s.csrf_token, s.password_stamp, s.created_at AS session_created_at, \
                 s.expires_at AS session_expires_at \
                 FROM web_sessions s JOIN users u ON u.owner_id = s.user_id JOIN owners o ON o.id = u.owner_id \
                 WHERE s.id_hash = ? AND s.expires_at > ?"
            ))
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(r) = row else { return Ok(None) };
            let user: UserRow = sqlx::FromRow::from_row(&r)?;
            Ok(Some(WebSessionRecord {
                user: user.into(),
                csrf_token: r.try_get("csrf_token")?,
                password_stamp: r.try_get("password_stamp")?,
                created_at: r.try_get("session_created_at")?,
                expires_at: r.try_get("session_expires_at")?,
            }))
        })
        .await
    }

    async fn delete_web_session(&self, id_hash: &[u8]) -> Result<bool> {
        self.write(async |tx| {
            let n = sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?").bind(id_hash).execute(&mut *tx).await?;
            Ok(n.rows_affected() > 0)
        })
        .await
    }

    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64> {
        self.write(async |tx| {
            let n = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= ?").bind(now).execute(&mut *tx).await?;
            Ok(n.rows_affected())
        })
        .await
    }
}
