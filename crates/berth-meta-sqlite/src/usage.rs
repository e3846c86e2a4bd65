//! Storage accounting and quotas ([`berth_meta::UsageStore`]). The triggers
//! of `0009_usage_quotas.sql` keep `owner_usage` current; this module reads
//! it, edits the limits, and recounts.

use async_trait::async_trait;
use berth_meta::{OwnerQuota, OwnerUsage, QuotaLimits, RepositoryUsage, Result, UsageDrift, UsageStore};
use berth_meta_sql::usage::{
    QuotaRow, REBUILD_USAGE, RepositoryUsageRow, UsageQuotaRow, UsageRow, drift, limits_to_sql,
};
use berth_meta_sql::usage_columns;

use crate::SqliteMetaStore;

#[async_trait]
impl UsageStore for SqliteMetaStore {
    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage> {
        let row: Option<UsageRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!("SELECT ", usage_columns!(), " FROM owner_usage WHERE owner = ?"))
                    .bind(owner)
                    .fetch_optional(&mut *conn)
                    .await?)
            })
            .await?;
        Ok(row.map_or_else(|| OwnerUsage { owner: owner.to_owned(), ..OwnerUsage::default() }, OwnerUsage::from))
    }

    async fn owner_usage_and_quota(&self, owner: &str) -> Result<(OwnerUsage, Option<QuotaLimits>)> {
        let row: UsageQuotaRow = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT CAST(?1 AS TEXT) AS owner, COALESCE(u.bytes, 0) AS bytes, \
                            COALESCE(u.repositories, 0) AS repositories, COALESCE(u.manifests, 0) AS manifests, \
                            COALESCE(u.tags, 0) AS tags, \
                            EXISTS (SELECT 1 FROM quotas q WHERE q.owner = ?1) AS has_quota, \
                            (SELECT q.bytes FROM quotas q WHERE q.owner = ?1) AS quota_bytes, \
                            (SELECT q.repositories FROM quotas q WHERE q.owner = ?1) AS quota_repositories \
                     FROM (SELECT 1) AS one LEFT JOIN owner_usage u ON u.owner = ?1",
                )
                .bind(owner)
                .fetch_one(&mut *conn)
                .await?)
            })
            .await?;
        Ok(row.split())
    }

    async fn all_owner_usage(&self) -> Result<Vec<OwnerUsage>> {
        let rows: Vec<UsageRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(concat!("SELECT ", usage_columns!(), " FROM owner_usage ORDER BY owner"))
                    .fetch_all(&mut *conn)
                    .await?)
            })
            .await?;
        Ok(rows.into_iter().map(OwnerUsage::from).collect())
    }

    async fn repository_usage(&self, owner: &str) -> Result<Vec<RepositoryUsage>> {
        // Names under `owner/` sort between "owner/" and "owner0" ('0' follows '/').
        let (low, high) = (format!("{owner}/"), format!("{owner}0"));
        let rows: Vec<RepositoryUsageRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT r.name AS repository, \
                       (SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                        WHERE rb.repository_id = r.id) \
                       + (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository_id = r.id) AS bytes, \
                       (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id) AS manifests, \
                       (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id) AS tags \
                     FROM repositories r WHERE (r.name >= ?1 AND r.name < ?2) OR r.name = ?3 ORDER BY r.name",
                )
                .bind(low)
                .bind(high)
                .bind(owner)
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        rows.into_iter().map(RepositoryUsageRow::into_usage).collect()
    }

    async fn set_default_quota(&self, limits: QuotaLimits) -> Result<()> {
        self.set_quota("", limits).await
    }

    async fn set_quota(&self, owner: &str, limits: QuotaLimits) -> Result<()> {
        let (bytes, repositories) = limits_to_sql(limits)?;
        self.write(async |tx| {
            sqlx::query(
                "INSERT INTO quotas (owner, bytes, repositories) VALUES (?, ?, ?) \
                 ON CONFLICT (owner) DO UPDATE SET bytes = excluded.bytes, repositories = excluded.repositories",
            )
            .bind(owner)
            .bind(bytes)
            .bind(repositories)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn remove_quota(&self, owner: &str) -> Result<bool> {
        self.write(async |tx| {
            let n =
                sqlx::query("DELETE FROM quotas WHERE owner = ? AND owner <> ''").bind(owner).execute(&mut *tx).await?;
            Ok(n.rows_affected() > 0)
        })
        .await
    }

    async fn quotas(&self) -> Result<Vec<OwnerQuota>> {
        let rows: Vec<QuotaRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as("SELECT owner, bytes, repositories FROM quotas WHERE owner <> '' ORDER BY owner")
                    .fetch_all(&mut *conn)
                    .await?)
            })
            .await?;
        Ok(rows.into_iter().map(OwnerQuota::from).collect())
    }

    /// On the single writer, so no write runs between the count and the rewrite.
    async fn recount_usage(&self) -> Result<Vec<UsageDrift>> {
        self.write(async |tx| {
            let stored: Vec<UsageRow> =
                sqlx::query_as(concat!("SELECT ", usage_columns!(), " FROM owner_usage")).fetch_all(&mut *tx).await?;
            let actual: Vec<UsageRow> =
                sqlx::query_as(concat!("SELECT ", usage_columns!(), " FROM owner_usage_actual"))
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::raw_sql(REBUILD_USAGE).execute(&mut *tx).await?;
            Ok(drift(stored, actual))
        })
        .await
    }
}
