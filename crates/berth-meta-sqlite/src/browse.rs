//! Read models for the web pages ([`berth_meta::BrowseStore`]): each
//! listing is one query that paginates in SQL and computes every per-row
//! figure with correlated subqueries on indexed columns.

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::browse::{
    BrowseStore, ManifestSize, PackageQuery, PackageRow, Page, RecentPush, VersionOrder, VersionRow, Viewer,
};
use berth_oci::{Digest, RepositoryName};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::SqliteMetaStore;
use berth_meta_sql::{from_sql_int, parse_digest, parse_repository};

use crate::error::StoreResult;

/// `r`'s owner row `o` joined by the name's first component.
const OWNER_JOIN: &str = "LEFT JOIN owners o ON o.name = substr(r.name, 1, instr(r.name || '/', '/') - 1)";

/// Whether the viewer (bound as ?1 = is_admin, ?2 = user id or -1) may read `r`.
const READABLE: &str = "(?1 OR o.id = ?2 \
     OR EXISTS (SELECT 1 FROM org_members om WHERE om.org_id = o.id AND om.user_id = ?2) \
     OR COALESCE(r.is_public, o.is_public, 0) = 1)";

/// Bytes of a manifest's own blobs (`m` in scope).
const OWN_BLOBS: &str = "(SELECT COALESCE(SUM(b.size), 0) FROM manifest_references mr \
     JOIN blobs b ON b.digest = mr.target_digest \
     WHERE mr.repository_id = m.repository_id AND mr.manifest_digest = m.digest AND mr.kind = 'blob')";

/// Bytes of an index's children and of their blobs (`m` in scope). `CROSS
/// JOIN` keeps SQLite from starting at `mr` (every reference of the repository).
const CHILD_BYTES: &str = "(SELECT COALESCE(SUM(cm.size), 0) FROM manifest_references c \
       JOIN manifests cm ON cm.repository_id = c.repository_id AND cm.digest = c.target_digest \
       WHERE c.repository_id = m.repository_id AND c.manifest_digest = m.digest AND c.kind = 'manifest') \
     + (SELECT COALESCE(SUM(b.size), 0) FROM manifest_references c \
       CROSS JOIN manifest_references mr ON mr.repository_id = c.repository_id AND mr.manifest_digest = c.target_digest \
         AND mr.kind = 'blob' \
       JOIN blobs b ON b.digest = mr.target_digest \
       WHERE c.repository_id = m.repository_id AND c.manifest_digest = m.digest AND c.kind = 'manifest')";

fn viewer_binds(viewer: Viewer) -> (bool, i64) {
    (viewer.is_admin, viewer.user_id.unwrap_or(-1))
}

/// `LIKE` pattern matching `text` anywhere, with its wildcards escaped (`\`).
fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

fn package_from(row: &SqliteRow) -> StoreResult<PackageRow> {
    Ok(PackageRow {
        repository: parse_repository(&row.try_get::<String, _>(0)?)?,
        is_public: row.try_get(1)?,
        tag_count: from_sql_int(row.try_get(2)?, "tag count")?,
        newest_tag: row.try_get(3)?,
        last_push: row.try_get(4)?,
        size: from_sql_int(row.try_get(5)?, "package size")?,
    })
}

fn version_from(row: &SqliteRow) -> StoreResult<VersionRow> {
    Ok(VersionRow {
        version: row.try_get(0)?,
        digest: parse_digest(&row.try_get::<String, _>(1)?)?,
        pushed_at: row.try_get(2)?,
        pushed_by: row.try_get(3)?,
        media_type: row.try_get(4)?,
        artifact_type: row.try_get(5)?,
        size: from_sql_int(row.try_get(6)?, "version size")?,
        index_content: row.try_get::<Option<Vec<u8>>, _>(7)?.unwrap_or_default(),
    })
}

#[async_trait]
impl BrowseStore for SqliteMetaStore {
    async fn packages(&self, viewer: Viewer, query: &PackageQuery<'_>) -> Result<Page<PackageRow>> {
        let (admin, user) = viewer_binds(viewer);
        // Names under `owner/` sort between "owner/" and "owner0" ('0' follows '/').
        let (low, high) = match query.owner {
            Some(owner) => (format!("{owner}/"), format!("{owner}0")),
            None => (String::new(), "\u{10FFFF}".to_owned()),
        };
        let sql = format!(
            "WITH page AS ( \
               SELECT r.id, r.name, COALESCE(r.is_public, o.is_public, 0) = 1 AS is_public, COUNT(*) OVER () AS total \
               FROM repositories r {OWNER_JOIN} \
               WHERE r.name >= ?3 AND r.name < ?4 AND {READABLE} \
                 AND (?5 IS NULL OR substr(r.name, length(?3) + 1) LIKE ?5 ESCAPE '\\') \
                 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) \
               ORDER BY r.name LIMIT ?6 OFFSET ?7 \
             ) \
             SELECT p.name, p.is_public, \
               (SELECT COUNT(*) FROM tags t WHERE t.repository_id = p.id), \
               (SELECT t.name FROM tags t WHERE t.repository_id = p.id ORDER BY t.updated_at DESC, t.name LIMIT 1), \
               max(COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = p.id), 0), \
                   (SELECT MAX(m.created_at) FROM manifests m WHERE m.repository_id = p.id)), \
               (SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                  WHERE rb.repository_id = p.id), \
               p.total \
             FROM page p ORDER BY p.name"
        );
        self.read(async |conn| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(admin)
                .bind(user)
                .bind(low)
                .bind(high)
                .bind(query.contains.filter(|c| !c.is_empty()).map(contains_pattern))
                .bind(i64::from(query.limit))
                .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
                .fetch_all(&mut *conn)
                .await?;
            let total = match rows.first() {
                Some(r) => from_sql_int(r.try_get(6)?, "package count")?,
                None => 0,
            };
            Ok(Page { total, items: rows.iter().map(package_from).collect::<StoreResult<_>>()? })
        })
        .await
    }

    async fn recent_pushes(&self, viewer: Viewer, limit: u32) -> Result<Vec<RecentPush>> {
        let (admin, user) = viewer_binds(viewer);
        let sql = format!(
            "SELECT r.name, t.name, t.digest, t.updated_at, t.pushed_by FROM tags t \
             JOIN repositories r ON r.id = t.repository_id {OWNER_JOIN} \
             WHERE {READABLE} ORDER BY t.updated_at DESC, r.name, t.name LIMIT ?3"
        );
        self.read(async |conn| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(admin)
                .bind(user)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(RecentPush {
                        repository: parse_repository(&r.try_get::<String, _>(0)?)?,
                        tag: r.try_get(1)?,
                        digest: parse_digest(&r.try_get::<String, _>(2)?)?,
                        pushed_at: r.try_get(3)?,
                        pushed_by: r.try_get(4)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn versions(
        &self,
        repo: &RepositoryName,
        order: VersionOrder,
        offset: u64,
        limit: u32,
    ) -> Result<Page<VersionRow>> {
        self.version_rows(repo, None, order, offset, limit).await
    }

    async fn version(&self, repo: &RepositoryName, version: &str) -> Result<Option<VersionRow>> {
        let page = self.version_rows(repo, Some(version), VersionOrder::NewestFirst, 0, 1).await?;
        Ok(page.items.into_iter().next())
    }

    async fn tags_of(&self, repo: &RepositoryName, digest: &Digest, limit: u32) -> Result<Vec<String>> {
        self.read(async |conn| {
            Ok(sqlx::query_scalar(
                "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = ? AND t.digest = ? ORDER BY t.name LIMIT ?",
            )
            .bind(repo.as_str())
            .bind(digest.to_string())
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?)
        })
        .await
    }

    async fn manifest_sizes(&self, repo: &RepositoryName, digests: &[Digest]) -> Result<Vec<ManifestSize>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = serde_json::to_string(&digests.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|e| berth_meta::MetaError::Backend(e.to_string()))?;
        let sql = format!(
            "SELECT m.digest, m.media_type, m.size + {OWN_BLOBS} + {CHILD_BYTES} FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = ?1 AND m.digest IN (SELECT value FROM json_each(?2)) ORDER BY m.digest"
        );
        self.read(async |conn| {
            let rows =
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(repo.as_str()).bind(wanted).fetch_all(&mut *conn).await?;
            rows.iter()
                .map(|r| {
                    Ok(ManifestSize {
                        digest: parse_digest(&r.try_get::<String, _>(0)?)?,
                        media_type: r.try_get(1)?,
                        size: from_sql_int(r.try_get(2)?, "manifest size")?,
                    })
                })
                .collect()
        })
        .await
    }
}

impl SqliteMetaStore {
    /// One page of versions, or (with `only`) the one version so named.
    async fn version_rows(
        &self,
        repo: &RepositoryName,
        only: Option<&str>,
        order: VersionOrder,
        offset: u64,
        limit: u32,
    ) -> Result<Page<VersionRow>> {
        let direction = match order {
            VersionOrder::NewestFirst => "DESC",
            VersionOrder::OldestFirst => "ASC",
        };
        let sql = format!(
            "WITH repo AS (SELECT id FROM repositories WHERE name = ?1), \
             v AS ( \
               SELECT t.name AS version, t.digest AS digest, t.updated_at AS pushed_at, t.pushed_by AS pusher \
                 FROM tags t WHERE t.repository_id = (SELECT id FROM repo) AND (?4 IS NULL OR t.name = ?4) \
               UNION ALL \
               SELECT m.digest, m.digest, m.created_at, m.pushed_by FROM manifests m \
                 WHERE m.repository_id = (SELECT id FROM repo) AND m.subject IS NULL AND (?4 IS NULL OR m.digest = ?4) \
                   AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
                   AND NOT EXISTS (SELECT 1 FROM manifest_references c WHERE c.repository_id = m.repository_id \
                                   AND c.target_digest = m.digest AND c.kind = 'manifest') \
             ), \
             page AS ( \
               SELECT v.version, v.digest, v.pushed_at, v.pusher, COUNT(*) OVER () AS total FROM v \
               WHERE ?4 IS NULL OR v.version = ?4 \
               ORDER BY v.pushed_at {direction}, v.version LIMIT ?2 OFFSET ?3 \
             ) \
             SELECT p.version, p.digest, p.pushed_at, p.pusher, m.media_type, m.artifact_type, \
               m.size + {OWN_BLOBS} + {CHILD_BYTES}, \
               CASE WHEN EXISTS (SELECT 1 FROM manifest_references c WHERE c.repository_id = m.repository_id \
                                 AND c.manifest_digest = m.digest AND c.kind = 'manifest') \
                    OR m.media_type LIKE '%index%' OR m.media_type LIKE '%manifest.list%' \
                    THEN m.content END, \
               p.total \
             FROM page p JOIN manifests m ON m.repository_id = (SELECT id FROM repo) AND m.digest = p.digest \
             ORDER BY p.pushed_at {direction}, p.version"
        );
        self.read(async |conn| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(repo.as_str())
                .bind(i64::from(limit))
                .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                .bind(only)
                .fetch_all(&mut *conn)
                .await?;
            let total = match rows.first() {
                Some(r) => from_sql_int(r.try_get(8)?, "version count")?,
                None => 0,
            };
            Ok(Page { total, items: rows.iter().map(version_from).collect::<StoreResult<_>>()? })
        })
        .await
    }
}
