//! Upload sessions.
//!
//! Single-statement writes run in autocommit mode on the writer pool: SQLite
//! takes the write lock when such a statement starts, so they need no
//! explicit transaction.

use berth_meta::{MetaError, Result, UploadProgress, UploadSession};
use berth_oci::{Algorithm, Digest};
use sqlx::{SqliteConnection, SqlitePool};

use crate::error::{db_err, from_sql_int, parse_repository, to_sql_int};
use crate::{Tx, blobs};

/// The columns of [`UploadRow`], as a literal so queries stay `&'static str`.
macro_rules! upload_columns {
    () => {
        "id, repository, algorithm, committed_size, hash_state, backend_state, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct UploadRow {
    id: String,
    repository: String,
    algorithm: String,
    committed_size: i64,
    hash_state: Vec<u8>,
    backend_state: String,
    created_at: i64,
    updated_at: i64,
}

impl UploadRow {
    fn into_session(self) -> Result<UploadSession> {
        let algorithm = Algorithm::parse(&self.algorithm)
            .map_err(|e| MetaError::Backend(format!("upload {} has an invalid algorithm: {e}", self.id)))?;
        Ok(UploadSession {
            repository: parse_repository(&self.repository)?,
            algorithm,
            progress: UploadProgress {
                offset: from_sql_int(self.committed_size, "upload offset")?,
                hash_state: self.hash_state,
                backend_state: self.backend_state,
                updated_at: self.updated_at,
            },
            created_at: self.created_at,
            id: self.id,
        })
    }
}

pub(crate) async fn create(writer: &mut SqliteConnection, upload: &UploadSession) -> Result<()> {
    sqlx::query(concat!("INSERT INTO uploads (", upload_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(&upload.id)
        .bind(upload.repository.as_str())
        .bind(upload.algorithm.as_str())
        .bind(to_sql_int(upload.progress.offset, "upload offset")?)
        .bind(&upload.progress.hash_state)
        .bind(&upload.progress.backend_state)
        .bind(upload.created_at)
        .bind(upload.progress.updated_at)
        .execute(&mut *writer)
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn get(pool: &SqlitePool, id: &str) -> Result<Option<UploadSession>> {
    let row: Option<UploadRow> = sqlx::query_as(concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(UploadRow::into_session).transpose()
}

/// Compare-and-set on the offset: two appends racing on one session cannot
/// both win, the loser sees `false` and re-reads the session.
pub(crate) async fn update(
    writer: &mut SqliteConnection,
    id: &str,
    expected_offset: u64,
    progress: &UploadProgress,
) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE uploads SET committed_size = ?, hash_state = ?, backend_state = ?, updated_at = ? \
         WHERE id = ? AND committed_size = ?",
    )
    .bind(to_sql_int(progress.offset, "upload offset")?)
    .bind(&progress.hash_state)
    .bind(&progress.backend_state)
    .bind(progress.updated_at)
    .bind(id)
    .bind(to_sql_int(expected_offset, "upload offset")?)
    .execute(&mut *writer)
    .await
    .map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

pub(crate) async fn delete(writer: &SqlitePool, id: &str) -> Result<bool> {
    let result = sqlx::query("DELETE FROM uploads WHERE id = ?").bind(id).execute(writer).await.map_err(db_err)?;
    Ok(result.rows_affected() > 0)
}

/// Removes the session and links the finished blob to its repository. If the
/// session is already gone (completed or cancelled concurrently), or the
/// blob's reservation is gone or being deleted, nothing is written: the
/// caller's transaction is dropped, which rolls it back.
pub(crate) async fn complete(tx: &mut Tx, id: &str, digest: &Digest, reservation: &str, now: i64) -> Result<()> {
    // Deleting first both claims the session and tells us its repository.
    let repository: Option<String> = sqlx::query_scalar("DELETE FROM uploads WHERE id = ? RETURNING repository")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?;
    let Some(repository) = repository else {
        return Err(MetaError::UploadUnknown);
    };
    let repository = parse_repository(&repository)?;
    if blobs::link(tx, &repository, digest, now, blobs::LinkCondition::Reserved(reservation)).await? {
        Ok(())
    } else {
        Err(MetaError::Unavailable(format!("blob {digest} was garbage-collected while it was being uploaded; retry")))
    }
}

/// Sessions last updated strictly before `before`, oldest first.
pub(crate) async fn stale(pool: &SqlitePool, before: i64, limit: u32) -> Result<Vec<UploadSession>> {
    let sql =
        concat!("SELECT ", upload_columns!(), " FROM uploads WHERE updated_at < ? ORDER BY updated_at, id LIMIT ?");
    let rows: Vec<UploadRow> =
        sqlx::query_as(sql).bind(before).bind(i64::from(limit)).fetch_all(pool).await.map_err(db_err)?;
    rows.into_iter().map(UploadRow::into_session).collect()
}
