//! Manifest parsing and validation. The pushed bytes are stored unchanged;
//! parsing only extracts what the registry must check and index.

use std::collections::BTreeMap;

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::Digest;
use crate::media_type::{self as mt, essence};

/// Spec-recommended cap; larger manifests get 413.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema 2): config plus layers.
    Image,
    /// An index (OCI index or Docker manifest list): child manifests.
    Index,
}

/// A content descriptor with a validated digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// The media type the manifest is stored and served as.
    pub media_type: String,
    pub kind: ManifestKind,
    /// The type reported by the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    /// Blobs the registry must hold: config and distributable layers.
    pub blobs: Vec<Descriptor>,
    /// Child manifests of an index.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

/// Just enough of a manifest to decide how to parse the rest.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses and validates a manifest pushed with an optional `Content-Type`.
pub fn parse(content: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let probe: Probe = serde_json::from_slice(content).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type.map(essence).filter(|h| !h.is_empty() && !is_generic(h));
    if let (Some(h), Some(b)) = (header, probe.media_type.as_deref())
        && h != b
    {
        return Err(ManifestError::MediaTypeMismatch { header: h.to_owned(), body: b.to_owned() });
    }
    let media_type = match (header, probe.media_type.as_deref()) {
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) if probe.manifests.is_some() => mt::OCI_INDEX.to_owned(),
        (None, None) => mt::OCI_MANIFEST.to_owned(),
    };
    let kind = match media_type.as_str() {
        mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => ManifestKind::Image,
        mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => ManifestKind::Index,
        _ => return Err(ManifestError::UnsupportedMediaType(media_type)),
    };
    if probe.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    match kind {
        ManifestKind::Image => parse_image(content, media_type),
        ManifestKind::Index => parse_index(content, media_type),
    }
}

/// Content types that say nothing about the manifest kind.
fn is_generic(h: &str) -> bool {
    matches!(h, "application/json" | "application/octet-stream" | "text/plain")
}

fn invalid(e: impl std::fmt::Display) -> ManifestError {
    ManifestError::Invalid(e.to_string())
}

fn descriptor(d: &oci_spec::image::Descriptor) -> Result<Descriptor, ManifestError> {
    let digest = Digest::parse(d.digest().as_ref()).map_err(|e| invalid(format!("descriptor {}: {e}", d.digest())))?;
    Ok(Descriptor { media_type: d.media_type().to_string(), digest, size: d.size() })
}

fn parse_image(content: &[u8], media_type: String) -> Result<ParsedManifest, ManifestError> {
    let m: ImageManifest = serde_json::from_slice(content).map_err(invalid)?;
    let config = descriptor(m.config())?;
    let artifact_type = m.artifact_type().as_ref().map(|t| t.to_string()).or_else(|| Some(config.media_type.clone()));
    let mut blobs = vec![config];
    for layer in m.layers() {
        let d = descriptor(layer)?;
        if !mt::is_non_distributable(&d.media_type) {
            blobs.push(d);
        }
    }
    Ok(ParsedManifest {
        media_type,
        kind: ManifestKind::Image,
        artifact_type,
        blobs,
        manifests: Vec::new(),
        subject: m.subject().as_ref().map(descriptor).transpose()?,
        annotations: m.annotations().as_ref().map(to_btree),
    })
}

fn parse_index(content: &[u8], media_type: String) -> Result<ParsedManifest, ManifestError> {
    let i: ImageIndex = serde_json::from_slice(content).map_err(invalid)?;
    Ok(ParsedManifest {
        media_type,
        kind: ManifestKind::Index,
        artifact_type: i.artifact_type().as_ref().map(|t| t.to_string()),
        blobs: Vec::new(),
        manifests: i.manifests().iter().map(descriptor).collect::<Result<_, _>>()?,
        subject: i.subject().as_ref().map(descriptor).transpose()?,
        annotations: i.annotations().as_ref().map(to_btree),
    })
}

fn to_btree(m: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const D2: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":0}},{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{D2}","size":0}}]{extra}}}"#,
            mt::OCI_MANIFEST
        )
    }

    #[test]
    fn image_manifest_lists_blobs_but_not_foreign_layers() {
        let m = parse(image("").as_bytes(), Some(mt::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.empty.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{}","digest":"{D2}","size":9}}"#,
            mt::OCI_MANIFEST
        );
        let m = parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(m.subject.unwrap().digest.as_str(), D2);
    }

    #[test]
    fn header_and_body_must_agree() {
        let err = parse(image("").as_bytes(), Some(mt::DOCKER_MANIFEST)).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
        // Parameters and generic types are ignored.
        assert!(parse(image("").as_bytes(), Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")).is_ok());
        assert!(parse(image("").as_bytes(), Some("application/json")).is_ok());
    }

    #[test]
    fn index_without_media_type_is_detected() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D1}","size":2}}]}}"#,
            mt::OCI_MANIFEST
        );
        let m = parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, mt::OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(parse(b"not json", None), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, Some(mt::DOCKER_SCHEMA1)),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":3,"config":{},"layers":[]}"#, None),
            Err(ManifestError::SchemaVersion)
        ));
        let bad_digest = image("").replace(D2, "sha256:1234");
        assert!(matches!(parse(bad_digest.as_bytes(), None), Err(ManifestError::Invalid(_))));
        assert!(matches!(parse(br#"{"schemaVersion":2,"layers":[]}"#, None), Err(ManifestError::Invalid(_))));
    }
}
