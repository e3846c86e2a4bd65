use axum::body::Body;
use axum::response::Response;
use berth_oci::media_type::OCI_INDEX;
use berth_oci::{Digest, RepositoryName};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};

use super::{query_get, query_pairs, respond};
use crate::AppState;
use crate::error::ApiError;
use crate::headers::OCI_FILTERS_APPLIED;

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: an OCI index of the
/// manifests whose subject is `digest` (empty, never 404, when there are none).
pub async fn list(
    state: &AppState,
    name: &RepositoryName,
    subject: &Digest,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let artifact_type = query_get(&pairs, "artifactType").filter(|t| !t.is_empty());
    let referrers = state.registry().referrers(name, subject, artifact_type).await?;
    let manifests: Vec<Value> = referrers
        .into_iter()
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), Value::String(r.media_type));
            d.insert("digest".into(), Value::String(r.digest.to_string()));
            d.insert("size".into(), Value::from(r.size));
            if let Some(t) = r.artifact_type {
                d.insert("artifactType".into(), Value::String(t));
            }
            if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<Value>(&a).ok()) {
                d.insert("annotations".into(), a);
            }
            Value::Object(d)
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut headers = vec![(CONTENT_TYPE, OCI_INDEX.to_owned())];
    if artifact_type.is_some() {
        headers.push((OCI_FILTERS_APPLIED, "artifactType".to_owned()));
    }
    respond(StatusCode::OK, headers, Body::from(serde_json::to_vec(&index).unwrap_or_default()))
}
