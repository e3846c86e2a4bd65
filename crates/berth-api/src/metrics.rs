//! Request metrics (by route kind, method, status) and `GET /metrics`.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;

/// A low-cardinality name for what a path addresses.
pub fn route_kind(path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix("/v2/") {
        return match rest {
            "" => "base",
            "token" => "token",
            "_catalog" => "catalog",
            r if r.contains("/blobs/uploads") => "blob_upload",
            r if r.contains("/blobs/") => "blob",
            r if r.contains("/manifests/") => "manifest",
            r if r.ends_with("/tags/list") => "tags",
            r if r.contains("/referrers/") => "referrers",
            _ => "other",
        };
    }
    match path {
        "/v2" => "base",
        "/livez" | "/readyz" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/api/v1/packages") => "packages",
        p if p.starts_with("/api/v1/admin/") => "admin",
        _ => "other",
    }
}

/// Middleware: counts and times every request.
pub async fn record(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_kind(req.uri().path());
    let method = berth_metrics::method_label(req.method().as_str());
    let response = next.run(req).await;
    berth_metrics::metrics().observe_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /metrics` in the Prometheus text format.
pub async fn serve() -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], berth_metrics::encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::route_kind;

    #[test]
    fn kinds() {
        assert_eq!(route_kind("/v2/"), "base");
        assert_eq!(route_kind("/v2/a/b/blobs/uploads/123"), "blob_upload");
        assert_eq!(route_kind("/v2/a/blobs/sha256:x"), "blob");
        assert_eq!(route_kind("/v2/a/manifests/latest"), "manifest");
        assert_eq!(route_kind("/v2/a/tags/list"), "tags");
        assert_eq!(route_kind("/api/v1/packages/admin"), "packages");
        assert_eq!(route_kind("/api/v1/admin/retention/rules/7"), "admin");
        assert_eq!(route_kind("/nope"), "other");
    }
}
