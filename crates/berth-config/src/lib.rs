//! Configuration: defaults < TOML file < `BERTH_*` environment variables < CLI flags.
//!
//! Every key lives in a typed section struct; unknown keys in the file are
//! rejected. An environment variable `BERTH_<SECTION>_<KEY>` (or `BERTH_<KEY>`
//! for top-level keys, `BERTH_STORAGE_S3_<KEY>` for nested sections) overrides
//! the key whose dotted path it spells; see [`env`].

mod env;
mod secret;
mod sections;
mod size;
mod upstreams;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

pub use env::{OTHER_PREFIXES, OTHER_VARS, UnknownVar, unknown_vars};
pub use secret::{Secret, mask_url};
pub use sections::*;
pub use size::{Rate, Size, human as human_size};
pub use upstreams::{UpstreamAccess, UpstreamConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: not found")]
    FileNotFound(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Invalid(e.to_string())
    }
}

/// Whether `name` is a `BERTH_*` variable that sets a configuration key
/// (for checking deployment files).
pub fn is_config_var(name: &str) -> bool {
    env::known_keys().keys().any(|k| env::var_name(k) == name)
}

impl Config {
    /// Loads defaults, then `file` (if any), then `BERTH_*` variables from `vars`.
    pub fn load(file: Option<&Path>, vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::FileNotFound(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let overrides = env::overrides(vars).map_err(ConfigError::Invalid)?;
        figment = figment.merge(Serialized::globals(overrides));
        let mut config: Config = figment.extract()?;
        config.resolve_defaults();
        config.validate()?;
        Ok(config)
    }

    /// Loads from the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, std::env::vars())
    }

    /// Fills keys whose defaults derive from others (`data_dir`).
    fn resolve_defaults(&mut self) {
        if self.database.url.expose().is_empty() {
            let db = self.data_dir.join("berth.db");
            self.database.url = Secret::new(format!("sqlite://{}", db.display()));
        }
        if self.storage.path.as_os_str().is_empty() {
            self.storage.path = self.data_dir.join("blobs");
        }
        if self.auth.jwt_key_file.is_none() {
            self.auth.jwt_key_file = Some(self.data_dir.join("auth").join("jwt-ed25519.pem"));
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let url = &self.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return bad(format!("public_url {:?} must start with http:// or https://", self.public_url));
        }
        for rule in &self.tags.immutable {
            if rule.is_empty() {
                return bad("tags.immutable: empty pattern".into());
            }
        }
        if self.manifests.max_size == 0 {
            return bad("manifests.max_size must be positive".into());
        }
        if self.http.max_connections == 0 {
            return bad("http.max_connections must be positive".into());
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections must be positive".into());
        }
        if self.auth.service.is_empty() || self.auth.issuer.is_empty() {
            return bad("auth.service and auth.issuer must not be empty".into());
        }
        if self.auth.token_ttl.as_secs() < 10 {
            return bad("auth.token_ttl must be at least 10s".into());
        }
        if self.storage.backend == StorageBackend::S3 {
            if self.storage.s3.bucket.is_empty() {
                return bad("storage.s3.bucket is required when storage.backend = \"s3\"".into());
            }
            if self.storage.s3.part_size < 5 * 1024 * 1024 {
                return bad("storage.s3.part_size must be at least 5 MiB (5242880)".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for hook in &self.webhooks {
            if hook.name.is_empty() || !names.insert(hook.name.as_str()) {
                return bad(format!("webhooks: every hook needs a unique name ({:?})", hook.name));
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return bad(format!("webhooks {:?}: url must be http:// or https://", hook.name));
            }
            if let Some(e) = hook.events.iter().find(|e| !matches!(e.as_str(), "push" | "delete" | "tag" | "quota")) {
                return bad(format!("webhooks {:?}: unknown event {e:?} (push, delete, tag, quota)", hook.name));
            }
        }
        for (i, rule) in self.retention.rules.iter().enumerate() {
            if rule.repositories.is_empty() {
                return bad(format!("retention.rules[{i}]: repositories must not be empty (use \"*\" for all)"));
            }
        }
        if let Err(e) = upstreams::validate(&self.upstreams) {
            return bad(e);
        }
        if let Err(e) = self.http.trusted_proxy_nets() {
            return bad(e);
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key must be set together".into());
        }
        Ok(())
    }

    /// Whether `listen` only accepts connections from this machine.
    pub fn listens_on_loopback_only(&self) -> bool {
        self.listen.ip().is_loopback()
    }

    /// The effective configuration as TOML-like JSON, secrets masked.
    pub fn to_masked_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
