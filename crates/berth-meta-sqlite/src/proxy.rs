//! The pull-through cache's records ([`berth_meta::ProxyStore`]).

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::proxy::{CachedRepository, ProxyStore, TagCheck};
use berth_meta_sql::proxy::{CachedRepositoryRow, TagCheckRow};
use berth_oci::{Digest, RepositoryName, Tag};
use sqlx::SqliteConnection;

use crate::SqliteMetaStore;
use crate::error::StoreResult;

/// Upserts the repository's row; the last pull only moves forward.
async fn pulled(tx: &mut SqliteConnection, repo: &RepositoryName, upstream: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO upstream_repositories (repository, upstream, last_pulled_at, created_at) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (repository) DO UPDATE SET upstream = excluded.upstream, \
         last_pulled_at = max(upstream_repositories.last_pulled_at, excluded.last_pulled_at)",
    )
    .bind(repo.as_str())
    .bind(upstream)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl ProxyStore for SqliteMetaStore {
    async fn tag_check(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<TagCheck>> {
        let row: Option<TagCheckRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as("SELECT digest, checked_at FROM upstream_tags WHERE repository = ?1 AND tag = ?2")
                    .bind(repo.as_str())
                    .bind(tag.as_str())
                    .fetch_optional(&mut *conn)
                    .await?)
            })
            .await?;
        row.map(TagCheckRow::into_check).transpose()
    }

    async fn record_tag_check(
        &self,
        repo: &RepositoryName,
        upstream: &str,
        tag: &Tag,
        digest: &Digest,
        now: i64,
    ) -> Result<()> {
        self.write(async |tx| {
            sqlx::query(
                "INSERT INTO upstream_tags (repository, tag, digest, checked_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, \
                 checked_at = excluded.checked_at",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            pulled(tx, repo, upstream, now).await
        })
        .await
    }

    async fn record_pull(&self, repo: &RepositoryName, upstream: &str, now: i64) -> Result<()> {
        self.write(async |tx| pulled(tx, repo, upstream, now).await).await
    }

    async fn cached_repository(&self, repo: &RepositoryName) -> Result<Option<CachedRepository>> {
        let row: Option<CachedRepositoryRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT repository, upstream, last_pulled_at FROM upstream_repositories WHERE repository = ?1",
                )
                .bind(repo.as_str())
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        row.map(CachedRepositoryRow::into_repository).transpose()
    }

    async fn owner_exists(&self, name: &str) -> Result<bool> {
        self.read(async |conn| {
            Ok(sqlx::query_scalar::<_, i64>("SELECT 1 FROM owners WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?
                .is_some())
        })
        .await
    }

    async fn references(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.read(async |conn| {
            Ok(sqlx::query_scalar::<_, i64>(
                "SELECT 1 FROM repositories r JOIN manifest_references mr ON mr.repository_id = r.id \
                 WHERE r.name = ?1 AND mr.target_digest = ?2 LIMIT 1",
            )
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .is_some())
        })
        .await
    }
}
