//! Blob GET/HEAD (`/v2/<name>/blobs/<digest>`), including byte ranges.

use berth_conformance::{Target, assert_error, assert_error_one_of, assert_head_status, here, send, sha256};
use berth_oci::Algorithm;

const BLOB_LEN: usize = 2048;

/// A target with a 2048-byte blob in its repository.
async fn with_blob(test: String) -> (Target, Vec<u8>, String) {
    let t = Target::new(test).await;
    let data = t.blob(BLOB_LEN);
    let digest = t.push_blob(t.repo(), &data).await;
    (t, data, digest)
}

async fn get_range(t: &Target, digest: &str, range: &str) -> berth_conformance::Resp {
    send(t.get(&format!("/v2/{}/blobs/{digest}", t.repo())).header("Range", range)).await
}

#[tokio::test]
async fn get_blob_returns_exact_bytes_with_length_and_digest() {
    let (t, data, digest) = with_blob(here!()).await;
    let r = send(t.get(&format!("/v2/{}/blobs/{digest}", t.repo()))).await;
    r.expect_status(200).expect_body(&data).expect_header("Docker-Content-Digest", &digest);
}

#[tokio::test]
async fn head_blob_returns_length_and_digest_without_body() {
    let (t, _, digest) = with_blob(here!()).await;
    let r = send(t.head(&format!("/v2/{}/blobs/{digest}", t.repo()))).await;
    r.expect_status(200).expect_empty_body().expect_header("Docker-Content-Digest", &digest);
    assert_eq!(r.content_length(), Some(BLOB_LEN as u64), "{r}");
}

#[tokio::test]
async fn sha512_blob_is_served_under_its_sha512_digest() {
    let t = Target::new(here!()).await;
    let data = t.blob(777);
    let digest = t.push_blob_as(t.repo(), Algorithm::Sha512, &data).await;
    assert!(digest.starts_with("sha512:"));
    let path = format!("/v2/{}/blobs/{digest}", t.repo());
    send(t.get(&path)).await.expect_status(200).expect_body(&data).expect_header("Docker-Content-Digest", &digest);
    let r = send(t.head(&path)).await;
    r.expect_status(200).expect_empty_body().expect_header("Docker-Content-Digest", &digest);
    assert_eq!(r.content_length(), Some(777), "{r}");
}

#[tokio::test]
async fn blob_responses_are_not_content_encoded() {
    // A client that offers gzip must still get the stored bytes and their
    // length: an encoded body would change both.
    let (t, data, digest) = with_blob(here!()).await;
    let r = send(t.get(&format!("/v2/{}/blobs/{digest}", t.repo())).header("Accept-Encoding", "gzip, br, zstd")).await;
    r.expect_status(200).expect_body(&data).expect_no_header("Content-Encoding");
}

#[tokio::test]
async fn range_closed_returns_206_with_the_part_and_content_range() {
    let (t, data, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=500-1499").await;
    r.expect_status(206).expect_body(&data[500..1500]).expect_header("Content-Range", "bytes 500-1499/2048");
}

#[tokio::test]
async fn range_open_ended_returns_the_rest_of_the_blob() {
    let (t, data, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=500-").await;
    r.expect_status(206).expect_body(&data[500..]).expect_header("Content-Range", "bytes 500-2047/2048");
}

#[tokio::test]
async fn range_suffix_returns_the_last_bytes() {
    let (t, data, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=-500").await;
    r.expect_status(206).expect_body(&data[1548..]).expect_header("Content-Range", "bytes 1548-2047/2048");
}

#[tokio::test]
async fn range_first_byte_only() {
    let (t, data, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=0-0").await;
    r.expect_status(206).expect_body(&data[..1]).expect_header("Content-Range", "bytes 0-0/2048");
}

#[tokio::test]
async fn range_end_past_eof_is_clamped_to_the_last_byte() {
    let (t, data, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=2000-5000").await;
    r.expect_status(206).expect_body(&data[2000..]).expect_header("Content-Range", "bytes 2000-2047/2048");
}

#[tokio::test]
async fn range_inverted_is_416() {
    let (t, _, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=500-0").await;
    r.expect_status(416).expect_consistent_length();
}

#[tokio::test]
async fn range_starting_past_the_end_is_416_with_unsatisfied_content_range() {
    let (t, _, digest) = with_blob(here!()).await;
    let r = get_range(&t, &digest, "bytes=5000-10000").await;
    r.expect_status(416).expect_header("Content-Range", "bytes */2048").expect_consistent_length();
    let r = get_range(&t, &digest, "bytes=2048-").await;
    r.expect_status(416).expect_header("Content-Range", "bytes */2048").expect_consistent_length();
}

#[tokio::test]
async fn range_error_body_uses_a_spec_error_code() {
    // A 4xx body MAY be anything, but a JSON one MUST use the spec's codes.
    // Berth always sends the OCI envelope, 416s included: against it the
    // body is required, so this cannot pass by sending nothing.
    let (t, _, digest) = with_blob(here!()).await;
    for range in ["bytes=5000-10000", "bytes=500-0", "bytes=-0"] {
        let r = get_range(&t, &digest, range).await;
        r.expect_status(416).expect_consistent_length();
        if t.is_in_process() {
            r.expect_header("Content-Range", "bytes */2048");
            assert_error(&r, 416, "SIZE_INVALID");
        } else if r.content_type() == Some("application/json") {
            r.error_codes();
        }
    }
    if t.is_in_process() {
        // HEAD: the same status and headers, without the body.
        let r = send(t.head(&format!("/v2/{}/blobs/{digest}", t.repo())).header("Range", "bytes=5000-")).await;
        r.expect_status(416).expect_header("Content-Range", "bytes */2048").expect_empty_body();
    }
}

#[tokio::test]
async fn missing_blob_is_404_blob_unknown() {
    let t = Target::new(here!()).await;
    // The repository exists, the blob does not.
    t.push_blob(t.repo(), &t.blob(10)).await;
    let path = format!("/v2/{}/blobs/{}", t.repo(), sha256(&t.blob(10)));
    assert_error(&send(t.get(&path)).await, 404, "BLOB_UNKNOWN");
    assert_head_status(&send(t.head(&path)).await, 404);
}

#[tokio::test]
async fn blob_in_unknown_repository_is_404() {
    let t = Target::new(here!()).await;
    let path = format!("/v2/{}/blobs/{}", t.repo(), sha256(&t.blob(10)));
    assert_error_one_of(&send(t.get(&path)).await, 404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
    assert_head_status(&send(t.head(&path)).await, 404);
}

#[tokio::test]
async fn blob_of_another_repository_is_not_visible_until_mounted() {
    let t = Target::new(here!()).await;
    let (owner, other) = (t.repo_at("owner"), t.repo_at("other"));
    let data = t.blob(300);
    let digest = t.push_blob(&owner, &data).await;
    t.push_blob(&other, &t.blob(5)).await;
    let path = format!("/v2/{other}/blobs/{digest}");
    assert_error(&send(t.get(&path)).await, 404, "BLOB_UNKNOWN");
    assert_head_status(&send(t.head(&path)).await, 404);

    let r = send(t.post(&format!("/v2/{other}/blobs/uploads/?mount={digest}&from={owner}"))).await;
    r.expect_status(201);
    send(t.get(&path)).await.expect_status(200).expect_body(&data);
}

#[tokio::test]
async fn malformed_digest_in_blob_url_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    t.push_blob(t.repo(), &t.blob(10)).await;
    let hex = sha256(b"x").trim_start_matches("sha256:").to_owned();
    for bad in [
        "sha256:xyz".to_owned(),
        format!("sha256:{}", &hex[1..]),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256{hex}"),
        format!("sha256:{hex}0"),
    ] {
        let r = send(t.get(&format!("/v2/{}/blobs/{bad}", t.repo()))).await;
        assert_error(&r, 400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn unsupported_digest_algorithm_is_400() {
    // The spec asks for 400 without naming the code: Berth says UNSUPPORTED.
    let t = Target::new(here!()).await;
    t.push_blob(t.repo(), &t.blob(10)).await;
    let r = send(t.get(&format!("/v2/{}/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", t.repo()))).await;
    assert_error_one_of(&r, 400, &["UNSUPPORTED", "DIGEST_INVALID"]);
}
