//! What an upstream client is built from: where the registry is, who to be
//! there, and how long to wait for it.

use std::fmt;
use std::time::Duration;

/// A password or token that never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// A user name and its password (or access token), sent as HTTP Basic to
/// the registry when it asks for Basic, or to its token realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Credentials { username: username.into(), password: password.into() }
    }
}

/// Settings of one upstream registry. Start from [`UpstreamSettings::new`]
/// (sensible timeouts, anonymous) and change the fields that matter.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// Short name used in errors and logs (`hub`, `ghcr`).
    pub name: String,
    /// Base URL, `http://` or `https://`, with an optional path prefix
    /// before `/v2/`; no user info, query or fragment.
    pub url: String,
    /// Anonymous when `None`.
    pub credentials: Option<Credentials>,
    /// Time to establish a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time from sending a request to receiving the response headers.
    pub header_timeout: Duration,
    /// Longest pause while a body is read; the body as a whole has no limit.
    pub idle_timeout: Duration,
    /// `n` sent with tag and catalog listings; `None` lets the upstream choose.
    pub page_size: Option<u32>,
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub ca_certificates_pem: Option<Vec<u8>>,
}

impl UpstreamSettings {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        UpstreamSettings {
            name: name.into(),
            url: url.into(),
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            page_size: None,
            ca_certificates_pem: None,
        }
    }

    pub fn with_credentials(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.credentials = Some(Credentials::new(username, password));
        self
    }
}

impl fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("credentials", &self.credentials)
            .field("connect_timeout", &self.connect_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("page_size", &self.page_size)
            .field("ca_certificates_pem", &self.ca_certificates_pem.as_ref().map(|p| format!("{} bytes", p.len())))
            .finish()
    }
}

/// Settings that cannot make a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {name:?}: {reason}")]
pub struct SettingsError {
    pub name: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = UpstreamSettings::new("hub", "https://registry-1.docker.io").with_credentials("bob", "hunter2-pass");
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("bob"));
        assert_eq!(Secret::new("x").to_string(), "***");
        assert_eq!(s.credentials.unwrap().password.expose(), "hunter2-pass");
    }
}
