//! Shared test support: image content, the Debian `docker-registry`
//! (Distribution 2.8) on a random loopback port, and a fake token-auth
//! upstream that behaves like Docker Hub.
#![allow(dead_code)]

pub mod distribution;
pub mod fake;
pub mod tls;

use berth_oci::Digest;
use berth_oci::media_type as mt;
use futures_util::StreamExt;

/// Deterministic bytes that do not compress (xorshift).
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image manifest of `media_type` (OCI or Docker schema 2) over a config and layers.
pub fn image_manifest(media_type: &str, config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let (config_type, layer_type) = if media_type == mt::DOCKER_MANIFEST {
        ("application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")
    } else {
        ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
    };
    let desc = |t: &str, b: &[u8]| serde_json::json!({"mediaType": t, "digest": Digest::sha256_of(b), "size": b.len()});
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": desc(config_type, config),
        "layers": layers.iter().map(|l| desc(layer_type, l)).collect::<Vec<_>>(),
    });
    serde_json::to_vec_pretty(&m).unwrap()
}

/// An OCI index over the given image manifests.
pub fn index(manifests: &[&[u8]]) -> Vec<u8> {
    let entries: Vec<_> = manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            serde_json::json!({
                "mediaType": mt::OCI_MANIFEST,
                "digest": Digest::sha256_of(m),
                "size": m.len(),
                "platform": {"os": "linux", "architecture": if i == 0 { "amd64" } else { "arm64" }},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": entries}))
        .unwrap()
}

/// Reads a blob stream to its end: (digest of what arrived, chunks, the error it ended with).
pub async fn drain(mut s: berth_upstream::BlobStream) -> (Digest, usize, Option<berth_upstream::UpstreamError>) {
    let mut h = berth_oci::Hasher::new(berth_oci::Algorithm::Sha256);
    let mut chunks = 0;
    while let Some(item) = s.next().await {
        match item {
            Ok(bytes) => {
                h.update(&bytes);
                chunks += 1;
            }
            Err(e) => return (h.finish(), chunks, Some(e)),
        }
    }
    (h.finish(), chunks, None)
}

pub fn name(s: &str) -> berth_oci::RepositoryName {
    berth_oci::RepositoryName::parse(s).unwrap()
}

pub fn reference(s: &str) -> berth_oci::Reference {
    berth_oci::Reference::parse(s).unwrap()
}
