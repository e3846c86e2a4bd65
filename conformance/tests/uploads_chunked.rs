//! Chunked blob uploads: POST, PATCH with `Content-Range`, closing PUT.

use berth_conformance::{Resp, Target, assert_error_one_of, assert_error_status, here, send, sha256, sha512};

/// 3067 bytes, sent as 1024 + 1024 + 1019 (as the official suite does).
const LEN: usize = 3 * 1024 - 5;
const CHUNKS: [(usize, usize); 3] = [(0, 1024), (1024, 2048), (2048, LEN)];

/// Asserts a 202 for a chunk ending at `last`, returning the next `Location`.
fn accepted(r: &Resp, last: usize) -> String {
    r.expect_status(202).expect_header("Range", &format!("0-{last}")).expect_consistent_length();
    r.expect_header_present("Location").to_owned()
}

/// Asserts an upload status answer (`GET <location>`): 204 with `Range: 0-<last>`.
fn status_is(r: &Resp, last: usize) {
    r.expect_status(204).expect_header("Range", &format!("0-{last}")).expect_empty_body();
}

/// Asserts the closing 201 and that the blob reads back whole.
async fn created(t: &Target, r: &Resp, digest: &str, data: &[u8]) {
    r.expect_status(201).expect_header("Docker-Content-Digest", digest);
    let location = r.expect_header_present("Location");
    assert_eq!(t.location_path(location), format!("/v2/{}/blobs/{digest}", t.repo()), "{r}");
    send(t.get(location)).await.expect_status(200).expect_body(data);
}

#[tokio::test]
async fn single_chunk_patch_returns_202_with_location_and_range() {
    let t = Target::new(here!()).await;
    let data = t.blob(512);
    let location = t.start_upload(t.repo()).await;
    let r = t.patch_chunk(&location, 0, &data).await;
    let location = accepted(&r, 511);
    let r = t.put_upload(&location, &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn three_chunks_then_an_empty_put() {
    let t = Target::new(here!()).await;
    let data = t.blob(LEN);
    let mut location = t.start_upload(t.repo()).await;
    for (start, end) in CHUNKS {
        let r = t.patch_chunk(&location, start, &data[start..end]).await;
        location = accepted(&r, end - 1);
    }
    let r = t.put_upload(&location, &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn last_chunk_may_come_with_the_closing_put() {
    let t = Target::new(here!()).await;
    let data = t.blob(LEN);
    let mut location = t.start_upload(t.repo()).await;
    for (start, end) in &CHUNKS[..2] {
        location = accepted(&t.patch_chunk(&location, *start, &data[*start..*end]).await, end - 1);
    }
    let r = t.put_last_chunk(&location, &sha256(&data), 2048, &data[2048..]).await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn chunked_sha512_upload() {
    let t = Target::new(here!()).await;
    let data = t.blob(LEN);
    let digest = sha512(&data);
    let r = send(t.post(&format!("/v2/{}/blobs/uploads/?digest-algorithm=sha512", t.repo()))).await;
    r.expect_status(202);
    let mut location = r.expect_header_present("Location").to_owned();
    for (start, end) in CHUNKS {
        location = accepted(&t.patch_chunk(&location, start, &data[start..end]).await, end - 1);
    }
    let r = t.put_upload(&location, &digest, b"").await;
    created(&t, &r, &digest, &data).await;
}

#[tokio::test]
async fn out_of_order_chunks_are_416_and_the_session_survives() {
    let t = Target::new(here!()).await;
    let data = t.blob(LEN);
    let mut location = t.start_upload(t.repo()).await;
    let chunk = |i: usize| &data[CHUNKS[i].0..CHUNKS[i].1];

    // A second chunk before the first.
    let old = location.clone();
    assert_error_status(&t.patch_chunk(&location, 1024, chunk(1)).await, 416);
    let r = send(t.get(&old)).await;
    r.expect_status(204).expect_empty_body();
    let range = r.expect_header_present("Range");
    assert!(range.starts_with("0-") && range[2..].parse::<u64>().is_ok(), "{r}");
    location = accepted(&t.patch_chunk(&location, 0, chunk(0)).await, 1023);

    // The third chunk before the second.
    let old = location.clone();
    assert_error_status(&t.patch_chunk(&location, 2048, chunk(2)).await, 416);
    status_is(&send(t.get(&old)).await, 1023);
    location = accepted(&t.patch_chunk(&location, 1024, chunk(1)).await, 2047);

    // The first chunk again.
    let old = location.clone();
    assert_error_status(&t.patch_chunk(&location, 0, chunk(0)).await, 416);
    status_is(&send(t.get(&old)).await, 2047);
    location = accepted(&t.patch_chunk(&location, 2048, chunk(2)).await, LEN - 1);

    let r = t.put_upload(&location, &sha256(&data), b"").await;
    created(&t, &r, &sha256(&data), &data).await;
}

#[tokio::test]
async fn out_of_order_last_chunk_in_put_is_416() {
    let t = Target::new(here!()).await;
    let data = t.blob(LEN);
    let digest = sha256(&data);
    let mut location = t.start_upload(t.repo()).await;
    location = accepted(&t.patch_chunk(&location, 0, &data[..1024]).await, 1023);
    let old = location.clone();
    assert_error_status(&t.put_last_chunk(&location, &digest, 2048, &data[2048..]).await, 416);
    status_is(&send(t.get(&old)).await, 1023);
    location = accepted(&t.patch_chunk(&location, 1024, &data[1024..2048]).await, 2047);
    let r = t.put_last_chunk(&location, &digest, 2048, &data[2048..]).await;
    created(&t, &r, &digest, &data).await;
}

#[tokio::test]
async fn chunk_with_a_gap_is_416() {
    let t = Target::new(here!()).await;
    let data = t.blob(200);
    let location = t.start_upload(t.repo()).await;
    let location = accepted(&t.patch_chunk(&location, 0, &data[..100]).await, 99);
    assert_error_status(&t.patch_chunk(&location, 101, &data[101..]).await, 416);
    status_is(&send(t.get(&location)).await, 99);
}

#[tokio::test]
async fn content_length_disagreeing_with_content_range_is_400() {
    // 50 bytes sent (and declared by Content-Length), 100 claimed by Content-Range.
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    let r = send(
        t.patch(&location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-99")
            .body(t.blob(50)),
    )
    .await;
    assert_error_one_of(&r, 400, &["SIZE_INVALID", "BLOB_UPLOAD_INVALID"]);
}

#[tokio::test]
async fn wrong_digest_after_chunks_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let data = t.blob(LEN);
    let mut location = t.start_upload(t.repo()).await;
    for (start, end) in CHUNKS {
        location = accepted(&t.patch_chunk(&location, start, &data[start..end]).await, end - 1);
    }
    let wrong = sha256(&data[..LEN - 1]);
    let r = t.put_upload(&location, &wrong, b"").await;
    assert_error_one_of(&r, 400, &["DIGEST_INVALID"]);
    send(t.head(&format!("/v2/{}/blobs/{wrong}", t.repo()))).await.expect_status(404);
}
