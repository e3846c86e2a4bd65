//! Images for the sources, put straight into a source Berth through its
//! registry service, and the check that a copy is exact: every tag, every
//! manifest below it, every blob's bytes, every referrer.

use berth_oci::manifest;
use berth_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_registry::blobs::BlobBody;
use berth_registry::{ByteStream, Registry};
use berth_testkit::fixtures::{blob, descriptor, image_manifest};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

pub fn name(s: &str) -> RepositoryName {
    RepositoryName::parse(s).unwrap()
}

pub async fn put_blob(reg: &Registry, repo: &str, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let bytes = Bytes::from(data.to_vec());
    let body: ByteStream =
        Box::pin(futures_util::stream::iter(bytes.chunks(1 << 20).map(|c| Ok(bytes.slice_ref(c))).collect::<Vec<_>>()));
    reg.put_blob(&name(repo), &digest, body, Some(data.len() as u64)).await.unwrap();
    digest
}

/// Pushes a manifest by digest, with `tags`.
pub async fn put_manifest(reg: &Registry, repo: &str, bytes: &[u8], media_type: &str, tags: &[&str]) -> Digest {
    let digest = Digest::sha256_of(bytes);
    let tags = tags.iter().map(|t| Tag::parse(t).unwrap()).collect();
    let (repo, reference) = (name(repo), Reference::Digest(digest.clone()));
    reg.put_manifest(&repo, &reference, bytes.to_vec(), Some(media_type), tags, Some("alice")).await.unwrap();
    digest
}

/// An image with its config and layers, tagged `tags`.
pub async fn image(reg: &Registry, repo: &str, seed: u64, layer_sizes: &[usize], tags: &[&str]) -> (Digest, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    put_blob(reg, repo, &config).await;
    let layers: Vec<Vec<u8>> = layer_sizes.iter().enumerate().map(|(i, n)| blob(seed * 100 + i as u64, *n)).collect();
    for l in &layers {
        put_blob(reg, repo, l).await;
    }
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let bytes = image_manifest(&config, &refs);
    (put_manifest(reg, repo, &bytes, OCI_MANIFEST, tags).await, bytes)
}

/// An artifact manifest (an SBOM, a signature) about `subject`.
pub async fn artifact(
    reg: &Registry,
    repo: &str,
    artifact_type: &str,
    payload: &[u8],
    subject: (&Digest, &[u8], &str),
    tags: &[&str],
) -> Digest {
    let empty = b"{}";
    put_blob(reg, repo, empty).await;
    put_blob(reg, repo, payload).await;
    let (subject_digest, subject_bytes, subject_type) = subject;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor(artifact_type, payload)],
        "subject": {"mediaType": subject_type, "digest": subject_digest.as_str(), "size": subject_bytes.len()},
        "annotations": {"org.opencontainers.image.created": "2024-05-01T00:00:00Z"},
    });
    put_manifest(reg, repo, &serde_json::to_vec(&m).unwrap(), OCI_MANIFEST, tags).await
}

/// What the tests look for after a copy.
pub struct Expected {
    pub index: Digest,
    /// The index's second platform: untagged, with a referrer of its own.
    pub arm64: Digest,
    pub sbom: Digest,
    pub attestation: Digest,
    pub signature_tag: String,
}

/// `<owner>/app`: two platforms under an index (tagged `latest` and `1.0`),
/// the amd64 image also tagged `v1`, another image `v2`, a cosign-style
/// signature tag on the index (whose manifest names the index as its
/// subject), an SBOM referrer of `v2` and an attestation of the arm64
/// child; `<owner>/tools`: one image sharing a layer with the app.
pub async fn populate(reg: &Registry, owner: &str) -> Expected {
    let app = format!("{owner}/app");
    let (amd64, amd64_bytes) = image(reg, &app, 1, &[1000, 300 * 1024], &["v1"]).await;
    let (arm64, arm64_bytes) = image(reg, &app, 2, &[2000], &[]).await;
    let entries = [(amd64, &amd64_bytes, "amd64"), (arm64.clone(), &arm64_bytes, "arm64")]
        .iter()
        .map(|(d, b, arch)| {
            json!({"mediaType": OCI_MANIFEST, "digest": d.as_str(), "size": b.len(),
                   "platform": {"os": "linux", "architecture": arch}})
        })
        .collect::<Vec<_>>();
    let index_bytes =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).unwrap();
    let index = put_manifest(reg, &app, &index_bytes, OCI_INDEX, &["latest", "1.0"]).await;
    let (v2, v2_bytes) = image(reg, &app, 3, &[5000], &["v2"]).await;
    let signature_tag = format!("sha256-{}.sig", index.hex());
    let sig = br#"{"critical":{"image":{"docker-manifest-digest":"..."},"type":"cosign container image signature"}}"#;
    let signature_type = "application/vnd.dev.cosign.simplesigning.v1+json";
    artifact(reg, &app, signature_type, sig, (&index, &index_bytes, OCI_INDEX), &[&signature_tag]).await;
    let sbom = artifact(
        reg,
        &app,
        "application/spdx+json",
        br#"{"spdxVersion":"SPDX-2.3"}"#,
        (&v2, &v2_bytes, OCI_MANIFEST),
        &[],
    )
    .await;
    let provenance = br#"{"predicateType":"https://slsa.dev/provenance/v1"}"#;
    let attestation =
        artifact(reg, &app, "application/vnd.in-toto+json", provenance, (&arm64, &arm64_bytes, OCI_MANIFEST), &[])
            .await;
    // tools shares the amd64 image's first layer (seed 1, layer 0).
    let tools = format!("{owner}/tools");
    let config = br#"{"architecture":"amd64","os":"linux","tool":true}"#;
    put_blob(reg, &tools, config).await;
    let shared = blob(100, 1000);
    put_blob(reg, &tools, &shared).await;
    let tools_bytes = image_manifest(config, &[&shared]);
    put_manifest(reg, &tools, &tools_bytes, OCI_MANIFEST, &["1.0", "latest"]).await;
    Expected { index, arm64, sbom, attestation, signature_tag }
}

async fn blob_digest(reg: &Registry, repo: &RepositoryName, digest: &Digest) -> Digest {
    let read = reg.read_blob(repo, digest, None).await.unwrap_or_else(|e| panic!("{repo}@{digest}: {e}"));
    let BlobBody::Stream(mut body) = read.body else { panic!("filesystem storage streams") };
    let mut h = berth_oci::Hasher::new(digest.algorithm());
    while let Some(chunk) = body.next().await {
        h.update(&chunk.unwrap());
    }
    h.finish()
}

/// Asserts that `dst_repo` in `dst` holds exactly the tags of `src_repo` in
/// `src`, each pointing at the same bytes, with every manifest below them,
/// every blob (read back and hashed) and every referrer. Returns the number
/// of manifests checked.
pub async fn assert_copied(src: &Registry, src_repo: &str, dst: &Registry, dst_repo: &str) -> usize {
    let (s_repo, d_repo) = (name(src_repo), name(dst_repo));
    let mut src_tags = src.list_tags(&s_repo, None, None).await.unwrap();
    let mut dst_tags = dst.list_tags(&d_repo, None, None).await.unwrap_or_default();
    src_tags.sort();
    dst_tags.sort();
    assert_eq!(dst_tags, src_tags, "tags of {dst_repo}");
    let mut todo = Vec::new();
    for t in &src_tags {
        let reference = Reference::Tag(Tag::parse(t).unwrap());
        let s = src.get_manifest(&s_repo, &reference, true).await.unwrap();
        let d = dst.get_manifest(&d_repo, &reference, true).await.unwrap();
        assert_eq!((&d.digest, &d.media_type), (&s.digest, &s.media_type), "{dst_repo}:{t}");
        todo.push(s.digest);
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(digest) = todo.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let reference = Reference::Digest(digest.clone());
        let s = src.get_manifest(&s_repo, &reference, true).await.unwrap();
        let d =
            dst.get_manifest(&d_repo, &reference, true).await.unwrap_or_else(|e| panic!("{dst_repo}@{digest}: {e}"));
        assert_eq!(d.content, s.content, "{dst_repo}@{digest}: byte for byte");
        assert_eq!(d.media_type, s.media_type);
        let parsed = manifest::parse(&s.content, Some(&s.media_type)).unwrap();
        for b in &parsed.blobs {
            let stat = dst
                .stat_blob(&d_repo, &b.digest, None)
                .await
                .unwrap_or_else(|e| panic!("{dst_repo}@{}: {e}", b.digest));
            assert_eq!(stat.size, b.size);
            assert_eq!(blob_digest(dst, &d_repo, &b.digest).await, b.digest, "the bytes read back hash right");
        }
        todo.extend(parsed.manifests.iter().map(|m| m.digest.clone()));
        let mut src_refs: Vec<Digest> =
            src.referrers(&s_repo, &digest, None).await.unwrap().into_iter().map(|r| r.digest).collect();
        let mut dst_refs: Vec<Digest> =
            dst.referrers(&d_repo, &digest, None).await.unwrap().into_iter().map(|r| r.digest).collect();
        src_refs.sort();
        dst_refs.sort();
        assert_eq!(dst_refs, src_refs, "referrers of {dst_repo}@{digest}");
        todo.extend(src_refs);
    }
    seen.len()
}

/// Pushed to Distribution: `team/app` (an image `v1`, an index `multi` over
/// two platforms, a cosign signature tag on `v1`) and a one-component
/// `alpine` (`3.20`). Returns (repository, tag, digest, bytes) of each tag.
pub async fn distribution_images(reg: &super::distribution::Distribution) -> Vec<(String, String, Digest, Vec<u8>)> {
    let mut tags = Vec::new();
    let mut images = Vec::new();
    for seed in [11u64, 12] {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let layer = blob(seed, 200 * 1024 + seed as usize);
        for repo in ["team/app", "alpine"] {
            reg.push_blob(repo, &config).await;
            reg.push_blob(repo, &layer).await;
        }
        images.push(image_manifest(&config, &[&layer]));
    }
    let v1 = reg.push_manifest("team/app", "v1", OCI_MANIFEST, &images[0]).await;
    tags.push(("team/app".to_owned(), "v1".to_owned(), v1.clone(), images[0].clone()));
    reg.push_manifest("team/app", Digest::sha256_of(&images[1]).as_str(), OCI_MANIFEST, &images[1]).await;
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let index = berth_testkit::fixtures::index(&refs);
    let multi = reg.push_manifest("team/app", "multi", OCI_INDEX, &index).await;
    tags.push(("team/app".to_owned(), "multi".to_owned(), multi, index));
    let payload = br#"{"critical":{"type":"cosign container image signature"}}"#;
    let empty = b"{}";
    reg.push_blob("team/app", payload).await;
    reg.push_blob("team/app", empty).await;
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", empty),
        "layers": [descriptor("application/vnd.dev.cosign.simplesigning.v1+json", payload)],
    }))
    .unwrap();
    let sig_tag = format!("sha256-{}.sig", v1.hex());
    let sig = reg.push_manifest("team/app", &sig_tag, OCI_MANIFEST, &signature).await;
    tags.push(("team/app".to_owned(), sig_tag, sig, signature));
    let alpine = reg.push_manifest("alpine", "3.20", OCI_MANIFEST, &images[1]).await;
    tags.push(("alpine".to_owned(), "3.20".to_owned(), alpine, images[1].clone()));
    tags
}
