//! Error answers: the OCI error body, invalid repository names, unknown paths.

use berth_conformance::content::OCI_MANIFEST;
use berth_conformance::{Target, assert_error, assert_error_status, here, send, sha256};
use reqwest::RequestBuilder;

/// One request per kind of endpoint, all on repository `name`.
fn on_every_endpoint(t: &Target, name: &str) -> Vec<RequestBuilder> {
    let digest = sha256(b"x");
    vec![
        t.get(&format!("/v2/{name}/tags/list")),
        t.get(&format!("/v2/{name}/manifests/latest")),
        t.head(&format!("/v2/{name}/manifests/latest")),
        t.put(&format!("/v2/{name}/manifests/latest")).header("Content-Type", OCI_MANIFEST).body("{}"),
        t.delete(&format!("/v2/{name}/manifests/latest")),
        t.get(&format!("/v2/{name}/blobs/{digest}")),
        t.delete(&format!("/v2/{name}/blobs/{digest}")),
        t.post(&format!("/v2/{name}/blobs/uploads/")),
        t.get(&format!("/v2/{name}/referrers/{digest}")),
    ]
}

#[tokio::test]
async fn invalid_repository_names_are_400_name_invalid() {
    let t = Target::new(here!()).await;
    let long = format!("{}/{}", t.repo(), "a".repeat(256 - t.repo().len() - 1));
    assert_eq!(long.len(), 256);
    for name in [
        format!("{}/UPPER", t.repo()),
        "Conformance/errors".to_owned(),
        format!("{}//b", t.repo()),
        format!("{}/-lead", t.repo()),
        format!("{}/trail-", t.repo()),
        format!("{}/a..b", t.repo()),
        format!("{}/a___b", t.repo()),
        long,
    ] {
        for rb in on_every_endpoint(&t, &name) {
            let r = send(rb).await;
            if r.method == "HEAD" {
                r.expect_status(400).expect_empty_body();
            } else {
                assert_error(&r, 400, "NAME_INVALID");
            }
        }
    }
}

#[tokio::test]
async fn name_of_255_characters_is_valid() {
    let t = Target::new(here!()).await;
    let name = format!("{}/{}", t.repo(), "a".repeat(255 - t.repo().len() - 1));
    assert_eq!(name.len(), 255);
    assert_error(&send(t.get(&format!("/v2/{name}/tags/list"))).await, 404, "NAME_UNKNOWN");
    t.push_image(&name, "latest").await;
    let r = send(t.get(&format!("/v2/{name}/tags/list"))).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], serde_json::Value::from(name.as_str()), "{r}");
}

#[tokio::test]
async fn name_separators_of_the_grammar_are_valid() {
    let t = Target::new(here!()).await;
    for suffix in ["a.b", "a_b", "a__b", "a-b", "a---b", "0/9"] {
        let name = t.repo_at(suffix);
        assert_error(&send(t.get(&format!("/v2/{name}/tags/list"))).await, 404, "NAME_UNKNOWN");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_with_an_error_body() {
    let t = Target::new(here!()).await;
    for path in
        [format!("/v2/{}/nothing", t.repo()), format!("/v2/{}/tags", t.repo()), "/v3/".into(), "/nothing".into()]
    {
        assert_error_status(&send(t.get(&path)).await, 404);
    }
}

#[tokio::test]
async fn every_error_is_a_json_oci_error_with_its_code() {
    // One line per code the registry answers with; each assert checks the
    // status, `Content-Type: application/json` and the `errors` envelope.
    let t = Target::new(here!()).await;
    let repo = t.repo();
    let m = t.push_image(repo, "latest").await;
    let absent = sha256(&t.blob(8));
    let upload = format!("/v2/{repo}/blobs/uploads/{}", uuid::Uuid::new_v4());
    let cases: Vec<(RequestBuilder, u16, &str)> = vec![
        (t.get(&format!("/v2/{repo}/blobs/{absent}")), 404, "BLOB_UNKNOWN"),
        (t.get(&upload), 404, "BLOB_UPLOAD_UNKNOWN"),
        (t.get(&format!("/v2/{repo}/blobs/sha256:nothex")), 400, "DIGEST_INVALID"),
        (
            t.put(&format!("/v2/{repo}/manifests/{absent}")).header("Content-Type", OCI_MANIFEST).body(m.body.clone()),
            400,
            "DIGEST_INVALID",
        ),
        (
            t.put(&format!("/v2/{repo}/manifests/x")).header("Content-Type", OCI_MANIFEST).body("{"),
            400,
            "MANIFEST_INVALID",
        ),
        (t.get(&format!("/v2/{repo}/manifests/{absent}")), 404, "MANIFEST_UNKNOWN"),
        (t.get("/v2/Bad/tags/list"), 400, "NAME_INVALID"),
        (t.get(&format!("/v2/{repo}/unknown/tags/list")), 404, "NAME_UNKNOWN"),
    ];
    for (rb, status, code) in cases {
        let r = send(rb).await;
        assert_error(&r, status, code);
        let v = r.json();
        assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message helps\n{r}");
    }
}

#[tokio::test]
async fn names_containing_endpoint_words_work() {
    // Endpoints are recognised from the right: these are all repository names.
    let t = Target::new(here!()).await;
    for suffix in ["blobs", "manifests/uploads", "tags/list", "referrers"] {
        let name = t.repo_at(suffix);
        let m = t.push_image(&name, "latest").await;
        t.get_manifest(&name, "latest").await.expect_status(200).expect_body(&m.body);
        let r = send(t.get(&format!("/v2/{name}/tags/list"))).await;
        r.expect_status(200);
        assert_eq!(r.json(), serde_json::json!({ "name": name, "tags": ["latest"] }), "{r}");
    }
}
