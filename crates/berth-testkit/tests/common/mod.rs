//! Helpers for the adversarial auth tests: a real server with auth on, HTTP
//! calls that keep everything a test compares (status, headers, body), a raw
//! TCP client for request targets that `reqwest` would normalise, and
//! hand-crafted bearer tokens.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use berth_auth::admin::{self, TokenRequest};
use berth_config::Config;
use berth_meta::AuthStore;
use berth_oci::Digest;
use berth_oci::media_type::OCI_MANIFEST;
use berth_testkit::{TestServer, fixtures};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const READ: &str = "read:package";
pub const WRITE: &str = "write:package";

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Cred {
    Anon,
    Basic(String, String),
    Bearer(String),
    /// A verbatim `Authorization` header value.
    Raw(String),
}

impl Cred {
    pub fn basic(user: &str, secret: &str) -> Cred {
        Cred::Basic(user.to_owned(), secret.to_owned())
    }

    pub fn bearer(token: &str) -> Cred {
        Cred::Bearer(token.to_owned())
    }
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The request was a HEAD: no body to check.
    pub head: bool,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn www(&self) -> Option<String> {
        self.header("www-authenticate")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `code` of the first entry of an OCI error body.
    pub fn error_code(&self) -> String {
        let v = self.json();
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no OCI error code in body: {}", self.text()))
            .to_owned()
    }

    /// Status, body and headers without what legitimately differs per request.
    pub fn fingerprint(&self, replace: &[(&str, &str)]) -> (u16, String, Vec<(String, String)>) {
        let subst = |s: &str| replace.iter().fold(s.to_owned(), |acc, (from, to)| acc.replace(from, to));
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "x-request-id" | "date"))
            .map(|(k, v)| (k.as_str().to_owned(), subst(&String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        headers.sort();
        (self.status, subst(&self.text()), headers)
    }
}

/// Asserts an exact status and OCI error code (HEAD responses have no body to check).
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "status (body: {})", r.text());
    if r.head {
        assert!(r.body.is_empty(), "HEAD response with a body");
        return;
    }
    assert_eq!(r.error_code(), code, "error code (status {}, body: {})", r.status, r.text());
}

/// Asserts 403 DENIED.
#[track_caller]
pub fn assert_denied(r: &Resp) {
    assert_error(r, 403, "DENIED");
}

/// A pushed image.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub layer_digest: String,
    pub manifest_digest: String,
}

impl Image {
    pub fn new(seed: u64) -> Image {
        let config = fixtures::blob(seed, 97);
        let layer = fixtures::blob(seed.wrapping_add(1_000_003), 1500);
        let manifest = fixtures::image_manifest(&config, &[&layer]);
        Image {
            config_digest: digest(&config),
            layer_digest: digest(&layer),
            manifest_digest: digest(&manifest),
            config,
            layer,
            manifest,
        }
    }
}

pub fn digest(data: &[u8]) -> String {
    Digest::sha256_of(data).as_str().to_owned()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// The claims of a JWT, decoded without verification.
pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload")).expect("JSON claims")
}

/// Valid-looking claims for the test server (`iss` = `aud` = `berth`).
pub fn claims(sub: &str, access: Value) -> Value {
    let now = now();
    json!({
        "iss": "berth",
        "sub": sub,
        "aud": "berth",
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": "00000000000000000000000000000000",
        "access": access,
    })
}

/// `[{"type":"repository","name":repo,"actions":[...]}]`
pub fn repo_access(repo: &str, actions: &[&str]) -> Value {
    json!([{ "type": "repository", "name": repo, "actions": actions }])
}

/// Signs `claims` with an Ed25519 PKCS#8 PEM key, naming `kid`.
pub fn sign_ed25519(pem: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_ed_pem(pem).expect("Ed25519 PEM key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A JWT with an arbitrary (unsigned-by-us) header JSON, claims and signature part.
pub fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        signature
    )
}

/// A fresh Ed25519 private key in PKCS#8 PEM form (what the server's key
/// file looks like), generated by loading `JwtKeys` on a missing file.
pub fn foreign_key_pem(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("foreign-ed25519.pem");
    berth_auth::JwtKeys::load(&path, &[], "berth", "berth", Duration::from_secs(300)).expect("generate a foreign key");
    std::fs::read(&path).expect("read foreign key")
}

/// The test server plus an HTTP client.
pub struct H {
    pub server: TestServer,
    pub http: reqwest::Client,
}

impl H {
    /// A server with auth on. Incidental failed logins must not lock tests
    /// out, so the failure limit is high unless `customize` lowers it.
    pub async fn start(customize: impl FnOnce(&mut Config)) -> H {
        let server = TestServer::start_with(|c| {
            c.auth.enabled = true;
            c.auth.failed_login_limit = 1000;
            customize(c);
        })
        .await;
        assert!(server.auth.is_some(), "auth service is up");
        H { server, http: client(None) }
    }

    pub async fn default() -> H {
        H::start(|_| {}).await
    }

    pub fn store(&self) -> &dyn AuthStore {
        self.server.auth.as_ref().expect("auth enabled").store().as_ref()
    }

    pub fn kid(&self) -> String {
        self.server.auth.as_ref().expect("auth enabled").keys().kid().to_owned()
    }

    /// The server's signing key (PKCS#8 PEM).
    pub fn key_pem(&self) -> Vec<u8> {
        let path = self.server.config.auth.jwt_key_file.as_ref().expect("jwt_key_file is set by Config::load");
        std::fs::read(path).expect("read the server's key file")
    }

    /// Signs `claims` with the server's own key and kid.
    pub fn sign(&self, claims: &Value) -> String {
        sign_ed25519(&self.key_pem(), Some(&self.kid()), claims)
    }

    pub async fn user(&self, name: &str, password: &str) {
        admin::create_user(self.store(), name, Some(password), false).await.expect("create user");
    }

    pub async fn site_admin(&self, name: &str, password: &str) {
        admin::create_user(self.store(), name, Some(password), true).await.expect("create site admin");
    }

    pub async fn org(&self, name: &str) {
        admin::create_org(self.store(), name).await.expect("create org");
    }

    pub async fn member(&self, org: &str, user: &str, role: &str) {
        admin::set_member(self.store(), org, user, role).await.expect("set member");
    }

    /// A personal access token: (id, secret).
    pub async fn pat(
        &self,
        user: &str,
        scopes: &[&str],
        repos: &[&str],
        expires_in: Option<Duration>,
    ) -> (i64, String) {
        let req = TokenRequest {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            expires_in,
            name: format!("test token for {user}"),
        };
        let (id, secret) = admin::create_token(self.store(), user, &req).await.expect("create token");
        assert!(secret.starts_with("bpat_"), "{secret}");
        (id, secret)
    }

    pub async fn revoke(&self, id: i64) {
        admin::revoke_token(self.store(), id).await.expect("revoke token");
    }

    pub async fn disable(&self, user: &str) {
        admin::set_disabled(self.store(), user, true).await.expect("disable user");
    }

    pub async fn visibility(&self, target: &str, public: bool) {
        admin::set_visibility(self.store(), target, public).await.expect("set visibility");
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub fn realm(&self) -> String {
        format!("http://{}/v2/token", self.server.addr)
    }

    /// The exact challenge: `Bearer realm="...",service="berth"[,scope="..."][,error="..."]`.
    pub fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> String {
        let mut v = format!("Bearer realm=\"{}\",service=\"berth\"", self.realm());
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        v
    }

    /// 401 UNAUTHORIZED with exactly this challenge.
    #[track_caller]
    pub fn assert_401(&self, r: &Resp, scope: Option<&str>, error: Option<&str>) {
        assert_eq!(r.status, 401, "status (body: {})", r.text());
        if !r.head {
            assert_eq!(r.error_code(), "UNAUTHORIZED", "error code (body: {})", r.text());
        }
        assert_eq!(r.www().as_deref(), Some(self.challenge(scope, error).as_str()), "WWW-Authenticate");
    }

    /// The repeat of an `insufficient_scope` refusal with the same user's
    /// token: 403 DENIED with the same challenge (RFC 6750's form, for
    /// clients that only drop a token on 403).
    #[track_caller]
    pub fn assert_403_scope(&self, r: &Resp, scope: &str) {
        assert_eq!(r.status, 403, "status (body: {})", r.text());
        if !r.head {
            assert_eq!(r.error_code(), "DENIED", "error code (body: {})", r.text());
        }
        let expected = self.challenge(Some(scope), Some("insufficient_scope"));
        assert_eq!(r.www().as_deref(), Some(expected.as_str()), "WWW-Authenticate");
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        send_with(&self.http, method, &self.url(path), cred, headers, body).await
    }

    pub async fn get(&self, path: &str, cred: &Cred) -> Resp {
        self.send(Method::GET, path, cred, &[], None).await
    }

    pub async fn head(&self, path: &str, cred: &Cred) -> Resp {
        self.send(Method::HEAD, path, cred, &[], None).await
    }

    pub async fn delete(&self, path: &str, cred: &Cred) -> Resp {
        self.send(Method::DELETE, path, cred, &[], None).await
    }

    /// `POST /v2/<repo>/blobs/uploads/` (a new session).
    pub async fn start_upload(&self, repo: &str, cred: &Cred) -> Resp {
        self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), cred, &[], None).await
    }

    /// A monolithic blob upload (`POST ...?digest=`).
    pub async fn upload_blob(&self, repo: &str, cred: &Cred, data: &[u8]) -> Resp {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", digest(data));
        self.send(Method::POST, &path, cred, &[("content-type", "application/octet-stream")], Some(data.to_vec())).await
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, cred: &Cred, manifest: &[u8]) -> Resp {
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.send(Method::PUT, &path, cred, &[("content-type", OCI_MANIFEST)], Some(manifest.to_vec())).await
    }

    pub async fn get_manifest(&self, repo: &str, reference: &str, cred: &Cred) -> Resp {
        self.send(Method::GET, &format!("/v2/{repo}/manifests/{reference}"), cred, &[("accept", OCI_MANIFEST)], None)
            .await
    }

    /// Pushes config, layer and manifest (tagged `tag`), asserting success.
    pub async fn push_image(&self, repo: &str, tag: &str, cred: &Cred, seed: u64) -> Image {
        let img = Image::new(seed);
        for blob in [&img.config, &img.layer] {
            let r = self.upload_blob(repo, cred, blob).await;
            assert_eq!(r.status, 201, "blob upload to {repo}: {}", r.text());
        }
        let r = self.put_manifest(repo, tag, cred, &img.manifest).await;
        assert_eq!(r.status, 201, "manifest push to {repo}:{tag}: {}", r.text());
        img
    }

    /// `GET /v2/token?service=berth&scope=...` (one `scope` parameter per entry).
    pub async fn token(&self, cred: &Cred, scopes: &[&str]) -> Resp {
        self.token_with(&self.http, cred, scopes).await
    }

    /// [`H::token`] through a given client (e.g. bound to another address).
    pub async fn token_with(&self, client: &reqwest::Client, cred: &Cred, scopes: &[&str]) -> Resp {
        let mut pairs = vec![("service", "berth")];
        pairs.extend(scopes.iter().map(|s| ("scope", *s)));
        let q = serde_urlencoded::to_string(&pairs).expect("query");
        send_with(client, Method::GET, &self.url(&format!("/v2/token?{q}")), cred, &[], None).await
    }

    /// The JWT from a successful token request.
    pub async fn jwt(&self, cred: &Cred, scopes: &[&str]) -> String {
        let r = self.token(cred, scopes).await;
        assert_eq!(r.status, 200, "token request: {}", r.text());
        r.json()["token"].as_str().expect("token field").to_owned()
    }

    /// `POST /v2/token` with an OAuth2 form.
    pub async fn token_form(&self, form: &[(&str, &str)]) -> Resp {
        let body = serde_urlencoded::to_string(form).expect("form");
        self.send(
            Method::POST,
            "/v2/token",
            &Cred::Anon,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(body.into_bytes()),
        )
        .await
    }

    /// A raw HTTP/1.1 request with a verbatim request target.
    pub async fn raw(&self, method: &str, target: &str, cred: &Cred) -> Resp {
        raw_request(self.server.addr, method, target, cred, &[]).await
    }
}

/// A client, optionally bound to a local address (e.g. `127.0.0.2`, to look
/// like another client IP on loopback).
pub fn client(local: Option<IpAddr>) -> reqwest::Client {
    // reqwest may be built with rustls but no crypto provider (feature
    // unification with the S3 backend): make sure one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(local)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

pub fn auth_header(cred: &Cred) -> Option<String> {
    match cred {
        Cred::Anon => None,
        Cred::Basic(u, p) => Some(format!("Basic {}", STANDARD.encode(format!("{u}:{p}")))),
        Cred::Bearer(t) => Some(format!("Bearer {t}")),
        Cred::Raw(v) => Some(v.clone()),
    }
}

pub async fn send_with(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    cred: &Cred,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let head = method == Method::HEAD;
    let mut rb = http.request(method, url);
    if let Some(v) = auth_header(cred) {
        rb = rb.header("authorization", v);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("response body").to_vec();
    Resp { head, status, headers, body }
}

/// Sends `METHOD target HTTP/1.1` exactly as given (no URL normalisation) and
/// reads the response until the server closes the connection.
/// `headers` are sent verbatim; a `Host` among them replaces the default.
pub async fn raw_request(addr: SocketAddr, method: &str, target: &str, cred: &Cred, headers: &[(&str, &str)]) -> Resp {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(v) = auth_header(cred) {
        req.push_str(&format!("Authorization: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("response within 60 s")
        .expect("read response");
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of response head");
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':').expect("header line");
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(v.trim()).expect("header value"),
        );
    }
    let mut body = raw[split + 4..].to_vec();
    if head {
        body.clear();
    } else if headers.get("transfer-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked")) {
        body = dechunk(&body);
    }
    Resp { head, status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}
