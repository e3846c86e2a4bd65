//! Conversions between sqlx / Postgres values and `berth-meta` terms.
//!
//! Inside the crate, database errors stay `sqlx::Error` (in [`StoreError`])
//! until the trait boundary, so the retry loop can still see their SQLSTATE;
//! [`MetaError::from`] classifies them once, on the way out.

use berth_meta::MetaError;
use berth_oci::{Digest, RepositoryName};

/// An error inside the store: either already a final answer (a refused
/// reference, an immutable tag, ...) or a database error still to classify.
#[derive(Debug)]
pub(crate) enum StoreError {
    Meta(MetaError),
    Sql(sqlx::Error),
}

pub(crate) type StoreResult<T> = std::result::Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Sql(err)
    }
}

impl From<MetaError> for StoreError {
    fn from(err: MetaError) -> Self {
        StoreError::Meta(err)
    }
}

impl From<StoreError> for MetaError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Meta(err) => err,
            StoreError::Sql(err) => db_err(err),
        }
    }
}

impl StoreError {
    /// A conflict between concurrent transactions that the database resolved
    /// by aborting this one; running the whole transaction again is safe.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sql(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED))
            }
            _ => false,
        }
    }
}

const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";

/// Maps a sqlx error to the backend-neutral error: lost connections,
/// timeouts and server shutdowns are `Unavailable` (the API answers 503),
/// everything else is `Backend`.
pub(crate) fn db_err(err: sqlx::Error) -> MetaError {
    match &err {
        // Configuration errors may quote the connection URL (and its password).
        sqlx::Error::Configuration(_) => MetaError::Backend("invalid Postgres connection settings".into()),
        sqlx::Error::Migrate(m) => migrate_err_ref(m),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let message = format!("{} (SQLSTATE {code})", db.message());
            if is_transient(&code) { MetaError::Unavailable(message) } else { MetaError::Backend(message) }
        }
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
        sqlx::Error::Database(db) => is_transient(&db.code().unwrap_or_default()),
        _ => false,
    }
}

/// SQLSTATEs that mean "the database cannot serve us right now" rather than
/// "this request is wrong".
fn is_transient(code: &str) -> bool {
    matches!(
        code,
        // admin_shutdown, crash_shutdown, cannot_connect_now: a restart or failover.
        "57P01" | "57P02" | "57P03"
        // query_canceled (statement_timeout) and lock_not_available (lock_timeout): timed out.
        | "57014" | "55P03"
        // Still contended after the store's own retries.
        | SERIALIZATION_FAILURE | DEADLOCK_DETECTED
    )
    // Class 08, connection exception; class 53, insufficient resources
    // (too many connections, disk full, out of memory).
    || code.starts_with("08")
    || code.starts_with("53")
}

/// Sizes and offsets are `u64` in the API and BIGINT in SQL.
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
    fn connection_and_shutdown_codes_are_transient() {
        for code in ["08000", "08006", "08001", "57P01", "57P02", "57P03", "53300", "57014", "40001", "40P01"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22021", "57P04", ""] {
            assert!(!is_transient(code), "{code}");
        }
    }

    #[test]
    fn pool_and_io_errors_are_unavailable() {
        assert!(matches!(db_err(sqlx::Error::PoolTimedOut), MetaError::Unavailable(_)));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(db_err(sqlx::Error::Io(refused)), MetaError::Unavailable(_)));
        assert!(matches!(db_err(sqlx::Error::RowNotFound), MetaError::Backend(_)));
    }

    #[test]
    fn configuration_errors_do_not_echo_their_cause() {
        let err = db_err(sqlx::Error::Configuration("postgres://u:hunter2@db/x is odd".into()));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn sizes_round_trip_and_reject_overflow() {
        assert_eq!(to_sql_int(42, "size").ok(), Some(42));
        assert!(to_sql_int(u64::MAX, "size").is_err());
        assert!(from_sql_int(-1, "size").is_err());
    }
}
