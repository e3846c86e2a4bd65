use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::AppState;

/// Liveness: the process is serving requests.
pub async fn livez() -> &'static str {
    "ok"
}

/// Readiness: the database answers and storage is writable.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.registry().readiness().await {
        Ok(()) => "ok".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}
