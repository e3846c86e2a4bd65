//! A small HTTP proxy of the tests' own in front of a source registry, on a
//! loopback port: it forwards every request (keeping the `Host` header, so
//! the registry's token realm points back through it), and can
//! - refuse `/v2/_catalog` (401), as a Gitea that does not list it would;
//! - answer Gitea's `/api/v1/user` and `/api/v1/user/orgs` (which Berth's
//!   Gitea-compatible API does not serve), checking the Basic credentials;
//! - slow blob bodies down to a rate and count the bytes it sent, so a test
//!   can kill a `berth sync` in the middle of a large blob;
//! - fail the next blob requests with 429 (`Retry-After: 0`) or 503.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use futures_util::StreamExt;

/// Who Gitea's `/api/v1/user` says is signed in, and its organizations.
pub struct GiteaAccount {
    pub login: String,
    pub password: String,
    pub orgs: Vec<String>,
}

pub struct ProxyState {
    target: String,
    http: reqwest::Client,
    pub refuse_catalog: AtomicBool,
    pub gitea: Mutex<Option<GiteaAccount>>,
    /// Blob bodies are sent at most this fast (bytes per second); 0: no limit.
    pub blob_rate: AtomicU64,
    /// Blob body bytes sent so far.
    pub blob_bytes: AtomicU64,
    /// The next this many blob GETs fail: 429 when the count is even, else 503.
    pub fail_blobs: AtomicU32,
    /// `METHOD path?query` of every request, in order.
    pub requests: Mutex<Vec<String>>,
}

pub struct Proxy {
    pub url: String,
    pub state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy in front of `target` (`http://127.0.0.1:PORT`).
    pub async fn start(target: &str) -> Proxy {
        berth_testkit::install_crypto_provider();
        let state = Arc::new(ProxyState {
            target: target.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            refuse_catalog: AtomicBool::new(false),
            gitea: Mutex::new(None),
            blob_rate: AtomicU64::new(0),
            blob_bytes: AtomicU64::new(0),
            fail_blobs: AtomicU32::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(forward).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { url, state, task }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Gitea's answers for the signed-in user and its organizations.
fn gitea_api(state: &ProxyState, req: &Request) -> Option<Response> {
    let path = req.uri().path();
    if path != "/api/v1/user" && path != "/api/v1/user/orgs" {
        return None;
    }
    let gitea = state.gitea.lock().unwrap();
    let account = gitea.as_ref()?;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", account.login, account.password))
    );
    let sent = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if sent != Some(expected.as_str()) {
        return Some(json(StatusCode::UNAUTHORIZED, serde_json::json!({"message": "token is required"})));
    }
    if path == "/api/v1/user" {
        return Some(json(StatusCode::OK, serde_json::json!({"id": 1, "login": account.login})));
    }
    let first_page = req.uri().query().is_none_or(|q| q.split('&').any(|p| p == "page=1"));
    let orgs: Vec<_> = if first_page {
        account
            .orgs
            .iter()
            .enumerate()
            .map(|(i, o)| serde_json::json!({"id": i + 2, "name": o, "username": o, "full_name": ""}))
            .collect()
    } else {
        Vec::new()
    };
    Some(json(StatusCode::OK, serde_json::Value::Array(orgs)))
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let path_and_query = req.uri().path_and_query().map_or("/".to_owned(), |p| p.to_string());
    state.requests.lock().unwrap().push(format!("{} {path_and_query}", req.method()));
    if let Some(answer) = gitea_api(&state, &req) {
        return answer;
    }
    if req.uri().path() == "/v2/_catalog" && state.refuse_catalog.load(Ordering::Relaxed) {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "catalog listing is not allowed"}]}),
        );
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"proxy\""));
        return r;
    }
    let is_blob = req.uri().path().contains("/blobs/sha");
    if is_blob && let Ok(n) = state.fail_blobs.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
    {
        let (status, code) = if n % 2 == 0 {
            (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        };
        let mut r = json(status, serde_json::json!({"errors": [{"code": code, "message": "injected by the test"}]}));
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        return r;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let mut upstream = state.http.request(parts.method.clone(), format!("{}{path_and_query}", state.target));
    for (name, value) in &parts.headers {
        upstream = upstream.header(name, value);
    }
    let resp = match upstream.body(body).send().await {
        Ok(resp) => resp,
        Err(e) => return json(StatusCode::BAD_GATEWAY, serde_json::json!({"message": e.to_string()})),
    };
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            out = out.header(name, value);
        }
    }
    let rate = state.blob_rate.load(Ordering::Relaxed);
    let counter = state.clone();
    let stream = resp.bytes_stream().then(move |chunk| {
        let counter = counter.clone();
        async move {
            if let (true, Ok(bytes)) = (is_blob, &chunk) {
                counter.blob_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if rate > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(bytes.len() as f64 / rate as f64)).await;
                }
            }
            chunk
        }
    });
    out.body(Body::from_stream(stream)).unwrap()
}
