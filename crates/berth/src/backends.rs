//! Chooses and opens the metadata and blob backends named by the configuration.

use std::sync::Arc;

use berth_blob::{BlobStore, FsBlobStore, S3BlobStore, S3Settings};
use berth_config::{Config, StorageBackend};
use berth_meta::{AuthStore, EventStore, MaintenanceStore, MetaStore};
use berth_meta_postgres::{PostgresMetaStore, PostgresSettings};
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Database(String),
    #[error("storage: {0}")]
    Storage(String),
}

/// The database behind the store traits.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetaStore>,
    pub auth: Arc<dyn AuthStore>,
    pub events: Arc<dyn EventStore>,
    /// Garbage collection, retention, upload expiry and their leases.
    pub maintenance: Arc<dyn MaintenanceStore>,
}

impl Stores {
    fn of<S: MetaStore + AuthStore + EventStore + MaintenanceStore>(store: S) -> Stores {
        let store = Arc::new(store);
        Stores { meta: store.clone(), auth: store.clone(), events: store.clone(), maintenance: store }
    }
}

/// Opens the metadata store; with `migrate`, applies pending migrations first.
pub async fn open_meta(config: &Config, migrate: bool) -> Result<Stores, BackendError> {
    let url = config.database.url.expose();
    if url.starts_with("sqlite:") {
        return Ok(Stores::of(open_sqlite(config, migrate).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let settings = PostgresSettings {
            max_connections: config.database.max_connections,
            acquire_timeout: config.database.acquire_timeout,
            ..PostgresSettings::new(url)
        };
        let store = PostgresMetaStore::connect(&settings).await.map_err(|e| BackendError::Database(e.to_string()))?;
        if migrate {
            store.migrate().await.map_err(|e| BackendError::Database(e.to_string()))?;
        }
        return Ok(Stores::of(store));
    }
    let scheme = url.split(':').next().unwrap_or_default();
    Err(BackendError::Database(format!(
        "unsupported database URL scheme {scheme:?} (expected sqlite:, postgres: or postgresql:)"
    )))
}

/// The SQLite store itself (for what only it can do, such as `berth backup`).
pub async fn open_sqlite(config: &Config, migrate: bool) -> Result<SqliteMetaStore, BackendError> {
    let settings = SqliteSettings {
        url: config.database.url.expose().to_owned(),
        max_connections: config.database.max_connections,
        acquire_timeout: config.database.acquire_timeout,
    };
    let store = SqliteMetaStore::connect(&settings).await.map_err(|e| BackendError::Database(e.to_string()))?;
    if migrate {
        store.migrate().await.map_err(|e| BackendError::Database(e.to_string()))?;
    }
    Ok(store)
}

pub async fn open_blobs(config: &Config) -> Result<Arc<dyn BlobStore>, BackendError> {
    match config.storage.backend {
        StorageBackend::S3 => {
            let c = &config.storage.s3;
            let settings = S3Settings {
                bucket: c.bucket.clone(),
                prefix: c.prefix.clone(),
                region: c.region.clone(),
                endpoint: c.endpoint.clone(),
                access_key_id: c.access_key_id.expose().to_owned(),
                secret_access_key: c.secret_access_key.expose().to_owned(),
                path_style: c.path_style,
                allow_http: c.allow_http,
                part_size: c.part_size,
                redirect: (!c.redirect_ttl.is_zero()).then_some(c.redirect_ttl),
                read_timeout: c.read_timeout,
            };
            let store = S3BlobStore::open(&settings).map_err(|e| BackendError::Storage(e.to_string()))?;
            Ok(Arc::new(store))
        }
        StorageBackend::Filesystem => {
            let path = config.storage.path.clone();
            let store = tokio::task::spawn_blocking(move || FsBlobStore::open(path))
                .await
                .map_err(|e| BackendError::Storage(e.to_string()))?
                .map_err(|e| BackendError::Storage(format!("{}: {e}", config.storage.path.display())))?;
            Ok(Arc::new(store))
        }
    }
}
