//! [`MaintenanceStore`]: garbage collection, retention, upload expiry and leases.
//!
//! Every write here is a single statement (or a short transaction) on the
//! one writer connection: SQLite runs it while no other write is in
//! progress, in this process or another, so the conditions in its `WHERE`
//! are checked against exactly the state it changes. A push or upload that
//! wants the same rows runs wholly before or wholly after it.

use async_trait::async_trait;
use berth_meta::maintenance::{
    BlobUsage, GcBlob, LeaseOutcome, LeaseRecord, MaintenanceStore, NewRetentionRule, RepositoryGraph,
    RetentionRuleRecord, RetentionRuleRow, TagRecord, globs_json,
};
use berth_meta::{MetaError, Result};
use berth_meta_sql::gc::{self, BlobRow, LinkRow, ManifestRow, ReferenceRow};
use berth_meta_sql::{from_sql_int, now_ms, parse_digest, to_sql_int};
use berth_oci::{Digest, RepositoryName, Tag};
use sqlx::{Connection, QueryBuilder, Sqlite};

use crate::SqliteMetaStore;

/// Digests per generated IN list (far below SQLite's bind limit).
const CHUNK: usize = 400;

fn push_digests(query: &mut QueryBuilder<Sqlite>, digests: &[Digest]) {
    let mut list = query.separated(", ");
    for digest in digests {
        list.push_bind(digest.as_str().to_owned());
    }
    list.push_unseparated(")");
}

#[async_trait]
impl MaintenanceStore for SqliteMetaStore {
    // --- leases -----------------------------------------------------------------

    async fn acquire_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<LeaseOutcome> {
        self.write(async |tx| {
            let taken: Option<i64> = sqlx::query_scalar(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE leases.expires_at <= ?4 OR leases.holder = excluded.holder \
                 RETURNING 1",
            )
            .bind(name)
            .bind(holder)
            .bind(now.saturating_add(ttl_ms))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if taken.is_some() {
                return Ok(LeaseOutcome::Acquired);
            }
            let (holder, expires_at): (String, i64) =
                sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = ?")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
            Ok(LeaseOutcome::Held { holder, expires_at })
        })
        .await
    }

    async fn renew_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        self.batch(async |conn| {
            let result =
                sqlx::query("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at <> 0")
                    .bind(now.saturating_add(ttl_ms))
                    .bind(name)
                    .bind(holder)
                    .execute(&mut *conn)
                    .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str, finished_at: Option<i64>) -> Result<bool> {
        self.batch(async |conn| {
            let result = sqlx::query(
                "UPDATE leases SET expires_at = 0, last_run_at = coalesce(?, last_run_at) \
                 WHERE name = ? AND holder = ?",
            )
            .bind(finished_at)
            .bind(name)
            .bind(holder)
            .execute(&mut *conn)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn get_lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        let row: Option<(String, i64, Option<i64>)> = self
            .read(async |conn| {
                Ok(sqlx::query_as("SELECT holder, expires_at, last_run_at FROM leases WHERE name = ?")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?)
            })
            .await?;
        Ok(row.map(|(holder, expires_at, last_run_at)| LeaseRecord { holder, expires_at, last_run_at }))
    }

    // --- garbage collection: reads ------------------------------------------------------

    /// One read transaction (a WAL snapshot), so the three lists agree.
    async fn repository_graph(&self, repo: &RepositoryName) -> Result<RepositoryGraph> {
        type Rows = (Vec<ManifestRow>, Vec<ReferenceRow>, Vec<LinkRow>);
        let rows: Option<Rows> = self
            .read(async |conn| {
                let mut tx = conn.begin().await?;
                let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
                    .bind(repo.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(id) = id else { return Ok(None) };
                let manifests = sqlx::query_as(
                    "SELECT m.digest, m.size, m.created_at, \
                            EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id \
                                    AND t.digest = m.digest), \
                            m.subject \
                     FROM manifests m WHERE m.repository_id = ?",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let references = sqlx::query_as(
                    "SELECT manifest_digest, target_digest FROM manifest_references WHERE repository_id = ?",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let links = sqlx::query_as(
                    "SELECT rb.digest, b.size, rb.linked_at FROM repository_blobs rb \
                     JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = ?",
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
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT b.digest, b.size FROM blobs b \
                     WHERE b.state = 'live' AND b.last_linked < ? AND b.digest > ? \
                       AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
                     ORDER BY b.digest LIMIT ?",
                )
                .bind(cutoff)
                .bind(after.map_or("", Digest::as_str))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        gc::blobs(rows)
    }

    async fn deleting_blobs(&self, marked_before: i64, limit: u32) -> Result<Vec<GcBlob>> {
        let rows: Vec<BlobRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT digest, size FROM blobs WHERE state = 'deleting' AND coalesce(marked_at, 0) < ? \
                     ORDER BY digest LIMIT ?",
                )
                .bind(marked_before)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        gc::blobs(rows)
    }

    async fn blob_usage(&self, digests: &[Digest]) -> Result<Vec<BlobUsage>> {
        let mut out = Vec::new();
        for chunk in digests.chunks(CHUNK) {
            let rows: Vec<(String, i64, i64, i64, bool)> = self
                .read(async |conn| {
                    let mut query = QueryBuilder::<Sqlite>::new(
                        "SELECT b.digest, b.size, b.last_linked, \
                                (SELECT count(*) FROM repository_blobs rb WHERE rb.digest = b.digest), \
                                b.state = 'deleting' \
                         FROM blobs b WHERE b.digest IN (",
                    );
                    push_digests(&mut query, chunk);
                    Ok(query.build_query_as().persistent(false).fetch_all(&mut *conn).await?)
                })
                .await?;
            for (digest, size, last_linked, links, deleting) in rows {
                out.push(BlobUsage {
                    digest: parse_digest(&digest)?,
                    size: from_sql_int(size, "blob size")?,
                    last_linked,
                    links: from_sql_int(links, "link count")?,
                    deleting,
                });
            }
        }
        Ok(out)
    }

    async fn known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for chunk in digests.chunks(CHUNK) {
            let rows: Vec<String> = self
                .read(async |conn| {
                    let mut query = QueryBuilder::<Sqlite>::new("SELECT digest FROM blobs WHERE digest IN (");
                    push_digests(&mut query, chunk);
                    Ok(query.build_query_scalar().persistent(false).fetch_all(&mut *conn).await?)
                })
                .await?;
            for digest in rows {
                out.push(parse_digest(&digest)?);
            }
        }
        Ok(out)
    }

    // --- garbage collection: writes that re-check ------------------------------------------

    /// Condition and delete in one statement; the cascade removes its references.
    async fn gc_delete_manifest(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        let size: Option<i64> = self
            .batch(async |conn| {
                Ok(sqlx::query_scalar(
                    "DELETE FROM manifests AS m \
                     WHERE m.repository_id = (SELECT id FROM repositories WHERE name = ?1) AND m.digest = ?2 \
                       AND m.created_at < ?3 \
                       AND NOT EXISTS (SELECT 1 FROM tags t \
                                       WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
                       AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                                       WHERE r.repository_id = m.repository_id AND r.target_digest = m.digest) \
                       AND NOT EXISTS (SELECT 1 FROM manifests s \
                                       WHERE s.repository_id = m.repository_id AND s.digest = m.subject) \
                     RETURNING size",
                )
                .bind(repo.as_str())
                .bind(digest.as_str())
                .bind(cutoff)
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        size.map(|s| from_sql_int(s, "manifest size")).transpose()
    }

    async fn gc_unlink_blob(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<bool> {
        self.batch(async |conn| {
            let result = sqlx::query(
                "DELETE FROM repository_blobs AS rb \
                 WHERE rb.repository_id = (SELECT id FROM repositories WHERE name = ?1) AND rb.digest = ?2 \
                   AND rb.linked_at < ?3 \
                   AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                                   WHERE r.repository_id = rb.repository_id AND r.target_digest = rb.digest)",
            )
            .bind(repo.as_str())
            .bind(digest.as_str())
            .bind(cutoff)
            .execute(&mut *conn)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn gc_mark_blob(&self, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        let size: Option<i64> = self
            .batch(async |conn| {
                Ok(sqlx::query_scalar(
                    "UPDATE blobs SET state = 'deleting', marked_at = ?3 \
                     WHERE digest = ?1 AND state = 'live' AND last_linked < ?2 \
                       AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = ?1) \
                     RETURNING size",
                )
                .bind(digest.as_str())
                .bind(cutoff)
                .bind(now_ms())
                .fetch_optional(&mut *conn)
                .await?)
            })
            .await?;
        size.map(|s| from_sql_int(s, "blob size")).transpose()
    }

    async fn gc_mark_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool> {
        let size = to_sql_int(size, "blob size")?;
        self.batch(async |conn| {
            let result = sqlx::query(
                "INSERT INTO blobs (digest, size, created_at, last_linked, state, marked_at) \
                 VALUES (?1, ?2, ?3, ?3, 'deleting', ?3) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest.as_str())
            .bind(size)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn gc_forget_blob(&self, digest: &Digest) -> Result<bool> {
        self.batch(async |conn| {
            let result = sqlx::query("DELETE FROM blobs WHERE digest = ? AND state = 'deleting'")
                .bind(digest.as_str())
                .execute(&mut *conn)
                .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    // --- retention ----------------------------------------------------------------------------

    async fn repository_tags(&self, repo: &RepositoryName) -> Result<Vec<TagRecord>> {
        let rows: Vec<(String, String, i64, bool)> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT t.name, t.digest, t.updated_at, \
                            EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = t.repository_id \
                                    AND r.target_digest = t.digest AND r.kind = 'manifest') \
                     FROM repositories rp JOIN tags t ON t.repository_id = rp.id WHERE rp.name = ?",
                )
                .bind(repo.as_str())
                .fetch_all(&mut *conn)
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

    async fn delete_tag_if_unchanged(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool> {
        self.batch(async |conn| {
            let result = sqlx::query(
                "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) \
                 AND name = ? AND digest = ? AND updated_at = ?",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(digest.as_str())
            .bind(updated_at)
            .execute(&mut *conn)
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    // --- stored retention rules ------------------------------------------------------------------

    async fn list_retention_rules(&self) -> Result<Vec<RetentionRuleRecord>> {
        let rows: Vec<RetentionRuleRow> = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT id, repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, \
                            created_by \
                     FROM retention_rules ORDER BY id",
                )
                .fetch_all(&mut *conn)
                .await?)
            })
            .await?;
        rows.into_iter().map(RetentionRuleRecord::from_row).collect()
    }

    async fn add_retention_rule(&self, rule: &NewRetentionRule) -> Result<i64> {
        let (keep_tags, remove_tags) = (globs_json(&rule.keep_tags)?, globs_json(&rule.remove_tags)?);
        self.batch(async |conn| {
            Ok(sqlx::query_scalar(
                "INSERT INTO retention_rules \
                   (repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, created_by) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&rule.repositories)
            .bind(rule.keep_last.map(i64::from))
            .bind(keep_tags)
            .bind(remove_tags)
            .bind(rule.remove_older_than)
            .bind(rule.created_at)
            .bind(&rule.created_by)
            .fetch_one(&mut *conn)
            .await?)
        })
        .await
    }

    async fn remove_retention_rule(&self, id: i64) -> Result<bool> {
        self.batch(async |conn| {
            let result = sqlx::query("DELETE FROM retention_rules WHERE id = ?").bind(id).execute(&mut *conn).await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    // --- upload expiry --------------------------------------------------------------------------

    async fn expire_upload(&self, id: &str, before: i64) -> Result<bool> {
        self.batch(async |conn| {
            let result = sqlx::query("DELETE FROM uploads WHERE id = ? AND updated_at < ?")
                .bind(id)
                .bind(before)
                .execute(&mut *conn)
                .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }
}
