//! The error table of the distribution API (`/v2/...`, probes, metrics):
//! every situation a handler can report is an [`ApiError`], and
//! [`ApiError::describe`] is the one `match` that gives each its OCI code,
//! HTTP status and message. Handlers never pick a status. The response is
//! always the OCI envelope `{"errors":[{"code","message","detail"}]}` with a
//! matching `Content-Length`, 416s included; 5xx are logged once, here, with
//! their cause, and the client gets a plain message.
//!
//! | situation                                         | code                  | status |
//! |---------------------------------------------------|-----------------------|--------|
//! | no route for the path                             | UNSUPPORTED           | 404    |
//! | token endpoint while authentication is off        | UNSUPPORTED           | 404    |
//! | route exists, method does not                     | UNSUPPORTED           | 405    |
//! | bad query string, `n`, token request form         | UNSUPPORTED           | 400    |
//! | digest algorithm not supported                    | UNSUPPORTED           | 400    |
//! | invalid repository name                           | NAME_INVALID          | 400    |
//! | malformed digest, missing `?digest=`              | DIGEST_INVALID        | 400    |
//! | content does not match its digest                 | DIGEST_INVALID        | 400    |
//! | invalid tag in a push (reference or `?tag=`)      | MANIFEST_INVALID      | 400    |
//! | invalid tag in a pull or delete                   | MANIFEST_UNKNOWN      | 404    |
//! | manifest unreadable or invalid                    | MANIFEST_INVALID      | 400    |
//! | manifest larger than `manifests.max_size`         | SIZE_INVALID          | 413    |
//! | manifest excluded by `Accept`                     | MANIFEST_UNKNOWN      | 404    |
//! | manifest references unknown content               | MANIFEST_BLOB_UNKNOWN | 400    |
//! | invalid `Content-Length`, length mismatch         | SIZE_INVALID          | 400    |
//! | blob `Range` outside the blob                     | SIZE_INVALID          | 416    |
//! | malformed `Content-Range`, chunk out of order     | BLOB_UPLOAD_INVALID   | 416    |
//! | upload body failed (disconnect, idle)             | BLOB_UPLOAD_INVALID   | 400    |
//! | blob / manifest / repository / upload unknown     | BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UPLOAD_UNKNOWN | 404 |
//! | user, organization or token unknown (stores)      | NAME_UNKNOWN          | 404    |
//! | name already taken (stores)                       | DENIED                | 409    |
//! | credentials missing, invalid or short of scope    | UNAUTHORIZED          | 401    |
//! | authenticated but not allowed                     | DENIED                | 403    |
//! | a user's token repeated for a scope it lacks      | DENIED (+ challenge)  | 403    |
//! | immutable tag, protected or referenced content    | DENIED                | 403    |
//! | owner quota exceeded, blob over `blob_max_size`   | DENIED                | 403    |
//! | login locked out, too many logins in progress     | TOOMANYREQUESTS       | 429    |
//! | unexpected failure, handler panic                 | UNKNOWN               | 500    |
//! | blob storage full                                 | UNKNOWN               | 507    |
//! | push into an upstream's namespace, or a repository the upstream does not serve | DENIED | 403 |
//! | upstream refused Berth's credentials (401, 403)   | DENIED                | 403    |
//! | upstream answered 429, nothing cached             | TOOMANYREQUESTS (+ its Retry-After) | 429 |
//! | upstream down, timed out or 5xx, nothing cached   | UNAVAILABLE           | 503    |
//! | upstream sent unusable data (digest, bytes)       | UNKNOWN               | 502    |
//! | database or storage unavailable, not ready        | UNAVAILABLE           | 503    |
//! | request took longer than `http.request_timeout`   | UNAVAILABLE           | 503    |
//! | connection over `http.max_connections`            | UNAVAILABLE           | 503    |
//!
//! Unknown routes answer `UNSUPPORTED` 404 (the spec has no generic
//! not-found code): `NAME_UNKNOWN` is kept for repositories that do not
//! exist, so a mistyped path is never reported as a missing repository.
//! The `/api/v1` JSON API has its own table in [`json`].

pub mod json;

use axum::response::{IntoResponse, Response};
use berth_oci::{DigestError, ErrorBody, ErrorCode};
use berth_registry::RegistryError;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

/// Every situation a distribution API request can fail in.
#[derive(Debug)]
pub enum ApiError {
    /// No route matches the path.
    NoSuchRoute,
    /// The route exists; the method does not.
    MethodNotAllowed,
    /// `/v2/token` while authentication is disabled.
    AuthDisabled,
    /// The request was not answered within `http.request_timeout`.
    TimedOut,
    /// A connection over `http.max_connections` (answered by the connection loop).
    TooManyConnections,
    /// The query string or one of its parameters (the reason says which).
    QueryInvalid(String),
    /// A token request the OAuth2 way: `invalid_request`, `unsupported_grant_type`.
    TokenRequestInvalid(&'static str),
    NameInvalid(String),
    /// A digest in the path or query that cannot be parsed (or is missing).
    DigestInvalid(String),
    /// A digest of an algorithm Berth does not support.
    DigestUnsupported(String),
    /// A tag a manifest is pushed under: its reference, or a `?tag=` (named).
    TagInvalid(Option<String>),
    /// A pull or delete by a tag that cannot exist.
    ManifestTagInvalid,
    /// The manifest body could not be read.
    ManifestUnreadable(String),
    /// The manifest declares or has more bytes than `limit`.
    ManifestTooLarge {
        limit: usize,
    },
    /// The manifest's media type is not among those `Accept` lists.
    ManifestNotAcceptable {
        media_type: String,
    },
    /// An unusable upload id (not a UUID): no such session.
    UploadIdInvalid,
    ContentLengthInvalid,
    ContentRangeInvalid(String),
    /// 401: the `WWW-Authenticate` challenge to send, and why.
    Unauthorized {
        challenge: String,
        why: Unauthorized,
    },
    /// Authenticated, but not allowed (saying nothing more).
    Denied,
    /// A user's bearer token presented again for a scope it was just
    /// refused (see `auth::insufficient_scope`): 403 with the same challenge.
    ScopeStillInsufficient {
        challenge: String,
    },
    /// Login locked out for `retry_after` seconds.
    TooManyLogins {
        retry_after: u64,
    },
    /// Too many logins in progress.
    LoginsBusy,
    /// A registry operation failed; its error says how.
    Registry(RegistryError),
    /// The database or storage is not reachable (`/readyz`).
    NotReady(String),
    /// Anything else; the cause is logged, never sent.
    Internal(String),
}

/// Why a request is answered 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No (or anonymous) credentials where some are needed.
    CredentialsRequired,
    UnsupportedScheme,
    MalformedBasic,
    InvalidCredentials,
    InvalidToken,
    /// A bearer token that does not list what the request needs.
    InsufficientScope,
    /// A bearer token presented to the token endpoint.
    TokenCannotRenew,
    /// A mount whose source the bearer token does not list.
    MountNeedsScope,
}

/// What [`ApiError::describe`] decides for a situation.
pub struct Described {
    pub code: ErrorCode,
    pub status: StatusCode,
    /// `None`: the code's own message.
    pub message: Option<String>,
    pub detail: Option<Value>,
    pub headers: Vec<(HeaderName, String)>,
    /// What to log for a 5xx (the client sees only the message).
    pub cause: Option<String>,
}

impl Described {
    fn new(code: ErrorCode, status: StatusCode) -> Self {
        Described { code, status, message: None, detail: None, headers: Vec::new(), cause: None }
    }

    fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }

    fn detail(mut self, d: Value) -> Self {
        self.detail = Some(d);
        self
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn cause(mut self, c: impl Into<String>) -> Self {
        self.cause = Some(c.into());
        self
    }
}

impl ApiError {
    /// The error table: code, status and message for each situation.
    pub fn describe(self) -> Described {
        use ErrorCode as C;
        use StatusCode as S;
        let d = Described::new;
        let reason = |r: String| json!({ "reason": r });
        match self {
            ApiError::NoSuchRoute => d(C::Unsupported, S::NOT_FOUND).message("no such endpoint"),
            ApiError::AuthDisabled => {
                d(C::Unsupported, S::NOT_FOUND).message("authentication is disabled on this registry")
            }
            ApiError::MethodNotAllowed => d(C::Unsupported, S::METHOD_NOT_ALLOWED),
            ApiError::TimedOut => d(C::Unavailable, S::SERVICE_UNAVAILABLE).message("request timed out"),
            ApiError::TooManyConnections => d(C::Unavailable, S::SERVICE_UNAVAILABLE)
                .message("too many open connections; retry shortly")
                .header(RETRY_AFTER, "1"),
            ApiError::QueryInvalid(m) => d(C::Unsupported, S::BAD_REQUEST).message(m),
            ApiError::TokenRequestInvalid(e) => d(C::Unsupported, S::BAD_REQUEST).message(e),
            ApiError::NameInvalid(r) => d(C::NameInvalid, S::BAD_REQUEST).detail(reason(r)),
            ApiError::DigestInvalid(r) => d(C::DigestInvalid, S::BAD_REQUEST).detail(reason(r)),
            ApiError::DigestUnsupported(alg) => {
                d(C::Unsupported, S::BAD_REQUEST).detail(reason(format!("digest algorithm {alg:?} is not supported")))
            }
            ApiError::TagInvalid(tag) => d(C::ManifestInvalid, S::BAD_REQUEST)
                .message(tag.map_or_else(|| "invalid tag".to_owned(), |t| format!("invalid tag {t:?}"))),
            ApiError::ManifestTagInvalid => d(C::ManifestUnknown, S::NOT_FOUND),
            ApiError::ManifestUnreadable(e) => {
                d(C::ManifestInvalid, S::BAD_REQUEST).message(format!("reading manifest: {e}"))
            }
            ApiError::ManifestTooLarge { limit } => {
                d(C::SizeInvalid, S::PAYLOAD_TOO_LARGE).message(format!("manifest exceeds the limit of {limit} bytes"))
            }
            ApiError::ManifestNotAcceptable { media_type } => d(C::ManifestUnknown, S::NOT_FOUND)
                .message(format!("manifest is {media_type} which the Accept header excludes"))
                .detail(json!({ "mediaType": media_type })),
            ApiError::UploadIdInvalid => d(C::BlobUploadUnknown, S::NOT_FOUND),
            ApiError::ContentLengthInvalid => d(C::SizeInvalid, S::BAD_REQUEST).message("invalid Content-Length"),
            ApiError::ContentRangeInvalid(v) => {
                d(C::BlobUploadInvalid, S::RANGE_NOT_SATISFIABLE).message(format!("malformed Content-Range {v:?}"))
            }
            ApiError::Unauthorized { challenge, why } => {
                let described = d(C::Unauthorized, S::UNAUTHORIZED).header(WWW_AUTHENTICATE, challenge);
                match unauthorized_message(why) {
                    Some(m) => described.message(m),
                    None => described,
                }
            }
            ApiError::Denied => d(C::Denied, S::FORBIDDEN),
            ApiError::ScopeStillInsufficient { challenge } => d(C::Denied, S::FORBIDDEN)
                .header(WWW_AUTHENTICATE, challenge)
                .message(unauthorized_message(Unauthorized::InsufficientScope).unwrap_or_default()),
            ApiError::TooManyLogins { retry_after } => d(C::TooManyRequests, S::TOO_MANY_REQUESTS)
                .message("too many failed logins; try again later")
                .header(RETRY_AFTER, retry_after.to_string()),
            ApiError::LoginsBusy => d(C::TooManyRequests, S::TOO_MANY_REQUESTS)
                .message("too many logins in progress; try again in a second")
                .header(RETRY_AFTER, "1"),
            ApiError::NotReady(cause) => d(C::Unavailable, S::SERVICE_UNAVAILABLE).message("not ready").cause(cause),
            ApiError::Internal(cause) => d(C::Unknown, S::INTERNAL_SERVER_ERROR).cause(cause),
            ApiError::Registry(e) => describe_registry(e),
        }
    }
}

fn unauthorized_message(why: Unauthorized) -> Option<&'static str> {
    Some(match why {
        Unauthorized::CredentialsRequired => return None,
        Unauthorized::UnsupportedScheme => "unsupported authorization scheme",
        Unauthorized::MalformedBasic => "malformed Basic credentials",
        Unauthorized::InvalidCredentials => "invalid username, password or token",
        Unauthorized::InvalidToken => "invalid or expired token",
        Unauthorized::InsufficientScope => {
            "the bearer token does not grant this; request a token for the scope named in the challenge"
        }
        Unauthorized::TokenCannotRenew => "log in with a password or personal access token",
        Unauthorized::MountNeedsScope => "mounting needs pull on the source repository in the token",
    })
}

/// The registry's errors, part of the same table.
fn describe_registry(e: RegistryError) -> Described {
    use ErrorCode as C;
    use StatusCode as S;
    let d = Described::new;
    let reason = |r: String| json!({ "reason": r });
    match e {
        RegistryError::BlobUnknown => d(C::BlobUnknown, S::NOT_FOUND),
        // 404 rather than 5xx: a client that checks before pushing (HEAD)
        // then uploads the blob again, which repairs it.
        RegistryError::BlobDamaged { ref digest, ref problem } => d(C::BlobUnknown, S::NOT_FOUND)
            .message(e.to_string())
            .detail(json!({ "digest": digest.as_str(), "damaged": problem })),
        RegistryError::ManifestUnknown => d(C::ManifestUnknown, S::NOT_FOUND),
        RegistryError::NameUnknown => d(C::NameUnknown, S::NOT_FOUND),
        RegistryError::UploadUnknown => d(C::BlobUploadUnknown, S::NOT_FOUND),
        RegistryError::NotFound(what) => d(C::NameUnknown, S::NOT_FOUND).message(format!("{what} not found")),
        RegistryError::Conflict(what) => d(C::Denied, S::CONFLICT).message(format!("{what} already exists")),
        RegistryError::DigestMismatch { computed } => {
            d(C::DigestInvalid, S::BAD_REQUEST).detail(json!({ "computed": computed.as_str() }))
        }
        RegistryError::DigestUnsupported(alg) => d(C::Unsupported, S::BAD_REQUEST).detail(json!({ "algorithm": alg })),
        RegistryError::RangeNotSatisfiable { offset } => d(C::BlobUploadInvalid, S::RANGE_NOT_SATISFIABLE)
            .message(format!("chunk must start at offset {offset}"))
            .header(RANGE, upload_range(offset)),
        RegistryError::BlobRangeNotSatisfiable { size } => d(C::SizeInvalid, S::RANGE_NOT_SATISFIABLE)
            .message(format!("the requested range is outside the blob's {size} bytes"))
            .detail(json!({ "size": size }))
            .header(CONTENT_RANGE, format!("bytes */{size}")),
        RegistryError::SizeInvalid(m) => d(C::SizeInvalid, S::BAD_REQUEST).detail(reason(m)),
        RegistryError::ManifestInvalid(m) => d(C::ManifestInvalid, S::BAD_REQUEST).detail(reason(m)),
        RegistryError::ManifestTooLarge { size, limit } => d(C::SizeInvalid, S::PAYLOAD_TOO_LARGE)
            .message(format!("manifest of {size} bytes exceeds the limit of {limit} bytes")),
        RegistryError::ManifestBlobUnknown(p) => {
            let missing: Vec<&str> = p.missing.iter().map(|d| d.as_str()).collect();
            let wrong_size: Vec<&str> = p.wrong_size.iter().map(|d| d.as_str()).collect();
            d(C::ManifestBlobUnknown, S::BAD_REQUEST).detail(json!({ "missing": missing, "wrong_size": wrong_size }))
        }
        RegistryError::ImmutableTag { tag, rule } => d(C::Denied, S::FORBIDDEN)
            .message(format!("tag {tag:?} is immutable (rule {rule:?})"))
            .detail(json!({ "tag": tag, "rule": rule })),
        ref e @ RegistryError::Protected { ref digest, ref repository, ref tag, ref rule } => {
            d(C::Denied, S::FORBIDDEN)
                .message(e.to_string())
                .detail(json!({ "digest": digest.as_str(), "repository": repository, "tag": tag, "rule": rule }))
        }
        ref e @ RegistryError::Referenced { ref digest, ref by } => d(C::Denied, S::FORBIDDEN)
            .message(e.to_string())
            .detail(json!({ "digest": digest.as_str(), "manifest": by.as_str() })),
        RegistryError::QuotaExceeded(m) | RegistryError::BlobTooLarge(m) => d(C::Denied, S::FORBIDDEN).message(m),
        RegistryError::Body(e) => {
            // The client's side failed: worth a debug line, not an error.
            tracing::debug!(error = %e, "request body failed");
            d(C::BlobUploadInvalid, S::BAD_REQUEST).message(format!("reading request body: {e}"))
        }
        RegistryError::Unavailable(m) => d(C::Unavailable, S::SERVICE_UNAVAILABLE).cause(m),
        RegistryError::StorageFull(m) => d(C::Unknown, S::INSUFFICIENT_STORAGE)
            .message("the registry's blob storage is full; this request stored nothing, retry later")
            .cause(format!("blob storage is full: {m}")),
        RegistryError::Internal(m) => d(C::Unknown, S::INTERNAL_SERVER_ERROR).cause(m),
        ref e @ (RegistryError::UpstreamReadOnly { ref upstream, .. }
        | RegistryError::UpstreamNotServed { ref upstream, .. }) => {
            d(C::Denied, S::FORBIDDEN).message(e.to_string()).detail(json!({ "upstream": upstream }))
        }
        // A 429 is passed on as one, with the upstream's Retry-After.
        RegistryError::UpstreamUnavailable { upstream, status: Some(429), retry_after, detail } => {
            let wait = retry_after.map_or(1, |w| w.as_secs() + u64::from(w.subsec_nanos() > 0)).max(1);
            d(C::TooManyRequests, S::TOO_MANY_REQUESTS)
                .message(detail)
                .detail(json!({ "upstream": upstream, "status": 429 }))
                .header(RETRY_AFTER, wait.to_string())
        }
        RegistryError::UpstreamUnavailable { upstream, status, retry_after, detail } => {
            let described = d(C::Unavailable, S::SERVICE_UNAVAILABLE)
                .message(detail.clone())
                .detail(json!({ "upstream": upstream, "status": status }))
                .cause(detail);
            match retry_after {
                Some(w) => described.header(RETRY_AFTER, w.as_secs().max(1).to_string()),
                None => described,
            }
        }
        RegistryError::UpstreamRefused { upstream, status, detail } => {
            d(C::Denied, S::FORBIDDEN).message(detail).detail(json!({ "upstream": upstream, "status": status }))
        }
        RegistryError::UpstreamInvalid { upstream, detail } => {
            d(C::Unknown, S::BAD_GATEWAY).message(detail.clone()).detail(json!({ "upstream": upstream })).cause(detail)
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::Registry(e)
    }
}

impl From<DigestError> for ApiError {
    fn from(e: DigestError) -> Self {
        match e {
            DigestError::Invalid => ApiError::DigestInvalid("malformed digest".into()),
            DigestError::Unsupported(alg) => ApiError::DigestUnsupported(alg),
        }
    }
}

/// The `Range` header value of an upload holding `offset` bytes.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Described { code, status, message, detail, headers, cause } = self.describe();
        if status.is_server_error() {
            let cause = cause.as_deref().unwrap_or("");
            // Once, here: the cause stays in the log, the client gets the message.
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(status = status.as_u16(), code = code.as_str(), cause, "request failed");
            } else {
                tracing::error!(status = status.as_u16(), code = code.as_str(), cause, "request failed");
            }
        }
        let body = serde_json::to_vec(&ErrorBody::single(code, message, detail)).unwrap_or_default();
        let len = body.len() as u64;
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests;
