use axum::Json;
use serde_json::{Value, json};

/// `GET /v2/`: the API version check every client starts with.
pub async fn version() -> Json<Value> {
    Json(json!({}))
}
