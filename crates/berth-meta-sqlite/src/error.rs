//! How SQLite's errors are classified (see `berth_meta_sql::error`).

use berth_meta_sql::Dialect;

/// SQLite primary result codes that mean "try again later" rather than "bug".
/// Extended codes carry the primary code in their low byte.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;

pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    const NAME: &'static str = "SQLite";

    fn is_transient(code: &str) -> bool {
        let Ok(code) = code.parse::<i64>() else { return false };
        matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
    }
}

pub(crate) type StoreError = berth_meta_sql::StoreError<Sqlite>;
pub(crate) type StoreResult<T> = berth_meta_sql::StoreResult<T, Sqlite>;

#[cfg(test)]
mod tests {
    use berth_meta::MetaError;

    use super::*;

    #[test]
    fn busy_and_io_errors_are_transient() {
        assert!(Sqlite::is_transient("5")); // SQLITE_BUSY
        assert!(Sqlite::is_transient("261")); // SQLITE_BUSY_RECOVERY
        assert!(Sqlite::is_transient("522")); // SQLITE_IOERR_SHORT_READ
        assert!(!Sqlite::is_transient("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!Sqlite::is_transient("1"));
        assert!(!Sqlite::is_transient(""));
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        assert!(matches!(MetaError::from(StoreError::from(sqlx::Error::PoolTimedOut)), MetaError::Unavailable(_)));
        assert!(matches!(MetaError::from(StoreError::from(sqlx::Error::RowNotFound)), MetaError::Backend(_)));
    }
}
