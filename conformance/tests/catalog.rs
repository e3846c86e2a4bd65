//! Repository listing: `GET /v2/_catalog[?n=<n>][&last=<name>]`.

use berth_conformance::{Resp, Target, here, send};
use serde_json::json;

/// Pushes an image into `<repo>/a`, `<repo>/b` and `<repo>/c`, returning their names.
async fn three_repositories(t: &Target) -> Vec<String> {
    let names: Vec<String> = ["c", "a", "b"].iter().map(|s| t.repo_at(s)).collect();
    for name in &names {
        t.push_image(name, "latest").await;
    }
    let mut sorted = names;
    sorted.sort();
    sorted
}

fn repositories(r: &Resp) -> Vec<String> {
    r.expect_status(200);
    let v = r.json();
    let list = v["repositories"].as_array().unwrap_or_else(|| panic!("no \"repositories\" array\n{r}"));
    list.iter().map(|n| n.as_str().unwrap_or_else(|| panic!("names must be strings\n{r}")).to_owned()).collect()
}

#[tokio::test]
async fn catalog_lists_repositories_in_order() {
    let t = Target::new(here!()).await;
    let names = three_repositories(&t).await;
    // Nothing sorts between a repository name and its sub-repositories' but
    // its own `-`/`.` extensions, which no other test uses.
    let r = send(t.get(&format!("/v2/_catalog?n=3&last={}", t.repo()))).await;
    assert_eq!(repositories(&r), names, "{r}");
    if t.is_in_process() {
        // A fresh registry holds exactly these.
        let r = send(t.get("/v2/_catalog")).await;
        assert_eq!(repositories(&r), names, "{r}");
        r.expect_no_header("Link");
    }
}

#[tokio::test]
async fn catalog_pages_with_n_last_and_link() {
    let t = Target::new(here!()).await;
    let names = three_repositories(&t).await;
    let r = send(t.get(&format!("/v2/_catalog?n=2&last={}", t.repo()))).await;
    assert_eq!(repositories(&r), names[..2], "{r}");
    let link = r.next_link().unwrap_or_else(|| panic!("a Link rel=\"next\" is expected\n{r}"));
    let url = t.url(&link);
    assert_eq!(url.path(), "/v2/_catalog", "{r}");
    let mut query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    query.sort();
    assert_eq!(query, [("last".to_owned(), names[1].clone()), ("n".to_owned(), "2".to_owned())], "{r}");

    let r = send(t.get(&link)).await;
    let page = repositories(&r);
    assert_eq!(page.first(), Some(&names[2]), "{r}");
    if t.is_in_process() {
        assert_eq!(page, names[2..], "{r}");
        r.expect_no_header("Link");
    }
}

#[tokio::test]
async fn catalog_n_zero_is_empty_without_link() {
    let t = Target::new(here!()).await;
    three_repositories(&t).await;
    let r = send(t.get("/v2/_catalog?n=0")).await;
    assert_eq!(r.json(), json!({ "repositories": [] }), "{r}");
    r.expect_no_header("Link");
}

#[tokio::test]
async fn empty_registry_has_an_empty_catalog() {
    // Only a fresh in-process registry is known to be empty.
    let Some(t) = Target::in_process(here!(), |_| {}).await else { return };
    let r = send(t.get("/v2/_catalog")).await;
    assert_eq!(r.json(), json!({ "repositories": [] }), "{r}");
}
