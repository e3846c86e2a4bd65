//! The client: construction, and the one path every request takes
//! (authorization, redirects, timeouts, status mapping).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};

use crate::challenge::{self, Challenge};
use crate::error::{Origin, UpstreamError, clean_text};
use crate::settings::{SettingsError, UpstreamSettings};
use crate::token::{Token, TokenCache, TokenKey, TokenResponse, use_until};

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
/// Redirects followed for one request before it is refused as a loop.
pub const MAX_REDIRECTS: usize = 5;
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;
const MAX_ERROR_BODY: usize = 8 * 1024;
/// Remembered operation scopes before the memo is cleared.
const MAX_SCOPES: usize = 4096;

/// A client for one upstream registry. Cheap to clone; clones share the
/// connection pool and the token cache.
#[derive(Clone)]
pub struct UpstreamClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) origin: Origin,
    /// The base URL without a trailing slash.
    base: Url,
    http: reqwest::Client,
    /// `Basic ...` for the registry and its token realm, when configured.
    pub(crate) basic: Option<HeaderValue>,
    username: Option<String>,
    header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) page_size: Option<u32>,
    /// The registry answered a Basic challenge: send Basic up front from now on.
    basic_wanted: AtomicBool,
    tokens: TokenCache,
    /// Our scope for an operation (`repository:x:pull`) -> the token key its
    /// challenge named, so later requests carry the token up front.
    scopes: Mutex<HashMap<String, TokenKey>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").field("upstream", &self.inner.origin).finish_non_exhaustive()
    }
}

/// One request to the registry, described for authorization and errors.
pub(crate) struct Call {
    pub method: Method,
    pub url: Url,
    pub accept: Option<String>,
    /// The token scope this request needs, e.g. `repository:library/alpine:pull`.
    pub scope: String,
    /// What was asked for, for errors: `manifest library/alpine:latest`.
    pub what: String,
}

pub(crate) enum Auth {
    Basic,
    Bearer(String),
}

impl UpstreamClient {
    pub fn new(settings: UpstreamSettings) -> Result<Self, SettingsError> {
        let fail = |reason: String| SettingsError { name: settings.name.clone(), reason };
        let mut base = Url::parse(&settings.url).map_err(|e| fail(format!("url {:?}: {e}", settings.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(fail(format!("url {:?} must be http:// or https:// with a host", settings.url)));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(fail("url must not hold credentials: set username and password instead".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(fail("url must not have a query or fragment".into()));
        }
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        let basic = match &settings.credentials {
            None => None,
            Some(c) if c.username.is_empty() || c.password.is_empty() => {
                return Err(fail("username and password must both be set, or neither".into()));
            }
            Some(c) if c.username.contains(':') => return Err(fail("username must not contain ':'".into())),
            Some(c) => {
                let raw = format!("{}:{}", c.username, c.password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut v =
                    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| fail("bad credentials".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        // reqwest uses rustls with the process-wide provider (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(pem) = &settings.ca_certificates_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| fail(format!("CA certificates: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| fail(format!("HTTP client: {}", error_chain(&e))))?;
        let origin = Origin::new(&settings.name, base.as_str().trim_end_matches('/'));
        Ok(UpstreamClient {
            inner: Arc::new(Inner {
                origin,
                base,
                http,
                basic,
                username: settings.credentials.map(|c| c.username),
                header_timeout: settings.header_timeout,
                idle_timeout: settings.idle_timeout,
                page_size: settings.page_size,
                basic_wanted: AtomicBool::new(false),
                tokens: TokenCache::default(),
                scopes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `upstream "name" (base URL)`, as errors name it.
    pub fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// `<base>/v2/<path>`.
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        let base = self.inner.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/v2/{path}")).expect("base URL plus a validated path is a URL")
    }

    /// Same scheme, host and port as the registry: the only place
    /// credentials and tokens are sent.
    pub(crate) fn is_registry(&self, url: &Url) -> bool {
        let b = &self.inner.base;
        url.scheme() == b.scheme()
            && url.host_str() == b.host_str()
            && url.port_or_known_default() == b.port_or_known_default()
    }

    pub(crate) fn unavailable(&self, what: &str, status: Option<u16>, detail: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.inner.origin.clone(),
            what: what.into(),
            status,
            detail: detail.into(),
        }
    }

    /// An `Invalid` error, logged once here: the log says which upstream misbehaved.
    pub(crate) fn invalid(&self, what: &str, detail: impl Into<String>) -> UpstreamError {
        let detail = detail.into();
        tracing::warn!(upstream = %self.inner.origin, what, %detail, "upstream misbehaved");
        UpstreamError::Invalid { upstream: self.inner.origin.clone(), what: what.into(), detail }
    }

    /// Sends `call`, answering one authentication challenge: the registry's
    /// answer to the request (or to its one retry), whatever its status.
    pub(crate) async fn send(&self, call: &Call) -> Result<Response, UpstreamError> {
        let auth = self.auth_up_front(call).await?;
        let resp = self.execute(call, auth.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED || !self.is_registry(resp.url()) {
            return Ok(resp);
        }
        let values: Vec<String> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let challenges = challenge::parse(values.iter().map(String::as_str));
        match challenge::pick(&challenges).cloned() {
            Some(Challenge::Bearer { realm, service, scope, error }) => {
                let key = TokenKey { realm, service, scope: scope.or_else(|| Some(call.scope.clone())) };
                self.remember_scope(&call.scope, &key);
                let sent = match auth {
                    Some(Auth::Bearer(t)) => Some(t),
                    _ => None,
                };
                if let Some(t) = &sent
                    && error.as_deref() == Some("insufficient_scope")
                    && self.inner.tokens.peek(&key).as_deref() == Some(t.as_str())
                {
                    // The current token for this very scope does not grant
                    // it (Docker Hub says so for a missing or private
                    // repository): a new one would not either.
                    return Ok(resp);
                }
                self.discard(resp).await;
                let token = self.token(&key, sent.as_deref()).await?;
                self.execute(call, Some(&Auth::Bearer(token))).await
            }
            Some(Challenge::Basic) => {
                if self.inner.basic.is_none() || matches!(auth, Some(Auth::Basic)) {
                    return Ok(resp);
                }
                self.inner.basic_wanted.store(true, Ordering::Relaxed);
                self.discard(resp).await;
                self.execute(call, Some(&Auth::Basic)).await
            }
            None if values.is_empty() => Ok(resp),
            None => Err(self.invalid(
                &call.what,
                format!("401 with no usable WWW-Authenticate challenge: {:?}", clean_text(&values.join(" | "), 200)),
            )),
        }
    }

    /// Reads a small unwanted body (a 401's, a redirect's) so the
    /// connection goes back to the pool instead of being closed.
    async fn discard(&self, mut resp: Response) {
        let mut left = MAX_ERROR_BODY;
        let wait = self.inner.idle_timeout.min(Duration::from_secs(1));
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout(wait, resp.chunk()).await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
    }

    /// What to send before being asked: Basic once the registry asked for
    /// it, or the token of this operation's scope once a challenge named it.
    async fn auth_up_front(&self, call: &Call) -> Result<Option<Auth>, UpstreamError> {
        if self.inner.basic.is_some() && self.inner.basic_wanted.load(Ordering::Relaxed) {
            return Ok(Some(Auth::Basic));
        }
        let key = self.inner.scopes.lock().unwrap_or_else(|e| e.into_inner()).get(&call.scope).cloned();
        match key {
            Some(key) => Ok(Some(Auth::Bearer(self.token(&key, None).await?))),
            None => Ok(None),
        }
    }

    fn remember_scope(&self, scope: &str, key: &TokenKey) {
        let mut scopes = self.inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if scopes.len() >= MAX_SCOPES && !scopes.contains_key(scope) {
            scopes.clear();
        }
        scopes.insert(scope.to_owned(), key.clone());
    }

    async fn token(&self, key: &TokenKey, rejected: Option<&str>) -> Result<String, UpstreamError> {
        self.inner.tokens.get(key, rejected, || self.fetch_token(key)).await
    }

    /// A token from the realm: GET with `service`, each `scope`, and
    /// `account`; Basic credentials when configured (never over plain HTTP
    /// to a host other than the registry's).
    async fn fetch_token(&self, key: &TokenKey) -> Result<Token, UpstreamError> {
        let scope_text = key.scope.as_deref().unwrap_or("the registry");
        let realm = Url::parse(&key.realm).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        let what = format!("token for {scope_text} from {}", realm.as_ref().map_or("?".into(), url_for_humans));
        let Some(mut url) = realm else {
            return Err(
                self.invalid(&what, format!("token realm {:?} is not an http(s) URL", clean_text(&key.realm, 200)))
            );
        };
        let creds = self.inner.basic.clone();
        if creds.is_some() && url.scheme() != "https" && url.host_str() != self.inner.base.host_str() {
            return Err(self.invalid(&what, "the token realm would receive the credentials over plain HTTP"));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = &key.service {
                q.append_pair("service", service);
            }
            for scope in key.scope.iter().flat_map(|s| s.split_whitespace()) {
                q.append_pair("scope", scope);
            }
            if let Some(user) = self.inner.username.as_deref().filter(|_| creds.is_some()) {
                q.append_pair("account", user);
            }
        }
        let mut req = self.inner.http.get(url).header(header::ACCEPT, "application/json");
        if let Some(c) = creds {
            req = req.header(header::AUTHORIZATION, c);
        }
        let fetched_at = tokio::time::Instant::now();
        let resp = self.timed_send(req, &what).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what).await);
        }
        let body = self.read_limited(resp, MAX_TOKEN_RESPONSE, &what).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.invalid(&what, format!("token response is not JSON: {e}")))?;
        let (value, expires_in) =
            parsed.into_parts().ok_or_else(|| self.invalid(&what, "token response has no usable token"))?;
        Ok(Token { value, use_until: use_until(fetched_at, expires_in) })
    }

    /// Sends `call` with `auth` (to the registry's own origin only),
    /// following redirects: credentials never go to another host, so a blob
    /// redirected to object storage is fetched without them.
    pub(crate) async fn execute(&self, call: &Call, auth: Option<&Auth>) -> Result<Response, UpstreamError> {
        let mut url = call.url.clone();
        for hop in 0..=MAX_REDIRECTS {
            let mut req = self.inner.http.request(call.method.clone(), url.clone());
            if let Some(accept) = &call.accept {
                req = req.header(header::ACCEPT, accept);
            }
            if let Some(auth) = auth.filter(|_| self.is_registry(&url)) {
                req = req.header(header::AUTHORIZATION, self.auth_header(auth, &call.what)?);
            }
            let resp = self.timed_send(req, &call.what).await?;
            let status = resp.status();
            if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(header::LOCATION) else { return Ok(resp) };
            let next = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .ok_or_else(|| self.invalid(&call.what, format!("HTTP {status} with a malformed Location")))?;
            if url.scheme() == "https" && next.scheme() == "http" {
                return Err(self.invalid(&call.what, format!("redirect from HTTPS to {}", url_for_humans(&next))));
            }
            if hop == MAX_REDIRECTS {
                return Err(self.invalid(&call.what, format!("more than {MAX_REDIRECTS} redirects (a loop?)")));
            }
            self.discard(resp).await;
            url = next;
        }
        unreachable!("the loop returns at its last hop")
    }

    fn auth_header(&self, auth: &Auth, what: &str) -> Result<HeaderValue, UpstreamError> {
        match auth {
            Auth::Basic => Ok(self.inner.basic.clone().expect("Basic is only chosen with credentials")),
            Auth::Bearer(token) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| self.invalid(what, "token is not a valid header value"))?;
                v.set_sensitive(true);
                Ok(v)
            }
        }
    }

    /// Sends with the header timeout; transport failures are `Unavailable`.
    async fn timed_send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Response, UpstreamError> {
        match tokio::time::timeout(self.inner.header_timeout, req.send()).await {
            Err(_) => Err(self.unavailable(what, None, format!("no response within {:?}", self.inner.header_timeout))),
            Ok(Err(e)) => Err(self.unavailable(what, None, transport_text(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// `resp` when it is a success, else the error its status means.
    pub(crate) async fn check(&self, resp: Response, what: &str) -> Result<Response, UpstreamError> {
        if resp.status().is_success() { Ok(resp) } else { Err(self.status_error(resp, what).await) }
    }

    /// The error an unsuccessful answer means, with the upstream's own
    /// message (OCI error body) where it sent one.
    pub(crate) async fn status_error(&self, resp: Response, what: &str) -> UpstreamError {
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let detail = self.error_detail(resp).await;
        let (upstream, what) = (self.inner.origin.clone(), what.to_owned());
        match status.as_u16() {
            404 => UpstreamError::NotFound { upstream, what, detail },
            401 => UpstreamError::Unauthorized { upstream, what, detail },
            403 => UpstreamError::Denied { upstream, what, detail },
            429 => UpstreamError::TooManyRequests { upstream, what, retry_after },
            408 | 500..=599 => UpstreamError::Unavailable { upstream, what, status: Some(status.as_u16()), detail },
            s => {
                let sep = if detail.is_empty() { "" } else { ": " };
                self.invalid(&what, format!("unexpected HTTP {s}{sep}{detail}"))
            }
        }
    }

    async fn error_detail(&self, resp: Response) -> String {
        let Ok(body) = self.read_limited(resp, MAX_ERROR_BODY, "error body").await else { return String::new() };
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorItem>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorItem {
            code: Option<String>,
            message: Option<String>,
        }
        if let Ok(e) = serde_json::from_slice::<Errors>(&body)
            && let Some(first) = e.errors.first()
        {
            let text = [first.code.as_deref(), first.message.as_deref()].into_iter().flatten().collect::<Vec<_>>();
            return clean_text(&text.join(": "), 200);
        }
        match std::str::from_utf8(&body) {
            Ok(text) if !text.trim_start().starts_with('<') => clean_text(text, 200),
            _ => String::new(),
        }
    }

    /// The whole body, refused past `limit` bytes (checked against
    /// `Content-Length` first, then while reading) or after a pause longer
    /// than the idle timeout.
    pub(crate) async fn read_limited(
        &self,
        mut resp: Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        if let Some(len) = content_length(resp.headers())
            && len > limit as u64
        {
            return Err(self.invalid(what, format!("body of {len} bytes is over the limit of {limit}")));
        }
        let mut buf = BytesMut::new();
        loop {
            match tokio::time::timeout(self.inner.idle_timeout, resp.chunk()).await {
                Err(_) => {
                    let idle = self.inner.idle_timeout;
                    return Err(self.unavailable(what, None, format!("body stalled: no data for {idle:?}")));
                }
                Ok(Err(e)) => return Err(self.unavailable(what, None, format!("body: {}", transport_text(&e)))),
                Ok(Ok(None)) => return Ok(buf.freeze()),
                Ok(Ok(Some(chunk))) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(self.invalid(what, format!("body is over the limit of {limit} bytes")));
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// `Content-Length` as sent (a HEAD answer has no body to measure).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Scheme, host and path: never the query, which for a presigned URL is a credential.
pub(crate) fn url_for_humans(url: &Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

/// A transport error with its causes, without the URL reqwest embeds.
fn transport_text(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    with_causes(kind, e)
}

/// `what`, then each cause of `e` (not `e`'s own text, which names the URL).
pub(crate) fn with_causes(what: &str, e: &reqwest::Error) -> String {
    let mut text = what.to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn settings_are_checked() {
        let bad = |url: &str| UpstreamClient::new(UpstreamSettings::new("u", url)).unwrap_err().reason;
        assert!(bad("ftp://x").contains("http"));
        assert!(bad("not a url").contains("url"));
        assert!(bad("https://bob:pw@x").contains("credentials"));
        assert!(bad("https://x/?a=b").contains("query"));
        let s = UpstreamSettings::new("u", "https://x").with_credentials("bob", "");
        assert!(UpstreamClient::new(s).unwrap_err().reason.contains("both"));
        let c = UpstreamClient::new(UpstreamSettings::new("u", "https://x/prefix/")).unwrap();
        assert_eq!(c.endpoint("a/tags/list").as_str(), "https://x/prefix/v2/a/tags/list");
        assert_eq!(c.origin().to_string(), "upstream \"u\" (https://x/prefix)");
    }

    #[test]
    fn urls_for_humans_drop_queries() {
        let u = Url::parse("https://bucket.s3:8443/blobs/x?X-Amz-Signature=secret").unwrap();
        assert_eq!(url_for_humans(&u), "https://bucket.s3:8443/blobs/x");
    }
}
