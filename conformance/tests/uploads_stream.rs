//! Streamed blob uploads: PATCH without `Content-Range` or `Content-Length`,
//! sent with chunked transfer encoding.

use berth_conformance::{Resp, Target, assert_error, here, send, sha256, sha512};
use reqwest::{Body, Method};

/// A body of unknown length (chunked transfer encoding), sent in `parts` pieces.
fn streamed(data: &[u8], parts: usize) -> Body {
    let size = data.len().div_ceil(parts.max(1)).max(1);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(size).map(|c| Ok(c.to_vec())).collect();
    Body::wrap_stream(futures_util::stream::iter(pieces))
}

async fn patch_stream(t: &Target, location: &str, data: &[u8]) -> Resp {
    send(t.patch(location).header("Content-Type", "application/octet-stream").body(streamed(data, 3))).await
}

async fn created(t: &Target, r: &Resp, digest: &str, data: &[u8]) {
    r.expect_status(201).expect_header("Docker-Content-Digest", digest);
    let location = r.expect_header_present("Location");
    assert_eq!(t.location_path(location), format!("/v2/{}/blobs/{digest}", t.repo()), "{r}");
    send(t.get(location)).await.expect_status(200).expect_body(data);
}

#[tokio::test]
async fn streamed_patch_is_202_with_location_and_range() {
    let t = Target::new(here!()).await;
    let data = t.blob(3000);
    let location = t.start_upload(t.repo()).await;
    let r = patch_stream(&t, &location, &data).await;
    r.expect_status(202).expect_header("Range", "0-2999").expect_consistent_length();
    let location = r.expect_header_present("Location");
    let r = t.put_upload(location, &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn streamed_patches_append() {
    let t = Target::new(here!()).await;
    let data = t.blob(5000);
    let location = t.start_upload(t.repo()).await;
    let r = patch_stream(&t, &location, &data[..2000]).await;
    r.expect_status(202).expect_header("Range", "0-1999");
    let r = patch_stream(&t, r.expect_header_present("Location"), &data[2000..]).await;
    r.expect_status(202).expect_header("Range", "0-4999");
    let location = r.expect_header_present("Location");
    send(t.get(location)).await.expect_status(204).expect_header("Range", "0-4999");
    let r = t.put_upload(location, &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn streamed_patch_after_a_ranged_chunk() {
    let t = Target::new(here!()).await;
    let data = t.blob(1500);
    let location = t.start_upload(t.repo()).await;
    let r = t.patch_chunk(&location, 0, &data[..500]).await;
    r.expect_status(202).expect_header("Range", "0-499");
    let r = patch_stream(&t, r.expect_header_present("Location"), &data[500..]).await;
    r.expect_status(202).expect_header("Range", "0-1499");
    let r = t.put_upload(r.expect_header_present("Location"), &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn closing_put_may_stream_the_whole_blob() {
    let t = Target::new(here!()).await;
    let data = t.blob(4000);
    let digest = sha256(&data);
    let location = t.start_upload(t.repo()).await;
    let r = send(
        t.request_url(Method::PUT, t.with_query(&location, "digest", &digest))
            .header("Content-Type", "application/octet-stream")
            .body(streamed(&data, 4)),
    )
    .await;
    created(&t, &r, &digest, &data).await;
}

#[tokio::test]
async fn streamed_upload_with_wrong_digest_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let data = t.blob(3000);
    let location = t.start_upload(t.repo()).await;
    let r = patch_stream(&t, &location, &data).await;
    r.expect_status(202);
    let wrong = sha256(&data[1..]);
    assert_error(&t.put_upload(r.expect_header_present("Location"), &wrong, b"").await, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn streamed_sha512_upload() {
    let t = Target::new(here!()).await;
    let data = t.blob(3000);
    let digest = sha512(&data);
    let location = t.start_upload(t.repo()).await;
    let r = patch_stream(&t, &location, &data).await;
    r.expect_status(202);
    let r = t.put_upload(r.expect_header_present("Location"), &digest, b"").await;
    created(&t, &r, &digest, &data).await;
}

#[tokio::test]
async fn patch_with_length_but_no_content_range_appends() {
    let t = Target::new(here!()).await;
    let data = t.blob(900);
    let location = t.start_upload(t.repo()).await;
    let r =
        send(t.patch(&location).header("Content-Type", "application/octet-stream").body(data[..400].to_vec())).await;
    r.expect_status(202).expect_header("Range", "0-399");
    let location = r.expect_header_present("Location").to_owned();
    let r =
        send(t.patch(&location).header("Content-Type", "application/octet-stream").body(data[400..].to_vec())).await;
    r.expect_status(202).expect_header("Range", "0-899");
    let r = t.put_upload(r.expect_header_present("Location"), &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}
