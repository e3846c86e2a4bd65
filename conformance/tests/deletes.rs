//! Deletes: tags and manifests (`DELETE /manifests/<tag|digest>`) and blobs.

use berth_conformance::{Resp, Target, assert_error, assert_error_one_of, assert_head_status, here, send, sha256};
use serde_json::json;

fn accepted(r: &Resp) {
    r.expect_status(202).expect_consistent_length();
}

async fn delete_manifest(t: &Target, reference: &str) -> Resp {
    send(t.delete(&format!("/v2/{}/manifests/{reference}", t.repo()))).await
}

async fn delete_blob(t: &Target, digest: &str) -> Resp {
    send(t.delete(&format!("/v2/{}/blobs/{digest}", t.repo()))).await
}

async fn tags(t: &Target) -> Resp {
    send(t.get(&format!("/v2/{}/tags/list", t.repo()))).await
}

#[tokio::test]
async fn deleting_a_tag_removes_only_the_tag() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "one").await;
    t.push_manifest(t.repo(), "two", &m).await;
    accepted(&delete_manifest(&t, "one").await);
    assert_error(&t.get_manifest(t.repo(), "one").await, 404, "MANIFEST_UNKNOWN");
    assert_head_status(&t.head_manifest(t.repo(), "one").await, 404);
    t.get_manifest(t.repo(), &m.digest).await.expect_status(200).expect_body(&m.body);
    t.get_manifest(t.repo(), "two").await.expect_status(200).expect_body(&m.body);
    assert_eq!(tags(&t).await.json()["tags"], json!(["two"]));
}

#[tokio::test]
async fn deleting_a_tag_twice_is_404_manifest_unknown() {
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "once").await;
    accepted(&delete_manifest(&t, "once").await);
    assert_error(&delete_manifest(&t, "once").await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn deleting_a_manifest_by_digest_removes_it_and_its_tags() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "one").await;
    t.push_manifest(t.repo(), "two", &m).await;
    let keep = t.push_image(t.repo(), "other").await;
    accepted(&delete_manifest(&t, &m.digest).await);
    for reference in [m.digest.as_str(), "one", "two"] {
        assert_error(&t.get_manifest(t.repo(), reference).await, 404, "MANIFEST_UNKNOWN");
        assert_head_status(&t.head_manifest(t.repo(), reference).await, 404);
    }
    assert_eq!(tags(&t).await.json()["tags"], json!(["other"]));
    t.get_manifest(t.repo(), "other").await.expect_status(200).expect_body(&keep.body);
}

#[tokio::test]
async fn deleted_manifest_can_be_pushed_again() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "again").await;
    accepted(&delete_manifest(&t, &m.digest).await);
    t.push_manifest(t.repo(), "again", &m).await;
    t.get_manifest(t.repo(), "again").await.expect_status(200).expect_body(&m.body);
}

#[tokio::test]
async fn deleting_a_blob_makes_it_404() {
    let t = Target::new(here!()).await;
    let data = t.blob(400);
    let digest = t.push_blob(t.repo(), &data).await;
    accepted(&delete_blob(&t, &digest).await);
    let path = format!("/v2/{}/blobs/{digest}", t.repo());
    assert_error(&send(t.get(&path)).await, 404, "BLOB_UNKNOWN");
    assert_head_status(&send(t.head(&path)).await, 404);
}

#[tokio::test]
async fn deleted_blob_can_be_pushed_again() {
    let t = Target::new(here!()).await;
    let data = t.blob(400);
    let digest = t.push_blob(t.repo(), &data).await;
    accepted(&delete_blob(&t, &digest).await);
    t.push_blob(t.repo(), &data).await;
    send(t.get(&format!("/v2/{}/blobs/{digest}", t.repo()))).await.expect_status(200).expect_body(&data);
}

#[tokio::test]
async fn deleting_a_missing_manifest_is_404_manifest_unknown() {
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "present").await;
    assert_error(&delete_manifest(&t, &sha256(&t.blob(8))).await, 404, "MANIFEST_UNKNOWN");
    assert_error(&delete_manifest(&t, "absent").await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn deleting_a_missing_blob_is_404_blob_unknown() {
    let t = Target::new(here!()).await;
    t.push_blob(t.repo(), &t.blob(8)).await;
    assert_error(&delete_blob(&t, &sha256(&t.blob(8))).await, 404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deleting_in_an_unknown_repository_is_404() {
    let t = Target::new(here!()).await;
    let digest = sha256(&t.blob(8));
    assert_error_one_of(&delete_manifest(&t, &digest).await, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
    assert_error_one_of(&delete_manifest(&t, "latest").await, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
    assert_error_one_of(&delete_blob(&t, &digest).await, 404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
}

#[tokio::test]
async fn deleting_with_a_malformed_digest_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    t.push_image(t.repo(), "present").await;
    assert_error(&delete_manifest(&t, "sha256:baddigeststring").await, 400, "DIGEST_INVALID");
    assert_error(&delete_blob(&t, "sha256:baddigeststring").await, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn deleting_a_blob_in_one_repository_leaves_it_in_another() {
    let t = Target::new(here!()).await;
    let other = t.repo_at("other");
    let data = t.blob(400);
    let digest = t.push_blob(t.repo(), &data).await;
    t.push_blob(&other, &data).await;
    accepted(&delete_blob(&t, &digest).await);
    send(t.get(&format!("/v2/{other}/blobs/{digest}"))).await.expect_status(200).expect_body(&data);
}
