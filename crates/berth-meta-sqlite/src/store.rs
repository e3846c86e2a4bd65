//! [`MetaStore`]: repositories, blobs, upload sessions, manifests, tags,
//! package versions and referrers. Reads go to the reader pool; writes to
//! the single writer (see the crate docs), the hot ones of a blob upload as
//! one-command batches.

use async_trait::async_trait;
use berth_meta::{
    BlobEntry, ManifestRecord, ManifestRef, MetaError, MetaStore, NewManifest, PackageVersionRecord, Referrer, Result,
    StoreStats, TagGuard, UploadProgress, UploadSession,
};
use berth_meta_sql::convert::count;
use berth_meta_sql::rows::{ManifestRow, PackageVersionRow, ReferrerRow, UploadRow};
use berth_meta_sql::scrub::BlobEntryRow;
use berth_meta_sql::{from_sql_int, now_ms, parse_repository, to_sql_int, upload_columns};
use berth_oci::{Digest, RepositoryName, Tag};
use rusqlite::{OptionalExtension, params};

use crate::blobs::{self, LinkCondition};
use crate::point::PointRow;
use crate::{SqliteMetaStore, manifests, relaxed, tags};

/// SQLite reads a negative LIMIT as "no limit".
fn sql_limit(limit: Option<u32>) -> i64 {
    limit.map_or(-1, i64::from)
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.read(async |conn| Ok(sqlx::query("SELECT 1").execute(&mut *conn).await.map(|_| ())?)).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let (repositories, manifests, blobs, blob_bytes, uploads): (i64, i64, i64, i64, i64) = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests), \
                            (SELECT COUNT(*) FROM blobs), (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs), \
                            (SELECT COUNT(*) FROM uploads)",
                )
                .fetch_one(&mut *conn)
                .await?)
            })
            .await?;
        Ok(StoreStats {
            repositories: count(repositories),
            manifests: count(manifests),
            blobs: count(blobs),
            blob_bytes: count(blob_bytes),
            uploads: count(uploads),
        })
    }

    // --- repositories -------------------------------------------------------

    async fn list_repositories(&self, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>> {
        // Names are never empty, so "" as the lower bound means "from the start"
        // and the query stays a plain range scan of the unique index.
        self.read(async |conn| {
            Ok(sqlx::query_scalar("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?")
                .bind(after.unwrap_or(""))
                .bind(sql_limit(limit))
                .fetch_all(&mut *conn)
                .await?)
        })
        .await
    }

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        self.read(async |conn| {
            Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = ?)")
                .bind(repo.as_str())
                .fetch_one(&mut *conn)
                .await?)
        })
        .await
    }

    // --- blobs ------------------------------------------------------------------

    async fn blob_entry(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<BlobEntry>> {
        let row = self.point_read(|conn| {
            conn.prepare_cached(
                "SELECT b.size, b.damaged_at, b.damage FROM repositories r \
                 JOIN repository_blobs rb ON rb.repository_id = r.id \
                 JOIN blobs b ON b.digest = rb.digest \
                 WHERE r.name = ?1 AND rb.digest = ?2",
            )?
            .query_row(params![repo.as_str(), digest.as_str()], BlobEntryRow::read)
            .optional()
        })?;
        row.map(BlobEntryRow::into_entry).transpose()
    }

    /// A blob row nobody links any more is awaiting garbage collection and
    /// must not be mounted (and a link refuses one that is being deleted).
    async fn global_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = self
            .read(async |conn| {
                Ok(sqlx::query_scalar(
                    "SELECT b.size FROM blobs b \
                     WHERE b.digest = ? AND b.damaged_at IS NULL AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                )
                .bind(digest.as_str())
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        size.map(|s| from_sql_int(s, "blob size")).transpose()
    }

    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>> {
        let names: Vec<String> = self
            .read(async |conn| {
                Ok(sqlx::query_scalar(
                    "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                     WHERE rb.digest = ? ORDER BY r.name LIMIT ?",
                )
                .bind(digest.as_str())
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        names.iter().map(|n| parse_repository(n)).collect()
    }

    /// One statement on the writer (relaxed), so it is ordered before or
    /// after any collector transaction as a whole.
    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<Option<String>> {
        let size = to_sql_int(size, "blob size")?;
        let tokens: Vec<String> = self
            .batch(async |conn| {
                Ok(sqlx::query_scalar(relaxed!(
                    "INSERT INTO blobs (digest, size, created_at, last_linked, state, token) \
                     VALUES (?1, ?2, ?3, ?3, 'live', lower(hex(randomblob(16)))) \
                     ON CONFLICT (digest) DO UPDATE SET last_linked = max(blobs.last_linked, excluded.last_linked) \
                     WHERE blobs.state = 'live' \
                     RETURNING token"
                ))
                .bind(digest.as_str())
                .bind(size)
                .bind(now_ms())
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        Ok(tokens.into_iter().next())
    }

    async fn link_reserved_blob(&self, repo: &RepositoryName, digest: &Digest, reservation: &str) -> Result<bool> {
        self.batch(async |conn| blobs::link(conn, repo, digest, now_ms(), LinkCondition::Reserved(reservation)).await)
            .await
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.batch(async |conn| blobs::link(conn, repo, digest, now_ms(), LinkCondition::Linked).await).await
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
        self.write(async |tx| blobs::unlink(tx, repo, digest, guard).await).await
    }

    // --- upload sessions ----------------------------------------------------------

    async fn create_upload(&self, upload: &UploadSession) -> Result<()> {
        let offset = to_sql_int(upload.progress.offset, "upload offset")?;
        self.batch(async |conn| {
            sqlx::query(relaxed!(
                "INSERT INTO uploads \
                 (id, repository, algorithm, committed_size, hash_state, backend_state, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .bind(&upload.id)
            .bind(upload.repository.as_str())
            .bind(upload.algorithm.as_str())
            .bind(offset)
            .bind(&upload.progress.hash_state)
            .bind(&upload.progress.backend_state)
            .bind(upload.created_at)
            .bind(upload.progress.updated_at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>> {
        let row = self.point_read(|conn| {
            conn.prepare_cached(concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = ?1"))?
                .query_row([id], UploadRow::read)
                .optional()
        })?;
        row.map(UploadRow::into_session).transpose()
    }

    /// Compare-and-set on the offset: two appends racing on one session
    /// cannot both win, the loser sees `false` and re-reads the session.
    async fn update_upload(&self, id: &str, expected_offset: u64, progress: &UploadProgress) -> Result<bool> {
        let offset = to_sql_int(progress.offset, "upload offset")?;
        let expected = to_sql_int(expected_offset, "upload offset")?;
        let updated: Vec<i64> = self
            .batch(async |conn| {
                Ok(sqlx::query_scalar(relaxed!(
                    "UPDATE uploads SET committed_size = ?1, hash_state = ?2, backend_state = ?3, updated_at = ?4 \
                     WHERE id = ?5 AND committed_size = ?6 RETURNING 1"
                ))
                .bind(offset)
                .bind(&progress.hash_state)
                .bind(&progress.backend_state)
                .bind(progress.updated_at)
                .bind(id)
                .bind(expected)
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        Ok(!updated.is_empty())
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        self.batch(async |conn| {
            Ok(sqlx::query("DELETE FROM uploads WHERE id = ?").bind(id).execute(&mut *conn).await?.rows_affected() > 0)
        })
        .await
    }

    /// One batch: checks the session and the reservation, and only if both
    /// hold links the blob and removes the session (else writes nothing).
    async fn complete_upload(&self, id: &str, digest: &Digest, reservation: &str) -> Result<()> {
        let found: Vec<(String, bool)> =
            self.batch(async |conn| blobs::complete_upload(conn, id, digest, reservation, now_ms()).await).await?;
        match found.first() {
            None => Err(MetaError::UploadUnknown),
            Some((_, true)) => Ok(()),
            Some((_, false)) => Err(MetaError::Unavailable(format!(
                "blob {digest} was garbage-collected while it was being uploaded; retry"
            ))),
        }
    }

    /// Sessions last updated strictly before `before`, oldest first.
    async fn stale_uploads(&self, before: i64, limit: u32) -> Result<Vec<UploadSession>> {
        let rows: Vec<UploadRow> = self
            .read(async |conn| {
                let sql = concat!(
                    "SELECT ",
                    upload_columns!(),
                    " FROM uploads WHERE updated_at < ? ORDER BY updated_at, id LIMIT ?"
                );
                Ok(sqlx::query_as(sql).bind(before).bind(i64::from(limit)).fetch_all(&mut *conn).await?)
            })
            .await?;
        rows.into_iter().map(UploadRow::into_session).collect()
    }

    // --- manifests and tags -------------------------------------------------------

    /// One point read either way: a tag is resolved in the same join that loads the manifest.
    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef<'_>,
        with_content: bool,
    ) -> Result<Option<ManifestRecord>> {
        let row = self.point_read(|conn| {
            let (sql, key) = match reference {
                ManifestRef::Tag(tag) => (
                    "SELECT m.digest, m.media_type, m.size, CASE WHEN ?1 THEN m.content END AS content, m.created_at \
                     FROM repositories r \
                     JOIN tags t ON t.repository_id = r.id \
                     JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
                     WHERE r.name = ?2 AND t.name = ?3",
                    tag.as_str(),
                ),
                ManifestRef::Digest(digest) => (
                    "SELECT m.digest, m.media_type, m.size, CASE WHEN ?1 THEN m.content END AS content, m.created_at \
                     FROM repositories r \
                     JOIN manifests m ON m.repository_id = r.id \
                     WHERE r.name = ?2 AND m.digest = ?3",
                    digest.as_str(),
                ),
            };
            conn.prepare_cached(sql)?.query_row(params![with_content, repo.as_str(), key], ManifestRow::read).optional()
        })?;
        row.map(ManifestRow::into_record).transpose()
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        manifest: &NewManifest,
        check_references: bool,
        guard: TagGuard<'_>,
    ) -> Result<()> {
        self.write(async |tx| manifests::put(tx, repo, manifest, check_references, guard).await).await
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
        self.write(async |tx| manifests::delete(tx, repo, digest, guard).await).await
    }

    /// A protected tag that does not exist is reported absent (`false`)
    /// rather than refused: nothing would move.
    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag, guard: TagGuard<'_>) -> Result<bool> {
        if let Some(rule) = guard(repo, tag.as_str()) {
            let exists: bool = self
                .read(async |conn| {
                    Ok(sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM repositories r JOIN tags t ON t.repository_id = r.id \
                         WHERE r.name = ? AND t.name = ?)",
                    )
                    .bind(repo.as_str())
                    .bind(tag.as_str())
                    .fetch_one(&mut *conn)
                    .await?)
                })
                .await?;
            return if exists { Err(MetaError::ImmutableTag { tag: tag.to_string(), rule }) } else { Ok(false) };
        }
        self.batch(async |conn| {
            let result = sqlx::query(
                "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND name = ?",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&mut *conn)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    /// One query, one row: no row when the repository does not exist, else
    /// the page of names as a JSON array. A single row matters: sqlx hands
    /// every row across threads, which dominated listing a thousand tags.
    async fn list_tags(
        &self,
        repo: &RepositoryName,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Vec<String>>> {
        if limit == Some(0) {
            // The query below could not tell "no rows wanted" from "no repository".
            return Ok(self.repository_exists(repo).await?.then(Vec::new));
        }
        let page: Option<String> = self
            .read(async |conn| {
                Ok(sqlx::query_scalar(
                    "SELECT (SELECT json_group_array(name ORDER BY name) FROM \
                               (SELECT t.name FROM tags t WHERE t.repository_id = r.id AND t.name > ? \
                                ORDER BY t.name LIMIT ?)) \
                     FROM repositories r WHERE r.name = ?",
                )
                .bind(after.unwrap_or(""))
                .bind(sql_limit(limit))
                .bind(repo.as_str())
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        page.map(|json| tags::parse_page(&json)).transpose()
    }

    /// Tags, plus manifests no tag points to (children of an index count as
    /// part of their index).
    async fn package_versions(
        &self,
        owner: &str,
        repository: Option<&RepositoryName>,
    ) -> Result<Vec<PackageVersionRecord>> {
        // Names under `owner/` sort between "owner/" and "owner0" ('0' follows '/').
        let (low, high) = (format!("{owner}/"), format!("{owner}0"));
        let only = repository.map(|r| r.as_str().to_owned());
        let rows: Vec<PackageVersionRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT r.name AS repository, t.name AS version, t.digest, t.updated_at AS created_at, t.pushed_by \
                     FROM tags t \
                       JOIN repositories r ON r.id = t.repository_id \
                       WHERE r.name >= ?1 AND r.name < ?2 AND (?3 IS NULL OR r.name = ?3) \
                     UNION ALL \
                     SELECT r.name, m.digest, m.digest, m.created_at, m.pushed_by FROM manifests m \
                       JOIN repositories r ON r.id = m.repository_id \
                       WHERE r.name >= ?1 AND r.name < ?2 AND (?3 IS NULL OR r.name = ?3) \
                         AND NOT EXISTS (SELECT 1 FROM tags t \
                                         WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
                         AND NOT EXISTS (SELECT 1 FROM manifest_references mr \
                                         WHERE mr.repository_id = m.repository_id \
                                           AND mr.target_digest = m.digest AND mr.kind = 'manifest') \
                     ORDER BY 4 DESC, 1, 2",
                )
                .bind(low)
                .bind(high)
                .bind(only)
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        rows.into_iter().map(PackageVersionRow::into_record).collect()
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows: Vec<ReferrerRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
                     FROM repositories r JOIN manifests m ON m.repository_id = r.id \
                     WHERE r.name = ? AND m.subject = ? AND (? IS NULL OR m.artifact_type = ?) \
                     ORDER BY m.digest",
                )
                .bind(repo.as_str())
                .bind(subject.as_str())
                .bind(artifact_type)
                .bind(artifact_type)
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        rows.into_iter().map(ReferrerRow::into_referrer).collect()
    }
}
