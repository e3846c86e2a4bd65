//! What `berth scrub` reads and records ([`berth_meta::ScrubStore`]).

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::scrub::{Reach, ScrubBlob, ScrubManifest, ScrubStore};
use berth_meta_sql::reach_sql;
use berth_meta_sql::scrub::{ReachRow, ScrubBlobRow, ScrubManifestRow};
use berth_oci::{Digest, RepositoryName};

use crate::SqliteMetaStore;

#[async_trait]
impl ScrubStore for SqliteMetaStore {
    async fn scrub_blobs(
        &self,
        repository: Option<&RepositoryName>,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<ScrubBlob>> {
        let after = after.map_or("", |d| d.as_str());
        let rows: Vec<ScrubBlobRow> = self
            .read(async |conn| {
                let query = match repository {
                    None => sqlx::query_as(
                        "SELECT digest, size, damaged_at, damage FROM blobs \
                         WHERE state = 'live' AND digest > ?1 \
                           AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest) \
                         ORDER BY digest LIMIT ?2",
                    ),
                    Some(_) => sqlx::query_as(
                        "SELECT b.digest, b.size, b.damaged_at, b.damage FROM repositories r \
                         JOIN repository_blobs rb ON rb.repository_id = r.id \
                         JOIN blobs b ON b.digest = rb.digest \
                         WHERE b.state = 'live' AND b.digest > ?1 AND r.name = ?3 ORDER BY b.digest LIMIT ?2",
                    ),
                };
                let mut query = query.bind(after).bind(i64::from(limit));
                if let Some(repository) = repository {
                    query = query.bind(repository.as_str());
                }
                Ok(query.fetch_all(&mut *conn).await?)
            })
            .await?;
        rows.into_iter().map(ScrubBlobRow::into_blob).collect()
    }

    async fn scrub_manifests(
        &self,
        repository: &RepositoryName,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<ScrubManifest>> {
        let after = after.map_or("", |d| d.as_str());
        let rows: Vec<ScrubManifestRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT m.digest, m.content FROM repositories r JOIN manifests m ON m.repository_id = r.id \
                     WHERE r.name = ?1 AND m.digest > ?2 ORDER BY m.digest LIMIT ?3",
                )
                .bind(repository.as_str())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        rows.into_iter().map(ScrubManifestRow::into_manifest).collect()
    }

    async fn mark_blob_damaged(&self, digest: &Digest, problem: &str, now: i64) -> Result<bool> {
        self.write(async |tx| {
            let n = sqlx::query(
                "UPDATE blobs SET damaged_at = ?3, damage = ?2, token = lower(hex(randomblob(16))) \
                 WHERE digest = ?1 AND state = 'live'",
            )
            .bind(digest.as_str())
            .bind(problem)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(n.rows_affected() > 0)
        })
        .await
    }

    async fn clear_blob_damage(&self, digest: &Digest) -> Result<bool> {
        self.write(async |tx| {
            let n = sqlx::query(
                "UPDATE blobs SET damaged_at = NULL, damage = NULL WHERE digest = ?1 AND damaged_at IS NOT NULL",
            )
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
            Ok(n.rows_affected() > 0)
        })
        .await
    }

    async fn reach(&self, digest: &Digest, limit: u32) -> Result<Vec<Reach>> {
        let rows: Vec<ReachRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(reach_sql!("?1", "?2"))
                    .bind(digest.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?)
            })
            .await?;
        rows.into_iter().map(ReachRow::into_reach).collect()
    }
}
