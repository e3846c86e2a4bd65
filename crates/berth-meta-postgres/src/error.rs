//! How Postgres errors are classified (see `berth_meta_sql::error`).

use berth_meta_sql::Dialect;

const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";

pub(crate) struct Postgres;

impl Dialect for Postgres {
    const NAME: &'static str = "Postgres";

    /// SQLSTATEs that mean "the database cannot serve us right now" rather
    /// than "this request is wrong".
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

    fn is_retryable(code: &str) -> bool {
        matches!(code, SERIALIZATION_FAILURE | DEADLOCK_DETECTED)
    }
}

pub(crate) type StoreError = berth_meta_sql::StoreError<Postgres>;
pub(crate) type StoreResult<T> = berth_meta_sql::StoreResult<T, Postgres>;

#[cfg(test)]
mod tests {
    use berth_meta::MetaError;

    use super::*;

    #[test]
    fn connection_and_shutdown_codes_are_transient() {
        for code in ["08000", "08006", "08001", "57P01", "57P02", "57P03", "53300", "57014", "40001", "40P01"] {
            assert!(Postgres::is_transient(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22021", "57P04", ""] {
            assert!(!Postgres::is_transient(code), "{code}");
        }
    }

    #[test]
    fn pool_and_io_errors_are_unavailable() {
        let meta = |e: sqlx::Error| MetaError::from(StoreError::from(e));
        assert!(matches!(meta(sqlx::Error::PoolTimedOut), MetaError::Unavailable(_)));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(meta(sqlx::Error::Io(refused)), MetaError::Unavailable(_)));
        assert!(matches!(meta(sqlx::Error::RowNotFound), MetaError::Backend(_)));
    }

    #[test]
    fn configuration_errors_do_not_echo_their_cause() {
        let err = MetaError::from(StoreError::from(sqlx::Error::Configuration("postgres://u:hunter2@db/x".into())));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
