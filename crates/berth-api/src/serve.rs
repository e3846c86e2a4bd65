//! The connection loop: HTTP/1.1 (what every registry client speaks) over
//! TCP or TLS (rustls), header-read timeout, and graceful shutdown that lets
//! in-flight requests finish. Upload sessions are persisted, so a request cut
//! off by the shutdown deadline leaves a resumable upload.
//!
//! At most `max_connections` connections are open at once: each holds a
//! semaphore permit from accept (TLS handshake included) to close, so a
//! flood of idle connections cannot exhaust file descriptors or memory.
//! A connection over the limit gets a minimal 503 and is closed.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::envelope::{App, Envelope};
use crate::error::ApiError;
use berth_oci::ErrorBody;

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over the limit being answered at once; beyond that they are
/// closed without a word (answering must not cost what it protects).
const MAX_REFUSING: usize = 64;
/// How long a refused connection is kept to let the client read the 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Serve HTTPS with this configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Open connections at most; further ones are refused.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            tls: None,
            max_connections: 1024,
        }
    }
}

/// Loads a PEM certificate chain and private key into a rustls server configuration.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate found", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits up to
/// `shutdown_timeout` for open connections to finish their requests.
pub async fn serve(listener: TcpListener, app: App, opts: ServeOptions, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true);
    let tls = opts.tls.clone().map(TlsAcceptor::from);
    let open = Arc::new(Semaphore::new(opts.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut refused = Refused::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused.note(opts.max_connections);
            // TLS would need a handshake before a word could be said: just close.
            if tls.is_none()
                && let Ok(slot) = refusing.clone().try_acquire_owned()
            {
                tokio::spawn(refuse(stream, slot));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (service, builder, watcher, tls) = (app.connection(peer), builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, service, &builder, watcher, peer, permit).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => serve_connection(tls_stream, service, &builder, watcher, peer, permit).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(opts.shutdown_timeout) => tracing::warn!("shutdown deadline passed; closing remaining connections"),
    }
}

/// Serves one connection; `_permit` counts it as open until it closes.
async fn serve_connection<IO>(
    io: IO,
    service: Envelope,
    builder: &http1::Builder,
    watcher: Watcher,
    peer: std::net::SocketAddr,
    _permit: OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The whole answer to a connection over the limit, written before hyper
/// sees the connection: the error table's answer, by hand.
fn refusal() -> Vec<u8> {
    let d = ApiError::TooManyConnections.describe();
    let body = serde_json::to_string(&ErrorBody::single(d.code, d.message, d.detail)).unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        d.status.as_str(),
        d.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in &d.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    format!("{head}connection: close\r\ndocker-distribution-api-version: registry/2.0\r\n\r\n{body}").into_bytes()
}

/// Answers 503 and closes. The answer is written at once (a client that
/// sends its request first reads it next); then whatever the client sends
/// is read and dropped for a moment before closing, because closing with
/// unread input resets the connection and may destroy the answer in flight.
async fn refuse(mut stream: TcpStream, _slot: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&refusal()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Counts refused connections and warns about them at most every ten seconds.
#[derive(Default)]
struct Refused {
    since_warning: u64,
    warned_at: Option<Instant>,
}

impl Refused {
    fn note(&mut self, limit: usize) {
        self.since_warning += 1;
        if self.warned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                max_connections = limit,
                refused = self.since_warning,
                "connection limit reached: refusing connections"
            );
            self.since_warning = 0;
            self.warned_at = Some(Instant::now());
        }
    }
}
