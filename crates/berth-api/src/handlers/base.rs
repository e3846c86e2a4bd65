use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::auth::{Caller, require_any};

/// `GET /v2/`: the API version check every client starts with. With auth on,
/// a request without credentials is challenged (that is how `docker login`
/// learns where to get a token); any valid credentials pass.
pub async fn version(State(state): State<AppState>, req: Request) -> Response {
    match require_any(&state, &Caller::of(&req), None).await {
        Ok(_) => Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}
