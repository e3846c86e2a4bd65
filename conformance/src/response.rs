//! Responses read whole, and assertions on them that say what was sent.

use std::fmt;

use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Every error code of the distribution spec; an error body's `code` MUST be one of them.
pub const SPEC_ERROR_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// A response with its whole body, and the request line it answers.
pub struct Resp {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sends a request and reads the whole response. Transport errors panic.
pub async fn send(rb: RequestBuilder) -> Resp {
    let (client, req) = rb.build_split();
    let req = req.expect("request builds");
    let (method, url) = (req.method().to_string(), req.url().to_string());
    let resp = client.execute(req).await.unwrap_or_else(|e| panic!("{method} {url}: transport error: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e:?}")).to_vec();
    Resp { method, url, status, headers, body }
}

/// Parses a whole HTTP/1.1 response read until the connection closed.
pub(crate) fn parse_raw(method: &str, url: &str, raw: &[u8]) -> Resp {
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{method} {url}: no header end"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {url}: bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).expect("header name");
            let value = reqwest::header::HeaderValue::from_str(v.trim()).expect("header value");
            headers.append(name, value);
        }
    }
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body);
    } else if method == "HEAD" || status == 204 || status == 304 {
        body.clear();
    }
    Resp { method: method.to_owned(), url: url.to_owned(), status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = data.get(end + 2..).unwrap_or(&[]);
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} -> {}", self.method, self.url, self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "  {k}: {}", String::from_utf8_lossy(v.as_bytes()))?;
        }
        let text = String::from_utf8_lossy(&self.body);
        let shown: String = text.chars().take(1500).collect();
        let more = if text.chars().count() > 1500 { " ..." } else { "" };
        write!(f, "  body ({} bytes): {shown}{more}", self.body.len())
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Resp {
    /// The first value of a header, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, each comma-separated list split and trimmed.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// `Content-Type` without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type").map(|v| v.split(';').next().unwrap_or("").trim())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("Content-Length {v:?} is not a number\n{self}")))
    }

    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status\n{self}");
        self
    }

    /// Asserts a header's first value, returning `self` for chaining.
    pub fn expect_header(&self, name: &str, value: &str) -> &Self {
        assert_eq!(self.header(name), Some(value), "header {name}\n{self}");
        self
    }

    /// Asserts a header is present, returning its value.
    pub fn expect_header_present(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| panic!("header {name} missing\n{self}"))
    }

    pub fn expect_no_header(&self, name: &str) -> &Self {
        assert!(self.header(name).is_none(), "header {name} must be absent\n{self}");
        self
    }

    /// Asserts the body is exactly `body` and `Content-Length` says so.
    pub fn expect_body(&self, body: &[u8]) -> &Self {
        assert!(self.body == body, "body differs from the expected {} bytes\n{self}", body.len());
        assert_eq!(self.content_length(), Some(body.len() as u64), "Content-Length\n{self}");
        self
    }

    /// Asserts an empty body (HEAD), without looking at `Content-Length`.
    pub fn expect_empty_body(&self) -> &Self {
        assert!(self.body.is_empty(), "body must be empty\n{self}");
        self
    }

    /// `Content-Length`, when sent, must match the bytes actually sent.
    pub fn expect_consistent_length(&self) -> &Self {
        if let Some(n) = self.content_length() {
            assert_eq!(n, self.body.len() as u64, "Content-Length does not match the body\n{self}");
        }
        self
    }

    /// The body as JSON, with `Content-Type` `expected_type` (parameters ignored).
    pub fn json_as(&self, expected_type: &str) -> Value {
        assert_eq!(self.content_type(), Some(expected_type), "Content-Type\n{self}");
        self.expect_consistent_length();
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e})\n{self}"))
    }

    /// The body as JSON with `Content-Type: application/json`.
    pub fn json(&self) -> Value {
        self.json_as("application/json")
    }

    /// The codes of an OCI error body, after checking its shape: JSON,
    /// `{"errors":[{"code","message"?,"detail"?},...]}`, codes from the spec.
    pub fn error_codes(&self) -> Vec<String> {
        let v = self.json();
        let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no \"errors\" array\n{self}"));
        assert!(!errors.is_empty(), "\"errors\" is empty\n{self}");
        errors
            .iter()
            .map(|e| {
                let code = e["code"].as_str().unwrap_or_else(|| panic!("error without a string code\n{self}"));
                assert!(
                    !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "code {code:?} must be uppercase letters and underscores\n{self}"
                );
                assert!(SPEC_ERROR_CODES.contains(&code), "code {code:?} is not one of the spec's error codes\n{self}");
                if let Some(m) = e.get("message") {
                    assert!(m.is_string(), "message must be a string\n{self}");
                }
                code.to_owned()
            })
            .collect()
    }

    /// The target of a `Link: <url>; rel="next"` header (RFC 8288), if any.
    pub fn next_link(&self) -> Option<String> {
        self.headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(
            |link| {
                let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
                let next = params.split(';').any(|p| {
                    let p = p.trim().replace(' ', "");
                    p == "rel=\"next\"" || p == "rel=next"
                });
                next.then(|| target.to_owned())
            },
        )
    }

    /// The first error's `message` and `detail` as text, for checks on what they name.
    pub fn error_text(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let e = &v["errors"][0];
        format!("{} {}", e["message"].as_str().unwrap_or(""), e["detail"])
    }
}

/// Asserts `status` and an OCI error body (`Content-Type: application/json`)
/// carrying `code`.
pub fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_error_one_of(r, status, &[code]);
}

/// Like [`assert_error`], where the spec leaves the code to the registry among `codes`.
pub fn assert_error_one_of(r: &Resp, status: u16, codes: &[&str]) {
    r.expect_status(status);
    let found = r.error_codes();
    assert!(found.iter().any(|c| codes.contains(&c.as_str())), "expected error code {codes:?}, got {found:?}\n{r}");
}

/// `status` with an OCI error body of any code from the spec, where the
/// spec fixes the status but not the code.
pub fn assert_error_status(r: &Resp, status: u16) {
    assert_error_one_of(r, status, &SPEC_ERROR_CODES);
}

/// A HEAD error: the status and no body.
pub fn assert_head_status(r: &Resp, status: u16) {
    r.expect_status(status);
    r.expect_empty_body();
}
