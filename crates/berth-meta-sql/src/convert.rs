//! Value conversions between SQL columns and `berth-meta` terms.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_meta::MetaError;
use berth_oci::{Digest, RepositoryName};

/// Sizes and offsets are `u64` in the API and signed 64-bit in SQL.
pub fn to_sql_int(value: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(value).map_err(|_| MetaError::Backend(format!("{what} {value} does not fit a 64-bit signed integer")))
}

pub fn from_sql_int(value: i64, what: &str) -> Result<u64, MetaError> {
    u64::try_from(value).map_err(|_| MetaError::Backend(format!("stored {what} is negative ({value})")))
}

/// A count that SQL returns as a signed integer; never negative in practice.
pub fn count(value: i64) -> u64 {
    value.max(0) as u64
}

pub fn parse_digest(text: &str) -> Result<Digest, MetaError> {
    Digest::parse(text).map_err(|e| MetaError::Backend(format!("stored digest {text:?} is invalid: {e}")))
}

pub fn parse_repository(text: &str) -> Result<RepositoryName, MetaError> {
    RepositoryName::parse(text)
        .map_err(|e| MetaError::Backend(format!("stored repository name {text:?} is invalid: {e}")))
}

/// Milliseconds since the Unix epoch, for rows whose API call carries no time.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_and_reject_overflow() {
        assert_eq!(to_sql_int(42, "size").ok(), Some(42));
        assert!(to_sql_int(u64::MAX, "size").is_err());
        assert!(from_sql_int(-1, "size").is_err());
        assert_eq!(count(-3), 0);
    }

    #[test]
    fn bad_stored_values_are_backend_errors() {
        assert!(matches!(parse_digest("nope"), Err(MetaError::Backend(_))));
        assert!(matches!(parse_repository("UPPER"), Err(MetaError::Backend(_))));
    }
}
