//! Conversions between sqlx / SQLite values and `berth-meta` terms.

use berth_meta::MetaError;
use berth_oci::{Digest, RepositoryName};

/// SQLite primary result codes that mean "try again later" rather than "bug".
/// Extended codes carry the primary code in their low byte.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;

/// Maps a sqlx error to the backend-neutral error: timeouts and I/O trouble
/// are `Unavailable` (the API answers 503), everything else is `Backend`.
pub(crate) fn db_err(err: sqlx::Error) -> MetaError {
    match &err {
        // Configuration errors may quote the connection URL; never echo it.
        sqlx::Error::Configuration(_) => MetaError::Backend("invalid SQLite connection settings".into()),
        sqlx::Error::Migrate(m) => migrate_err_ref(m),
        e if is_unavailable(e) => MetaError::Unavailable(err.to_string()),
        _ => MetaError::Backend(err.to_string()),
    }
}

pub(crate) fn migrate_err(err: sqlx::migrate::MigrateError) -> MetaError {
    migrate_err_ref(&err)
}

fn migrate_err_ref(err: &sqlx::migrate::MigrateError) -> MetaError {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) if is_unavailable(e) => {
            MetaError::Unavailable(err.to_string())
        }
        _ => MetaError::Backend(err.to_string()),
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => is_transient(db.code().as_deref()),
        _ => false,
    }
}

fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code.and_then(|c| c.parse::<i64>().ok()) else { return false };
    matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
}

/// Sizes and offsets are `u64` in the API and signed 64-bit in SQL.
pub(crate) fn to_sql_int(value: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(value).map_err(|_| MetaError::Backend(format!("{what} {value} does not fit a 64-bit signed integer")))
}

pub(crate) fn from_sql_int(value: i64, what: &str) -> Result<u64, MetaError> {
    u64::try_from(value).map_err(|_| MetaError::Backend(format!("stored {what} is negative ({value})")))
}

pub(crate) fn parse_digest(text: &str) -> Result<Digest, MetaError> {
    Digest::parse(text).map_err(|e| MetaError::Backend(format!("stored digest {text:?} is invalid: {e}")))
}

pub(crate) fn parse_repository(text: &str) -> Result<RepositoryName, MetaError> {
    RepositoryName::parse(text)
        .map_err(|e| MetaError::Backend(format!("stored repository name {text:?} is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_io_errors_are_transient() {
        assert!(is_transient(Some("5"))); // SQLITE_BUSY
        assert!(is_transient(Some("261"))); // SQLITE_BUSY_RECOVERY
        assert!(is_transient(Some("522"))); // SQLITE_IOERR_SHORT_READ
        assert!(!is_transient(Some("2067"))); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_transient(Some("1")));
        assert!(!is_transient(None));
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        assert!(matches!(db_err(sqlx::Error::PoolTimedOut), MetaError::Unavailable(_)));
        assert!(matches!(db_err(sqlx::Error::RowNotFound), MetaError::Backend(_)));
    }

    #[test]
    fn sizes_round_trip_and_reject_overflow() {
        assert_eq!(to_sql_int(42, "size").ok(), Some(42));
        assert!(to_sql_int(u64::MAX, "size").is_err());
        assert!(from_sql_int(-1, "size").is_err());
    }
}
