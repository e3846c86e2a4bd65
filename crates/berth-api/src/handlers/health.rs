use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// Liveness: the process is serving requests.
pub async fn livez() -> &'static str {
    "ok"
}

/// Readiness: the database answers and storage is writable.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.registry().readiness().await {
        Ok(()) => "ok".into_response(),
        Err(e) => ApiError::NotReady(e.to_string()).into_response(),
    }
}
