//! Content for tests: deterministic pseudo-random blobs and manifests.

use berth_oci::Digest;
use berth_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use serde_json::{Value, json};

/// `len` pseudo-random bytes from `seed` (xorshift; no extra dependency).
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": Digest::sha256_of(data).as_str(), "size": data.len() })
}

/// An OCI image manifest over `config` and `layers` (serialised compactly).
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<Value> =
        layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers,
    }))
    .expect("json")
}

/// An OCI index over already-serialised manifests.
pub fn index(manifests: &[&[u8]]) -> Vec<u8> {
    let list: Vec<Value> = manifests.iter().map(|m| descriptor(OCI_MANIFEST, m)).collect();
    serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list })).expect("json")
}
