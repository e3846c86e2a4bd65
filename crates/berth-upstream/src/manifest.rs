//! Manifests: HEAD for what a tag points at, GET for the exact bytes.
//!
//! The bytes received are the truth: their digest is computed here. A
//! `Docker-Content-Digest` that disagrees with it, or a by-digest fetch whose
//! bytes hash to something else, is refused.

use berth_oci::manifest::MAX_MANIFEST_SIZE;
use berth_oci::media_type::{self as mt, essence};
use berth_oci::{Algorithm, Digest, Reference, RepositoryName};
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{self, HeaderMap};

use crate::client::{Call, UpstreamClient, content_length};
use crate::error::{UpstreamError, clean_text};

/// The manifest types asked for when the caller names none: OCI image and
/// index, Docker schema 2 image and manifest list.
pub const DEFAULT_MANIFEST_ACCEPT: [&str; 4] = mt::MANIFEST_TYPES;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// What a HEAD says a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest exactly as the upstream sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// Computed from `bytes`.
    pub digest: Digest,
}

impl Manifest {
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

fn manifest_what(repo: &RepositoryName, reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!("manifest {repo}:{t}"),
        Reference::Digest(d) => format!("manifest {repo}@{d}"),
    }
}

pub(crate) fn pull_scope(repo: &RepositoryName) -> String {
    format!("repository:{repo}:pull")
}

impl UpstreamClient {
    /// What `reference` points at, by HEAD (which Docker Hub does not count
    /// against its pull limit). When the upstream leaves out
    /// `Docker-Content-Digest`, `Content-Type` or `Content-Length`, the
    /// manifest is fetched instead and its bytes hashed.
    pub async fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestHead, UpstreamError> {
        let what = manifest_what(repo, reference);
        let call = self.manifest_call(Method::HEAD, repo, reference, &[], &what);
        let resp = self.send(&call).await?;
        let resp = self.check(resp, &what).await?;
        let header_digest = self.header_digest(resp.headers(), &what)?;
        if let (Reference::Digest(asked), Some(got)) = (reference, &header_digest)
            && asked != got
        {
            return Err(self.invalid(&what, format!("HEAD answered Docker-Content-Digest {got}")));
        }
        let digest = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => header_digest,
        };
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| essence(v).to_owned())
            .filter(|t| !t.is_empty() && !is_generic(t));
        match (digest, media_type, content_length(resp.headers())) {
            (Some(digest), Some(media_type), Some(size)) => Ok(ManifestHead { digest, media_type, size }),
            _ => {
                tracing::debug!(upstream = %self.origin(), %what, "HEAD was incomplete; fetching the manifest");
                let m = self.get_manifest(repo, reference, &[]).await?;
                Ok(ManifestHead { size: m.size(), digest: m.digest, media_type: m.media_type })
            }
        }
    }

    /// The manifest's exact bytes (at most 4 MiB, enforced while reading),
    /// its media type, and the digest of the bytes. `accept` lists the media
    /// types wanted; empty means [`DEFAULT_MANIFEST_ACCEPT`].
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<Manifest, UpstreamError> {
        let what = manifest_what(repo, reference);
        let call = self.manifest_call(Method::GET, repo, reference, accept, &what);
        let resp = self.send(&call).await?;
        let resp = self.check(resp, &what).await?;
        let header_digest = self.header_digest(resp.headers(), &what)?;
        let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = self.read_limited(resp, MAX_MANIFEST_SIZE, &what).await?;
        let algorithm = match (reference, &header_digest) {
            (Reference::Digest(d), _) => d.algorithm(),
            (Reference::Tag(_), Some(d)) => d.algorithm(),
            (Reference::Tag(_), None) => Algorithm::Sha256,
        };
        let digest = Digest::of(algorithm, &bytes);
        if let Reference::Digest(asked) = reference
            && *asked != digest
        {
            return Err(self.invalid(&what, format!("the bytes received hash to {digest}")));
        }
        if let Some(sent) = header_digest
            && sent != digest
        {
            return Err(self.invalid(&what, format!("Docker-Content-Digest {sent} but the bytes hash to {digest}")));
        }
        let media_type = media_type(content_type.as_deref(), &bytes);
        Ok(Manifest { bytes, media_type, digest })
    }

    fn manifest_call(
        &self,
        method: Method,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &[&str],
        what: &str,
    ) -> Call {
        let accept = if accept.is_empty() { DEFAULT_MANIFEST_ACCEPT.join(", ") } else { accept.join(", ") };
        Call {
            method,
            url: self.endpoint(&format!("{repo}/manifests/{reference}")),
            accept: Some(accept),
            scope: pull_scope(repo),
            what: what.to_owned(),
        }
    }

    /// `Docker-Content-Digest`, if sent; a malformed one is an error.
    fn header_digest(&self, headers: &HeaderMap, what: &str) -> Result<Option<Digest>, UpstreamError> {
        let Some(v) = headers.get(DOCKER_CONTENT_DIGEST) else { return Ok(None) };
        let text = v.to_str().map_err(|_| self.invalid(what, "Docker-Content-Digest is not text"))?;
        Digest::parse(text.trim())
            .map(Some)
            .map_err(|e| self.invalid(what, format!("Docker-Content-Digest {:?}: {e}", clean_text(text, 150))))
    }
}

/// Content types that say nothing about the manifest kind.
fn is_generic(t: &str) -> bool {
    matches!(t, "application/json" | "application/octet-stream" | "text/plain")
}

/// The `Content-Type` when it names a type, else the body's `mediaType`,
/// else an OCI index or image guessed from the body's shape.
fn media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
    if let Some(t) = content_type.map(essence).filter(|t| !t.is_empty() && !is_generic(t)) {
        return t.to_owned();
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe { media_type: Some(t), .. }) if !t.is_empty() => t,
        Ok(Probe { manifests: Some(_), .. }) => mt::OCI_INDEX.to_owned(),
        _ => mt::OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_from_header_then_body() {
        assert_eq!(media_type(Some("application/vnd.oci.image.index.v1+json; charset=utf-8"), b"{}"), mt::OCI_INDEX);
        let docker = format!(r#"{{"mediaType":"{}"}}"#, mt::DOCKER_MANIFEST);
        assert_eq!(media_type(Some("application/json"), docker.as_bytes()), mt::DOCKER_MANIFEST);
        assert_eq!(media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#), mt::OCI_INDEX);
        assert_eq!(media_type(None, b"not json"), mt::OCI_MANIFEST);
    }
}
