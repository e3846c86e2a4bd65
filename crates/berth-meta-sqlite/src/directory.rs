//! Organizations and the site-admin flag ([`berth_meta::DirectoryStore`]).

use async_trait::async_trait;
use berth_meta::auth::{OwnerKind, OwnerRecord};
use berth_meta::{DirectoryStore, Result};
use sqlx::Row;

use crate::SqliteMetaStore;
use crate::error::db_err;

#[async_trait]
impl DirectoryStore for SqliteMetaStore {
    async fn list_orgs(&self) -> Result<Vec<OwnerRecord>> {
        let rows = sqlx::query("SELECT id, name, is_public, created_at FROM owners WHERE kind = 'org' ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(OwnerRecord {
                    id: r.try_get(0).map_err(db_err)?,
                    name: r.try_get(1).map_err(db_err)?,
                    kind: OwnerKind::Org,
                    is_public: r.try_get(2).map_err(db_err)?,
                    created_at: r.try_get(3).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn set_user_admin(&self, name: &str, admin: bool) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE users SET is_admin = ? WHERE owner_id = (SELECT id FROM owners WHERE name = ? AND kind = 'user')",
        )
        .bind(admin)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}
