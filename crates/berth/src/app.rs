//! Builds the registry and its HTTP server from a [`Config`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use berth_api::serve::{ServeOptions, load_tls, serve};
use berth_api::{ApiSettings, AppState};
use berth_config::Config;
use berth_registry::{ImmutableTags, Policy, Registry};
use tokio::net::TcpListener;

use crate::backends::{self, BackendError};

/// A registry assembled from configuration, ready to serve.
pub struct App {
    pub registry: Registry,
    pub state: AppState,
    pub config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
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
        let meta = backends::open_meta(&config, config.database.migrate_on_start).await?;
        let blobs = backends::open_blobs(&config).await?;
        let policy = Policy {
            immutable_tags: ImmutableTags::new(&config.tags.immutable).map_err(StartError::Config)?,
            allow_sparse: config.manifests.allow_sparse,
            max_manifest_size: config.manifests.max_size,
        };
        let registry = Registry::new(meta, blobs, policy);
        let settings = ApiSettings {
            public_url: config.public_url.clone(),
            body_idle_timeout: config.http.body_idle_timeout,
            request_timeout: config.http.request_timeout,
        };
        let state = AppState::new(registry.clone(), settings);
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key).map_err(StartError::Config)?),
            _ => None,
        };
        Ok(App { registry, state, config, tls })
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let opts = ServeOptions {
            header_read_timeout: self.config.http.header_read_timeout,
            shutdown_timeout: self.config.http.shutdown_timeout,
            tls: self.tls.clone(),
        };
        serve(listener, berth_api::router(self.state), opts, shutdown).await;
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
        database = app.registry.meta().backend(),
        storage = app.registry.blob_store().backend(),
        auth = app.config.auth.enabled,
        tls = app.tls.is_some(),
        startup_ms = started.elapsed().as_millis() as u64,
        "berth ready"
    );
    app.serve(listener, shutdown).await;
    Ok(())
}
