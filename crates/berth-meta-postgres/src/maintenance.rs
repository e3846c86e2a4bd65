//! [`MaintenanceStore`]: garbage collection, retention, upload expiry and leases.
//!
//! Each collector write that decides on a read follows one pattern, at READ
//! COMMITTED: lock the row to be changed (`SELECT ... FOR UPDATE`), then
//! re-check the conditions and write in a *new* statement. Every concurrent
//! writer that could invalidate the decision locks the same row first:
//!
//! - a manifest push takes a lock on the manifest row it re-pushes or tags
//!   (the `ON CONFLICT DO UPDATE` of `manifests::insert_manifest`, the
//!   foreign-key check of a tag), and a checked index push locks its
//!   children `FOR KEY SHARE`;
//! - a checked manifest push locks the repository links it relies on
//!   `FOR KEY SHARE` (`manifests::reference_problems`);
//! - a link or an upload's completion updates the blob row first
//!   (`blobs::link`), and a reservation upserts it (`blobs::reserve`).
//!
//! So the writer either committed before the lock was granted, and the
//! re-checking statement (with its fresh snapshot) sees what it wrote, or it
//! waits until the collector commits and then finds the row gone or marked
//! `deleting`, and fails cleanly.

use async_trait::async_trait;
use berth_meta::maintenance::{
    BlobUsage, GcBlob, LeaseOutcome, LeaseRecord, MaintenanceStore, NewRetentionRule, RepositoryGraph,
    RetentionRuleRecord, RetentionRuleRow, TagRecord, globs_json,
};
use berth_meta::{MetaError, Result};
use berth_meta_sql::gc::{self, BlobRow, LinkRow, ManifestRow, ReferenceRow};
use berth_meta_sql::{from_sql_int, now_ms, parse_digest, to_sql_int};
use berth_oci::{Digest, RepositoryName, Tag};

use crate::PostgresMetaStore;
use crate::retry::retrying;

fn as_strs(digests: &[Digest]) -> Vec<&str> {
    digests.iter().map(Digest::as_str).collect()
}

#[async_trait]
impl MaintenanceStore for PostgresMetaStore {
    // --- leases -----------------------------------------------------------------

    /// One conditional upsert: Postgres locks a conflicting row and
    /// evaluates the `WHERE` against its latest version, so two replicas
    /// racing for an expired lease cannot both take it.
    async fn acquire_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<LeaseOutcome> {
        retrying("acquire_lease", || async {
            let taken: Option<i32> = sqlx::query_scalar(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE leases.expires_at <= $4 OR leases.holder = excluded.holder \
                 RETURNING 1",
            )
            .bind(name)
            .bind(holder)
            .bind(now.saturating_add(ttl_ms))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if taken.is_some() {
                return Ok(LeaseOutcome::Acquired);
            }
            let held: Option<(String, i64)> = sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            // Released between the two statements: report it as just expiring.
            let (holder, expires_at) = held.unwrap_or_default();
            Ok(LeaseOutcome::Held { holder, expires_at })
        })
        .await
    }

    async fn renew_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        retrying("renew_lease", || async {
            let result =
                sqlx::query("UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3 AND expires_at <> 0")
                    .bind(now.saturating_add(ttl_ms))
                    .bind(name)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str, finished_at: Option<i64>) -> Result<bool> {
        retrying("release_lease", || async {
            let result = sqlx::query(
                "UPDATE leases SET expires_at = 0, last_run_at = COALESCE($1, last_run_at) \
                 WHERE name = $2 AND holder = $3",
            )
            .bind(finished_at)
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn get_lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        let row: Option<(String, i64, Option<i64>)> = self
            .read(async |pool| {
                Ok(sqlx::query_as("SELECT holder, expires_at, last_run_at FROM leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?)
            })
            .await?;
        Ok(row.map(|(holder, expires_at, last_run_at)| LeaseRecord { holder, expires_at, last_run_at }))
    }

    // --- garbage collection: reads ------------------------------------------------------

    /// One REPEATABLE READ, READ ONLY transaction, so the three lists agree.
    async fn repository_graph(&self, repo: &RepositoryName) -> Result<RepositoryGraph> {
        type Rows = (Vec<ManifestRow>, Vec<ReferenceRow>, Vec<LinkRow>);
        let rows: Option<Rows> = self
            .read(async |pool| {
                let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
                let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                    .bind(repo.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(id) = id else { return Ok(None) };
                let manifests = sqlx::query_as(
                    "SELECT m.digest, m.size, m.created_at, \
                            EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id \
                                    AND t.digest = m.digest), \
                            m.subject \
                     FROM manifests m WHERE m.repository_id = $1",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let references = sqlx::query_as(
                    "SELECT manifest_digest, target_digest FROM manifest_references WHERE repository_id = $1",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let links = sqlx::query_as(
                    "SELECT rb.digest, b.size, rb.linked_at FROM repository_blobs rb \
                     JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = $1",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                tx.rollback().await?;
                Ok(Some((manifests, references, links)))
            })
            .await?;
        match rows {
            Some((manifests, references, links)) => gc::graph(manifests, references, links),
            None => Ok(RepositoryGraph::default()),
        }
    }

    async fn unlinked_blobs(&self, cutoff: i64, after: Option<&Digest>, limit: u32) -> Result<Vec<GcBlob>> {
        let rows: Vec<BlobRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT b.digest, b.size FROM blobs b \
                     WHERE b.state = 'live' AND b.last_linked < $1 AND b.digest > $2 \
                       AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
                     ORDER BY b.digest LIMIT $3",
                )
                .bind(cutoff)
                .bind(after.map_or("", Digest::as_str))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?)
            })
            .await?;
        gc::blobs(rows)
    }

    async fn deleting_blobs(&self, marked_before: i64, limit: u32) -> Result<Vec<GcBlob>> {
        let rows: Vec<BlobRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT digest, size FROM blobs WHERE state = 'deleting' AND COALESCE(marked_at, 0) < $1 \
                     ORDER BY digest LIMIT $2",
                )
                .bind(marked_before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?)
            })
            .await?;
        gc::blobs(rows)
    }

    async fn blob_usage(&self, digests: &[Digest]) -> Result<Vec<BlobUsage>> {
        let rows: Vec<(String, i64, i64, i64, bool)> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT b.digest, b.size, b.last_linked, \
                            (SELECT count(*) FROM repository_blobs rb WHERE rb.digest = b.digest), \
                            b.state = 'deleting' \
                     FROM blobs b WHERE b.digest = ANY ($1::text[])",
                )
                .bind(as_strs(digests))
                .fetch_all(pool)
                .await?)
            })
            .await?;
        rows.into_iter()
            .map(|(digest, size, last_linked, links, deleting)| {
                Ok(BlobUsage {
                    digest: parse_digest(&digest)?,
                    size: from_sql_int(size, "blob size")?,
                    last_linked,
                    links: from_sql_int(links, "link count")?,
                    deleting,
                })
            })
            .collect()
    }

    async fn known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let rows: Vec<String> = self
            .read(async |pool| {
                Ok(sqlx::query_scalar("SELECT digest FROM blobs WHERE digest = ANY ($1::text[])")
                    .bind(as_strs(digests))
                    .fetch_all(pool)
                    .await?)
            })
            .await?;
        rows.iter().map(|d| parse_digest(d)).collect()
    }

    // --- garbage collection: writes that lock, then re-check --------------------------

    async fn gc_delete_manifest(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        let size: Option<i64> = retrying("gc_delete_manifest", || async {
            let mut tx = self.begin().await?;
            let repository_id: Option<i64> = sqlx::query_scalar(
                "SELECT m.repository_id FROM repositories r JOIN manifests m ON m.repository_id = r.id \
                 WHERE r.name = $1 AND m.digest = $2 FOR UPDATE OF m",
            )
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(repository_id) = repository_id else { return Ok(None) };
            let size: Option<i64> = sqlx::query_scalar(
                "DELETE FROM manifests m WHERE m.repository_id = $1 AND m.digest = $2 AND m.created_at < $3 \
                   AND NOT EXISTS (SELECT 1 FROM tags t \
                                   WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
                   AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                                   WHERE r.repository_id = m.repository_id AND r.target_digest = m.digest) \
                   AND NOT EXISTS (SELECT 1 FROM manifests s \
                                   WHERE s.repository_id = m.repository_id AND s.digest = m.subject) \
                 RETURNING m.size",
            )
            .bind(repository_id)
            .bind(digest.as_str())
            .bind(cutoff)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(size)
        })
        .await?;
        size.map(|s| from_sql_int(s, "manifest size")).transpose()
    }

    async fn gc_unlink_blob(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<bool> {
        retrying("gc_unlink_blob", || async {
            let mut tx = self.begin().await?;
            let repository_id: Option<i64> = sqlx::query_scalar(
                "SELECT rb.repository_id FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id \
                 WHERE r.name = $1 AND rb.digest = $2 FOR UPDATE OF rb",
            )
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(repository_id) = repository_id else { return Ok(false) };
            let result = sqlx::query(
                "DELETE FROM repository_blobs rb \
                 WHERE rb.repository_id = $1 AND rb.digest = $2 AND rb.linked_at < $3 \
                   AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                                   WHERE r.repository_id = rb.repository_id AND r.target_digest = rb.digest)",
            )
            .bind(repository_id)
            .bind(digest.as_str())
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn gc_mark_blob(&self, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        let size: Option<i64> = retrying("gc_mark_blob", || async {
            let mut tx = self.begin().await?;
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE")
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let size: Option<i64> = sqlx::query_scalar(
                "UPDATE blobs SET state = 'deleting', marked_at = $3 \
                 WHERE digest = $1 AND state = 'live' AND last_linked < $2 \
                   AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = $1) \
                 RETURNING size",
            )
            .bind(digest.as_str())
            .bind(cutoff)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(size)
        })
        .await?;
        size.map(|s| from_sql_int(s, "blob size")).transpose()
    }

    /// A concurrent reservation of the same digest either inserted first
    /// (this insert then waits for it and does nothing) or waits for this
    /// row and then finds it `deleting`.
    async fn gc_mark_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool> {
        let size = to_sql_int(size, "blob size")?;
        retrying("gc_mark_orphan", || async {
            let result = sqlx::query(
                "INSERT INTO blobs (digest, size, created_at, last_linked, state, marked_at) \
                 VALUES ($1, $2, $3, $3, 'deleting', $3) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest.as_str())
            .bind(size)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn gc_forget_blob(&self, digest: &Digest) -> Result<bool> {
        retrying("gc_forget_blob", || async {
            let result = sqlx::query("DELETE FROM blobs WHERE digest = $1 AND state = 'deleting'")
                .bind(digest.as_str())
                .execute(&self.pool)
                .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    // --- retention ----------------------------------------------------------------------------

    async fn repository_tags(&self, repo: &RepositoryName) -> Result<Vec<TagRecord>> {
        let rows: Vec<(String, String, i64, bool)> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT t.name, t.digest, t.updated_at, \
                            EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = t.repository_id \
                                    AND r.target_digest = t.digest AND r.kind = 'manifest') \
                     FROM repositories rp JOIN tags t ON t.repository_id = rp.id WHERE rp.name = $1",
                )
                .bind(repo.as_str())
                .fetch_all(pool)
                .await?)
            })
            .await?;
        rows.into_iter()
            .map(|(name, digest, updated_at, in_index)| {
                Ok(TagRecord {
                    name: Tag::parse(&name).map_err(|e| MetaError::Backend(format!("stored tag {name:?}: {e}")))?,
                    digest: parse_digest(&digest)?,
                    updated_at,
                    in_index,
                })
            })
            .collect()
    }

    /// A push that moves the tag meanwhile changes `digest` or
    /// `updated_at`; the `WHERE` is re-checked against the row it left, so
    /// the tag stays.
    async fn delete_tag_if_unchanged(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool> {
        retrying("delete_tag_if_unchanged", || async {
            let result = sqlx::query(
                "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = $1) \
                 AND name = $2 AND digest = $3 AND updated_at = $4",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(digest.as_str())
            .bind(updated_at)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    // --- stored retention rules ------------------------------------------------------------------

    async fn list_retention_rules(&self) -> Result<Vec<RetentionRuleRecord>> {
        let rows: Vec<RetentionRuleRow> = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT id, repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, \
                            created_by \
                     FROM retention_rules ORDER BY id",
                )
                .fetch_all(pool)
                .await?)
            })
            .await?;
        rows.into_iter().map(RetentionRuleRecord::from_row).collect()
    }

    async fn add_retention_rule(&self, rule: &NewRetentionRule) -> Result<i64> {
        let (keep_tags, remove_tags) = (globs_json(&rule.keep_tags)?, globs_json(&rule.remove_tags)?);
        retrying("add_retention_rule", || async {
            Ok(sqlx::query_scalar(
                "INSERT INTO retention_rules \
                   (repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(&rule.repositories)
            .bind(rule.keep_last.map(i64::from))
            .bind(&keep_tags)
            .bind(&remove_tags)
            .bind(rule.remove_older_than)
            .bind(rule.created_at)
            .bind(&rule.created_by)
            .fetch_one(&self.pool)
            .await?)
        })
        .await
    }

    async fn remove_retention_rule(&self, id: i64) -> Result<bool> {
        retrying("remove_retention_rule", || async {
            let result = sqlx::query("DELETE FROM retention_rules WHERE id = $1").bind(id).execute(&self.pool).await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    // --- upload expiry --------------------------------------------------------------------------

    /// An append in flight updates the row; the `WHERE` is re-checked against it.
    async fn expire_upload(&self, id: &str, before: i64) -> Result<bool> {
        retrying("expire_upload", || async {
            let result = sqlx::query("DELETE FROM uploads WHERE id = $1 AND updated_at < $2")
                .bind(id)
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }
}
