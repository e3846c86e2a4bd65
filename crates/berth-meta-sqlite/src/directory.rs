//! Organizations and the site-admin flag ([`berth_meta::DirectoryStore`]).

use async_trait::async_trait;
use berth_meta::auth::OwnerRecord;
use berth_meta::{DirectoryStore, Result};
use berth_meta_sql::rows::OwnerRow;

use crate::SqliteMetaStore;

#[async_trait]
impl DirectoryStore for SqliteMetaStore {
    async fn list_orgs(&self) -> Result<Vec<OwnerRecord>> {
        let rows: Vec<OwnerRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT id, name, kind, is_public, created_at FROM owners WHERE kind = 'org' ORDER BY name",
                )
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        Ok(rows.into_iter().map(OwnerRecord::from).collect())
    }

    async fn set_user_admin(&self, name: &str, admin: bool) -> Result<bool> {
        self.write(async |tx| {
            let n = sqlx::query(
                "UPDATE users SET is_admin = ? WHERE owner_id = (SELECT id FROM owners WHERE name = ? AND kind = 'user')",
            )
            .bind(admin)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            Ok(n.rows_affected() > 0)
        })
        .await
    }
}
