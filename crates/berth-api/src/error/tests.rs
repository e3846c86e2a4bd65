use berth_oci::Digest;
use http_body_util::BodyExt;

use super::*;

fn described(e: impl Into<ApiError>) -> (StatusCode, ErrorCode, Option<String>, Option<Value>) {
    let d = e.into().describe();
    (d.status, d.code, d.message, d.detail)
}

async fn body_of(resp: Response) -> (http::HeaderMap, Value) {
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(headers.get(CONTENT_LENGTH).unwrap().to_str().unwrap(), bytes.len().to_string());
    (headers, serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn protected_and_referenced_content_is_403_denied_naming_why() {
    let (digest, by) = (Digest::sha256_of(b"layer"), Digest::sha256_of(b"manifest"));
    let e = RegistryError::Protected {
        digest: digest.clone(),
        repository: "alice/rel".into(),
        tag: "v1.0".into(),
        rule: "*:v*".into(),
    };
    let (status, code, message, detail) = described(e);
    assert_eq!((status, code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
    assert_eq!(message.unwrap(), format!("{digest} is part of alice/rel:v1.0, which is immutable (rule \"*:v*\")"));
    assert_eq!(detail.map(|d| d["rule"].clone()), Some(json!("*:v*")));

    let (status, code, message, detail) = described(RegistryError::Referenced { digest, by: by.clone() });
    assert_eq!((status, code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
    assert!(message.unwrap().contains(by.as_str()));
    assert_eq!(detail.map(|d| d["manifest"].clone()), Some(json!(by.as_str())));
}

#[test]
fn a_full_disk_is_507_with_a_plain_message() {
    let full = RegistryError::StorageFull("No space left on device".into());
    let d = ApiError::from(full).describe();
    assert_eq!((d.status, d.code), (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::Unknown));
    assert!(d.message.unwrap().contains("storage is full"));
    assert!(d.cause.unwrap().contains("No space left"), "the cause is logged");
    let d = ApiError::from(RegistryError::Internal("boom".into())).describe();
    assert_eq!((d.status, d.message), (StatusCode::INTERNAL_SERVER_ERROR, None), "the cause is not sent");
}

#[test]
fn store_not_found_and_conflict_are_client_errors() {
    let (status, code, ..) = described(RegistryError::NotFound("user \"x\"".into()));
    assert_eq!((status, code), (StatusCode::NOT_FOUND, ErrorCode::NameUnknown));
    let (status, ..) = described(RegistryError::Conflict("x".into()));
    assert_eq!(status, StatusCode::CONFLICT);
}

#[test]
fn unknown_routes_are_unsupported_404() {
    let (status, code, ..) = described(ApiError::NoSuchRoute);
    assert_eq!((status, code), (StatusCode::NOT_FOUND, ErrorCode::Unsupported));
    let (status, code, ..) = described(ApiError::MethodNotAllowed);
    assert_eq!((status, code), (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported));
}

#[tokio::test]
async fn a_416_carries_the_envelope_its_length_and_the_blob_size() {
    let resp = ApiError::from(RegistryError::BlobRangeNotSatisfiable { size: 2048 }).into_response();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let (headers, body) = body_of(resp).await;
    assert_eq!(headers.get(CONTENT_RANGE).unwrap(), "bytes */2048");
    assert_eq!(headers.get(CONTENT_TYPE).unwrap(), "application/json");
    assert_eq!(body["errors"][0]["code"], "SIZE_INVALID");
    assert_eq!(body["errors"][0]["detail"]["size"], 2048);

    let resp = ApiError::from(RegistryError::RangeNotSatisfiable { offset: 10 }).into_response();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let (headers, body) = body_of(resp).await;
    assert_eq!(headers.get(RANGE).unwrap(), "0-9");
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
}

#[tokio::test]
async fn challenges_and_lockouts_carry_their_headers() {
    let e = ApiError::Unauthorized { challenge: "Bearer realm=\"x\"".into(), why: Unauthorized::InvalidToken };
    let resp = e.into_response();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (headers, body) = body_of(resp).await;
    assert_eq!(headers.get(WWW_AUTHENTICATE).unwrap(), "Bearer realm=\"x\"");
    assert_eq!(body["errors"][0]["message"], "invalid or expired token");

    let (headers, body) = body_of(ApiError::TooManyLogins { retry_after: 7 }.into_response()).await;
    assert_eq!(headers.get(RETRY_AFTER).unwrap(), "7");
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
}

#[test]
fn upstream_failures_name_the_upstream_and_pass_retry_after_on() {
    let limited = RegistryError::UpstreamUnavailable {
        upstream: "hub".into(),
        status: Some(429),
        retry_after: Some(std::time::Duration::from_millis(7_500)),
        detail: "upstream \"hub\" (https://registry-1.docker.io): manifest library/alpine:3: too many requests".into(),
    };
    let d = ApiError::from(limited).describe();
    assert_eq!((d.status, d.code), (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests));
    assert!(d.message.as_deref().unwrap().contains("upstream \"hub\""));
    assert_eq!(d.headers, vec![(RETRY_AFTER, "8".to_owned())], "rounded up");
    let down = RegistryError::UpstreamUnavailable {
        upstream: "hub".into(),
        status: Some(503),
        retry_after: None,
        detail: "upstream \"hub\" (http://x): blob a@sha256:0: unavailable (HTTP 503)".into(),
    };
    let d = ApiError::from(down).describe();
    assert_eq!((d.status, d.code), (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable));
    assert!(d.message.as_deref().unwrap().contains("HTTP 503"), "the caller sees the upstream and its status");
    assert_eq!(d.detail.unwrap()["status"], json!(503));
    let bad = RegistryError::UpstreamInvalid { upstream: "hub".into(), detail: "the bytes received hash to x".into() };
    let d = ApiError::from(bad).describe();
    assert_eq!((d.status, d.code), (StatusCode::BAD_GATEWAY, ErrorCode::Unknown));
    assert!(d.message.unwrap().contains("hash to"));
    let push = RegistryError::UpstreamReadOnly { upstream: "hub".into(), repository: "hub/x".into() };
    let (status, code, message, _) = described(push);
    assert_eq!((status, code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
    assert!(message.unwrap().contains("cache of upstream \"hub\""));
}
