//! Starts the real server (the same wiring as `berth serve`) on
//! `127.0.0.1:0` with a throwaway data directory. The bound listener is
//! handed to the server, so the test can connect at once: no port races,
//! no readiness polling.

pub mod backends;
pub mod fixtures;

use std::net::SocketAddr;
use std::sync::Arc;

use berth::App;
use berth_auth::AuthService;
use berth_config::Config;
use berth_oci::Digest;
use berth_registry::{Maintenance, Registry};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Installs the TLS crypto provider HTTP clients need (Berth builds rustls
/// with ring and no default provider); call before building a client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub registry: Registry,
    /// Garbage collection, retention and upload expiry on the server's stores.
    pub maintenance: Maintenance,
    /// The authentication service when auth is enabled (create users and tokens through its store).
    pub auth: Option<Arc<AuthService>>,
    pub config: Config,
    dir: tempfile::TempDir,
    /// A per-server Postgres database, dropped with the server.
    _database: Option<backends::TempDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on the embedded defaults (SQLite + filesystem), auth off.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server with authentication on (the production default).
    pub async fn start_with_auth() -> TestServer {
        TestServer::start_with(|c| c.auth.enabled = true).await
    }

    /// Like [`TestServer::start`], with configuration changes applied first.
    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> TestServer {
        let (db, storage) = backends::selected();
        TestServer::start_on(db, storage, customize).await
    }

    /// Like [`TestServer::start_with`], on the given backends whatever
    /// `BERTH_TEST_BACKENDS` selects.
    pub async fn start_on(
        db: backends::Database,
        storage: backends::Storage,
        customize: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let vars = [("BERTH_DATA_DIR".to_owned(), dir.path().display().to_string())];
        // Only explicit variables: the test process's own BERTH_* must not leak in.
        let mut config = Config::load(None, vars).expect("default config loads");
        config.listen = "127.0.0.1:0".parse().expect("addr");
        // Most tests exercise the registry itself; auth tests turn it back on.
        config.auth.enabled = false;
        let database = backends::apply_backends(&mut config, db, storage).await;
        customize(&mut config);
        TestServer::launch(config, dir, database, "app builds").await
    }

    async fn launch(
        config: Config,
        dir: tempfile::TempDir,
        database: Option<backends::TempDatabase>,
        what: &str,
    ) -> TestServer {
        let app = App::build(config.clone()).await.expect(what);
        let (registry, maintenance, auth) = (app.registry.clone(), app.maintenance.clone(), app.auth.clone());
        let listener = TcpListener::bind(config.listen).await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            registry,
            maintenance,
            auth,
            config,
            dir,
            _database: database,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A second server on this one's database and blob storage, as a
    /// replica behind a load balancer would be (its own data directory and
    /// port, the same configuration). Stop it before this one: this one owns
    /// a per-server Postgres database.
    pub async fn start_replica(&self) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = self.config.clone();
        config.data_dir = dir.path().to_path_buf();
        TestServer::launch(config, dir, None, "replica builds").await
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The digests the blob storage holds, read from the storage itself (as
    /// the server's configuration opens it), not through the registry.
    pub async fn stored_blobs(&self) -> Vec<Digest> {
        let store = berth::backends::open_blobs(&self.config).await.expect("open the blob storage");
        store.list().await.expect("list the blob storage").into_iter().map(|b| b.digest).collect()
    }

    /// Variables that point the `berth` CLI at this server's database (its
    /// data directory is `BERTH_DATA_DIR`).
    pub fn cli_env(&self) -> Vec<(&'static str, String)> {
        vec![("BERTH_DATABASE_URL", self.config.database.url.expose().to_owned())]
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
