//! Digests, media types, and manifest/index/artifact documents.

use berth_oci::{Algorithm, Digest};
use serde_json::{Map, Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_ND_LAYER: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// An `Accept` value listing every manifest type a client handles.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

pub fn digest_of(algorithm: Algorithm, data: &[u8]) -> String {
    Digest::of(algorithm, data).to_string()
}

pub fn sha256(data: &[u8]) -> String {
    digest_of(Algorithm::Sha256, data)
}

pub fn sha512(data: &[u8]) -> String {
    digest_of(Algorithm::Sha512, data)
}

/// A descriptor of `data` with a sha256 digest.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    descriptor_as(Algorithm::Sha256, media_type, data)
}

pub fn descriptor_as(algorithm: Algorithm, media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest_of(algorithm, data), "size": data.len() })
}

/// A descriptor of a manifest, by its own media type and digest.
pub fn manifest_descriptor(m: &Manifest) -> Value {
    json!({ "mediaType": m.media_type, "digest": m.digest, "size": m.body.len() })
}

/// A descriptor of content the registry never received.
pub fn absent_descriptor(media_type: &str, seed: &str, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(seed.as_bytes()), "size": size })
}

/// An OCI image manifest.
pub fn image_manifest(config: Value, layers: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers })
}

/// An OCI image index.
pub fn index(manifests: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests })
}

/// `annotations` as a JSON object.
pub fn annotations(pairs: &[(&str, &str)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect::<Map<_, _>>())
}

/// A manifest document as pushed: exact bytes, media type, digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub body: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Manifest {
    /// Serialises `v` compactly; the media type is its `mediaType`; sha256 digest.
    pub fn new(v: Value) -> Manifest {
        Manifest::from_bytes(serde_json::to_vec(&v).expect("json"), media_type_of(&v), Algorithm::Sha256)
    }

    /// Like [`Manifest::new`], with a sha512 digest.
    pub fn sha512(v: Value) -> Manifest {
        Manifest::from_bytes(serde_json::to_vec(&v).expect("json"), media_type_of(&v), Algorithm::Sha512)
    }

    pub fn from_bytes(body: Vec<u8>, media_type: impl Into<String>, algorithm: Algorithm) -> Manifest {
        let digest = digest_of(algorithm, &body);
        Manifest { body, media_type: media_type.into(), digest }
    }

    /// The document as JSON.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).expect("manifest is JSON")
    }
}

fn media_type_of(v: &Value) -> String {
    v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_owned()
}

/// The subject descriptor pointing at `m`.
pub fn subject(m: &Manifest) -> Value {
    manifest_descriptor(m)
}

/// Pads `v` with an annotation so that it serialises to exactly `size` bytes.
pub fn pad_to(mut v: Value, size: usize) -> Manifest {
    let key = "org.berth.conformance.padding";
    if !v["annotations"].is_object() {
        v["annotations"] = json!({});
    }
    v["annotations"][key] = Value::from("");
    let base = serde_json::to_vec(&v).expect("json").len();
    assert!(base <= size, "document is already {base} bytes, more than {size}");
    v["annotations"][key] = Value::from("A".repeat(size - base));
    let m = Manifest::new(v);
    assert_eq!(m.body.len(), size);
    m
}
