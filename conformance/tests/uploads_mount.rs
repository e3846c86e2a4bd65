//! Cross-repository blob mounts: `POST /v2/<name>/blobs/uploads/?mount=<digest>[&from=<other>]`.

use berth_conformance::{Resp, Target, assert_error, here, send, sha256};
use berth_oci::Algorithm;

/// Asserts a successful mount of `digest` into `repo` and that it now reads back.
async fn mounted(t: &Target, r: &Resp, repo: &str, digest: &str, data: &[u8]) {
    r.expect_status(201).expect_header("Docker-Content-Digest", digest).expect_consistent_length();
    let location = r.expect_header_present("Location");
    assert_eq!(t.location_path(location), format!("/v2/{repo}/blobs/{digest}"), "{r}");
    send(t.get(location)).await.expect_status(200).expect_body(data);
    let head = send(t.head(&format!("/v2/{repo}/blobs/{digest}"))).await;
    head.expect_status(200).expect_header("Docker-Content-Digest", digest).expect_empty_body();
}

/// Asserts the 202 of a mount that fell back to an ordinary upload session,
/// then completes that session with `data`.
async fn session_started(t: &Target, r: &Resp, repo: &str, data: &[u8]) {
    r.expect_status(202).expect_header("Range", "0-0");
    let uuid = r.expect_header_present("Docker-Upload-UUID");
    let location = r.expect_header_present("Location");
    assert!(location.contains(uuid), "{r}");
    assert!(t.location_path(location).starts_with(&format!("/v2/{repo}/blobs/uploads/")), "{r}");
    let digest = sha256(data);
    let done = t.put_upload(location, &digest, data).await;
    done.expect_status(201);
    send(t.get(&format!("/v2/{repo}/blobs/{digest}"))).await.expect_status(200).expect_body(data);
}

#[tokio::test]
async fn mount_from_another_repository_is_201_and_the_blob_is_visible() {
    let t = Target::new(here!()).await;
    let (source, dest) = (t.repo_at("source"), t.repo_at("dest"));
    let data = t.blob(700);
    let digest = t.push_blob(&source, &data).await;
    let r = send(t.post(&format!("/v2/{dest}/blobs/uploads/?mount={digest}&from={source}"))).await;
    mounted(&t, &r, &dest, &digest, &data).await;
}

#[tokio::test]
async fn mount_parameters_may_be_url_encoded() {
    let t = Target::new(here!()).await;
    let (source, dest) = (t.repo_at("source"), t.repo_at("dest"));
    let data = t.blob(700);
    let digest = t.push_blob(&source, &data).await;
    let from = source.replace('/', "%2F");
    let mount = digest.replace(':', "%3A");
    let r = send(t.post(&format!("/v2/{dest}/blobs/uploads/?from={from}&mount={mount}"))).await;
    mounted(&t, &r, &dest, &digest, &data).await;
}

#[tokio::test]
async fn mount_of_a_sha512_blob() {
    let t = Target::new(here!()).await;
    let (source, dest) = (t.repo_at("source"), t.repo_at("dest"));
    let data = t.blob(700);
    let digest = t.push_blob_as(&source, Algorithm::Sha512, &data).await;
    let r = send(t.post(&format!("/v2/{dest}/blobs/uploads/?mount={digest}&from={source}"))).await;
    mounted(&t, &r, &dest, &digest, &data).await;
}

#[tokio::test]
async fn mount_of_a_blob_absent_from_the_source_starts_an_upload() {
    let t = Target::new(here!()).await;
    let (source, dest) = (t.repo_at("source"), t.repo_at("dest"));
    t.push_blob(&source, &t.blob(10)).await;
    let data = t.blob(700);
    let r = send(t.post(&format!("/v2/{dest}/blobs/uploads/?mount={}&from={source}", sha256(&data)))).await;
    session_started(&t, &r, &dest, &data).await;
}

#[tokio::test]
async fn anonymous_mount_is_201_when_the_blob_exists_anywhere() {
    let t = Target::new(here!()).await;
    let (source, dest) = (t.repo_at("source"), t.repo_at("dest"));
    let data = t.blob(700);
    let digest = t.push_blob(&source, &data).await;
    let r = send(t.post(&format!("/v2/{dest}/blobs/uploads/?mount={digest}"))).await;
    mounted(&t, &r, &dest, &digest, &data).await;
}

#[tokio::test]
async fn anonymous_mount_of_an_unknown_blob_starts_an_upload() {
    let t = Target::new(here!()).await;
    let data = t.blob(700);
    let r = send(t.post(&format!("/v2/{}/blobs/uploads/?mount={}", t.repo(), sha256(&data)))).await;
    session_started(&t, &r, t.repo(), &data).await;
}

#[tokio::test]
async fn mounted_blob_stays_when_the_source_deletes_it() {
    let t = Target::new(here!()).await;
    let (source, dest) = (t.repo_at("source"), t.repo_at("dest"));
    let data = t.blob(700);
    let digest = t.push_blob(&source, &data).await;
    let r = send(t.post(&format!("/v2/{dest}/blobs/uploads/?mount={digest}&from={source}"))).await;
    r.expect_status(201);
    send(t.delete(&format!("/v2/{source}/blobs/{digest}"))).await.expect_status(202);
    assert_error(&send(t.get(&format!("/v2/{source}/blobs/{digest}"))).await, 404, "BLOB_UNKNOWN");
    send(t.get(&format!("/v2/{dest}/blobs/{digest}"))).await.expect_status(200).expect_body(&data);
}
