//! The one error idiom of the SQL backends.
//!
//! Inside a backend, functions return [`StoreResult`] and use `?` on sqlx
//! calls: a database error stays a `sqlx::Error` until it leaves the store,
//! so a retry loop can still read its code. At the trait boundary `?` (or
//! `MetaError::from`) classifies it once, by the backend's [`Dialect`]:
//! trouble worth retrying later (lost connection, timeout, lock contention,
//! disk full) becomes [`MetaError::Unavailable`] (the API answers 503),
//! anything else [`MetaError::Backend`]. Answers that are already final (a
//! refused reference, an immutable tag, ...) travel as [`MetaError`].

use std::fmt;
use std::marker::PhantomData;

use berth_meta::{MetaError, QuotaKind};

/// What differs between databases when classifying their errors.
pub trait Dialect: Send + Sync + 'static {
    /// Names the database in messages that must not quote its settings.
    const NAME: &'static str;

    /// Whether a database error code means "cannot serve us right now"
    /// rather than "this request is wrong".
    fn is_transient(code: &str) -> bool;

    /// Whether the database aborted the transaction to resolve a conflict
    /// with another one, so running it again from the start is correct.
    fn is_retryable(code: &str) -> bool {
        let _ = code;
        false
    }
}

/// An error inside a store: a final answer, or a database error still to
/// classify (by `D` when it is converted into [`MetaError`]).
pub enum StoreError<D> {
    Meta(MetaError),
    Sql(sqlx::Error, PhantomData<fn() -> D>),
}

pub type StoreResult<T, D> = Result<T, StoreError<D>>;

impl<D> fmt::Debug for StoreError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Meta(e) => f.debug_tuple("Meta").field(e).finish(),
            StoreError::Sql(e, _) => f.debug_tuple("Sql").field(e).finish(),
        }
    }
}

impl<D> From<sqlx::Error> for StoreError<D> {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Sql(err, PhantomData)
    }
}

impl<D> From<MetaError> for StoreError<D> {
    fn from(err: MetaError) -> Self {
        StoreError::Meta(err)
    }
}

impl<D: Dialect> From<StoreError<D>> for MetaError {
    fn from(err: StoreError<D>) -> Self {
        match err {
            StoreError::Meta(err) => err,
            StoreError::Sql(err, _) => classify::<D>(err),
        }
    }
}

impl<D: Dialect> StoreError<D> {
    /// See [`Dialect::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sql(sqlx::Error::Database(db), _) => db.code().is_some_and(|c| D::is_retryable(&c)),
            _ => false,
        }
    }

    /// Maps a unique violation to [`MetaError::Conflict`] naming what
    /// clashed (a name already taken); other errors are left as they are.
    pub fn conflict_on(self, what: &str) -> Self {
        match self {
            StoreError::Sql(sqlx::Error::Database(db), _) if db.is_unique_violation() => {
                MetaError::Conflict(what.to_owned()).into()
            }
            other => other,
        }
    }
}

/// Classifies a sqlx error for the API (see the module docs).
pub fn classify<D: Dialect>(err: sqlx::Error) -> MetaError {
    match &err {
        // Configuration errors may quote the connection URL (and its password).
        sqlx::Error::Configuration(_) => MetaError::Backend(format!("invalid {} connection settings", D::NAME)),
        sqlx::Error::Migrate(m) => classify_migration::<D>(m),
        sqlx::Error::Database(db) if quota_refusal(db.message()).is_some() => {
            MetaError::QuotaExceeded(quota_refusal(db.message()).unwrap_or(QuotaKind::Bytes))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let message = format!("{} ({} code {code})", db.message(), D::NAME);
            if D::is_transient(&code) { MetaError::Unavailable(message) } else { MetaError::Backend(message) }
        }
        e if is_unavailable::<D>(e) => MetaError::Unavailable(err.to_string()),
        _ => MetaError::Backend(err.to_string()),
    }
}

/// The quota a usage trigger refused a write for (the error text the
/// triggers of `migrations/*/0009_usage_quotas.sql` raise).
fn quota_refusal(message: &str) -> Option<QuotaKind> {
    match message.trim() {
        "berth:quota:bytes" => Some(QuotaKind::Bytes),
        "berth:quota:repositories" => Some(QuotaKind::Repositories),
        _ => None,
    }
}

/// Classifies a failed migration run: transient when the statement that
/// failed did so for a transient reason.
pub fn classify_migration<D: Dialect>(err: &sqlx::migrate::MigrateError) -> MetaError {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) if is_unavailable::<D>(e) => {
            MetaError::Unavailable(err.to_string())
        }
        _ => MetaError::Backend(err.to_string()),
    }
}

fn is_unavailable<D: Dialect>(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => D::is_transient(&db.code().unwrap_or_default()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Test;

    impl Dialect for Test {
        const NAME: &'static str = "Test";
        fn is_transient(code: &str) -> bool {
            code == "busy"
        }
        fn is_retryable(code: &str) -> bool {
            code == "deadlock"
        }
    }

    #[test]
    fn pool_and_io_errors_are_unavailable() {
        assert!(matches!(classify::<Test>(sqlx::Error::PoolTimedOut), MetaError::Unavailable(_)));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(classify::<Test>(sqlx::Error::Io(refused)), MetaError::Unavailable(_)));
        assert!(matches!(classify::<Test>(sqlx::Error::RowNotFound), MetaError::Backend(_)));
    }

    #[test]
    fn configuration_errors_do_not_echo_their_cause() {
        let err = classify::<Test>(sqlx::Error::Configuration("postgres://u:hunter2@db/x is odd".into()));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn final_answers_pass_through() {
        let err: StoreError<Test> = MetaError::UploadUnknown.into();
        assert!(!err.is_retryable());
        assert!(matches!(MetaError::from(err), MetaError::UploadUnknown));
    }
}
