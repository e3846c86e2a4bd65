//! Process-wide metrics. Every layer records into [`metrics()`]; the HTTP
//! layer serves [`encode`] at `GET /metrics`. Label values are small fixed
//! sets (route kinds, methods, status codes), so cardinality stays bounded;
//! the one exception, owners, is limited to owners with a quota of their own.

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

/// Per-owner series exist only for owners with a quota of their own, so
/// their number is what an operator chose to limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OwnerLabels {
    pub owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// One series per configured upstream and what was asked for (`manifest`,
/// `blob`, `tags`, `referrers`): as many as the operator configured.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub kind: &'static str,
}

/// An upstream's failures by status: an HTTP status, `network` (no answer:
/// connection, timeout, broken body) or `invalid` (an unusable answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamNameLabels {
    pub upstream: String,
}

/// What proxied requests may be for.
pub const UPSTREAM_KINDS: [&str; 4] = ["manifest", "blob", "tags", "referrers"];

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
    pub quota_refusals: Counter,
    pub owner_bytes: Family<OwnerLabels, Gauge>,
    pub owner_quota_bytes: Family<OwnerLabels, Gauge>,
    pub scrub_runs: Counter,
    pub scrub_bytes_checked: Counter,
    pub scrub_objects_checked: Counter,
    pub scrub_problems: Gauge,
    pub scrub_last_run: Gauge,
    pub damaged_blob_refusals: Counter,
    pub proxy_hits: Family<UpstreamLabels, Counter>,
    pub proxy_misses: Family<UpstreamLabels, Counter>,
    pub proxy_stale_serves: Family<UpstreamLabels, Counter>,
    pub proxy_upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub proxy_bytes_fetched: Family<UpstreamNameLabels, Counter>,
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
    let quota_refusals = counter(&mut registry, "quota_refusals", "Pushes refused for a quota or a size limit");
    let owner_bytes = Family::<OwnerLabels, Gauge>::default();
    registry.register("owner_bytes", "Bytes stored by owners that have a quota of their own", owner_bytes.clone());
    let owner_quota_bytes = Family::<OwnerLabels, Gauge>::default();
    registry.register(
        "owner_quota_bytes",
        "Byte quota of owners that have one of their own (0: unlimited)",
        owner_quota_bytes.clone(),
    );
    let scrub_runs = counter(&mut registry, "scrub_runs", "Scrub runs finished");
    let scrub_bytes_checked = counter(&mut registry, "scrub_bytes_checked", "Bytes read and hashed by scrub");
    let scrub_objects_checked = counter(&mut registry, "scrub_objects_checked", "Blobs and manifests checked by scrub");
    let scrub_problems = gauge(&mut registry, "scrub_problems", "Problems the last finished scrub found");
    let scrub_last_run = gauge(
        &mut registry,
        "scrub_last_run_timestamp_seconds",
        "When the last scrub of the whole registry finished (Unix time; 0: none since start)",
    );
    let damaged_blob_refusals =
        counter(&mut registry, "damaged_blob_refusals", "Reads refused because scrub found the blob damaged");
    let proxy_hits = Family::<UpstreamLabels, Counter>::default();
    registry.register("proxy_hits", "Pull-through requests served from the cache", proxy_hits.clone());
    let proxy_misses = Family::<UpstreamLabels, Counter>::default();
    registry.register("proxy_misses", "Pull-through requests that needed the upstream", proxy_misses.clone());
    let proxy_stale_serves = Family::<UpstreamLabels, Counter>::default();
    registry.register(
        "proxy_stale_serves",
        "Cached content served because the upstream failed (down, timeout, 5xx, 429)",
        proxy_stale_serves.clone(),
    );
    let proxy_upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
    registry.register(
        "proxy_upstream_errors",
        "Failed upstream requests by status (network: no answer; invalid: unusable answer)",
        proxy_upstream_errors.clone(),
    );
    let proxy_bytes_fetched = Family::<UpstreamNameLabels, Counter>::default();
    registry.register("proxy_bytes_fetched", "Blob bytes fetched from upstreams", proxy_bytes_fetched.clone());
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
        quota_refusals,
        owner_bytes,
        owner_quota_bytes,
        scrub_runs,
        scrub_bytes_checked,
        scrub_objects_checked,
        scrub_problems,
        scrub_last_run,
        damaged_blob_refusals,
        proxy_hits,
        proxy_misses,
        proxy_stale_serves,
        proxy_upstream_errors,
        proxy_bytes_fetched,
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

    /// Creates an upstream's series at zero, so dashboards see them from the start.
    pub fn register_upstream(&self, upstream: &str) {
        for kind in UPSTREAM_KINDS {
            let labels = UpstreamLabels { upstream: upstream.to_owned(), kind };
            let _ = self.proxy_hits.get_or_create(&labels);
            let _ = self.proxy_misses.get_or_create(&labels);
            let _ = self.proxy_stale_serves.get_or_create(&labels);
        }
        let _ = self.proxy_bytes_fetched.get_or_create(&UpstreamNameLabels { upstream: upstream.to_owned() });
    }

    pub fn proxy_hit(&self, upstream: &str, kind: &'static str) {
        self.proxy_hits.get_or_create(&UpstreamLabels { upstream: upstream.to_owned(), kind }).inc();
    }

    pub fn proxy_miss(&self, upstream: &str, kind: &'static str) {
        self.proxy_misses.get_or_create(&UpstreamLabels { upstream: upstream.to_owned(), kind }).inc();
    }

    pub fn proxy_stale_serve(&self, upstream: &str, kind: &'static str) {
        self.proxy_stale_serves.get_or_create(&UpstreamLabels { upstream: upstream.to_owned(), kind }).inc();
    }

    /// `status`: the HTTP status, `network` or `invalid`.
    pub fn proxy_upstream_error(&self, upstream: &str, status: String) {
        self.proxy_upstream_errors.get_or_create(&UpstreamErrorLabels { upstream: upstream.to_owned(), status }).inc();
    }

    pub fn proxy_fetched(&self, upstream: &str, bytes: u64) {
        self.proxy_bytes_fetched.get_or_create(&UpstreamNameLabels { upstream: upstream.to_owned() }).inc_by(bytes);
    }
}

/// The OpenMetrics 1.0 text format, what [`prometheus_client`] writes.
pub fn encode() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// The two exposition formats a scraper can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: typed families (`# TYPE x counter`, samples `x_total`), `# EOF`.
    OpenMetrics,
    /// Prometheus's classic text format 0.0.4 (`# TYPE x_total counter`).
    Classic,
}

impl Format {
    /// OpenMetrics when the `Accept` header lists `application/openmetrics-text`
    /// (as every Prometheus since 2.5 does), else the classic format, which
    /// any scraper, or a bare `curl`, reads: the choice Prometheus's Go client makes.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                media.eq_ignore_ascii_case("application/openmetrics-text")
                    && !params.any(|p| {
                        p.split_once('=').is_some_and(|(k, v)| {
                            k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                        })
                    })
            })
        });
        if wants_openmetrics { Format::OpenMetrics } else { Format::Classic }
    }

    /// The `Content-Type` of a scrape in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The process's metrics in `format`.
pub fn encode_as(format: Format) -> String {
    match format {
        Format::OpenMetrics => encode(),
        Format::Classic => to_classic(&encode()),
    }
}

/// Rewrites OpenMetrics text as the classic format: a counter family `x`
/// (samples `x_total`) is typed and described as `x_total`, `info` becomes a
/// gauge `x_info`, `unknown` is `untyped`, `stateset` and `gaugehistogram`
/// become gauge and histogram; `# UNIT`, `# EOF`, `_created` samples and
/// exemplars have no classic form and are dropped.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Family name -> (classic type, classic name): from each `# TYPE` line.
    let mut types = std::collections::HashMap::<&str, (&str, String)>::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            let classic = match kind {
                "counter" => ("counter", format!("{name}_total")),
                "info" => ("gauge", format!("{name}_info")),
                "stateset" => ("gauge", name.to_owned()),
                "gaugehistogram" => ("histogram", name.to_owned()),
                "unknown" => ("untyped", name.to_owned()),
                other => (other, name.to_owned()),
            };
            types.insert(name, classic);
        }
    }
    let mut counters = Vec::new();
    for (name, (kind, _)) in &types {
        if *kind == "counter" {
            counters.push(*name);
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
            let (kind, classic) = &types[name];
            out.push_str(&format!("# TYPE {classic} {kind}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let classic = types.get(name).map_or(name, |(_, c)| c.as_str());
            // OpenMetrics escapes `"` in help text too; the classic format does not.
            out.push_str(&format!("# HELP {classic} {}\n", help.replace("\\\"", "\"")));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let sample = sample_without_exemplar(line);
        let sample_name = sample.split(['{', ' ']).next().unwrap_or_default();
        if sample_name.strip_suffix("_created").is_some_and(|family| counters.contains(&family)) {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// A sample line without its ` # {...} value` exemplar, if any: the `#`
/// outside the label set's quoted values.
fn sample_without_exemplar(line: &str) -> &str {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return line[..i].trim_end(),
            _ => {}
        }
    }
    line
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
        assert!(text.contains("# TYPE berth_http_requests counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_classic_format() {
        // What Prometheus 2.42 sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("Application/OpenMetrics-Text; version=1.0.0")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0, text/plain")), Format::Classic);
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert!(Format::OpenMetrics.content_type().starts_with("application/openmetrics-text; version=1.0.0"));
        assert!(Format::Classic.content_type().starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn the_classic_format_types_each_sample_name() {
        let openmetrics = "# HELP a_requests Requests with \\\"quotes\\\".\n\
                           # TYPE a_requests counter\n\
                           a_requests_total{route=\"x # y\"} 3 # {trace_id=\"1\"} 1.0\n\
                           a_requests_created 1700000000.0\n\
                           # HELP a_size Bytes.\n\
                           # TYPE a_size gauge\n\
                           # UNIT a_size bytes\n\
                           a_size 7\n\
                           # HELP a_build Build.\n\
                           # TYPE a_build info\n\
                           a_build_info{version=\"1\"} 1\n\
                           # HELP a_seconds Latency.\n\
                           # TYPE a_seconds histogram\n\
                           a_seconds_bucket{le=\"+Inf\"} 1\n\
                           a_seconds_sum 0.5\n\
                           a_seconds_count 1\n\
                           # EOF\n";
        let classic = to_classic(openmetrics);
        assert_eq!(
            classic,
            "# HELP a_requests_total Requests with \"quotes\".\n\
             # TYPE a_requests_total counter\n\
             a_requests_total{route=\"x # y\"} 3\n\
             # HELP a_size Bytes.\n\
             # TYPE a_size gauge\n\
             a_size 7\n\
             # HELP a_build_info Build.\n\
             # TYPE a_build_info gauge\n\
             a_build_info{version=\"1\"} 1\n\
             # HELP a_seconds Latency.\n\
             # TYPE a_seconds histogram\n\
             a_seconds_bucket{le=\"+Inf\"} 1\n\
             a_seconds_sum 0.5\n\
             a_seconds_count 1\n"
        );
        // Every family of the real registry comes through typed.
        metrics().observe_request("manifest", "GET", 200, Duration::from_millis(3));
        let classic = encode_as(Format::Classic);
        assert!(classic.contains("# TYPE berth_http_requests_total counter\n"), "{classic}");
        assert!(classic.contains("# TYPE berth_http_request_duration_seconds histogram\n"), "{classic}");
        assert!(classic.contains("# TYPE berth_storage_bytes gauge\n"), "{classic}");
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
