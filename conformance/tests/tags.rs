//! Tag listing: `GET /v2/<name>/tags/list[?n=<n>][&last=<tag>]`.

use berth_conformance::{Resp, Target, assert_error, here, send};
use serde_json::{Value, json};

/// Pushes one image and points every tag in `tags` at it.
async fn tagged(t: &Target, tags: &[&str]) {
    let m = t.image(t.repo(), 1).await;
    for tag in tags {
        t.push_manifest(t.repo(), tag, &m).await;
    }
}

async fn list(t: &Target, query: &str) -> Resp {
    send(t.get(&format!("/v2/{}/tags/list{query}", t.repo()))).await
}

/// Asserts a 200 tag list of exactly `tags`, returning the response.
fn listed(t: &Target, r: &Resp, tags: &[&str]) {
    r.expect_status(200);
    let v = r.json();
    assert_eq!(v["name"], Value::from(t.repo()), "{r}");
    assert_eq!(v["tags"], json!(tags), "{r}");
}

/// Asserts `Link: <path?n=<n>&last=<last>>; rel="next"`, returning its target.
fn next_is(t: &Target, r: &Resp, n: u32, last: &str) -> String {
    let link = r.next_link().unwrap_or_else(|| panic!("a Link rel=\"next\" is expected\n{r}"));
    let url = t.url(&link);
    assert_eq!(url.path(), format!("/v2/{}/tags/list", t.repo()), "{r}");
    let mut query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    query.sort();
    assert_eq!(query, [("last".to_owned(), last.to_owned()), ("n".to_owned(), n.to_string())], "{r}");
    link
}

#[tokio::test]
async fn list_returns_the_name_and_every_tag_in_byte_order() {
    let t = Target::new(here!()).await;
    let tags = ["v1.0", "latest", "b10", "b2", "a", "B", "A-1", "_x", "a1", "v1.0-rc1", "0"];
    tagged(&t, &tags).await;
    let mut sorted = tags.to_vec();
    sorted.sort();
    listed(&t, &list(&t, "").await, &sorted);
}

#[tokio::test]
async fn n_limits_the_page_and_link_leads_to_the_next() {
    let t = Target::new(here!()).await;
    tagged(&t, &["e", "d", "c", "b", "a"]).await;
    let r = list(&t, "?n=2").await;
    listed(&t, &r, &["a", "b"]);
    let link = next_is(&t, &r, 2, "b");
    let r = send(t.get(&link)).await;
    listed(&t, &r, &["c", "d"]);
    let link = next_is(&t, &r, 2, "d");
    let r = send(t.get(&link)).await;
    listed(&t, &r, &["e"]);
    r.expect_no_header("Link");
}

#[tokio::test]
async fn a_full_last_page_still_links_to_an_empty_one() {
    // Berth cannot know more tags will not follow a full page: it links.
    let t = Target::new(here!()).await;
    tagged(&t, &["a", "b", "c", "d"]).await;
    let r = list(&t, "?n=2&last=b").await;
    listed(&t, &r, &["c", "d"]);
    let link = next_is(&t, &r, 2, "d");
    let r = send(t.get(&link)).await;
    listed(&t, &r, &[]);
    r.expect_no_header("Link");
}

#[tokio::test]
async fn n_beyond_the_tag_count_returns_all_without_link() {
    let t = Target::new(here!()).await;
    tagged(&t, &["b", "a", "c"]).await;
    let r = list(&t, "?n=10").await;
    listed(&t, &r, &["a", "b", "c"]);
    r.expect_no_header("Link");
}

#[tokio::test]
async fn last_with_n_starts_strictly_after_last() {
    let t = Target::new(here!()).await;
    tagged(&t, &["a", "b", "c", "d", "e"]).await;
    let r = list(&t, "?n=2&last=b").await;
    listed(&t, &r, &["c", "d"]);
    next_is(&t, &r, 2, "d");
}

#[tokio::test]
async fn last_without_n_returns_every_tag_after_last() {
    let t = Target::new(here!()).await;
    tagged(&t, &["a", "b", "c", "d", "e"]).await;
    let r = list(&t, "?last=b").await;
    listed(&t, &r, &["c", "d", "e"]);
    r.expect_no_header("Link");
    listed(&t, &list(&t, "?last=e").await, &[]);
}

#[tokio::test]
async fn n_zero_is_an_empty_list_without_link() {
    let t = Target::new(here!()).await;
    tagged(&t, &["a", "b"]).await;
    let r = list(&t, "?n=0").await;
    listed(&t, &r, &[]);
    r.expect_no_header("Link");
}

#[tokio::test]
async fn repository_without_tags_lists_none() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    t.push_manifest(t.repo(), &m.digest, &m).await;
    listed(&t, &list(&t, "").await, &[]);
}

#[tokio::test]
async fn moved_tag_is_listed_once() {
    let t = Target::new(here!()).await;
    tagged(&t, &["latest"]).await;
    tagged(&t, &["latest"]).await;
    listed(&t, &list(&t, "").await, &["latest"]);
}

#[tokio::test]
async fn unknown_repository_is_404_name_unknown() {
    let t = Target::new(here!()).await;
    assert_error(&list(&t, "").await, 404, "NAME_UNKNOWN");
    assert_error(&list(&t, "?n=0").await, 404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn tags_are_case_sensitive() {
    let t = Target::new(here!()).await;
    let lower = t.push_image(t.repo(), "latest").await;
    let upper = t.push_image(t.repo(), "Latest").await;
    t.get_manifest(t.repo(), "latest").await.expect_status(200).expect_body(&lower.body);
    t.get_manifest(t.repo(), "Latest").await.expect_status(200).expect_body(&upper.body);
    listed(&t, &list(&t, "").await, &["Latest", "latest"]);
}
