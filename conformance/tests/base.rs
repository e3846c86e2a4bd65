//! `GET /v2/`: the API version check.

use berth_conformance::{Target, here, send};

const API_VERSION: &str = "Docker-Distribution-API-Version";

#[tokio::test]
async fn version_check_returns_200_with_api_version_header() {
    let t = Target::new(here!()).await;
    let r = send(t.get("/v2/")).await;
    r.expect_status(200).expect_header(API_VERSION, "registry/2.0").expect_consistent_length();
    // The body is optional and free-form; Berth sends an empty JSON object.
    if r.content_type() == Some("application/json") {
        assert!(r.json().is_object(), "{r}");
    }
}

#[tokio::test]
async fn api_version_header_is_on_success_and_error_responses() {
    let t = Target::new(here!()).await;
    let repo = t.repo();
    let missing = berth_conformance::sha256(&t.blob(16));
    let requests = [
        t.get("/v2/"),
        t.head("/v2/"),
        t.post(&format!("/v2/{repo}/blobs/uploads/")),
        t.get(&format!("/v2/{repo}/blobs/{missing}")),
        t.get(&format!("/v2/{repo}/tags/list")),
        t.get(&format!("/v2/{repo}/manifests/latest")),
    ];
    for rb in requests {
        let r = send(rb).await;
        r.expect_header(API_VERSION, "registry/2.0");
    }
}
