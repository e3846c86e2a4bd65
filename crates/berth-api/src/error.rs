//! Every failure leaves as an OCI error: `{"errors":[{"code","message","detail"}]}`
//! with the status that goes with it. The mapping from registry errors is the
//! single `match` in `From<RegistryError>`.

use axum::response::{IntoResponse, Response};
use berth_oci::{ErrorBody, ErrorCode};
use berth_registry::RegistryError;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

/// Boxed so that `Result<_, ApiError>` stays small on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    code: ErrorCode,
    message: Option<String>,
    detail: Option<Value>,
    headers: HeaderMap,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError(Box::new(Inner {
            status: StatusCode::from_u16(code.default_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: None,
            detail: None,
            headers: HeaderMap::new(),
        }))
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// Replaces the OCI error code.
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.0.code = code;
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.0.status = status;
        self
    }

    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.0.message = Some(m.into());
        self
    }

    pub fn detail(mut self, d: Value) -> Self {
        self.0.detail = Some(d);
        self
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers.insert(name, v);
        }
        self
    }

    pub fn name_invalid(reason: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NameInvalid).detail(json!({ "reason": reason.into() }))
    }

    pub fn digest_invalid(reason: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::DigestInvalid).detail(json!({ "reason": reason.into() }))
    }

    pub fn unsupported(reason: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unsupported)
            .with_status(StatusCode::BAD_REQUEST)
            .detail(json!({ "reason": reason.into() }))
    }

    pub fn not_found_route() -> Self {
        ApiError::new(ErrorCode::NameUnknown).with_status(StatusCode::NOT_FOUND).message("no such endpoint")
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(ErrorCode::Unsupported).with_status(StatusCode::METHOD_NOT_ALLOWED)
    }

    pub fn timeout() -> Self {
        ApiError::new(ErrorCode::Unavailable).with_status(StatusCode::SERVICE_UNAVAILABLE).message("request timed out")
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        ApiError::new(ErrorCode::Unknown)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use ErrorCode as C;
        match e {
            RegistryError::BlobUnknown => ApiError::new(C::BlobUnknown),
            RegistryError::ManifestUnknown => ApiError::new(C::ManifestUnknown),
            RegistryError::NameUnknown => ApiError::new(C::NameUnknown),
            RegistryError::UploadUnknown => ApiError::new(C::BlobUploadUnknown),
            RegistryError::DigestMismatch { computed } => {
                ApiError::new(C::DigestInvalid).detail(json!({ "computed": computed.as_str() }))
            }
            RegistryError::DigestUnsupported(alg) => {
                ApiError::new(C::Unsupported).with_status(StatusCode::BAD_REQUEST).detail(json!({ "algorithm": alg }))
            }
            RegistryError::RangeNotSatisfiable { offset } => ApiError::new(C::BlobUploadInvalid)
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .message(format!("chunk must start at offset {offset}"))
                .header(http::header::RANGE, &upload_range(offset)),
            RegistryError::SizeInvalid(m) => ApiError::new(C::SizeInvalid).detail(json!({ "reason": m })),
            RegistryError::ManifestInvalid(m) => ApiError::new(C::ManifestInvalid).detail(json!({ "reason": m })),
            RegistryError::ManifestTooLarge { size, limit } => ApiError::new(C::SizeInvalid)
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .message(format!("manifest of {size} bytes exceeds the limit of {limit} bytes")),
            RegistryError::ManifestBlobUnknown(p) => {
                let missing: Vec<&str> = p.missing.iter().map(|d| d.as_str()).collect();
                let wrong_size: Vec<&str> = p.wrong_size.iter().map(|d| d.as_str()).collect();
                ApiError::new(C::ManifestBlobUnknown).detail(json!({ "missing": missing, "wrong_size": wrong_size }))
            }
            RegistryError::ImmutableTag { tag, rule } => ApiError::new(C::Denied)
                .message(format!("tag {tag:?} is immutable (rule {rule:?})"))
                .detail(json!({ "tag": tag, "rule": rule })),
            RegistryError::Protected { ref digest, ref repository, ref tag, ref rule } => ApiError::new(C::Denied)
                .message(e.to_string())
                .detail(json!({ "digest": digest.as_str(), "repository": repository, "tag": tag, "rule": rule })),
            RegistryError::Referenced { ref digest, ref by } => ApiError::new(C::Denied)
                .message(e.to_string())
                .detail(json!({ "digest": digest.as_str(), "manifest": by.as_str() })),
            RegistryError::Body(e) => {
                tracing::debug!(error = %e, "request body failed");
                ApiError::new(C::BlobUploadInvalid).message(format!("reading request body: {e}"))
            }
            RegistryError::Unavailable(m) => {
                tracing::error!(error = %m, "dependency unavailable");
                ApiError::new(C::Unavailable)
            }
            RegistryError::StorageFull(m) => {
                tracing::error!(error = %m, "blob storage is full");
                ApiError::new(C::Unknown)
                    .with_status(StatusCode::INSUFFICIENT_STORAGE)
                    .message("the registry's blob storage is full; this request stored nothing, retry later")
            }
            RegistryError::Internal(m) => ApiError::internal("internal error", m),
        }
    }
}

/// The `Range` header value of an upload holding `offset` bytes.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Inner { status, code, message, detail, headers } = *self.0;
        let body = ErrorBody::single(code, message, detail);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let len = bytes.len() as u64;
        let mut resp = (status, bytes).into_response();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        h.extend(headers);
        resp
    }
}

#[cfg(test)]
mod tests {
    use berth_oci::Digest;

    use super::*;

    #[test]
    fn protected_and_referenced_content_is_403_denied_naming_why() {
        let (digest, by) = (Digest::sha256_of(b"layer"), Digest::sha256_of(b"manifest"));
        let e = RegistryError::Protected {
            digest: digest.clone(),
            repository: "alice/rel".into(),
            tag: "v1.0".into(),
            rule: "*:v*".into(),
        };
        let api = ApiError::from(e);
        assert_eq!((api.status(), api.code()), (StatusCode::FORBIDDEN, ErrorCode::Denied));
        let message = api.0.message.clone().unwrap_or_default();
        assert_eq!(message, format!("{digest} is part of alice/rel:v1.0, which is immutable (rule \"*:v*\")"));
        assert_eq!(api.0.detail.as_ref().map(|d| d["rule"].clone()), Some(json!("*:v*")));

        let api = ApiError::from(RegistryError::Referenced { digest: digest.clone(), by: by.clone() });
        assert_eq!((api.status(), api.code()), (StatusCode::FORBIDDEN, ErrorCode::Denied));
        assert!(api.0.message.as_deref().unwrap_or_default().contains(by.as_str()));
        assert_eq!(api.0.detail.as_ref().map(|d| d["manifest"].clone()), Some(json!(by.as_str())));
    }

    #[test]
    fn a_full_disk_is_507_with_a_plain_message() {
        for kind in [std::io::ErrorKind::StorageFull, std::io::ErrorKind::QuotaExceeded] {
            let e: RegistryError = berth_blob::BlobError::Io(std::io::Error::from(kind)).into();
            let api = ApiError::from(e);
            assert_eq!(api.status(), StatusCode::INSUFFICIENT_STORAGE);
            assert_eq!(api.code(), ErrorCode::Unknown);
            assert!(api.0.message.as_deref().unwrap_or_default().contains("storage is full"));
        }
        // Other I/O failures stay internal errors.
        let e: RegistryError = berth_blob::BlobError::Io(std::io::Error::other("boom")).into();
        assert_eq!(ApiError::from(e).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
