//! Builds the registry and its HTTP server from a [`Config`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use berth_api::serve::{ServeOptions, load_tls, serve};
use berth_api::{ApiSettings, AppState};
use berth_auth::{AuthService, AuthSettings, JwtKeys, UpstreamAccess, UpstreamNamespace, UpstreamNamespaces, admin};
use berth_config::{Config, UpstreamAccess as ConfigAccess};
use berth_registry::proxy::UpstreamSpec;
use berth_registry::quota::QuotaPolicy;
use berth_registry::webhooks::{EventKind, Hook, Webhooks};
use berth_registry::{ImmutableTags, Maintenance, Policy, Registry};
use berth_upstream::{UpstreamClient, UpstreamSettings};
use tokio::net::TcpListener;

use crate::backends::{self, BackendError, Stores};
use crate::scheduler;

/// A registry assembled from configuration, ready to serve.
pub struct App {
    pub registry: Registry,
    /// Garbage collection, retention and upload expiry over the same stores.
    pub maintenance: Maintenance,
    /// `None` when authentication is disabled.
    pub auth: Option<Arc<AuthService>>,
    pub state: AppState,
    pub config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The maintenance schedule `serve` runs.
    jobs: Vec<scheduler::Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartError> {
        crate::files::prepare_dir(&config.data_dir)
            .map_err(|e| StartError::Config(format!("data directory {}: {e}", config.data_dir.display())))?;
        let stores = backends::open_meta(&config, config.database.migrate_on_start).await?;
        let blobs = backends::open_blobs(&config).await?;
        let auth = build_auth(&config, &stores).await?;
        crate::files::secure(&config);
        let hooks = config
            .webhooks
            .iter()
            .map(|h| Hook {
                name: h.name.clone(),
                url: h.url.clone(),
                secret: h.secret.expose().to_owned(),
                owners: h.owners.clone(),
                events: h.events.iter().filter_map(|e| EventKind::parse(e)).collect(),
            })
            .collect();
        let webhooks = Webhooks::new(stores.events.clone(), hooks);
        let meta = stores.meta;
        let policy = registry_policy(&config)?;
        let retention = crate::maintenance::retention_policy(&config).map_err(StartError::Config)?;
        let upstreams = upstream_specs(&config)?;
        let registry =
            Registry::with_upstreams(meta, blobs, policy, Some(webhooks), upstreams).map_err(StartError::Config)?;
        // The store's write-time checks read the `[quotas]` defaults from the database.
        registry.apply_quota_defaults().await.map_err(|e| StartError::Config(format!("quotas: {e}")))?;
        let settings = ApiSettings {
            public_url: config.public_url.clone(),
            body_idle_timeout: config.http.body_idle_timeout,
            request_timeout: config.http.request_timeout,
            auth_service: config.auth.service.clone(),
            tls: config.tls.cert.is_some(),
            metrics_on_main: config.metrics.enabled && config.metrics.listen.is_none(),
            trusted_proxies: config.http.trusted_proxy_nets().map_err(StartError::Config)?,
        };
        let maintenance = Maintenance::new(registry.clone(), stores.maintenance.clone()).with_config_rules(retention);
        let state = AppState::new(maintenance.clone(), settings, auth.clone());
        let jobs = scheduler::jobs(&config);
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key).map_err(StartError::Config)?),
            _ => None,
        };
        Ok(App { registry, maintenance, auth, state, config, tls, jobs })
    }

    /// Serves on `listener` until `shutdown` resolves (and metrics on their
    /// own listener, if configured).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let opts = ServeOptions {
            header_read_timeout: self.config.http.header_read_timeout,
            shutdown_timeout: self.config.http.shutdown_timeout,
            tls: self.tls.clone(),
            max_connections: self.config.http.max_connections,
        };
        let metrics = match (self.config.metrics.enabled, self.config.metrics.listen) {
            (true, Some(addr)) => match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(listen = %addr, "metrics listener");
                    let router = berth_api::routes::metrics_router(self.state.clone());
                    let plain = ServeOptions { tls: None, ..opts.clone() };
                    Some(tokio::spawn(serve(l, router, plain, std::future::pending())))
                }
                Err(e) => {
                    tracing::error!(listen = %addr, error = %e, "cannot listen for metrics");
                    None
                }
            },
            _ => None,
        };
        // Every replica drains the webhook queue (claims keep them apart).
        let deliverer = self.registry.webhooks().map(|w| tokio::spawn(w.deliverer().run(std::future::pending())));
        // Every replica runs the schedule; leases keep each job to one runner.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let jobs = scheduler::spawn(self.maintenance.clone(), self.jobs.clone(), stopped);
        let pages = self.config.ui.enabled.then(|| berth_web::routes(self.state.clone()));
        serve(listener, berth_api::router_with_pages(self.state, pages), opts, shutdown).await;
        let _ = stop.send(true);
        for job in jobs {
            let _ = job.await;
        }
        for task in [metrics, deliverer].into_iter().flatten() {
            task.abort();
        }
    }
}

/// The registry rules that come from configuration.
pub fn registry_policy(config: &Config) -> Result<Policy, StartError> {
    Ok(Policy {
        immutable_tags: ImmutableTags::new(&config.tags.immutable).map_err(StartError::Config)?,
        allow_sparse: config.manifests.allow_sparse,
        max_manifest_size: config.manifests.max_size,
        quotas: QuotaPolicy {
            owner_bytes: config.quotas.owner_bytes.bytes(),
            owner_repositories: config.quotas.owner_repositories,
            blob_max_size: config.quotas.blob_max_size.bytes(),
        },
    })
}

/// The `[[upstreams]]` of the pull-through cache, with their clients.
fn upstream_specs(config: &Config) -> Result<Vec<UpstreamSpec>, StartError> {
    let mut specs = Vec::new();
    for u in &config.upstreams {
        let mut settings = UpstreamSettings::new(&u.name, &u.url);
        settings.header_timeout = u.timeout;
        settings.idle_timeout = u.timeout;
        settings.connect_timeout = settings.connect_timeout.min(u.timeout);
        let password = u.resolved_password().map_err(StartError::Config)?;
        if !u.username.is_empty() {
            settings = settings.with_credentials(&u.username, password.expose());
        }
        let client = UpstreamClient::new(settings).map_err(|e| StartError::Config(e.to_string()))?;
        specs.push(UpstreamSpec {
            client,
            name: u.name.clone(),
            revalidate_after: u.revalidate_after,
            repositories: u.repositories.clone(),
            mirror_root: u.mirror_root,
        });
        tracing::info!(upstream = %u.name, url = %u.url, access = u.access.as_str(), mirror_root = u.mirror_root,
            "pull-through cache");
    }
    Ok(specs)
}

/// Who may read each upstream's namespace, for the access decisions.
fn upstream_namespaces(config: &Config) -> UpstreamNamespaces {
    UpstreamNamespaces::new(
        config
            .upstreams
            .iter()
            .map(|u| UpstreamNamespace {
                name: u.name.clone(),
                access: match u.access {
                    ConfigAccess::Public => UpstreamAccess::Public,
                    ConfigAccess::Users => UpstreamAccess::Users,
                    ConfigAccess::Members => UpstreamAccess::Members,
                },
                mirror_root: u.mirror_root,
            })
            .collect(),
    )
}

/// The authentication service, or `None` when `auth.enabled = false`.
async fn build_auth(config: &Config, stores: &Stores) -> Result<Option<Arc<AuthService>>, StartError> {
    let a = &config.auth;
    if !a.enabled {
        if !config.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %config.listen,
                "AUTHENTICATION IS DISABLED (auth.enabled = false) and Berth listens beyond loopback: \
                 anyone who can reach it may push, overwrite and delete images"
            );
        }
        return Ok(None);
    }
    let key_file = a.jwt_key_file.clone().unwrap_or_else(|| config.data_dir.join("auth").join("jwt-ed25519.pem"));
    let keys = JwtKeys::load(&key_file, &a.jwt_verify_key_files, &a.issuer, &a.service, a.token_ttl)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let settings = AuthSettings {
        allow_password: a.allow_password,
        failed_login_limit: a.failed_login_limit,
        lockout_max: a.lockout_max,
        session_ttl: config.ui.session_ttl,
    };
    let password = config.admin_password.expose();
    if !password.is_empty()
        && admin::ensure_admin(stores.auth.as_ref(), password).await.map_err(|e| StartError::Config(e.to_string()))?
    {
        tracing::info!("created the site admin \"admin\" from admin_password");
    }
    warn_about_realm(config);
    let service = AuthService::new(stores.auth.clone(), keys, settings)
        .map_err(|e| StartError::Config(e.to_string()))?
        .with_upstreams(upstream_namespaces(config));
    Ok(Some(Arc::new(service)))
}

/// With `public_url` empty, clients are sent to a token realm built from
/// each request's `Host` (and scheme, which behind a TLS-terminating proxy
/// is `http` unless the proxy is trusted): say so when that can matter.
fn warn_about_realm(config: &Config) {
    if !config.public_url.is_empty() || config.listens_on_loopback_only() {
        return;
    }
    let scheme = if config.tls.cert.is_some() { "https" } else { "http" };
    if config.http.trusted_proxies.is_empty() {
        tracing::warn!(
            realm = %format!("{scheme}://<Host header>/v2/token"),
            "public_url is empty: clients are sent to this token realm; behind a TLS-terminating proxy they \
             would be sent to plain http. Set public_url, or list the proxy in http.trusted_proxies so its \
             X-Forwarded-Proto/-Host (or Forwarded) headers are used"
        );
    } else {
        tracing::warn!(
            realm = %format!("<X-Forwarded-Proto or {scheme}>://<X-Forwarded-Host or Host>/v2/token"),
            "public_url is empty: the token realm comes from each request's forwarding headers \
             (from http.trusted_proxies) or Host; set public_url to pin it"
        );
    }
}

/// Builds the app, binds `config.listen` and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let started = Instant::now();
    let addr = config.listen;
    let app = App::build(config).await?;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
    tracing::info!(
        listen = %bound,
        database = app.registry.backends().database,
        storage = app.registry.backends().storage,
        auth = app.config.auth.enabled,
        tls = app.tls.is_some(),
        startup_ms = started.elapsed().as_millis() as u64,
        "berth ready"
    );
    app.serve(listener, shutdown).await;
    Ok(())
}
