//! Re-running transactions the database aborted to resolve a conflict.
//!
//! The store runs at READ COMMITTED and makes its writes safe with upserts
//! and row locks, so serialization failures should not occur and deadlocks
//! only in rare lock orders (say, a push moving two tags away from a
//! manifest that is being deleted). Either way Postgres rolls back one of the
//! transactions; running it again from the start is correct and almost
//! always succeeds.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_meta::{MetaError, Result};

use crate::error::StoreResult;

/// Attempts in total, including the first.
const MAX_ATTEMPTS: u32 = 4;
/// Pause before the second attempt; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Runs `attempt` until it succeeds, fails for a reason other than a
/// serialization failure or deadlock, or has been tried [`MAX_ATTEMPTS`]
/// times. Each call of `attempt` must start its own transaction.
pub(crate) async fn retrying<T, F, Fut>(operation: &'static str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(err) if err.is_retryable() && tries < MAX_ATTEMPTS => {
                let pause = backoff(tries);
                tracing::debug!(operation, attempt = tries, ?pause, error = ?err, "transaction conflict; retrying");
                tokio::time::sleep(pause).await;
                tries += 1;
            }
            Err(err) => {
                if err.is_retryable() {
                    tracing::warn!(operation, attempts = tries, "transaction conflict persisted; giving up");
                }
                return Err(MetaError::from(err));
            }
            Ok(value) => return Ok(value),
        }
    }
}

/// Exponential backoff with up to 100% jitter, so transactions that
/// collided once do not collide again in lockstep.
fn backoff(tries: u32) -> Duration {
    let base = FIRST_BACKOFF * 2u32.saturating_pow(tries.saturating_sub(1));
    // Sub-second clock noise is random enough to desynchronize retries.
    let noise = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let jitter = base.mul_f64(f64::from(noise % 1000) / 1000.0);
    base + jitter
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::StoreError;

    fn deadlock() -> StoreError {
        // A database error cannot be built outside sqlx; a stand-in with the
        // same SQLSTATE is enough for `is_retryable`.
        StoreError::from(sqlx::Error::Database(Box::new(FakeDbError("40P01"))))
    }

    #[derive(Debug)]
    struct FakeDbError(&'static str);

    impl std::fmt::Display for FakeDbError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "deadlock detected")
        }
    }

    impl std::error::Error for FakeDbError {}

    impl sqlx::error::DatabaseError for FakeDbError {
        fn message(&self) -> &str {
            "deadlock detected"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[tokio::test]
    async fn conflicts_are_retried_then_reported_as_unavailable() {
        let calls = AtomicU32::new(0);
        let result: Result<()> = retrying("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(deadlock())
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS);
        assert!(matches!(result, Err(MetaError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_later_success_wins() {
        let calls = AtomicU32::new(0);
        let result = retrying("test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 { Err(deadlock()) } else { Ok(7) }
        })
        .await;
        assert_eq!(result.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<()> = retrying("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(MetaError::UploadUnknown.into())
        })
        .await;
        assert!(matches!(result, Err(MetaError::UploadUnknown)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
