//! Upload sessions: status (`GET`), cancel (`DELETE`), and unknown ids.

use berth_conformance::{Target, assert_error, here, send, sha256};
use reqwest::Method;

/// Every method on an upload URL, each expected to answer 404 BLOB_UPLOAD_UNKNOWN.
async fn expect_unknown_for_every_method(t: &Target, location: &str) {
    let data = t.blob(10);
    let digest = sha256(&data);
    let requests = [
        t.get(location),
        t.patch(location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-9")
            .body(data.clone()),
        t.request_url(Method::PUT, t.with_query(location, "digest", &digest))
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
        t.delete(location),
    ];
    for rb in requests {
        assert_error(&send(rb).await, 404, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[tokio::test]
async fn status_of_a_new_session_is_204_with_range_and_location() {
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    let r = send(t.get(&location)).await;
    r.expect_status(204).expect_header("Range", "0-0").expect_empty_body();
    let again = r.expect_header_present("Location");
    assert_eq!(t.location_path(again), t.location_path(&location), "{r}");
    let uuid = r.expect_header_present("Docker-Upload-UUID");
    assert!(location.contains(uuid), "{r}");
}

#[tokio::test]
async fn status_reports_the_bytes_received() {
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    let r = t.patch_chunk(&location, 0, &t.blob(100)).await;
    r.expect_status(202);
    let location = r.expect_header_present("Location");
    let r = send(t.get(location)).await;
    r.expect_status(204).expect_header("Range", "0-99").expect_empty_body();
    let r = t.patch_chunk(location, 100, &t.blob(1)).await;
    r.expect_status(202).expect_header("Range", "0-100");
    send(t.get(location)).await.expect_status(204).expect_header("Range", "0-100");
}

#[tokio::test]
async fn cancel_is_204_and_the_session_is_gone() {
    let t = Target::new(here!()).await;
    let location = t.start_upload(t.repo()).await;
    t.patch_chunk(&location, 0, &t.blob(10)).await.expect_status(202);
    let r = send(t.delete(&location).header("Content-Length", "0")).await;
    r.expect_status(204).expect_empty_body();
    assert_error(&send(t.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN");
    expect_unknown_for_every_method(&t, &location).await;
}

#[tokio::test]
async fn unknown_upload_id_is_404_blob_upload_unknown() {
    let t = Target::new(here!()).await;
    t.start_upload(t.repo()).await;
    let location = format!("/v2/{}/blobs/uploads/{}", t.repo(), uuid::Uuid::new_v4());
    expect_unknown_for_every_method(&t, &location).await;
}

#[tokio::test]
async fn non_uuid_upload_id_is_404() {
    let t = Target::new(here!()).await;
    t.start_upload(t.repo()).await;
    for id in ["not-a-uuid", "12345", "0", "00000000-0000-0000-0000-00000000000g"] {
        let location = format!("/v2/{}/blobs/uploads/{id}", t.repo());
        expect_unknown_for_every_method(&t, &location).await;
    }
}

#[tokio::test]
async fn upload_id_under_another_repository_is_404() {
    let t = Target::new(here!()).await;
    let (mine, other) = (t.repo_at("mine"), t.repo_at("other"));
    t.start_upload(&other).await;
    let location = t.start_upload(&mine).await;
    let path = t.location_path(&location);
    let id = path.rsplit('/').next().expect("id");
    expect_unknown_for_every_method(&t, &format!("/v2/{other}/blobs/uploads/{id}")).await;

    // The session is untouched in its own repository.
    let data = t.blob(32);
    send(t.get(&location)).await.expect_status(204).expect_header("Range", "0-0");
    let r = t.patch_chunk(&location, 0, &data).await;
    r.expect_status(202);
    t.put_upload(r.expect_header_present("Location"), &sha256(&data), b"").await.expect_status(201);
    send(t.head(&format!("/v2/{other}/blobs/{}", sha256(&data)))).await.expect_status(404);
}
