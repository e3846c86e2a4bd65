//! The registry under test and request helpers bound to it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_config::Config;
use berth_oci::Algorithm;
use berth_testkit::TestServer;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Client, Method, RequestBuilder, Url};
use serde_json::{Value, json};

use crate::content::{self, Manifest, digest_of};
use crate::response::{Resp, send};

/// Set to a registry's base URL (`http://host:port`) to test it instead of an in-process Berth.
pub const URL_ENV: &str = "BERTH_CONFORMANCE_URL";

/// The external registry's base URL, if one is configured.
fn external_url() -> Option<String> {
    std::env::var(URL_ENV).ok().map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty())
}

/// A random value fixed for this test process.
fn process_random() -> u64 {
    static RUN: OnceLock<u64> = OnceLock::new();
    *RUN.get_or_init(|| RandomState::new().hash_one(std::process::id()))
}

/// `module::function` from the type name of a function item declared inside a
/// test (see the [`here!`](crate::here) macro), dropping the crate name,
/// closures and the marker itself.
pub fn test_name(type_name: &str) -> String {
    let parts: Vec<&str> = type_name.split("::").filter(|p| !p.starts_with('{')).collect();
    let parts = &parts[..parts.len().saturating_sub(1)];
    parts[parts.len().saturating_sub(2)..].join("::")
}

/// The registry a test talks to, with the test's own repository name.
pub struct Target {
    base: Url,
    client: Client,
    test: String,
    repo: String,
    seed: u64,
    counter: AtomicU64,
    server: Option<TestServer>,
}

impl Target {
    /// A registry on its default configuration: the external one when
    /// `BERTH_CONFORMANCE_URL` is set, else a fresh in-process Berth.
    pub async fn new(test: impl Into<String>) -> Target {
        let test = test.into();
        match external_url() {
            Some(url) => Target::build(test, &url, None),
            None => {
                let server = TestServer::start().await;
                let base = server.url("");
                Target::build(test, &base, Some(server))
            }
        }
    }

    /// An in-process Berth with `configure` applied to its configuration.
    /// Against an external registry the test cannot run: this says so loudly
    /// on stderr and returns `None` (the test then returns).
    pub async fn in_process(test: impl Into<String>, configure: impl FnOnce(&mut Config)) -> Option<Target> {
        let test = test.into();
        if external_url().is_some() {
            eprintln!("NOT RUN: {test} needs an in-process Berth ({URL_ENV} is set)");
            return None;
        }
        let server = TestServer::start_with(configure).await;
        let base = server.url("");
        Some(Target::build(test, &base, Some(server)))
    }

    fn build(test: String, base: &str, server: Option<TestServer>) -> Target {
        let base = Url::parse(&format!("{base}/")).unwrap_or_else(|e| panic!("{URL_ENV}: invalid URL {base:?}: {e}"));
        berth_testkit::install_crypto_provider();
        let client = Client::builder()
            // What the server sends must be seen as sent: no decompression
            // (and so no Accept-Encoding), no redirects, no proxy.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("HTTP client");
        // Against a shared registry, a per-run suffix keeps reruns apart.
        let run = if server.is_some() { String::new() } else { format!("/run{:08x}", process_random() as u32) };
        let repo = format!("conformance/{}{run}", test.replace("::", "/"));
        let seed = RandomState::new().hash_one(&repo);
        Target { base, client, test, repo, seed, counter: AtomicU64::new(0), server }
    }

    /// Whether this is an in-process Berth.
    pub fn is_in_process(&self) -> bool {
        self.server.is_some()
    }

    /// `module::function` of the test.
    pub fn test(&self) -> &str {
        &self.test
    }

    /// The test's repository, `conformance/<module>/<function>`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// A further repository of the test: `<repo>/<suffix>`.
    pub fn repo_at(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.repo)
    }

    /// Resolves a path (`/v2/...`) or a `Location` (relative or absolute).
    pub fn url(&self, path_or_location: &str) -> Url {
        self.base.join(path_or_location).unwrap_or_else(|e| panic!("cannot resolve {path_or_location:?}: {e}"))
    }

    /// The path of a resolved `Location`, percent-decoded where it encodes `:`.
    pub fn location_path(&self, location: &str) -> String {
        self.url(location).path().replace("%3A", ":").replace("%3a", ":")
    }

    /// `location` with `key=value` appended to its query string.
    pub fn with_query(&self, location: &str, key: &str, value: &str) -> Url {
        let mut url = self.url(location);
        url.query_pairs_mut().append_pair(key, value);
        url
    }

    pub fn request(&self, method: Method, path_or_location: &str) -> RequestBuilder {
        self.client.request(method, self.url(path_or_location))
    }

    pub fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// A request written by hand on its own connection, for what the HTTP
    /// client would not send as is (it always adds `Accept: */*`). Only
    /// `headers` and `Host` are sent; the response is read to the end.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = self.url(path);
        let host = url.host_str().expect("host").to_owned();
        let port = url.port_or_known_default().expect("port");
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        crate::response::parse_raw(method, url.as_str(), &raw)
    }

    /// `len` bytes no other call (in any test or run) returns.
    pub fn blob(&self, len: usize) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        berth_testkit::fixtures::blob(self.seed ^ process_random().rotate_left(17) ^ n.wrapping_mul(0x2545_F491), len)
    }

    /// A token unique to this call, for making JSON documents distinct.
    pub fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.seed ^ process_random())
    }

    /// Starts an upload session in `repo` (`POST /blobs/uploads/`), asserting
    /// 202 with a `Location`; returns the `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = send(self.post(&format!("/v2/{repo}/blobs/uploads/")).header("Content-Length", "0")).await;
        r.expect_status(202);
        r.expect_header_present("Location").to_owned()
    }

    /// Pushes a blob monolithically (POST, then PUT `?digest=` with the body),
    /// asserting 201; returns its sha256 digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        self.push_blob_as(repo, Algorithm::Sha256, data).await
    }

    /// Like [`Target::push_blob`], addressed with a digest of `algorithm`.
    pub async fn push_blob_as(&self, repo: &str, algorithm: Algorithm, data: &[u8]) -> String {
        let digest = digest_of(algorithm, data);
        let location = self.start_upload(repo).await;
        self.put_upload(&location, &digest, data).await.expect_status(201);
        digest
    }

    /// `PATCH <location>` with one chunk: `Content-Range: <start>-<end>` (no
    /// `bytes ` prefix, as the spec writes it) and `Content-Length`.
    pub async fn patch_chunk(&self, location: &str, start: usize, data: &[u8]) -> Resp {
        send(
            self.patch(location)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header("Content-Range", format!("{start}-{}", start + data.len() - 1))
                .body(data.to_vec()),
        )
        .await
    }

    /// `PUT <location>?digest=<digest>` with `body` and no `Content-Range`
    /// (empty: closes a session whose data came by PATCH).
    pub async fn put_upload(&self, location: &str, digest: &str, body: &[u8]) -> Resp {
        send(
            self.request_url(Method::PUT, self.with_query(location, "digest", digest))
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body.to_vec()),
        )
        .await
    }

    /// `PUT <location>?digest=<digest>` carrying the last chunk with its `Content-Range`.
    pub async fn put_last_chunk(&self, location: &str, digest: &str, start: usize, data: &[u8]) -> Resp {
        send(
            self.request_url(Method::PUT, self.with_query(location, "digest", digest))
                .header(CONTENT_TYPE, "application/octet-stream")
                .header("Content-Range", format!("{start}-{}", start + data.len() - 1))
                .body(data.to_vec()),
        )
        .await
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type` set to the manifest's media type.
    pub async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Resp {
        send(
            self.put(&format!("/v2/{repo}/manifests/{reference}"))
                .header(CONTENT_TYPE, m.media_type.as_str())
                .body(m.body.clone()),
        )
        .await
    }

    /// [`Target::put_manifest`], asserting 201.
    pub async fn push_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Resp {
        let r = self.put_manifest(repo, reference, m).await;
        r.expect_status(201);
        r
    }

    /// `GET /v2/<repo>/manifests/<reference>`, accepting every manifest type as a client would.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Resp {
        send(self.get(&format!("/v2/{repo}/manifests/{reference}")).header(ACCEPT, content::ACCEPT_ALL_MANIFESTS)).await
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`, accepting every manifest type.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Resp {
        send(self.head(&format!("/v2/{repo}/manifests/{reference}")).header(ACCEPT, content::ACCEPT_ALL_MANIFESTS))
            .await
    }

    /// Pushes a unique image config and `layers` layer blobs to `repo`, and
    /// returns an OCI image manifest (not pushed) over them.
    pub async fn image(&self, repo: &str, layers: usize) -> Manifest {
        Manifest::new(self.image_value(repo, layers).await)
    }

    /// Like [`Target::image`], as JSON to adjust before building the [`Manifest`].
    pub async fn image_value(&self, repo: &str, layers: usize) -> Value {
        let config = self.config_blob();
        self.push_blob(repo, &config).await;
        let mut descriptors = Vec::new();
        for _ in 0..layers {
            let layer = self.blob(256);
            self.push_blob(repo, &layer).await;
            descriptors.push(content::descriptor(content::OCI_LAYER, &layer));
        }
        content::image_manifest(content::descriptor(content::OCI_CONFIG, &config), descriptors)
    }

    /// A unique image configuration (JSON bytes).
    pub fn config_blob(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Labels": { "org.berth.conformance": self.unique() } },
        }))
        .expect("json")
    }

    /// Pushes an image (config and one layer) and its manifest to `repo` under `reference`.
    pub async fn push_image(&self, repo: &str, reference: &str) -> Manifest {
        let m = self.image(repo, 1).await;
        self.push_manifest(repo, reference, &m).await;
        m
    }

    /// Pushes the `{}` empty-config blob to `repo`, and returns an artifact
    /// manifest of `artifact_type` with one unique layer, pushed as well.
    pub async fn artifact_value(&self, repo: &str, artifact_type: &str) -> Value {
        self.push_blob(repo, b"{}").await;
        let layer = self.blob(64);
        self.push_blob(repo, &layer).await;
        let mut m = content::image_manifest(
            content::descriptor(content::OCI_EMPTY, b"{}"),
            vec![content::descriptor("application/vnd.berth.conformance.layer", &layer)],
        );
        m["artifactType"] = Value::from(artifact_type);
        m
    }
}
