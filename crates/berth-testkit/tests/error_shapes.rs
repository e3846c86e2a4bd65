//! Paths and methods no route serves still get a proper error: the OCI
//! envelope (`UNSUPPORTED` 404 for an unknown path, 405 for an unknown
//! method) on the distribution API and the probes, the JSON API's
//! `{"message": ...}` under `/api/v1`. See `berth_api::error`.

use berth_testkit::TestServer;
use serde_json::Value;

async fn send(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, String, Value) {
    berth_testkit::install_crypto_provider();
    let r = reqwest::Client::new().request(method, server.url(path)).send().await.expect("answered");
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let length: Option<usize> = r.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse().ok());
    let body = r.bytes().await.expect("body");
    assert_eq!(length, Some(body.len()), "{path}: Content-Length matches the body");
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"));
    (status, content_type, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_in_their_api_shape() {
    use reqwest::Method;
    let server = TestServer::start().await;
    for (method, path, status) in [
        (Method::GET, "/nothing", 404),
        (Method::GET, "/v2/acme/app/nothing", 404),
        (Method::GET, "/v2/acme/app%2Fmanifests%2Flatest", 404),
        (Method::PUT, "/v2/", 405),
        (Method::DELETE, "/v2/_catalog", 405),
        (Method::POST, "/livez", 405),
        (Method::POST, "/v2/acme/app/tags/list", 405),
    ] {
        let (got, content_type, body) = send(&server, method.clone(), path).await;
        assert_eq!((got, content_type.as_str()), (status, "application/json"), "{method} {path}: {body}");
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{method} {path}: {body}");
    }
    for (method, path, status) in [
        (Method::GET, "/api/v1/nothing", 404),
        (Method::PUT, "/api/v1/admin/retention/preview", 405),
        (Method::POST, "/api/v1/packages/acme", 405),
    ] {
        let (got, content_type, body) = send(&server, method.clone(), path).await;
        assert_eq!((got, content_type.as_str()), (status, "application/json"), "{method} {path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {body}");
    }
    server.stop().await;
}
