//! Garbage collection, retention, upload expiry and leases.
//!
//! Every write here is a single statement (or a short transaction) on the
//! one writer connection: SQLite runs it while no other write is in
//! progress, in this process or another, so the conditions in its `WHERE`
//! are checked against exactly the state it changes. A push or upload that
//! wants the same rows runs wholly before or wholly after it.

use berth_meta::maintenance::{
    BlobUsage, GcBlob, GcLink, GcManifest, LeaseOutcome, LeaseRecord, NewRetentionRule, RepositoryGraph,
    RetentionRuleRecord, RetentionRuleRow, TagRecord, globs_json,
};
use berth_meta::{MetaError, Result};
use berth_oci::{Digest, RepositoryName, Tag};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::Tx;
use crate::error::{db_err, from_sql_int, parse_digest, to_sql_int};

/// Digests per generated IN list (far below SQLite's bind limit).
const CHUNK: usize = 400;

// --- leases -----------------------------------------------------------------

pub(crate) async fn acquire_lease(
    tx: &mut Tx,
    name: &str,
    holder: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<LeaseOutcome> {
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
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    if taken.is_some() {
        return Ok(LeaseOutcome::Acquired);
    }
    let (holder, expires_at): (String, i64) = sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = ?")
        .bind(name)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(LeaseOutcome::Held { holder, expires_at })
}

pub(crate) async fn renew_lease(writer: &SqlitePool, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
    let result = sqlx::query("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at <> 0")
        .bind(now.saturating_add(ttl_ms))
        .bind(name)
        .bind(holder)
        .execute(writer)
        .await
        .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

pub(crate) async fn release_lease(
    writer: &SqlitePool,
    name: &str,
    holder: &str,
    finished_at: Option<i64>,
) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE leases SET expires_at = 0, last_run_at = coalesce(?, last_run_at) WHERE name = ? AND holder = ?",
    )
    .bind(finished_at)
    .bind(name)
    .bind(holder)
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

pub(crate) async fn get_lease(pool: &SqlitePool, name: &str) -> Result<Option<LeaseRecord>> {
    let row: Option<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT holder, expires_at, last_run_at FROM leases WHERE name = ?")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
    Ok(row.map(|(holder, expires_at, last_run_at)| LeaseRecord { holder, expires_at, last_run_at }))
}

// --- garbage collection: reads ------------------------------------------------------

/// One read transaction (a WAL snapshot), so the three lists agree.
pub(crate) async fn repository_graph(pool: &SqlitePool, repo: &RepositoryName) -> Result<RepositoryGraph> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
        .bind(repo.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    let Some(id) = id else { return Ok(RepositoryGraph::default()) };
    let manifests: Vec<(String, i64, i64, bool, Option<String>)> = sqlx::query_as(
        "SELECT m.digest, m.size, m.created_at, \
                EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest), \
                m.subject \
         FROM manifests m WHERE m.repository_id = ?",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let references: Vec<(String, String)> =
        sqlx::query_as("SELECT manifest_digest, target_digest FROM manifest_references WHERE repository_id = ?")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
    let links: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT rb.digest, b.size, rb.linked_at FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
         WHERE rb.repository_id = ?",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.rollback().await.map_err(db_err)?;
    Ok(RepositoryGraph {
        manifests: manifests
            .into_iter()
            .map(|(digest, size, created_at, tagged, subject)| {
                Ok(GcManifest {
                    digest: parse_digest(&digest)?,
                    size: from_sql_int(size, "manifest size")?,
                    created_at,
                    tagged,
                    subject: subject.as_deref().map(parse_digest).transpose()?,
                })
            })
            .collect::<Result<_>>()?,
        references: references
            .into_iter()
            .map(|(m, t)| Ok((parse_digest(&m)?, parse_digest(&t)?)))
            .collect::<Result<_>>()?,
        links: links
            .into_iter()
            .map(|(digest, size, linked_at)| {
                Ok(GcLink { digest: parse_digest(&digest)?, size: from_sql_int(size, "blob size")?, linked_at })
            })
            .collect::<Result<_>>()?,
    })
}

fn gc_blobs(rows: Vec<(String, i64)>) -> Result<Vec<GcBlob>> {
    rows.into_iter()
        .map(|(d, s)| Ok(GcBlob { digest: parse_digest(&d)?, size: from_sql_int(s, "blob size")? }))
        .collect()
}

pub(crate) async fn unlinked_blobs(
    pool: &SqlitePool,
    cutoff: i64,
    after: Option<&Digest>,
    limit: u32,
) -> Result<Vec<GcBlob>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT b.digest, b.size FROM blobs b \
         WHERE b.state = 'live' AND b.last_linked < ? AND b.digest > ? \
           AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
         ORDER BY b.digest LIMIT ?",
    )
    .bind(cutoff)
    .bind(after.map_or("", Digest::as_str))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    gc_blobs(rows)
}

pub(crate) async fn deleting_blobs(pool: &SqlitePool, marked_before: i64, limit: u32) -> Result<Vec<GcBlob>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT digest, size FROM blobs WHERE state = 'deleting' AND coalesce(marked_at, 0) < ? \
         ORDER BY digest LIMIT ?",
    )
    .bind(marked_before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    gc_blobs(rows)
}

fn push_digests(query: &mut QueryBuilder<Sqlite>, digests: &[Digest]) {
    let mut list = query.separated(", ");
    for digest in digests {
        list.push_bind(digest.as_str().to_owned());
    }
    list.push_unseparated(")");
}

pub(crate) async fn blob_usage(pool: &SqlitePool, digests: &[Digest]) -> Result<Vec<BlobUsage>> {
    let mut out = Vec::new();
    for chunk in digests.chunks(CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT b.digest, b.size, b.last_linked, \
                    (SELECT count(*) FROM repository_blobs rb WHERE rb.digest = b.digest), b.state = 'deleting' \
             FROM blobs b WHERE b.digest IN (",
        );
        push_digests(&mut query, chunk);
        let rows: Vec<(String, i64, i64, i64, bool)> =
            query.build_query_as().persistent(false).fetch_all(pool).await.map_err(db_err)?;
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

pub(crate) async fn known_blobs(pool: &SqlitePool, digests: &[Digest]) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for chunk in digests.chunks(CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT digest FROM blobs WHERE digest IN (");
        push_digests(&mut query, chunk);
        let rows: Vec<String> = query.build_query_scalar().persistent(false).fetch_all(pool).await.map_err(db_err)?;
        for digest in rows {
            out.push(parse_digest(&digest)?);
        }
    }
    Ok(out)
}

// --- garbage collection: writes that re-check ------------------------------------------

/// Condition and delete in one statement; the cascade removes its references.
pub(crate) async fn delete_manifest(
    writer: &SqlitePool,
    repo: &RepositoryName,
    digest: &Digest,
    cutoff: i64,
) -> Result<Option<u64>> {
    let size: Option<i64> = sqlx::query_scalar(
        "DELETE FROM manifests AS m \
         WHERE m.repository_id = (SELECT id FROM repositories WHERE name = ?1) AND m.digest = ?2 \
           AND m.created_at < ?3 \
           AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
           AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                           WHERE r.repository_id = m.repository_id AND r.target_digest = m.digest) \
           AND NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = m.repository_id AND s.digest = m.subject) \
         RETURNING size",
    )
    .bind(repo.as_str())
    .bind(digest.as_str())
    .bind(cutoff)
    .fetch_optional(writer)
    .await
    .map_err(db_err)?;
    size.map(|s| from_sql_int(s, "manifest size")).transpose()
}

pub(crate) async fn unlink_blob(
    writer: &SqlitePool,
    repo: &RepositoryName,
    digest: &Digest,
    cutoff: i64,
) -> Result<bool> {
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
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

pub(crate) async fn mark_blob(writer: &SqlitePool, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
    let size: Option<i64> = sqlx::query_scalar(
        "UPDATE blobs SET state = 'deleting', marked_at = ?3 \
         WHERE digest = ?1 AND state = 'live' AND last_linked < ?2 \
           AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = ?1) \
         RETURNING size",
    )
    .bind(digest.as_str())
    .bind(cutoff)
    .bind(crate::now_ms())
    .fetch_optional(writer)
    .await
    .map_err(db_err)?;
    size.map(|s| from_sql_int(s, "blob size")).transpose()
}

pub(crate) async fn mark_orphan(writer: &SqlitePool, digest: &Digest, size: u64, now: i64) -> Result<bool> {
    let size = to_sql_int(size, "blob size")?;
    let result = sqlx::query(
        "INSERT INTO blobs (digest, size, created_at, last_linked, state, marked_at) \
         VALUES (?1, ?2, ?3, ?3, 'deleting', ?3) \
         ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest.as_str())
    .bind(size)
    .bind(now)
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

pub(crate) async fn forget_blob(writer: &SqlitePool, digest: &Digest) -> Result<bool> {
    let result = sqlx::query("DELETE FROM blobs WHERE digest = ? AND state = 'deleting'")
        .bind(digest.as_str())
        .execute(writer)
        .await
        .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

// --- retention ----------------------------------------------------------------------------

pub(crate) async fn repository_tags(pool: &SqlitePool, repo: &RepositoryName) -> Result<Vec<TagRecord>> {
    let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT t.name, t.digest, t.updated_at, \
                EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = t.repository_id \
                        AND r.target_digest = t.digest AND r.kind = 'manifest') \
         FROM repositories rp JOIN tags t ON t.repository_id = rp.id WHERE rp.name = ?",
    )
    .bind(repo.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
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

pub(crate) async fn delete_tag_if_unchanged(
    writer: &SqlitePool,
    repo: &RepositoryName,
    tag: &Tag,
    digest: &Digest,
    updated_at: i64,
) -> Result<bool> {
    let result = sqlx::query(
        "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) \
         AND name = ? AND digest = ? AND updated_at = ?",
    )
    .bind(repo.as_str())
    .bind(tag.as_str())
    .bind(digest.as_str())
    .bind(updated_at)
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

// --- stored retention rules ------------------------------------------------------------------

pub(crate) async fn list_retention_rules(pool: &SqlitePool) -> Result<Vec<RetentionRuleRecord>> {
    let rows: Vec<RetentionRuleRow> =
        sqlx::query_as("SELECT id, repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, created_by FROM retention_rules ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    rows.into_iter().map(RetentionRuleRecord::from_row).collect()
}

pub(crate) async fn add_retention_rule(writer: &SqlitePool, rule: &NewRetentionRule) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO retention_rules \
           (repositories, keep_last, keep_tags, remove_tags, remove_older_than, created_at, created_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&rule.repositories)
    .bind(rule.keep_last.map(i64::from))
    .bind(globs_json(&rule.keep_tags)?)
    .bind(globs_json(&rule.remove_tags)?)
    .bind(rule.remove_older_than)
    .bind(rule.created_at)
    .bind(&rule.created_by)
    .fetch_one(writer)
    .await
    .map_err(db_err)
}

pub(crate) async fn remove_retention_rule(writer: &SqlitePool, id: i64) -> Result<bool> {
    let result =
        sqlx::query("DELETE FROM retention_rules WHERE id = ?").bind(id).execute(writer).await.map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

// --- upload expiry --------------------------------------------------------------------------

pub(crate) async fn expire_upload(writer: &SqlitePool, id: &str, before: i64) -> Result<bool> {
    let result = sqlx::query("DELETE FROM uploads WHERE id = ? AND updated_at < ?")
        .bind(id)
        .bind(before)
        .execute(writer)
        .await
        .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}
