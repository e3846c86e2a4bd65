//! Package versions for the Gitea-compatible API: tags, plus manifests no
//! tag points to (children of an index count as part of their index).

use berth_meta::{PackageVersionRecord, Result};
use berth_oci::RepositoryName;
use sqlx::{Row, SqlitePool};

use crate::error::{db_err, parse_digest, parse_repository};

pub(crate) async fn versions(
    pool: &SqlitePool,
    owner: &str,
    repository: Option<&RepositoryName>,
) -> Result<Vec<PackageVersionRecord>> {
    // Names under `owner/` sort between "owner/" and "owner0" ('0' follows '/').
    let (low, high) = (format!("{owner}/"), format!("{owner}0"));
    let only = repository.map(|r| r.as_str().to_owned());
    let rows = sqlx::query(
        "SELECT r.name, t.name, t.digest, t.updated_at, t.pushed_by FROM tags t \
           JOIN repositories r ON r.id = t.repository_id \
           WHERE r.name >= ?1 AND r.name < ?2 AND (?3 IS NULL OR r.name = ?3) \
         UNION ALL \
         SELECT r.name, m.digest, m.digest, m.created_at, m.pushed_by FROM manifests m \
           JOIN repositories r ON r.id = m.repository_id \
           WHERE r.name >= ?1 AND r.name < ?2 AND (?3 IS NULL OR r.name = ?3) \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references mr WHERE mr.repository_id = m.repository_id \
                             AND mr.target_digest = m.digest AND mr.kind = 'manifest') \
         ORDER BY 4 DESC, 1, 2",
    )
    .bind(low)
    .bind(high)
    .bind(only)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(PackageVersionRecord {
                repository: parse_repository(&r.try_get::<String, _>(0).map_err(db_err)?)?,
                version: r.try_get(1).map_err(db_err)?,
                digest: parse_digest(&r.try_get::<String, _>(2).map_err(db_err)?)?,
                created_at: r.try_get(3).map_err(db_err)?,
                pushed_by: r.try_get(4).map_err(db_err)?,
            })
        })
        .collect()
}
