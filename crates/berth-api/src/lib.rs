//! The HTTP layer. [`envelope`] is what every request passes around the
//! route table, [`routes`]; [`endpoint`] parses `/v2/<name>/...` paths
//! (once per request, onto the request); [`auth`]
//! authorizes; handlers parse input, call one registry service method and
//! set headers; [`error`] is the error table (situation to OCI code, status
//! and message; `error::json` for `/api/v1`); [`serve`] runs the
//! connection loop.

pub mod auth;
mod body;
pub mod client;
pub mod endpoint;
pub mod envelope;
pub mod error;
mod handlers;
mod headers;
pub mod metrics;
mod middleware;
mod range;
pub mod routes;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use berth_auth::AuthService;
use berth_registry::{Maintenance, Registry};

pub use envelope::App;
pub use routes::{router, router_with_pages};

/// Everything handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

pub struct StateInner {
    /// The registry the handlers serve, with the maintenance jobs over the
    /// same stores (the admin API's retention rules).
    pub maintenance: Maintenance,
    pub settings: ApiSettings,
    /// `None` when authentication is disabled (`auth.enabled = false`).
    pub auth: Option<Arc<AuthService>>,
    /// Bearer tokens recently refused for lacking a scope.
    pub scope_refusals: auth::ScopeRefusals,
}

/// HTTP-level settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// External base URL without a trailing slash; empty for relative `Location`s.
    pub public_url: String,
    /// A request body idle for this long is aborted.
    pub body_idle_timeout: Duration,
    /// Deadline for requests that do not stream blob data.
    pub request_timeout: Duration,
    /// The token flow's `service` (challenge and token audience).
    pub auth_service: String,
    /// Whether connections are TLS (for URLs derived from the Host header).
    pub tls: bool,
    /// Serve `GET /metrics` on the main listener.
    pub metrics_on_main: bool,
    /// Reverse proxies whose forwarding headers are believed (see [`client`]).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            public_url: String::new(),
            body_idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            auth_service: "berth".into(),
            tls: false,
            metrics_on_main: true,
            trusted_proxies: Vec::new(),
        }
    }
}

impl AppState {
    pub fn new(maintenance: Maintenance, mut settings: ApiSettings, auth: Option<Arc<AuthService>>) -> Self {
        settings.public_url = settings.public_url.trim_end_matches('/').to_owned();
        AppState { inner: Arc::new(StateInner { maintenance, settings, auth, scope_refusals: Default::default() }) }
    }

    pub fn auth(&self) -> Option<&Arc<AuthService>> {
        self.inner.auth.as_ref()
    }

    pub fn scope_refusals(&self) -> &auth::ScopeRefusals {
        &self.inner.scope_refusals
    }

    pub fn registry(&self) -> &Registry {
        self.inner.maintenance.registry()
    }

    pub fn maintenance(&self) -> &Maintenance {
        &self.inner.maintenance
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// A URL for `path` (which starts with `/`): absolute when a public URL
    /// is configured, else relative, which every client resolves.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.settings.public_url, path)
    }
}
