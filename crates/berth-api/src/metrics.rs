//! Request metrics (by route, method, status) and `GET /metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_metrics::Format;
use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE};

use crate::AppState;
use crate::endpoint::Parsed;

/// How long a scrape waits for the store gauges before answering with the previous values.
const GAUGE_REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// A low-cardinality name for what a request addresses: the resource of a
/// `/v2/<name>/...` endpoint as [`crate::endpoint::parse_path`] parsed it (so
/// a repository named `x/blobs` is labelled by what the router served), else
/// the family of routes the path belongs to. A path no route answers is
/// labelled `other` by the envelope, whatever this says
/// ([`crate::envelope::Unrouted`]).
pub fn route_label(parsed: &Parsed, path: &str) -> &'static str {
    if let Some(resource) = parsed.resource() {
        return resource.label();
    }
    match path {
        "/v2" | "/v2/" => "base",
        "/v2/token" => "token",
        "/v2/_catalog" => "catalog",
        "/livez" | "/readyz" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/api/v1/packages/") => "packages",
        p if p.starts_with("/api/v1/admin/") => "admin",
        p if p.starts_with("/api/v1/owners/") => "owners",
        _ => "other",
    }
}

/// `GET /metrics`: the store gauges (repositories, manifests, blobs, bytes,
/// open uploads) are read as the scrape asks, so they are never stale;
/// then [`serve`].
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match tokio::time::timeout(GAUGE_REFRESH_TIMEOUT, state.registry().record_stats()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot refresh the store gauges"),
        Err(_) => tracing::warn!("refreshing the store gauges timed out"),
    }
    serve(&headers)
}

/// `GET /metrics` in the format the scraper's `Accept` asks for: OpenMetrics
/// for Prometheus, else the classic text format (see [`Format::negotiate`]).
pub fn serve(headers: &HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    ([(CONTENT_TYPE, format.content_type())], berth_metrics::encode_as(format)).into_response()
}

#[cfg(test)]
mod tests {
    use super::route_label;
    use crate::endpoint::{Parsed, parse};

    fn parsed(rest: &str) -> Parsed {
        Parsed(Some(parse(rest)))
    }

    #[test]
    fn labels_come_from_the_parsed_endpoint_or_the_matched_route() {
        let any = "/v2/x";
        assert_eq!(route_label(&parsed("a/b/blobs/uploads/123"), any), "blob_upload");
        assert_eq!(route_label(&parsed("a/blobs/sha256:x"), any), "blob", "an invalid digest still addresses a blob");
        assert_eq!(route_label(&parsed("a/manifests/latest"), any), "manifest");
        assert_eq!(route_label(&parsed("x/blobs/manifests/v1"), any), "manifest", "as the router sees it");
        assert_eq!(route_label(&parsed("a/tags/list"), any), "tags");
        assert_eq!(route_label(&parsed("a/nothing"), any), "other");
        assert_eq!(route_label(&Parsed(None), "/v2/"), "base");
        assert_eq!(route_label(&Parsed(None), "/v2/token"), "token");
        assert_eq!(route_label(&Parsed(None), "/api/v1/packages/alice"), "packages");
        assert_eq!(route_label(&Parsed(None), "/api/v1/admin/retention/rules/3"), "admin");
        assert_eq!(route_label(&Parsed(None), "/api/v1/owners/alice/usage"), "owners");
        assert_eq!(route_label(&Parsed(None), "/"), "other");
        assert_eq!(route_label(&Parsed(None), "/v2/token/x"), "other");
    }
}
