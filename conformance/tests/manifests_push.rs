//! Manifest PUT: by tag, by digest (with `?tag=`), subjects, validation and limits.

use berth_conformance::content::{
    self, DOCKER_CONFIG, DOCKER_FOREIGN_LAYER, DOCKER_LAYER, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED, OCI_INDEX,
    OCI_MANIFEST, OCI_ND_LAYER,
};
use berth_conformance::{Manifest, Resp, Target, assert_error, assert_error_one_of, assert_error_status, here, send};
use berth_oci::Algorithm;
use serde_json::{Value, json};

/// Berth's default manifest size limit (4 MiB), set explicitly for the limit tests.
const LIMIT: usize = 4 * 1024 * 1024;

/// Asserts the 201 of a manifest push: `Location` pulls `m`, `Docker-Content-Digest` is its digest.
async fn created(t: &Target, r: &Resp, m: &Manifest) {
    r.expect_status(201).expect_header("Docker-Content-Digest", &m.digest).expect_consistent_length();
    let location = r.expect_header_present("Location");
    assert_eq!(t.location_path(location), format!("/v2/{}/manifests/{}", t.repo(), m.digest), "{r}");
    let got = send(t.get(location).header("Accept", content::ACCEPT_ALL_MANIFESTS)).await;
    got.expect_status(200).expect_body(&m.body).expect_header("Content-Type", &m.media_type);
}

/// An artifact manifest (blobs pushed) whose `subject` is `subject`.
async fn referrer_of(t: &Target, subject: Value) -> Manifest {
    let mut v = t.artifact_value(t.repo(), "application/vnd.berth.conformance.sig").await;
    v["subject"] = subject;
    Manifest::new(v)
}

#[tokio::test]
async fn put_by_tag_is_201_with_location_and_digest() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let r = t.put_manifest(t.repo(), "latest", &m).await;
    created(&t, &r, &m).await;
    let got = t.get_manifest(t.repo(), "latest").await;
    got.expect_status(200).expect_body(&m.body);
}

#[tokio::test]
async fn put_by_digest_is_201_with_location_and_digest() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let r = t.put_manifest(t.repo(), &m.digest, &m).await;
    created(&t, &r, &m).await;
}

#[tokio::test]
async fn put_by_digest_with_tag_parameters_reports_each_tag() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let r = t.put_manifest(t.repo(), &format!("{}?tag=alpha&tag=beta", m.digest), &m).await;
    created(&t, &r, &m).await;
    let tags = r.header_values("OCI-Tag");
    for tag in ["alpha", "beta"] {
        assert!(tags.iter().any(|t| t == tag), "OCI-Tag must name {tag}\n{r}");
        let got = t.get_manifest(t.repo(), tag).await;
        got.expect_status(200).expect_body(&m.body).expect_header("Docker-Content-Digest", &m.digest);
    }
    let list = send(t.get(&format!("/v2/{}/tags/list", t.repo()))).await.json();
    assert_eq!(list["tags"], json!(["alpha", "beta"]));
}

#[tokio::test]
async fn put_by_digest_with_sha512_and_tag_parameters() {
    let t = Target::new(here!()).await;
    let m = Manifest::sha512(t.image_value(t.repo(), 1).await);
    let r = t.put_manifest(t.repo(), &format!("{}?tag=one&tag=two", m.digest), &m).await;
    created(&t, &r, &m).await;
    let tags = r.header_values("OCI-Tag");
    assert!(tags.contains(&"one".to_owned()) && tags.contains(&"two".to_owned()), "{r}");
    for tag in ["one", "two"] {
        t.get_manifest(t.repo(), tag).await.expect_status(200).expect_header("Docker-Content-Digest", &m.digest);
    }
}

#[tokio::test]
async fn put_with_subject_reports_oci_subject_by_tag_and_by_digest() {
    let t = Target::new(here!()).await;
    let subject = t.push_image(t.repo(), "app").await;
    let by_tag = referrer_of(&t, content::subject(&subject)).await;
    let r = t.put_manifest(t.repo(), "sig", &by_tag).await;
    created(&t, &r, &by_tag).await;
    r.expect_header("OCI-Subject", &subject.digest);
    let by_digest = referrer_of(&t, content::subject(&subject)).await;
    let r = t.put_manifest(t.repo(), &by_digest.digest, &by_digest).await;
    created(&t, &r, &by_digest).await;
    r.expect_header("OCI-Subject", &subject.digest);
}

#[tokio::test]
async fn index_with_subject_reports_oci_subject() {
    let t = Target::new(here!()).await;
    let subject = t.push_image(t.repo(), "app").await;
    let child = t.image(t.repo(), 1).await;
    t.push_manifest(t.repo(), &child.digest, &child).await;
    let mut v = content::index(vec![content::manifest_descriptor(&child)]);
    v["subject"] = content::subject(&subject);
    let index = Manifest::new(v);
    let r = t.put_manifest(t.repo(), &index.digest, &index).await;
    created(&t, &r, &index).await;
    r.expect_header("OCI-Subject", &subject.digest);
}

#[tokio::test]
async fn put_without_subject_has_no_oci_subject() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    t.push_manifest(t.repo(), "plain", &m).await.expect_no_header("OCI-Subject");
}

#[tokio::test]
async fn subject_that_was_never_pushed_is_accepted() {
    let t = Target::new(here!()).await;
    let missing = content::absent_descriptor(OCI_MANIFEST, &t.unique(), 123);
    let m = referrer_of(&t, missing.clone()).await;
    let r = t.put_manifest(t.repo(), "orphan", &m).await;
    created(&t, &r, &m).await;
    r.expect_header("OCI-Subject", missing["digest"].as_str().expect("digest"));
}

#[tokio::test]
async fn body_not_matching_the_digest_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let mut body = m.body.clone();
    body.extend_from_slice(b"  ");
    let altered = Manifest { body, ..m.clone() };
    assert_error(&t.put_manifest(t.repo(), &m.digest, &altered).await, 400, "DIGEST_INVALID");
    assert_error(&t.get_manifest(t.repo(), &m.digest).await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn malformed_digest_reference_is_400_digest_invalid() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    for reference in ["sha256:baddigeststring", "sha256:", "sha256:ABCDEF"] {
        assert_error(&t.put_manifest(t.repo(), reference, &m).await, 400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn invalid_tag_reference_is_400() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    for reference in ["-dash-first", ".dot-first", &"a".repeat(129)] {
        assert_error_status(&t.put_manifest(t.repo(), reference, &m).await, 400);
    }
}

#[tokio::test]
async fn invalid_json_is_400_manifest_invalid() {
    let t = Target::new(here!()).await;
    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
    ] {
        let m = Manifest::from_bytes(body.to_vec(), OCI_MANIFEST, Algorithm::Sha256);
        assert_error(&t.put_manifest(t.repo(), "broken", &m).await, 400, "MANIFEST_INVALID");
    }
}

#[tokio::test]
async fn docker_schema1_is_400_manifest_invalid() {
    let t = Target::new(here!()).await;
    let layer = t.blob(100);
    t.push_blob(t.repo(), &layer).await;
    let v = json!({
        "schemaVersion": 1,
        "name": t.repo(),
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{ "blobSum": content::sha256(&layer) }],
        "history": [{ "v1Compatibility": "{\"id\":\"x\"}" }],
        "signatures": [],
    });
    let body = serde_json::to_vec(&v).expect("json");
    for media_type in [DOCKER_SCHEMA1_SIGNED, "application/vnd.docker.distribution.manifest.v1+json"] {
        let m = Manifest::from_bytes(body.clone(), media_type, Algorithm::Sha256);
        assert_error(&t.put_manifest(t.repo(), "old", &m).await, 400, "MANIFEST_INVALID");
    }
    assert_error(&t.get_manifest(t.repo(), "old").await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifest_may_be_sent_with_chunked_encoding() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = m.body.chunks(50).map(|c| Ok(c.to_vec())).collect();
    let r = send(
        t.put(&format!("/v2/{}/manifests/streamed", t.repo()))
            .header("Content-Type", OCI_MANIFEST)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(parts))),
    )
    .await;
    created(&t, &r, &m).await;
}

#[tokio::test]
async fn pushing_the_same_manifest_again_is_201() {
    let t = Target::new(here!()).await;
    let m = t.push_image(t.repo(), "latest").await;
    created(&t, &t.put_manifest(t.repo(), "latest", &m).await, &m).await;
    created(&t, &t.put_manifest(t.repo(), &m.digest, &m).await, &m).await;
}

#[tokio::test]
async fn unusual_documents_are_accepted_and_stored_byte_for_byte() {
    let t = Target::new(here!()).await;
    let config = t.config_blob();
    t.push_blob(t.repo(), &config).await;
    t.push_blob(t.repo(), b"{}").await;
    let config_d = content::descriptor(content::OCI_CONFIG, &config);
    // Unknown fields, a `data` field, odd key order and whitespace, no layers.
    let body = format!(
        "{{\n  \"org.example.custom\" : \"{}\",\n  \"layers\": [],\n  \"config\": {},\n  \"mediaType\": \"{OCI_MANIFEST}\",\n  \"schemaVersion\": 2\n}}\n",
        t.unique(),
        serde_json::to_string(&config_d).expect("json"),
    );
    let no_layers = Manifest::from_bytes(body.into_bytes(), OCI_MANIFEST, Algorithm::Sha256);
    created(&t, &t.put_manifest(t.repo(), "odd", &no_layers).await, &no_layers).await;

    let mut v = content::image_manifest(content::descriptor(content::OCI_EMPTY, b"{}"), vec![]);
    v["config"]["data"] = json!("e30=");
    v["artifactType"] = json!("application/vnd.berth.conformance.data");
    let with_data = Manifest::new(v);
    created(&t, &t.put_manifest(t.repo(), "data", &with_data).await, &with_data).await;

    let empty_index = Manifest::new(content::index(vec![]));
    created(&t, &t.put_manifest(t.repo(), "empty-index", &empty_index).await, &empty_index).await;
}

#[tokio::test]
async fn large_manifest_of_3_9_mb_is_accepted() {
    let t = Target::new(here!()).await;
    let m = content::pad_to(t.image_value(t.repo(), 1).await, 3_910_601);
    let r = t.put_manifest(t.repo(), "large", &m).await;
    created(&t, &r, &m).await;
}

#[tokio::test]
async fn manifest_at_the_size_limit_is_accepted() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.max_size = LIMIT).await else { return };
    let m = content::pad_to(t.image_value(t.repo(), 1).await, LIMIT);
    created(&t, &t.put_manifest(t.repo(), "limit", &m).await, &m).await;
}

#[tokio::test]
async fn manifest_over_the_size_limit_is_413() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.max_size = LIMIT).await else { return };
    let m = content::pad_to(t.image_value(t.repo(), 1).await, LIMIT + 1);
    let r = t.put_manifest(t.repo(), "huge", &m).await;
    assert_error(&r, 413, "SIZE_INVALID");
    assert_error(&t.get_manifest(t.repo(), "huge").await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn streamed_manifest_over_the_size_limit_is_413() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.max_size = LIMIT).await else { return };
    let m = content::pad_to(t.image_value(t.repo(), 1).await, LIMIT + 1);
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = m.body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = send(
        t.put(&format!("/v2/{}/manifests/huge", t.repo()))
            .header("Content-Type", OCI_MANIFEST)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(parts))),
    )
    .await;
    assert_error(&r, 413, "SIZE_INVALID");
}

#[tokio::test]
async fn image_referencing_an_unknown_blob_is_400_manifest_blob_unknown() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = false).await else { return };
    let mut v = t.image_value(t.repo(), 1).await;
    v["layers"].as_array_mut().expect("layers").push(content::absent_descriptor(content::OCI_LAYER, &t.unique(), 10));
    let m = Manifest::new(v);
    assert_error(&t.put_manifest(t.repo(), "sparse", &m).await, 400, "MANIFEST_BLOB_UNKNOWN");
    // A missing config is just as unknown.
    let mut v = t.image_value(t.repo(), 1).await;
    v["config"] = content::absent_descriptor(content::OCI_CONFIG, &t.unique(), 10);
    let m = Manifest::new(v);
    assert_error(&t.put_manifest(t.repo(), &m.digest, &m).await, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_error(&t.get_manifest(t.repo(), "sparse").await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn blob_of_another_repository_is_unknown_to_a_manifest() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = false).await else { return };
    let elsewhere = t.repo_at("elsewhere");
    let v = t.image_value(&elsewhere, 1).await;
    let m = Manifest::new(v);
    assert_error(&t.put_manifest(t.repo(), "foreign", &m).await, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn index_referencing_an_unknown_manifest_is_400_manifest_blob_unknown() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = false).await else { return };
    let pushed = t.image(t.repo(), 1).await;
    t.push_manifest(t.repo(), &pushed.digest, &pushed).await;
    let absent = t.image(t.repo(), 1).await;
    let index = Manifest::new(content::index(vec![
        content::manifest_descriptor(&pushed),
        content::manifest_descriptor(&absent),
    ]));
    assert_error(&t.put_manifest(t.repo(), "sparse-index", &index).await, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn descriptor_size_disagreeing_with_the_blob_is_400() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = false).await else { return };
    let mut v = t.image_value(t.repo(), 1).await;
    let size = v["layers"][0]["size"].as_u64().expect("size");
    v["layers"][0]["size"] = json!(size + 1);
    let m = Manifest::new(v);
    assert_error_one_of(
        &t.put_manifest(t.repo(), "wrong-size", &m).await,
        400,
        &["MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID"],
    );
}

#[tokio::test]
async fn non_distributable_layers_need_not_be_present() {
    let t = Target::new(here!()).await;
    let mut v = t.image_value(t.repo(), 1).await;
    let layers = v["layers"].as_array_mut().expect("layers");
    for (media_type, size) in
        [(OCI_ND_LAYER, 123_456), ("application/vnd.oci.image.layer.nondistributable.v1.tar", 12_345)]
    {
        let mut d = content::absent_descriptor(media_type, &t.unique(), size);
        d["urls"] = json!(["https://example.invalid/layer"]);
        layers.insert(0, d);
    }
    let m = Manifest::new(v);
    created(&t, &t.put_manifest(t.repo(), "nondist", &m).await, &m).await;
}

#[tokio::test]
async fn docker_foreign_layers_need_not_be_present() {
    let t = Target::new(here!()).await;
    let config = t.config_blob();
    let layer = t.blob(100);
    t.push_blob(t.repo(), &config).await;
    t.push_blob(t.repo(), &layer).await;
    let mut foreign = content::absent_descriptor(DOCKER_FOREIGN_LAYER, &t.unique(), 98_765);
    foreign["urls"] = json!(["https://example.invalid/foreign"]);
    let m = Manifest::new(json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": content::descriptor(DOCKER_CONFIG, &config),
        "layers": [foreign, content::descriptor(DOCKER_LAYER, &layer)],
    }));
    created(&t, &t.put_manifest(t.repo(), "foreign", &m).await, &m).await;
}

#[tokio::test]
async fn sparse_image_and_index_are_accepted_when_allowed() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = true).await else { return };
    let mut v = t.image_value(t.repo(), 1).await;
    v["layers"]
        .as_array_mut()
        .expect("layers")
        .insert(0, content::absent_descriptor(content::OCI_LAYER, &t.unique(), 10));
    let image = Manifest::new(v);
    created(&t, &t.put_manifest(t.repo(), "sparse-image", &image).await, &image).await;
    let index = Manifest::new(content::index(vec![
        content::manifest_descriptor(&image),
        content::absent_descriptor(OCI_MANIFEST, &t.unique(), 1024),
    ]));
    assert_eq!(index.media_type, OCI_INDEX);
    created(&t, &t.put_manifest(t.repo(), "sparse-index", &index).await, &index).await;
}

#[tokio::test]
async fn unsupported_digest_algorithm_reference_is_400() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let r = t.put_manifest(t.repo(), "md5:d41d8cd98f00b204e9800998ecf8427e", &m).await;
    assert_error_one_of(&r, 400, &["UNSUPPORTED", "DIGEST_INVALID"]);
}

#[tokio::test]
async fn longest_valid_tag_is_accepted() {
    let t = Target::new(here!()).await;
    let tag = format!("_{}", "x".repeat(127));
    let m = t.image(t.repo(), 1).await;
    created(&t, &t.put_manifest(t.repo(), &tag, &m).await, &m).await;
    t.get_manifest(t.repo(), &tag).await.expect_status(200).expect_body(&m.body);
}

#[tokio::test]
async fn content_type_parameters_are_ignored() {
    let t = Target::new(here!()).await;
    let m = t.image(t.repo(), 1).await;
    let r = send(
        t.put(&format!("/v2/{}/manifests/params", t.repo()))
            .header("Content-Type", format!("{OCI_MANIFEST}; charset=utf-8"))
            .body(m.body.clone()),
    )
    .await;
    created(&t, &r, &m).await;
    t.get_manifest(t.repo(), "params").await.expect_status(200).expect_header("Content-Type", OCI_MANIFEST);
}

#[tokio::test]
async fn manifest_without_media_type_field_is_served_as_its_content_type() {
    let t = Target::new(here!()).await;
    let mut v = t.image_value(t.repo(), 1).await;
    v.as_object_mut().expect("object").remove("mediaType");
    let m = Manifest::from_bytes(serde_json::to_vec(&v).expect("json"), OCI_MANIFEST, Algorithm::Sha256);
    created(&t, &t.put_manifest(t.repo(), "untyped", &m).await, &m).await;
    t.get_manifest(t.repo(), "untyped").await.expect_status(200).expect_header("Content-Type", OCI_MANIFEST);
}

#[tokio::test]
async fn index_referencing_a_manifest_of_another_repository_is_400_manifest_blob_unknown() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = false).await else { return };
    let elsewhere = t.repo_at("elsewhere");
    let child = t.push_image(&elsewhere, "child").await;
    let index = Manifest::new(content::index(vec![content::manifest_descriptor(&child)]));
    assert_error(&t.put_manifest(t.repo(), "index", &index).await, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn deleted_blob_is_unknown_to_a_manifest() {
    let Some(t) = Target::in_process(here!(), |cfg| cfg.manifests.allow_sparse = false).await else { return };
    let m = t.image(t.repo(), 1).await;
    let layer = m.value()["layers"][0]["digest"].as_str().expect("digest").to_owned();
    send(t.delete(&format!("/v2/{}/blobs/{layer}", t.repo()))).await.expect_status(202);
    assert_error(&t.put_manifest(t.repo(), "after-delete", &m).await, 400, "MANIFEST_BLOB_UNKNOWN");
}
