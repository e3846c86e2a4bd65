//! Package versions for the Gitea-compatible API: tags, plus manifests no
//! tag points to (children of an index count as part of their index).

use berth_meta::{PackageVersionRecord, Result};
use berth_oci::RepositoryName;

use sqlx::PgPool;

use crate::error::{db_err, parse_digest, parse_repository};

#[derive(sqlx::FromRow)]
struct VersionRow {
    repository: String,
    version: String,
    digest: String,
    created_at: i64,
    pushed_by: Option<String>,
}

impl VersionRow {
    fn into_record(self) -> Result<PackageVersionRecord> {
        Ok(PackageVersionRecord {
            repository: parse_repository(&self.repository)?,
            version: self.version,
            digest: parse_digest(&self.digest)?,
            created_at: self.created_at,
            pushed_by: self.pushed_by,
        })
    }
}

pub(crate) async fn versions(
    pool: &PgPool,
    owner: &str,
    repository: Option<&RepositoryName>,
) -> Result<Vec<PackageVersionRecord>> {
    // Names under `owner/` sort between "owner/" and "owner0" ('0' follows
    // '/' in byte order, which the "C" collation of repositories.name gives):
    // a range scan of the name index.
    let (low, high) = (format!("{owner}/"), format!("{owner}0"));
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT r.name AS repository, t.name AS version, t.digest, t.updated_at AS created_at, t.pushed_by \
           FROM tags t JOIN repositories r ON r.id = t.repository_id \
           WHERE r.name >= $1 AND r.name < $2 AND ($3::text IS NULL OR r.name = $3) \
         UNION ALL \
         SELECT r.name, m.digest, m.digest, m.created_at, m.pushed_by \
           FROM manifests m JOIN repositories r ON r.id = m.repository_id \
           WHERE r.name >= $1 AND r.name < $2 AND ($3::text IS NULL OR r.name = $3) \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references mr WHERE mr.repository_id = m.repository_id \
                             AND mr.target_digest = m.digest AND mr.kind = 'manifest') \
         ORDER BY 4 DESC, 1, 2",
    )
    .bind(low)
    .bind(high)
    .bind(repository.map(RepositoryName::as_str))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.into_iter().map(VersionRow::into_record).collect()
}
