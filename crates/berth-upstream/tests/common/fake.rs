//! A fake upstream on loopback that behaves like Docker Hub: every `/v2/`
//! request needs a Bearer token for its repository's scope, the token comes
//! from `/token` (counted, with `expires_in`), and blobs redirect (307) to a
//! second server standing in for object storage.
//!
//! Repositories named `fault/...` misbehave on purpose (see `fault`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_oci::Digest;
use futures_util::{StreamExt, stream};
use tokio::task::JoinHandle;

pub const SERVICE: &str = "fake-registry";

/// Tag or digest -> (bytes, media type).
type Manifests = HashMap<String, (Vec<u8>, String)>;

#[derive(Default)]
pub struct FakeState {
    pub url: Mutex<String>,
    pub storage_url: Mutex<String>,
    /// Requests to `/token`, and what each asked for.
    pub token_requests: AtomicUsize,
    pub token_queries: Mutex<Vec<String>>,
    /// The Authorization header each token request carried.
    pub token_authorization: Mutex<Vec<Option<String>>>,
    /// 401s answered by the registry endpoints.
    pub unauthorized: AtomicUsize,
    pub expires_in: AtomicU64,
    pub token_delay_ms: AtomicU64,
    /// Answer `access_token` instead of `token`.
    pub oauth_style: AtomicBool,
    pub realm_credentials: Mutex<Option<(String, String)>>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    next_token: AtomicUsize,
    /// Per repository.
    manifests: Mutex<HashMap<String, Manifests>>,
    tags: Mutex<HashMap<String, Vec<String>>>,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    referrers: Mutex<HashMap<String, Vec<serde_json::Value>>>,
    pub referrers_api: AtomicBool,
    pub storage_requests: AtomicUsize,
    pub storage_saw_authorization: AtomicBool,
    /// `METHOD path?query` of every registry request.
    pub requests: Mutex<Vec<String>>,
}

pub struct Fake {
    pub url: String,
    pub storage_url: String,
    pub state: Arc<FakeState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(router: axum::Router) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (url, task)
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(FakeState::default());
        state.expires_in.store(300, Ordering::SeqCst);
        state.referrers_api.store(true, Ordering::SeqCst);
        let registry =
            axum::Router::new().route("/token", axum::routing::get(token)).fallback(registry).with_state(state.clone());
        let storage = axum::Router::new().fallback(storage).with_state(state.clone());
        let (url, t1) = serve(registry).await;
        let (storage_url, t2) = serve(storage).await;
        *state.url.lock().unwrap() = url.clone();
        *state.storage_url.lock().unwrap() = storage_url.clone();
        Fake { url, storage_url, state, tasks: vec![t1, t2] }
    }

    pub fn add_manifest(&self, repo: &str, tag: Option<&str>, media_type: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let mut m = self.state.manifests.lock().unwrap();
        let entry = m.entry(repo.to_owned()).or_default();
        entry.insert(digest.to_string(), (bytes.to_vec(), media_type.to_owned()));
        if let Some(tag) = tag {
            entry.insert(tag.to_owned(), (bytes.to_vec(), media_type.to_owned()));
            let mut tags = self.state.tags.lock().unwrap();
            let list = tags.entry(repo.to_owned()).or_default();
            list.push(tag.to_owned());
            list.sort();
        }
        digest
    }

    pub fn add_blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        self.state.blobs.lock().unwrap().insert(digest.to_string(), bytes.to_vec());
        digest
    }

    pub fn add_referrer(&self, subject: &Digest, descriptor: serde_json::Value) {
        self.state.referrers.lock().unwrap().entry(subject.to_string()).or_default().push(descriptor);
    }

    pub fn revoke_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    pub fn token_queries_matching(&self, needle: &str) -> usize {
        self.state.token_queries.lock().unwrap().iter().filter(|q| q.contains(needle)).count()
    }

    pub fn requests_matching(&self, needle: &str) -> usize {
        self.state.requests.lock().unwrap().iter().filter(|r| r.contains(needle)).count()
    }
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    let url = reqwest::Url::parse(&format!("http://x{}", req.uri())).unwrap();
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn token(State(s): State<Arc<FakeState>>, req: Request) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    let pairs = query_pairs(&req);
    s.token_queries.lock().unwrap().push(req.uri().query().unwrap_or("").to_owned());
    let auth = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_owned());
    s.token_authorization.lock().unwrap().push(auth.clone());
    let delay = s.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some((user, password)) = s.realm_credentials.lock().unwrap().clone() {
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        if auth.as_deref() != Some(expected.as_str()) {
            return oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "incorrect username or password");
        }
    }
    if pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.as_str()) != Some(SERVICE) {
        return oci_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "unknown service");
    }
    let scope: Vec<&str> = pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()).collect();
    let n = s.next_token.fetch_add(1, Ordering::SeqCst);
    let value = format!("tok{n}.{}", scope.join("+").replace([':', '/', '*'], "_"));
    let expires_in = s.expires_in.load(Ordering::SeqCst);
    s.tokens.lock().unwrap().insert(value.clone(), (scope.join(" "), Instant::now() + Duration::from_secs(expires_in)));
    let key = if s.oauth_style.load(Ordering::SeqCst) { "access_token" } else { "token" };
    axum::Json(serde_json::json!({key: value, "expires_in": expires_in, "issued_at": "2026-01-01T00:00:00Z"}))
        .into_response()
}

/// The bearer token's granted scopes, if it is valid now.
fn granted(s: &FakeState, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    let tokens = s.tokens.lock().unwrap();
    let (scope, expires) = tokens.get(value)?;
    (Instant::now() < *expires).then(|| scope.clone())
}

fn challenge(s: &FakeState, scope: &str) -> Response {
    s.unauthorized.fetch_add(1, Ordering::SeqCst);
    let url = s.url.lock().unwrap().clone();
    let value = format!(r#"Bearer realm="{url}/token",service="{SERVICE}",scope="{scope}""#);
    let mut r = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, value.parse().unwrap());
    r
}

/// A body that sends `first` bytes of `total` and then stalls.
fn stalling_body(first: usize, total: usize) -> Body {
    let head = stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![b'{'; first]))]);
    let tail = stream::once(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Bytes::from(vec![b' '; total - first]))
    });
    Body::from_stream(head.chain(tail))
}

async fn registry(State(s): State<Arc<FakeState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    s.requests.lock().unwrap().push(format!("{} {}", req.method(), req.uri()));
    let Some(rest) = path.strip_prefix("/v2/") else { return StatusCode::NOT_FOUND.into_response() };
    let (repo, kind, arg) = if rest == "_catalog" {
        (String::new(), "catalog", String::new())
    } else if let Some((repo, r)) = rest.split_once("/manifests/") {
        (repo.to_owned(), "manifests", r.to_owned())
    } else if let Some((repo, d)) = rest.split_once("/blobs/") {
        (repo.to_owned(), "blobs", d.to_owned())
    } else if let Some((repo, d)) = rest.split_once("/referrers/") {
        (repo.to_owned(), "referrers", d.to_owned())
    } else if let Some(repo) = rest.strip_suffix("/tags/list") {
        (repo.to_owned(), "tags", String::new())
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let scope = if kind == "catalog" { "registry:catalog:*".to_owned() } else { format!("repository:{repo}:pull") };
    if repo == "fault/badchallenge" {
        s.unauthorized.fetch_add(1, Ordering::SeqCst);
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, r#"Bearer realm="http://unterminated"#.parse().unwrap());
        return r;
    }
    match granted(&s, req.headers()) {
        Some(g) if g.split(' ').any(|x| x == scope) => {}
        _ => return challenge(&s, &scope),
    }
    if let Some(r) = fault(&s, &repo, kind, req.headers()).await {
        return r;
    }
    match kind {
        "manifests" => manifest(&s, &repo, &arg, req.method()),
        "blobs" => {
            let storage = s.storage_url.lock().unwrap().clone();
            let flag = match repo.as_str() {
                "fault/wrongbytes" => "&wrong=1",
                "fault/slowblob" => "&slow=1",
                "fault/pause" => "&pause=1",
                _ => "",
            };
            let location = format!("{storage}/blob/{arg}?X-Amz-Signature=presigned-secret{flag}");
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
        }
        "tags" => {
            let all = s.tags.lock().unwrap().get(&repo).cloned();
            let Some(all) = all else {
                return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository name not known");
            };
            let body = |page: Vec<String>| serde_json::json!({"name": repo, "tags": page});
            paginate(&req, all, &format!("/v2/{repo}/tags/list"), body)
        }
        "catalog" => {
            let mut all: Vec<String> = s.tags.lock().unwrap().keys().cloned().collect();
            all.sort();
            paginate(&req, all, "/v2/_catalog", |page| serde_json::json!({"repositories": page}))
        }
        _ => {
            if !s.referrers_api.load(Ordering::SeqCst) {
                return (StatusCode::NOT_FOUND, "404 page not found").into_response();
            }
            let manifests = s.referrers.lock().unwrap().get(&arg).cloned().unwrap_or_default();
            let body = serde_json::json!({"schemaVersion": 2, "mediaType": berth_oci::media_type::OCI_INDEX, "manifests": manifests});
            ([(header::CONTENT_TYPE, berth_oci::media_type::OCI_INDEX)], body.to_string()).into_response()
        }
    }
}

/// Distribution-style pagination: `n` and `last`, and a relative `Link`.
fn paginate(req: &Request, all: Vec<String>, path: &str, body: impl Fn(Vec<String>) -> serde_json::Value) -> Response {
    let pairs = query_pairs(req);
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let n: usize = get("n").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
    let after: Vec<String> = match get("last") {
        Some(last) => all.into_iter().filter(|t| *t > last).collect(),
        None => all,
    };
    let page: Vec<String> = after.iter().take(n).cloned().collect();
    let mut r = axum::Json(body(page.clone())).into_response();
    if after.len() > n {
        let link = format!(r#"<{path}?last={}&n={n}>; rel="next""#, page.last().unwrap());
        r.headers_mut().insert(header::LINK, link.parse().unwrap());
    }
    r
}

fn manifest(s: &FakeState, repo: &str, reference: &str, method: &Method) -> Response {
    let found = s.manifests.lock().unwrap().get(repo).and_then(|m| m.get(reference)).cloned();
    let Some((mut bytes, media_type)) = found else {
        return oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown");
    };
    let mut digest = Some(Digest::sha256_of(&bytes).to_string());
    match repo {
        "fault/liar" => digest = Some(Digest::sha256_of(b"something else").to_string()),
        "fault/nodigest" => digest = None,
        "fault/swapped" => {
            bytes.extend_from_slice(b" ");
            digest = None;
        }
        _ => {}
    }
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &media_type)
        .header(header::CONTENT_LENGTH, bytes.len());
    if let Some(d) = digest {
        r = r.header("docker-content-digest", d);
    }
    let body = if method == Method::HEAD { Body::empty() } else { Body::from(bytes) };
    r.body(body).unwrap()
}

/// What `fault/...` repositories do instead of answering normally.
async fn fault(s: &FakeState, repo: &str, kind: &str, _headers: &HeaderMap) -> Option<Response> {
    const BIG: usize = 5 * 1024 * 1024;
    let manifest_type = berth_oci::media_type::OCI_MANIFEST;
    let r = match (repo, kind) {
        ("fault/ratelimit", _) => {
            let mut r = oci_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "pull rate limit reached");
            r.headers_mut().insert(header::RETRY_AFTER, "7".parse().unwrap());
            r
        }
        ("fault/forbidden", _) => {
            let mut r = challenge(s, "repository:fault/forbidden:pull");
            let value = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().to_owned();
            let value = format!(r#"{value},error="insufficient_scope""#);
            r.headers_mut().insert(header::WWW_AUTHENTICATE, value.parse().unwrap());
            r
        }
        ("fault/broken", _) => oci_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "database is on fire"),
        ("fault/slowheaders", _) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        ("fault/slow", "manifests") => Response::builder()
            .header(header::CONTENT_TYPE, manifest_type)
            .header(header::CONTENT_LENGTH, 1000)
            .body(stalling_body(10, 1000))
            .unwrap(),
        ("fault/huge", "manifests") => ([(header::CONTENT_TYPE, manifest_type)], vec![b' '; BIG]).into_response(),
        ("fault/huge-chunked", "manifests") => {
            let chunks =
                stream::iter((0..BIG / 65536).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 65536]))));
            Response::builder().header(header::CONTENT_TYPE, manifest_type).body(Body::from_stream(chunks)).unwrap()
        }
        ("fault/loop", "blobs") => {
            let url = s.url.lock().unwrap().clone();
            let location = format!("{url}/v2/fault/loop/blobs/{}", Digest::sha256_of(b"x"));
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        _ => return None,
    };
    Some(r)
}

async fn storage(State(s): State<Arc<FakeState>>, req: Request) -> Response {
    s.storage_requests.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(header::AUTHORIZATION) {
        s.storage_saw_authorization.store(true, Ordering::SeqCst);
    }
    let pairs = query_pairs(&req);
    let flag = |k: &str| pairs.iter().any(|(key, v)| key == k && v == "1");
    if !pairs.iter().any(|(k, v)| k == "X-Amz-Signature" && v == "presigned-secret") {
        return (StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    let digest = req.uri().path().trim_start_matches("/blob/").to_owned();
    let Some(mut bytes) = s.blobs.lock().unwrap().get(&digest).cloned() else {
        return (StatusCode::NOT_FOUND, "no such key").into_response();
    };
    if flag("wrong") {
        bytes[0] ^= 0xff;
    }
    if flag("pause") {
        // 100 bytes, a 700 ms pause, the rest.
        let total = bytes.len();
        let second = Bytes::from(bytes.split_off(100));
        let head = stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        let tail = stream::once(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            Ok(second)
        });
        return Response::builder()
            .header(header::CONTENT_LENGTH, total)
            .body(Body::from_stream(head.chain(tail)))
            .unwrap();
    }
    if flag("slow") {
        let total = bytes.len();
        return Response::builder()
            .header(header::CONTENT_LENGTH, total)
            .body(stalling_body(total / 2, total))
            .unwrap();
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}
