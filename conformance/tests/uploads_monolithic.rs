//! Monolithic blob uploads: POST then PUT, and a single POST with `?digest=`.

use berth_conformance::{Target, assert_error, assert_error_one_of, here, send, sha256, sha512};
use reqwest::Method;

/// Asserts the 201 that completes an upload: `Location` is the blob's URL in
/// `repo`, `Docker-Content-Digest` is `digest`, and the blob can be pulled there.
async fn expect_created(t: &Target, r: &berth_conformance::Resp, repo: &str, digest: &str, data: &[u8]) {
    r.expect_status(201).expect_header("Docker-Content-Digest", digest);
    let location = r.expect_header_present("Location");
    assert_eq!(t.location_path(location), format!("/v2/{repo}/blobs/{digest}"), "{r}");
    let got = send(t.get(location)).await;
    got.expect_status(200).expect_body(data).expect_header("Docker-Content-Digest", digest);
}

/// `PUT <location>?digest=<digest>` with `data`.
async fn put_blob(t: &Target, location: &str, digest: &str, data: &[u8]) -> berth_conformance::Resp {
    send(
        t.request_url(Method::PUT, t.with_query(location, "digest", digest))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await
}

#[tokio::test]
async fn post_without_digest_starts_a_session() {
    let t = Target::new(here!()).await;
    let r = send(t.post(&format!("/v2/{}/blobs/uploads/", t.repo()))).await;
    r.expect_status(202).expect_header("Range", "0-0").expect_consistent_length();
    let uuid = r.expect_header_present("Docker-Upload-UUID");
    uuid::Uuid::parse_str(uuid).unwrap_or_else(|e| panic!("Docker-Upload-UUID is not a UUID ({e})\n{r}"));
    let location = r.expect_header_present("Location");
    assert!(location.contains(uuid), "the Location must carry the session id\n{r}");
    assert!(t.location_path(location).starts_with(&format!("/v2/{}/blobs/uploads/", t.repo())), "{r}");
}

#[tokio::test]
async fn each_post_starts_a_distinct_session() {
    let t = Target::new(here!()).await;
    let a = t.start_upload(t.repo()).await;
    let b = t.start_upload(t.repo()).await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn post_then_put_with_body_creates_the_blob() {
    let t = Target::new(here!()).await;
    let data = t.blob(512);
    let digest = sha256(&data);
    let location = t.start_upload(t.repo()).await;
    let r = put_blob(&t, &location, &digest, &data).await;
    expect_created(&t, &r, t.repo(), &digest, &data).await;
}

#[tokio::test]
async fn single_post_with_digest_creates_the_blob() {
    let t = Target::new(here!()).await;
    let data = t.blob(512);
    let digest = sha256(&data);
    let r = send(
        t.post(&format!("/v2/{}/blobs/uploads/?digest={digest}", t.repo()))
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
    )
    .await;
    expect_created(&t, &r, t.repo(), &digest, &data).await;
}

#[tokio::test]
async fn single_post_with_wrong_digest_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let data = t.blob(512);
    let claimed = sha256(&data[..511]);
    let r = send(
        t.post(&format!("/v2/{}/blobs/uploads/?digest={claimed}", t.repo()))
            .header("Content-Type", "application/octet-stream")
            .body(data),
    )
    .await;
    assert_error(&r, 400, "DIGEST_INVALID");
    let r = send(t.head(&format!("/v2/{}/blobs/{claimed}", t.repo()))).await;
    r.expect_status(404);
}

#[tokio::test]
async fn put_with_wrong_digest_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let data = t.blob(512);
    let claimed = sha256(&t.blob(512));
    let location = t.start_upload(t.repo()).await;
    assert_error(&put_blob(&t, &location, &claimed, &data).await, 400, "DIGEST_INVALID");
    send(t.head(&format!("/v2/{}/blobs/{claimed}", t.repo()))).await.expect_status(404);
    send(t.head(&format!("/v2/{}/blobs/{}", t.repo(), sha256(&data)))).await.expect_status(404);
}

#[tokio::test]
async fn put_without_digest_is_400() {
    // The spec requires the digest; the code is the registry's choice.
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    let r = send(t.put(&location).header("Content-Type", "application/octet-stream").body(t.blob(64))).await;
    assert_error_one_of(&r, 400, &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"]);
}

#[tokio::test]
async fn put_with_malformed_digest_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    let r = put_blob(&t, &location, "sha256:baddigeststring", &t.blob(64)).await;
    assert_error(&r, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn sha512_session_requested_with_digest_algorithm() {
    let t = Target::new(here!()).await;
    let data = t.blob(1000);
    let digest = sha512(&data);
    let r = send(t.post(&format!("/v2/{}/blobs/uploads/?digest-algorithm=sha512", t.repo()))).await;
    r.expect_status(202);
    let r = put_blob(&t, r.expect_header_present("Location"), &digest, &data).await;
    expect_created(&t, &r, t.repo(), &digest, &data).await;
}

#[tokio::test]
async fn sha512_digest_on_put_without_digest_algorithm() {
    let t = Target::new(here!()).await;
    let data = t.blob(1000);
    let digest = sha512(&data);
    let location = t.start_upload(t.repo()).await;
    let r = put_blob(&t, &location, &digest, &data).await;
    expect_created(&t, &r, t.repo(), &digest, &data).await;
}

#[tokio::test]
async fn sha512_single_post() {
    let t = Target::new(here!()).await;
    let data = t.blob(1000);
    let digest = sha512(&data);
    let r = send(
        t.post(&format!("/v2/{}/blobs/uploads/?digest={digest}", t.repo()))
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
    )
    .await;
    expect_created(&t, &r, t.repo(), &digest, &data).await;
}

#[tokio::test]
async fn empty_blob_can_be_pushed_and_pulled() {
    let t = Target::new(here!()).await;
    let digest = sha256(b"");
    let location = t.start_upload(t.repo()).await;
    let r = put_blob(&t, &location, &digest, b"").await;
    expect_created(&t, &r, t.repo(), &digest, b"").await;
    let r = send(t.head(&format!("/v2/{}/blobs/{digest}", t.repo()))).await;
    r.expect_status(200).expect_empty_body().expect_header("Docker-Content-Digest", &digest);
    assert_eq!(r.content_length(), Some(0), "{r}");
}

#[tokio::test]
async fn empty_blob_single_post() {
    let t = Target::new(here!()).await;
    let digest = sha512(b"");
    let r = send(
        t.post(&format!("/v2/{}/blobs/uploads/?digest={digest}", t.repo()))
            .header("Content-Type", "application/octet-stream")
            .body(Vec::new()),
    )
    .await;
    expect_created(&t, &r, t.repo(), &digest, b"").await;
}

#[tokio::test]
async fn pushing_an_existing_blob_again_succeeds() {
    let t = Target::new(here!()).await;
    let data = t.blob(128);
    let digest = t.push_blob(t.repo(), &data).await;
    let location = t.start_upload(t.repo()).await;
    let r = put_blob(&t, &location, &digest, &data).await;
    expect_created(&t, &r, t.repo(), &digest, &data).await;
}

#[tokio::test]
async fn completed_session_is_gone() {
    let t = Target::new(here!()).await;
    let data = t.blob(64);
    let location = t.start_upload(t.repo()).await;
    put_blob(&t, &location, &sha256(&data), &data).await.expect_status(201);
    assert_error(&send(t.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn unsupported_digest_algorithm_parameter_is_400() {
    let t = Target::new(here!()).await;
    let r = send(t.post(&format!("/v2/{}/blobs/uploads/?digest-algorithm=md5", t.repo()))).await;
    assert_error_one_of(&r, 400, &["UNSUPPORTED", "DIGEST_INVALID"]);
}

#[tokio::test]
async fn put_with_unsupported_digest_algorithm_is_400() {
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    let r = put_blob(&t, &location, "md5:d41d8cd98f00b204e9800998ecf8427e", b"").await;
    assert_error_one_of(&r, 400, &["UNSUPPORTED", "DIGEST_INVALID"]);
}
