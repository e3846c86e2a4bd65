//! The cross-process lock held while migrations run.
//!
//! sqlx's migration lock is a no-op on SQLite, so two processes starting on
//! a fresh file would both try to apply the same migration and one would
//! fail. An exclusive OS lock on a file beside the database serializes them.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use berth_meta::{MetaError, Result};

/// Blocks (off the async runtime) until this process holds the migration
/// lock for the database at `db_path`; the lock is released when the
/// returned file is dropped.
pub(crate) async fn lock_for(db_path: &Path) -> Result<File> {
    let lock_path = lock_path(db_path);
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| MetaError::Backend(format!("migration lock task failed: {e}")))?
    .map_err(|e| MetaError::Unavailable(format!("cannot take the migration lock: {e}")))
}

/// `<dbfile>.migrate.lock`, beside the database.
fn lock_path(db_path: &Path) -> PathBuf {
    let mut name = OsString::from(db_path.as_os_str());
    name.push(".migrate.lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_sits_beside_the_database() {
        assert_eq!(lock_path(Path::new("/data/berth.db")), Path::new("/data/berth.db.migrate.lock"));
    }

    #[tokio::test]
    async fn second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("berth.db");
        let first = lock_for(&db).await.expect("first lock");
        // Not yet acquirable by a second, independent handle.
        let probe = OpenOptions::new().write(true).open(lock_path(&db)).expect("open");
        assert!(matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop(first);
        let second = lock_for(&db).await.expect("second lock");
        drop(second);
    }
}
