//! Test support for the pull-through cache: Debian's `docker-registry`
//! (Distribution 2.8) with htpasswd as an upstream, a fault-injecting HTTP
//! proxy in front of any upstream (down, 429, 503, slow, wrong bytes) that
//! counts what reaches it, and a plain-HTTP pusher and puller.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use berth_oci::Digest;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;

pub const USER: &str = "upstream-bot";
pub const PASSWORD: &str = "upstream-horse-battery";

fn find(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(bin)).find(|p| p.is_file())
}

/// Debian's `docker-registry` on a random loopback port, with htpasswd
/// Basic auth (user [`USER`]).
pub struct Distribution {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distribution {
    /// Starts the registry, or prints `NOT RUN: ...` and returns `None` when
    /// `docker-registry` or `htpasswd` is not installed.
    pub async fn start(test: &str) -> Option<Distribution> {
        let (Some(bin), Some(htpasswd)) = (find("docker-registry"), find("htpasswd")) else {
            eprintln!(
                "NOT RUN: {test}: docker-registry or htpasswd missing (apt-get install docker-registry apache2-utils)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(htpasswd).args(["-Bbn", USER, PASSWORD]).output().unwrap();
        assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
        let htpasswd_file = dir.path().join("htpasswd");
        std::fs::write(&htpasswd_file, &out.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  secret: berth-proxy-test\n\
             auth:\n  htpasswd:\n    realm: berth-proxy-test\n    path: {}\n",
            dir.path().join("data").display(),
            htpasswd_file.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut d = Distribution { url: String::new(), child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = text.split("listening on ").nth(1).and_then(|s| s.split(['"', ' ']).next()) {
                d.url = format!("http://{addr}");
                return Some(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pusher(&self) -> Pusher {
        Pusher::new(&self.url, USER, PASSWORD)
    }
}

/// Pushes to and reads from a registry with plain HTTP and Basic credentials.
#[derive(Clone)]
pub struct Pusher {
    pub url: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl Pusher {
    pub fn new(url: &str, user: &str, password: &str) -> Pusher {
        berth_testkit::install_crypto_provider();
        Pusher { url: url.to_owned(), user: user.into(), password: password.into(), http: reqwest::Client::new() }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method, url).basic_auth(&self.user, Some(&self.password))
    }

    /// Monolithic upload: POST for a session, then PUT with the digest and the bytes.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let r =
            self.req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.url)).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let mut url = reqwest::Url::parse(&self.url).unwrap().join(&location).unwrap();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let r = self
            .req(reqwest::Method::PUT, url.as_str())
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        digest
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Digest {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let r =
            self.req(reqwest::Method::PUT, &url).header("content-type", media_type).body(bytes.to_vec()).send().await;
        let r = r.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        Digest::sha256_of(bytes)
    }

    /// Pushes `image`'s blobs and manifest under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) -> Digest {
        self.push_blob(repo, &image.config).await;
        for l in &image.layers {
            self.push_blob(repo, l).await;
        }
        self.push_manifest(repo, tag, berth_oci::media_type::OCI_MANIFEST, &image.manifest).await
    }
}

/// An image: a config, layers and its manifest.
#[derive(Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(seed: u64, layer_sizes: &[usize]) -> Image {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, n)| berth_testkit::fixtures::blob(seed * 1000 + i as u64, *n))
            .collect();
        let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let manifest = berth_testkit::fixtures::image_manifest(&config, &refs);
        Image { config, layers, manifest }
    }

    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }

    pub fn layer_digest(&self, i: usize) -> Digest {
        Digest::sha256_of(&self.layers[i])
    }
}

/// What the fault proxy does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward everything.
    Pass = 0,
    /// Close every connection at once, as a dead upstream behind a balancer.
    Down = 1,
    /// 429 with `Retry-After: 7`.
    TooMany = 2,
    /// 503.
    Unavailable = 3,
    /// Blob and manifest bodies arrive with their last byte changed.
    WrongBytes = 4,
    /// Forward, after `delay`.
    Slow = 5,
    /// Blob bodies pause for `delay` after their first MiB.
    Stall = 6,
}

struct FaultState {
    target: String,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    http: reqwest::Client,
    /// `METHOD path` of every request forwarded or refused.
    seen: Mutex<Vec<String>>,
}

/// A fault-injecting HTTP proxy on loopback in front of `target`.
pub struct FaultProxy {
    pub url: String,
    state: Arc<FaultState>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(target: &str) -> FaultProxy {
        berth_testkit::install_crypto_provider();
        let state = Arc::new(FaultState {
            target: target.trim_end_matches('/').to_owned(),
            mode: AtomicU8::new(Mode::Pass as u8),
            delay_ms: AtomicU64::new(0),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(forward).with_state(state.clone());
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                if accept_state.mode.load(Ordering::SeqCst) == Mode::Down as u8 {
                    accept_state.seen.lock().unwrap().push("DOWN".into());
                    drop(stream);
                    continue;
                }
                let service = TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { url, state, task }
    }

    pub fn set(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn slow(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
        self.set(Mode::Slow);
    }

    /// Blob bodies stop for `delay` after their first MiB.
    pub fn stall(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
        self.set(Mode::Stall);
    }

    /// Every request seen so far, `METHOD path`.
    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests of `method` had a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen().iter().filter(|l| l.starts_with(&format!("{method} ")) && l.contains(part)).count()
    }

    /// Requests to the registry API (not the token endpoint).
    pub fn api_requests(&self) -> usize {
        self.seen().iter().filter(|l| l.contains(" /v2/") && !l.contains("/v2/token")).count()
    }

    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

async fn forward(State(state): State<Arc<FaultState>>, req: Request) -> Response {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    state.seen.lock().unwrap().push(format!("{} {}", req.method(), req.uri().path()));
    let mode = state.mode.load(Ordering::SeqCst);
    if mode == Mode::TooMany as u8 {
        return Response::builder()
            .status(429)
            .header("retry-after", "7")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#))
            .unwrap();
    }
    if mode == Mode::Unavailable as u8 {
        return Response::builder().status(503).body(Body::from("upstream maintenance")).unwrap();
    }
    if mode == Mode::Slow as u8 {
        tokio::time::sleep(Duration::from_millis(state.delay_ms.load(Ordering::SeqCst))).await;
    }
    let (parts, body) = req.into_parts();
    let url = format!("{}{path_and_query}", state.target);
    let mut out = state.http.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "connection" | "content-length" | "transfer-encoding") {
            out = out.header(name, value);
        }
    }
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if !bytes.is_empty() {
        out = out.body(bytes);
    }
    let upstream = match out.send().await {
        Ok(r) => r,
        Err(e) => return Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
    };
    let mut resp = Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        if !matches!(name.as_str(), "connection" | "transfer-encoding") {
            resp = resp.header(name, value);
        }
    }
    let path = parts.uri.path();
    let corrupt = mode == Mode::WrongBytes as u8
        && parts.method == "GET"
        && (path.contains("/blobs/") || path.contains("/manifests/"));
    if corrupt {
        let mut data = upstream.bytes().await.unwrap_or_default().to_vec();
        if let Some(last) = data.last_mut() {
            *last ^= 0xff;
        }
        return resp.body(Body::from(data)).unwrap();
    }
    let body = upstream.bytes_stream().map(|r| r.map_err(std::io::Error::other));
    if mode == Mode::Stall as u8 && path.contains("/blobs/") {
        let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
        let stalled =
            futures_util::stream::unfold((Box::pin(body), 0usize, false), move |(mut body, sent, paused)| async move {
                if sent >= (1 << 20) && !paused {
                    tokio::time::sleep(delay).await;
                    return Some((Ok(bytes::Bytes::new()), (body, sent, true)));
                }
                let item = body.next().await?;
                let n = item.as_ref().map_or(0, |b| b.len());
                Some((item, (body, sent + n, paused)))
            });
        return resp.body(Body::from_stream(stalled)).unwrap();
    }
    resp.body(Body::from_stream(body)).unwrap()
}

/// A caller of the Berth under test.
#[derive(Clone)]
pub struct Puller {
    base: String,
    cred: Option<(String, String)>,
    http: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// Reading the body failed (the server broke it off).
    pub broken: bool,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap_or_default().to_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn message(&self) -> String {
        self.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
    }
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

impl Puller {
    pub fn new(base: &str, cred: Option<(&str, &str)>) -> Puller {
        berth_testkit::install_crypto_provider();
        Puller {
            base: base.trim_end_matches('/').to_owned(),
            cred: cred.map(|(u, p)| (u.to_owned(), p.to_owned())),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str) -> Got {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).header("accept", ACCEPT);
        if let Some((u, p)) = &self.cred {
            r = r.basic_auth(u, Some(p));
        }
        let resp = r.send().await.unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let mut body = Vec::new();
        let mut broken = false;
        let mut stream = resp.bytes_stream();
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => body.extend_from_slice(&b),
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        Got { status, headers, body, broken }
    }

    pub async fn get(&self, path: &str) -> Got {
        self.send(reqwest::Method::GET, path).await
    }

    pub async fn head(&self, path: &str) -> Got {
        self.send(reqwest::Method::HEAD, path).await
    }

    pub async fn manifest(&self, repo: &str, reference: &str) -> Got {
        self.get(&format!("/v2/{repo}/manifests/{reference}")).await
    }

    pub async fn blob(&self, repo: &str, digest: &Digest) -> Got {
        self.get(&format!("/v2/{repo}/blobs/{digest}")).await
    }

    /// Pulls a whole image by tag: manifest, config, layers; asserts each
    /// arrives whole and matches its digest. Returns the manifest's digest.
    pub async fn pull(&self, repo: &str, tag: &str) -> Digest {
        let m = self.manifest(repo, tag).await;
        assert_eq!(m.status, 200, "manifest {repo}:{tag}: {}", m.text());
        let digest = Digest::sha256_of(&m.body);
        assert_eq!(m.header("docker-content-digest").as_deref(), Some(digest.as_str()));
        let v = m.json();
        let mut blobs = vec![v["config"]["digest"].as_str().unwrap().to_owned()];
        blobs.extend(v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
        for b in blobs {
            let d = Digest::parse(&b).unwrap();
            let got = self.blob(repo, &d).await;
            assert_eq!(got.status, 200, "blob {repo}@{d}: {}", got.text());
            assert!(!got.broken, "blob {repo}@{d} broke off");
            assert_eq!(Digest::sha256_of(&got.body), d, "blob {repo}@{d} arrived with other bytes");
        }
        digest
    }
}
