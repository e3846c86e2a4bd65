//! Consistent copies of the database for `berth backup`, and what a copy
//! holds (read back from the copy, never from the live database).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_meta::Result;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::error::StoreError;
use crate::{BUSY_TIMEOUT, Location, MIGRATOR, SqliteMetaStore, parse_location};

/// What a database copy holds: enough for a backup's manifest and for
/// `berth restore` to check the copy against it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The highest migration applied.
    pub schema_version: i64,
    /// Every live blob, `(digest, size)`, in digest order (not those scrub
    /// found damaged: their bytes are not there to copy).
    pub blobs: Vec<(String, u64)>,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
}

impl SqliteMetaStore {
    /// Writes a consistent copy of the database to `dest` (which must not
    /// exist) with `VACUUM INTO`, while the store serves. It runs on a
    /// connection of its own: one read transaction, so one WAL snapshot,
    /// which holds up neither the writer nor the readers.
    ///
    /// Leases in the copy are marked expired: the backup's own GC lease
    /// must not hold off collection in a registry restored from it.
    pub async fn backup_into(&self, dest: &Path) -> Result<()> {
        let options = SqliteConnectOptions::new().filename(&self.path).busy_timeout(BUSY_TIMEOUT);
        let mut conn = SqliteConnection::connect_with(&options).await.map_err(StoreError::from)?;
        let copied = sqlx::query("VACUUM INTO ?").bind(dest.to_string_lossy().into_owned()).execute(&mut conn).await;
        let _ = conn.close().await;
        copied.map_err(StoreError::from)?;
        let options = SqliteConnectOptions::new().filename(dest).busy_timeout(BUSY_TIMEOUT);
        let mut copy = SqliteConnection::connect_with(&options).await.map_err(StoreError::from)?;
        let reset = sqlx::query("UPDATE leases SET expires_at = 0").execute(&mut copy).await;
        let _ = copy.close().await;
        reset.map_err(StoreError::from)?;
        Ok(())
    }
}

/// Reads what the database file at `path` holds (opened read-only).
pub async fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(BUSY_TIMEOUT);
    let mut conn = SqliteConnection::connect_with(&options).await.map_err(StoreError::from)?;
    let result = async {
        let schema_version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await?;
        let blobs: Vec<(String, i64)> = sqlx::query_as(
            "SELECT digest, size FROM blobs WHERE state = 'live' AND damaged_at IS NULL ORDER BY digest",
        )
        .fetch_all(&mut conn)
        .await?;
        let (repositories, manifests, tags): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests), (SELECT COUNT(*) FROM tags)",
        )
        .fetch_one(&mut conn)
        .await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok::<_, sqlx::Error>(Snapshot {
            schema_version,
            blobs: blobs.into_iter().map(|(d, s)| (d, n(s))).collect(),
            repositories: n(repositories),
            manifests: n(manifests),
            tags: n(tags),
        })
    }
    .await;
    let _ = conn.close().await;
    Ok(result.map_err(StoreError::from)?)
}

/// The highest migration this build knows.
pub fn latest_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The database file a `sqlite:` URL names; `None` for memory or another scheme.
pub fn database_file(url: &str) -> Option<PathBuf> {
    match parse_location(url) {
        Ok(Location::File) => SqliteConnectOptions::from_str(url).ok().map(|o| o.get_filename().to_path_buf()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use berth_meta::MaintenanceStore;

    use super::*;
    use crate::SqliteSettings;

    #[tokio::test]
    async fn copies_are_consistent_and_leases_lapse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
        store.migrate().await.expect("migrate");
        store.acquire_lease("gc", "me", 1, i64::MAX / 2).await.expect("lease");
        let copy = dir.path().join("copy.db");
        store.backup_into(&copy).await.expect("backup");
        let snap = read_snapshot(&copy).await.expect("snapshot");
        assert_eq!(snap.schema_version, latest_schema_version());
        assert!(snap.blobs.is_empty());
        let copied = SqliteMetaStore::connect(&SqliteSettings::for_path(&copy)).await.expect("open copy");
        let lease = copied.get_lease("gc").await.expect("read").expect("row");
        assert_eq!(lease.expires_at, 0);
        assert_eq!(database_file(&SqliteSettings::for_path(&copy).url).as_deref(), Some(copy.as_path()));
        assert_eq!(database_file("sqlite::memory:"), None);
    }
}
