//! The layers every request passes, besides authorization (`auth`), the
//! parsed endpoint (`endpoint`), the client address (`client`) and the
//! metrics (`metrics`), and the answers for paths and methods no route has.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Uri;
use tracing::Span;

use crate::AppState;
use crate::endpoint::Parsed;
use crate::error::ApiError;
use crate::error::json::JsonError;
use crate::headers::X_REQUEST_ID;

/// Middleware: the overall deadline. Every request but those that stream
/// blob data must be answered within `http.request_timeout`, or gets 503
/// UNAVAILABLE; authentication (which may wait for an argon2 slot) runs
/// inside, so inside the deadline too. A slow client cannot hold a
/// connection and a task longer than that by trickling a body.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let streams =
        req.extensions().get::<Parsed>().and_then(Parsed::endpoint).is_some_and(|e| e.streams_blob_data(req.method()));
    if streams {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.settings().request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut.into_response(),
    }
}

/// One span per request: method, path (the query may carry nothing secret,
/// but paths are what operators search by) and the request id.
pub fn request_span(req: &http::Request<Body>) -> Span {
    let id = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id = %id)
}

/// No route for the path: in the JSON API's shape under `/api/v1/`, else OCI's.
pub async fn no_such_route(uri: Uri) -> Response {
    if uri.path().starts_with("/api/v1/") {
        JsonError::NoSuchRoute.into_response()
    } else {
        ApiError::NoSuchRoute.into_response()
    }
}

/// The path has a route, the method has none (the JSON API's routes answer
/// for themselves: `handlers::json_api::method_not_allowed`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
