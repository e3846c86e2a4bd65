//! One struct per config section. `config.example.toml` documents every key;
//! a test checks that the example and these structs agree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Rate, Secret, mask_url};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the registry listens on.
    pub listen: SocketAddr,
    /// Root for the embedded defaults (SQLite file, blob directory, keys).
    pub data_dir: PathBuf,
    /// External base URL (`https://registry.example.com`), used in `Location`
    /// headers and the auth realm. Empty: derived from each request's Host.
    pub public_url: String,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// Default tracing filter; `RUST_LOG` overrides it.
    pub log_level: String,
    /// If set and no user named `admin` exists, `berth serve` creates one
    /// (a site admin) with this password at start-up.
    pub admin_password: Secret,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub tags: TagsConfig,
    pub manifests: ManifestsConfig,
    pub uploads: UploadsConfig,
    pub gc: GcConfig,
    pub scrub: ScrubConfig,
    pub retention: RetentionConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub ui: UiConfig,
    pub quotas: QuotasConfig,
    /// `[[webhooks]]`: receivers of push, delete and tag events.
    pub webhooks: Vec<WebhookConfig>,
    /// `[[upstreams]]`: registries pulled through (see [`crate::UpstreamConfig`]).
    pub upstreams: Vec<crate::UpstreamConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5000)),
            data_dir: PathBuf::from("./data"),
            public_url: String::new(),
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            admin_password: Secret::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            tags: TagsConfig::default(),
            manifests: ManifestsConfig::default(),
            uploads: UploadsConfig::default(),
            gc: GcConfig::default(),
            scrub: ScrubConfig::default(),
            retention: RetentionConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            ui: UiConfig::default(),
            quotas: QuotasConfig::default(),
            webhooks: Vec::new(),
            upstreams: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time a client has to send its request headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long is aborted (requests
    /// that stream blob data have no overall deadline, only this one).
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Deadline for every request that does not stream blob data,
    /// authentication included (manifests, lists, tokens, probes).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Reverse proxies (addresses or CIDR ranges) whose forwarding headers
    /// are believed: only when the connection comes from one of them is the
    /// client address taken from `Forwarded` / `X-Forwarded-For` (the
    /// rightmost hop that is not itself listed), and, with `public_url`
    /// empty, the scheme and host of the auth realm from `Forwarded` /
    /// `X-Forwarded-Proto` / `X-Forwarded-Host`. Empty: headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Open client connections at most (idle ones included); further ones
    /// are answered 503 and closed, so a flood cannot exhaust file descriptors.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            max_connections: 1024,
        }
    }
}

impl HttpConfig {
    /// `trusted_proxies` parsed; a bare address means just that address.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("http.trusted_proxies: {p:?} is not an address or CIDR range"))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`, Berth serves HTTPS itself.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (default `sqlite://<data_dir>/berth.db`) or `postgres://...`.
    pub url: Secret,
    /// Connection pool size (SQLite: readers; writes go through one connection).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Apply pending migrations at start-up (otherwise run `berth migrate`).
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::default(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            migrate_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Filesystem,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `filesystem` or `s3`.
    pub backend: StorageBackend,
    /// Filesystem backend root (default `<data_dir>/blobs`).
    pub path: PathBuf,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { backend: StorageBackend::Filesystem, path: PathBuf::new(), s3: S3Config::default() }
    }
}

/// `[storage.s3]`: any S3-compatible store (AWS, MinIO, Ceph RGW, R2, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    pub region: String,
    /// Endpoint URL for non-AWS stores, e.g. `http://minio:9000`; empty for AWS.
    pub endpoint: String,
    /// Empty: taken from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Path-style requests (`endpoint/bucket/key`), which most self-hosted stores need.
    pub path_style: bool,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
    /// Size of the parts uploads are cut into (at least 5 MiB). Memory per
    /// upload in flight is about twice this.
    pub part_size: usize,
    /// Answer blob downloads with a redirect to a presigned URL valid this long; `0s` streams through Berth.
    #[serde(with = "humantime_serde")]
    pub redirect_ttl: Duration,
    /// A request to S3 fails (and is retried) when no byte moves for this
    /// long. There is no cap on a whole request: a multi-GiB blob may take
    /// minutes to stream, and completing a large multipart upload may too.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            path_style: false,
            allow_http: false,
            part_size: 16 * 1024 * 1024,
            redirect_ttl: Duration::ZERO,
            read_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagsConfig {
    /// Globs matched against `<repository>:<tag>`; a matching tag cannot be
    /// moved to another digest or deleted. Example: `["*:v*", "acme/*:*"]`.
    pub immutable: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManifestsConfig {
    /// Accept manifests whose blobs or child manifests are not (yet) in the
    /// repository, as partial mirrors need.
    pub allow_sparse: bool,
    /// Largest manifest accepted, in bytes.
    pub max_size: usize,
}

impl Default for ManifestsConfig {
    fn default() -> Self {
        ManifestsConfig { allow_sparse: false, max_size: 4 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Upload sessions idle for longer than this are purged.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// How often the server purges them; `0s` disables it.
    #[serde(with = "humantime_serde")]
    pub expiry_interval: Duration,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig { expire_after: Duration::from_secs(24 * 3600), expiry_interval: Duration::from_secs(600) }
    }
}

/// `[quotas]`: default limits per owner (user or organization). 0 or an
/// empty string means unlimited, the default. `berth quota set` and the
/// admin API override them per owner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// Bytes an owner may store: each distinct blob once, plus manifests.
    pub owner_bytes: crate::Size,
    /// Repositories an owner may have.
    pub owner_repositories: u64,
    /// Largest blob a push may upload (Gitea's `LIMIT_SIZE_CONTAINER`).
    pub blob_max_size: crate::Size,
}

/// `[gc]`: online garbage collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// How often the server collects garbage (once per cluster); `0s` disables it.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Grace period: nothing pushed, linked or uploaded more recently is collected.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { interval: Duration::from_secs(24 * 3600), min_age: Duration::from_secs(3600) }
    }
}

/// `[scrub]`: checking stored bytes against their digests on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// How often the server scrubs (once per cluster); `0s` (the default) disables it.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Bytes read per second by a scheduled scrub at most; 0: no limit.
    pub rate: Rate,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig { interval: Duration::ZERO, rate: Rate(crate::Size(100 << 20)) }
    }
}

/// `[retention]`: rules that remove old tags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the server applies the rules (once per cluster); `0s` disables it.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// `[[retention.rules]]`; the first whose `repositories` matches governs a repository.
    pub rules: Vec<RetentionRuleConfig>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { interval: Duration::from_secs(24 * 3600), rules: Vec::new() }
    }
}

/// One `[[retention.rules]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleConfig {
    /// Glob over repository names (`*` crosses `/`).
    pub repositories: String,
    /// Keep the N most recently pushed tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Globs of tags that are always kept.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Only tags older than this may be removed.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub remove_older_than: Option<Duration>,
    /// Only tags matching one of these globs may be removed (empty: any).
    #[serde(default)]
    pub remove_tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `false`: anyone may pull and push (local development only).
    pub enabled: bool,
    /// The `service` of the token flow, and the `aud` of issued tokens.
    pub service: String,
    /// The `iss` of issued tokens.
    pub issuer: String,
    /// Lifetime of bearer tokens issued by `/v2/token`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Accept a user's password wherever a personal access token is accepted.
    pub allow_password: bool,
    /// PEM file with the Ed25519 private key that signs bearer tokens.
    /// Default: `<data_dir>/auth/jwt-ed25519.pem`, generated on first start.
    /// Replicas must share one key: set this to a mounted secret.
    pub jwt_key_file: Option<PathBuf>,
    /// Further PEM files (Ed25519 private or public keys) whose tokens are
    /// still accepted, for key rotation.
    pub jwt_verify_key_files: Vec<PathBuf>,
    /// Failed logins allowed per user and per client address before backoff.
    pub failed_login_limit: u32,
    /// Longest backoff after repeated failed logins.
    #[serde(with = "humantime_serde")]
    pub lockout_max: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            service: "berth".into(),
            issuer: "berth".into(),
            token_ttl: Duration::from_secs(300),
            allow_password: true,
            jwt_key_file: None,
            jwt_verify_key_files: Vec::new(),
            failed_login_limit: 5,
            lockout_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `GET /metrics`.
    pub enabled: bool,
    /// A separate plain-HTTP address for `/metrics` (and the probes), e.g.
    /// `127.0.0.1:9090`, so metrics need not be exposed with the registry.
    /// Unset: served on the main listener.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: None }
    }
}

/// The web pages (package browser, sign-in, token management, admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the web pages; false: their paths answer 404.
    pub enabled: bool,
    /// How long a web sign-in lasts (signing out, a password change or
    /// disabling the user ends it sooner).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true, session_ttl: Duration::from_secs(12 * 3600) }
    }
}

/// One `[[webhooks]]` receiver.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A unique name (deliveries in the queue refer to it).
    pub name: String,
    /// Where events are POSTed as JSON. Chat webhooks carry their credential
    /// in the path or query, so only scheme and host are ever shown.
    #[serde(serialize_with = "serialize_masked_url")]
    pub url: String,
    /// Key of the `X-Berth-Signature-256` HMAC-SHA256 signature.
    #[serde(default)]
    pub secret: Secret,
    /// Only events in these owners' namespaces; empty: every namespace.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Only these events (`push`, `delete`, `tag`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &mask_url(&self.url))
            .field("secret", &self.secret)
            .field("owners", &self.owners)
            .field("events", &self.events)
            .finish()
    }
}

/// Only the masked dump for operators serialises a hook (defaults have none).
fn serialize_masked_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(url))
}
