//! A minimal HTTP/1.1 client on hyper's connection API: one keep-alive
//! connection per [`Conn`], no pool, no redirects, no TLS. It costs the
//! client as little CPU as possible so that the servers, not the client, are
//! what is measured.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request body made of shared byte slices, sent back to back without
/// copying (a 256 MiB blob is one slice of a buffer built once).
#[derive(Debug, Default, Clone)]
pub struct Parts {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Parts {
    pub fn empty() -> Self {
        Parts::default()
    }

    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|b| !b.is_empty()).collect();
        let remaining = parts.iter().map(|b| b.len() as u64).sum();
        Parts { parts, remaining }
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    #[cfg(test)]
    pub fn into_vec(self) -> Vec<u8> {
        self.parts.iter().flat_map(|b| b.iter().copied()).collect()
    }
}

impl From<Bytes> for Parts {
    fn from(b: Bytes) -> Self {
        Parts::new([b])
    }
}

impl Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.parts.pop_front() {
            Some(b) => {
                self.remaining -= b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Where requests go and with which credentials.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Sent as `Authorization` on every request when set.
    pub authorization: Option<HeaderValue>,
}

impl Endpoint {
    pub fn basic(addr: SocketAddr, user: &str, secret: &str) -> Self {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
        Endpoint { addr, authorization: Some(value) }
    }
}

/// What came back; the body is kept only when asked for.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails unless the status is `want`, quoting the body (the OCI error JSON).
    pub fn expect(self, want: StatusCode, what: &str) -> Result<Self> {
        if self.status == want {
            return Ok(self);
        }
        Err(format!("{what}: expected {want}, got {} {}", self.status, String::from_utf8_lossy(&self.body)).into())
    }
}

/// Whether the response body is read into memory or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Body,
    Discard,
}

/// One keep-alive connection.
pub struct Conn {
    endpoint: Endpoint,
    host: HeaderValue,
    sender: Option<SendRequest<Parts>>,
}

impl Conn {
    pub async fn connect(endpoint: &Endpoint) -> Result<Conn> {
        let host = HeaderValue::from_str(&endpoint.addr.to_string())?;
        let mut conn = Conn { endpoint: endpoint.clone(), host, sender: None };
        conn.reconnect().await?;
        Ok(conn)
    }

    async fn reconnect(&mut self) -> Result<()> {
        let stream = TcpStream::connect(self.endpoint.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole response. `path` includes the query.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &str)],
        body: Parts,
        keep: Keep,
    ) -> Result<Response> {
        // A server may close an idle keep-alive connection (or after an
        // error): reconnect once, before anything was sent.
        let ready = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            self.reconnect().await?;
            self.sender.as_mut().expect("just connected").ready().await?;
        }
        let mut req = Request::builder().method(method.clone()).uri(path).header(HOST, self.host.clone());
        if let Some(auth) = &self.endpoint.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        if matches!(method, Method::POST | Method::PUT | Method::PATCH)
            && !headers.iter().any(|(n, _)| n == CONTENT_LENGTH)
        {
            req = req.header(CONTENT_LENGTH, body.len());
        }
        let req = req.body(body)?;
        let sender = self.sender.as_mut().expect("connected");
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let (parts, mut body) = resp.into_parts();
        let mut body_len = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                body_len += data.len() as u64;
                if keep == Keep::Body {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok(Response { status: parts.status, headers: parts.headers, body_len, body: Bytes::from(kept) })
    }
}

/// Polls `GET /v2/` until the server answers (200, or 401 with auth on).
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let endpoint = Endpoint { addr, authorization: None };
    loop {
        if let Ok(mut c) = Conn::connect(&endpoint).await
            && let Ok(r) = c.send(Method::GET, "/v2/", &[], Parts::empty(), Keep::Discard).await
            && (r.status == StatusCode::OK || r.status == StatusCode::UNAUTHORIZED)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("server on {addr} did not become ready within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
