//! Chooses and opens the metadata and blob backends named by the configuration.

use std::sync::Arc;

use berth_blob::{BlobStore, FsBlobStore};
use berth_config::{Config, StorageBackend};
use berth_meta::{AuthStore, MetaStore};
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Database(String),
    #[error("storage: {0}")]
    Storage(String),
}

/// The database behind both store traits.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetaStore>,
    pub auth: Arc<dyn AuthStore>,
}

/// Opens the metadata store; with `migrate`, applies pending migrations first.
pub async fn open_meta(config: &Config, migrate: bool) -> Result<Stores, BackendError> {
    let url = config.database.url.expose();
    if url.starts_with("sqlite:") {
        let settings = SqliteSettings {
            url: url.to_owned(),
            max_connections: config.database.max_connections,
            acquire_timeout: config.database.acquire_timeout,
        };
        let store = SqliteMetaStore::connect(&settings).await.map_err(|e| BackendError::Database(e.to_string()))?;
        if migrate {
            store.migrate().await.map_err(|e| BackendError::Database(e.to_string()))?;
        }
        let store = Arc::new(store);
        return Ok(Stores { meta: store.clone(), auth: store });
    }
    let scheme = url.split(':').next().unwrap_or_default();
    Err(BackendError::Database(format!("unsupported database URL scheme {scheme:?} (expected sqlite:)")))
}

pub async fn open_blobs(config: &Config) -> Result<Arc<dyn BlobStore>, BackendError> {
    match config.storage.backend {
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
