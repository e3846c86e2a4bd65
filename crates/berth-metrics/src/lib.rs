//! Process-wide metrics. Every layer records into [`metrics()`]; the HTTP
//! layer serves [`encode`] at `GET /metrics`. Label values are small fixed
//! sets (route kinds, methods, status codes), so cardinality stays bounded.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub bytes_pushed: Counter,
    pub bytes_pulled: Counter,
    pub blobs_stored: Gauge,
    pub manifests_stored: Gauge,
    pub repositories: Gauge,
    pub storage_bytes: Gauge,
    pub uploads_in_flight: Gauge,
    pub auth_failures: Family<KindLabels, Counter>,
    pub gc_runs: Counter,
    pub gc_bytes_freed: Counter,
    pub gc_blobs_deleted: Counter,
    pub gc_manifests_deleted: Counter,
    pub gc_duration: Histogram,
    pub retention_runs: Counter,
    pub retention_deletions: Counter,
    pub uploads_expired: Counter,
    pub webhook_deliveries: Family<KindLabels, Counter>,
}

fn build() -> Metrics {
    let mut registry = Registry::with_prefix("berth");
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register("http_requests", "HTTP requests by route kind, method and status", requests.clone());
    let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
        // 0.25 ms .. about 33 s.
        Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
    });
    registry.register("http_request_duration_seconds", "HTTP request latency", request_duration.clone());
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let c = Counter::default();
        registry.register(name, help, c.clone());
        c
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let g = Gauge::default();
        registry.register(name, help, g.clone());
        g
    };
    let bytes_pushed = counter(&mut registry, "blob_bytes_pushed", "Blob bytes received");
    let bytes_pulled = counter(&mut registry, "blob_bytes_pulled", "Blob bytes served");
    let blobs_stored = gauge(&mut registry, "blobs_stored", "Blobs held by the blob store");
    let manifests_stored = gauge(&mut registry, "manifests_stored", "Manifests stored");
    let repositories = gauge(&mut registry, "repositories", "Repositories");
    let storage_bytes = gauge(&mut registry, "storage_bytes", "Bytes of all stored blobs");
    let uploads_in_flight = gauge(&mut registry, "uploads_in_flight", "Open upload sessions");
    let auth_failures = Family::<KindLabels, Counter>::default();
    registry.register("auth_failures", "Failed authentications by credential kind", auth_failures.clone());
    // Every series exists from the start, so dashboards and alerts see zeros.
    for kind in ["password", "token", "bearer", "throttled"] {
        let _ = auth_failures.get_or_create(&KindLabels { kind });
    }
    let gc_runs = counter(&mut registry, "gc_runs", "Garbage collection runs");
    let gc_bytes_freed = counter(&mut registry, "gc_bytes_freed", "Bytes freed by garbage collection");
    let gc_blobs_deleted = counter(&mut registry, "gc_blobs_deleted", "Blobs deleted by garbage collection");
    let gc_manifests_deleted =
        counter(&mut registry, "gc_manifests_deleted", "Manifests deleted by garbage collection");
    let gc_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
    registry.register("gc_duration_seconds", "Garbage collection run time", gc_duration.clone());
    let retention_runs = counter(&mut registry, "retention_runs", "Retention rule runs");
    let retention_deletions = counter(&mut registry, "retention_deletions", "Tags deleted by retention rules");
    let uploads_expired = counter(&mut registry, "uploads_expired", "Idle upload sessions purged");
    let webhook_deliveries = Family::<KindLabels, Counter>::default();
    registry.register("webhook_deliveries", "Webhook delivery attempts by outcome", webhook_deliveries.clone());
    for kind in ["delivered", "failed", "abandoned"] {
        let _ = webhook_deliveries.get_or_create(&KindLabels { kind });
    }
    Metrics {
        registry,
        requests,
        request_duration,
        bytes_pushed,
        bytes_pulled,
        blobs_stored,
        manifests_stored,
        repositories,
        storage_bytes,
        uploads_in_flight,
        auth_failures,
        gc_runs,
        gc_bytes_freed,
        gc_blobs_deleted,
        gc_manifests_deleted,
        gc_duration,
        retention_runs,
        retention_deletions,
        uploads_expired,
        webhook_deliveries,
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(build)
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, method: &'static str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
        self.request_duration.get_or_create(&RouteLabels { route, method }).observe(elapsed.as_secs_f64());
    }

    pub fn auth_failure(&self, kind: &'static str) {
        self.auth_failures.get_or_create(&KindLabels { kind }).inc();
    }
}

/// The text exposition format.
pub fn encode() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// A method name as a static label.
pub fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_named_metrics() {
        metrics().observe_request("manifest", "GET", 200, Duration::from_millis(3));
        metrics().bytes_pushed.inc_by(10);
        metrics().auth_failure("basic");
        let text = encode();
        for name in [
            "berth_http_requests_total",
            "berth_http_request_duration_seconds_bucket",
            "berth_blob_bytes_pushed_total",
            "berth_auth_failures_total",
            "berth_gc_runs_total",
            "berth_storage_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains(r#"route="manifest",method="GET",status="200""#));
    }
}
