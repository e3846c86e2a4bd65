//! How to reach the database, and the sqlx options built from it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use berth_meta::{MetaError, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// How to reach the database. `Debug` masks the URL's password.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database?sslmode=...`. May hold a
    /// password: it never appears in errors, logs or `Debug` output.
    pub url: String,
    /// Upper bound of the connection pool (per process: replicas add up
    /// against the server's `max_connections`).
    pub max_connections: u32,
    /// Connections kept open while idle, so a burst does not start cold.
    pub min_connections: u32,
    /// How long a caller waits for a pooled connection (including opening a
    /// new one while the server restarts) before the store answers
    /// [`MetaError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Server-side cap on one statement (`statement_timeout`); `None` leaves
    /// the server's setting. Migrations are exempt.
    pub statement_timeout: Option<Duration>,
    /// Idle connections are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this long, so server-side session
    /// memory is returned and a failover's new primary gets used.
    pub max_lifetime: Option<Duration>,
    /// Schema holding Berth's tables (put first on `search_path`); it must
    /// exist. `None` uses the server's `search_path` (usually `public`).
    pub schema: Option<String>,
    /// Shown in `pg_stat_activity`, to tell replicas apart.
    pub application_name: String,
}

impl PostgresSettings {
    /// `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: url.into(),
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            schema: None,
            application_name: "berth".to_owned(),
        }
    }

    /// Options for pooled connections.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions> {
        let mut options = self.base_options()?;
        if let Some(timeout) = self.statement_timeout {
            // Milliseconds, the GUC's unit; 0 would mean "no limit", so round up.
            options = options.options([("statement_timeout", timeout.as_millis().max(1))]);
        }
        Ok(options)
    }

    /// Options for the dedicated migration connection: no statement timeout,
    /// since a future migration may legitimately rewrite a large table.
    pub(crate) fn migration_options(&self) -> Result<PgConnectOptions> {
        Ok(self.base_options()?.options([("statement_timeout", 0)]))
    }

    fn base_options(&self) -> Result<PgConnectOptions> {
        // Parse errors can quote the URL, so they are replaced, not wrapped.
        let mut options = PgConnectOptions::from_str(&self.url)
            .map_err(|_| MetaError::Backend("invalid Postgres URL".into()))?
            .application_name(&self.application_name);
        if let Some(schema) = &self.schema {
            if !is_plain_identifier(schema) {
                return Err(MetaError::Backend(format!(
                    "Postgres schema {schema:?} must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
                )));
            }
            options = options.options([("search_path", schema)]);
        }
        Ok(options)
    }

    pub(crate) fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections.max(1))
            .min_connections(self.min_connections.min(self.max_connections.max(1)))
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .max_lifetime(self.max_lifetime)
            // After a server restart or failover every idle connection is
            // dead, and handing one out would fail a request that a fresh
            // connection would have served. The ping costs one round trip
            // per acquire (the pool also pings on release), which is cheap
            // next to a failed push; a dead connection is discarded and the
            // pool opens a new one, retrying until acquire_timeout. This is
            // sqlx's default, spelled out so nobody "optimizes" it away.
            .test_before_acquire(true)
    }
}

/// A schema name that needs no quoting anywhere (search_path, SQL).
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("schema", &self.schema)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// The URL with any password (in the userinfo or a `password=` parameter)
/// replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".to_owned() };
    // Userinfo ends at the last '@', since a password may hold '@', '/' or
    // '?'; an '@' further on (in a parameter) only makes this mask more.
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{tail}"),
            None => format!("{userinfo}@{tail}"),
        },
        None => rest.to_owned(),
    };
    let Some((base, query)) = rest.split_once('?') else { return format!("{scheme}://{rest}") };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{scheme}://{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_passwords() {
        let settings = PostgresSettings::new("postgres://berth:hunter2@db:5432/berth?sslmode=require");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://berth:***@db:5432/berth?sslmode=require"), "{shown}");
    }

    #[test]
    fn redacts_every_password_form() {
        assert_eq!(redact_url("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u:a@b@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u:a/b?c@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgresql://h/db?user=u&password=secret"), "postgresql://h/db?user=u&password=***");
        assert_eq!(redact_url("postgres://u@h"), "postgres://u@h");
        assert_eq!(redact_url("not a url with secret"), "***");
    }

    #[test]
    fn invalid_urls_are_not_echoed() {
        let settings = PostgresSettings::new("postgres://u:hunter2@h:notaport/db");
        let err = settings.connect_options().expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn schema_names_are_checked() {
        for good in ["berth", "berth_t_0a1b", "_x"] {
            let settings = PostgresSettings { schema: Some(good.into()), ..PostgresSettings::new("postgres://h/db") };
            assert!(settings.connect_options().is_ok(), "{good}");
        }
        for bad in ["", "Berth", "1x", "a-b", "a\"; DROP", "a b"] {
            let settings = PostgresSettings { schema: Some(bad.into()), ..PostgresSettings::new("postgres://h/db") };
            assert!(settings.connect_options().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeouts_become_startup_options() {
        let settings = PostgresSettings {
            statement_timeout: Some(Duration::from_millis(1500)),
            schema: Some("berth".into()),
            ..PostgresSettings::new("postgres://h/db")
        };
        let options = settings.connect_options().expect("options");
        let startup = options.get_options().unwrap_or_default();
        assert!(startup.contains("search_path=berth"), "{startup}");
        assert!(startup.contains("statement_timeout=1500"), "{startup}");
        let migration = settings.migration_options().expect("options");
        assert!(migration.get_options().unwrap_or_default().contains("statement_timeout=0"));
    }
}
