//! The envelope: what every request passes before and after the router, in
//! one service instead of a stack of layers (each layer of a stack costs a
//! boxed future and a clone of the service below it on every request, which
//! showed as a fifth of a manifest GET's CPU).
//!
//! Before the router, in this order:
//! - `Authorization` and `Cookie` are marked sensitive (never printed);
//! - the request id: the client's `X-Request-Id`, or a new one;
//! - the client address ([`crate::client`]) and the parsed `/v2/<name>/...`
//!   endpoint ([`crate::endpoint`]) are put on the request;
//! - a span per request (method, path, request id).
//!
//! Around the router: a panic becomes a 500 in the OCI envelope; everything
//! but requests that stream blob data must be answered within
//! `http.request_timeout` (503 UNAVAILABLE otherwise; authentication, which
//! may wait for an argon2 slot, runs inside, so inside the deadline too).
//!
//! After: the API version and request id headers, the request metrics
//! (labelled from the parsed endpoint, [`crate::metrics::route_label`]) and
//! one log line per request at `info`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::AppState;
use crate::endpoint;
use crate::error::ApiError;
use crate::headers::{API_VERSION, X_REQUEST_ID};
use crate::{client, metrics};

/// A router in its envelope, ready to serve connections (see [`App::connection`]).
#[derive(Clone)]
pub struct App {
    router: Router,
    state: AppState,
}

impl App {
    pub fn new(router: Router, state: AppState) -> App {
        App { router, state }
    }

    /// The service for one connection from `peer`.
    pub fn connection(&self, peer: SocketAddr) -> Envelope {
        Envelope { router: self.router.clone(), state: self.state.clone(), peer }
    }
}

/// The envelope around the router, for one connection.
#[derive(Clone)]
pub struct Envelope {
    router: Router,
    state: AppState,
    peer: SocketAddr,
}

/// Marks a response as answered by no route (the router's fallback), so
/// the metrics label it `other` whatever its path looks like.
#[derive(Debug, Clone, Copy)]
pub struct Unrouted;

impl<B> Service<http::Request<B>> for Envelope
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let mut req = req.map(Body::new);
        hide_credentials(req.headers_mut());
        let id = request_id(req.headers());
        let settings = self.state.settings();
        let client = client::resolve(&settings.trusted_proxies, settings.tls, Some(self.peer.ip()), req.headers());
        let parsed = endpoint::parse_path(req.uri().path());
        let route = metrics::route_label(&parsed, req.uri().path());
        let method = berth_metrics::method_label(req.method().as_str());
        let deadline =
            (!parsed.endpoint().is_some_and(|e| e.streams_blob_data(req.method()))).then_some(settings.request_timeout);
        let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id = id.to_str().unwrap_or(""));
        req.extensions_mut().insert(client);
        req.extensions_mut().insert(parsed);
        let router = self.router.clone();
        let answer = async move {
            let mut response = match AssertUnwindSafe(within(deadline, router.oneshot(req))).catch_unwind().await {
                Ok(response) => response,
                Err(panic) => {
                    ApiError::Internal(format!("handler panicked: {}", panic_message(&*panic))).into_response()
                }
            };
            let route = if response.extensions().get::<Unrouted>().is_some() { "other" } else { route };
            let elapsed = started.elapsed();
            berth_metrics::metrics().observe_request(route, method, response.status().as_u16(), elapsed);
            let headers = response.headers_mut();
            headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
            headers.entry(X_REQUEST_ID).or_insert(id);
            tracing::info!(
                status = response.status().as_u16(),
                latency_ms = elapsed.as_millis() as u64,
                "request done"
            );
            Ok(response)
        };
        Box::pin(answer.instrument(span))
    }
}

/// The router's answer, within `deadline` if there is one.
async fn within(deadline: Option<Duration>, answer: impl Future<Output = Result<Response, Infallible>>) -> Response {
    let answer = answer.map(|result| match result {
        Ok(r) => r,
        Err(never) => match never {},
    });
    match deadline {
        None => answer.await,
        Some(limit) => tokio::time::timeout(limit, answer).await.unwrap_or_else(|_| ApiError::TimedOut.into_response()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("")
}

/// Credentials are never printed, whatever debug output a request ends up in.
fn hide_credentials(headers: &mut HeaderMap) {
    for name in [AUTHORIZATION, COOKIE] {
        if let http::header::Entry::Occupied(mut values) = headers.entry(name) {
            values.iter_mut().for_each(|v| v.set_sensitive(true));
        }
    }
}

/// The request's id (for its span and its response): the one the client
/// (or a proxy) sent, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers.get(X_REQUEST_ID).cloned().unwrap_or_else(new_request_id)
}

/// A new request id, shaped like a random UUID: random per process, then a
/// counter, so ids are unique without a system call for randomness per
/// request (which showed in the profile).
fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<[u8; 16]> = LazyLock::new(|| *uuid::Uuid::new_v4().as_bytes());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = *PREFIX;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    // Bytes 6 and 8 carry the version and variant; the counter's low 56 bits fill 9..16.
    bytes[9..].copy_from_slice(&n[1..]);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_differ_and_look_like_uuids() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
        }
    }

    #[test]
    fn a_request_id_sent_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn credentials_are_marked_sensitive() {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Basic eDp5"));
        h.append(COOKIE, HeaderValue::from_static("a=b"));
        h.append(COOKIE, HeaderValue::from_static("c=d"));
        hide_credentials(&mut h);
        assert!(h.iter().all(|(_, v)| v.is_sensitive()));
    }
}
