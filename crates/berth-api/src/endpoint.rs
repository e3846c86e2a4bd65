//! What a `/v2/<name>/...` path addresses. Repository names contain
//! slashes, so the router matches `/v2/{*rest}` and [`parse`] decides the
//! resource from the right. The envelope ([`crate::envelope`]) parses every
//! request's path once with [`parse_path`] and puts the result on the
//! request ([`Parsed`]); the deadline, the metrics, the authorization and
//! the dispatcher all use that one result.

use berth_auth::{Action, Actions};
use berth_oci::{Digest, DigestError, Reference, ReferenceError, RepositoryName};
use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// A parsed `/v2/<name>/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Blob { name: RepositoryName, digest: Digest },
    UploadStart { name: RepositoryName },
    Upload { name: RepositoryName, id: String },
    Manifest { name: RepositoryName, reference: ManifestReference },
    Tags { name: RepositoryName },
    Referrers { name: RepositoryName, digest: Digest },
}

/// The resources of `/v2/<name>/...`, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Blob,
    Upload,
    Manifest,
    Tags,
    Referrers,
}

impl Resource {
    pub fn label(self) -> &'static str {
        match self {
            Resource::Blob => "blob",
            Resource::Upload => "blob_upload",
            Resource::Manifest => "manifest",
            Resource::Tags => "tags",
            Resource::Referrers => "referrers",
        }
    }
}

/// A manifest reference as it appeared in the URL: parsed, or the reason it
/// is invalid (what to answer for an invalid one depends on the method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestReference {
    Valid(Reference),
    Invalid(ReferenceError),
}

impl ManifestReference {
    /// The reference, or why it cannot name a manifest: nothing is ever
    /// stored under an invalid tag, so reading or deleting one finds
    /// nothing, while pushing to one is an invalid manifest.
    pub fn resolve(self, push: bool) -> Result<Reference, ApiError> {
        match self {
            ManifestReference::Valid(r) => Ok(r),
            ManifestReference::Invalid(ReferenceError::Digest(e)) => Err(e.into()),
            ManifestReference::Invalid(ReferenceError::InvalidTag) if push => Err(ApiError::TagInvalid(None)),
            ManifestReference::Invalid(ReferenceError::InvalidTag) => Err(ApiError::ManifestTagInvalid),
        }
    }
}

/// Why a `/v2/...` path names no endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NoSuchRoute,
    NameInvalid { resource: Resource, reason: String },
    Digest { resource: Resource, error: DigestError },
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NoSuchRoute => ApiError::NoSuchRoute,
            PathError::NameInvalid { reason, .. } => ApiError::NameInvalid(reason),
            PathError::Digest { error, .. } => error.into(),
        }
    }
}

/// What [`parse_path`] found a request's path to be: `None` outside `/v2/<name>/...`.
#[derive(Debug, Clone)]
pub struct Parsed(pub Option<Result<Endpoint, PathError>>);

impl Parsed {
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.0.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// The resource addressed, even by a path whose name or digest is invalid.
    pub fn resource(&self) -> Option<Resource> {
        match self.0.as_ref()? {
            Ok(e) => Some(e.resource()),
            Err(PathError::NameInvalid { resource, .. } | PathError::Digest { resource, .. }) => Some(*resource),
            Err(PathError::NoSuchRoute) => None,
        }
    }
}

/// What a request's path addresses (see the module documentation).
pub fn parse_path(path: &str) -> Parsed {
    Parsed(repository_path(path).map(parse))
}

/// The part after `/v2/` of a path that can only be a repository endpoint
/// (not `/v2/`, the token endpoint or the catalog).
fn repository_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v2/").filter(|rest| !matches!(*rest, "" | "token" | "_catalog"))
}

impl Endpoint {
    pub fn name(&self) -> &RepositoryName {
        match self {
            Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Manifest { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => name,
        }
    }

    pub fn resource(&self) -> Resource {
        match self {
            Endpoint::Blob { .. } => Resource::Blob,
            Endpoint::UploadStart { .. } | Endpoint::Upload { .. } => Resource::Upload,
            Endpoint::Manifest { .. } => Resource::Manifest,
            Endpoint::Tags { .. } => Resource::Tags,
            Endpoint::Referrers { .. } => Resource::Referrers,
        }
    }

    /// What the request does to its repository: reads pull, uploads and
    /// manifest pushes push, deletes delete. `None` for a method the
    /// endpoint does not serve.
    pub fn need(&self, method: &Method) -> Option<Actions> {
        let pull = Actions::PULL;
        let push = Actions::of(&[Action::Pull, Action::Push]);
        let delete = Actions::of(&[Action::Delete]);
        let (read, write) = (method == Method::GET || method == Method::HEAD, method == Method::DELETE);
        Some(match self {
            Endpoint::Blob { .. } | Endpoint::Manifest { .. } if read => pull,
            Endpoint::Blob { .. } | Endpoint::Manifest { .. } if write => delete,
            Endpoint::Manifest { .. } if method == Method::PUT => push,
            Endpoint::UploadStart { .. } if method == Method::POST => push,
            Endpoint::Upload { .. } => push,
            Endpoint::Tags { .. } | Endpoint::Referrers { .. } if method == Method::GET => pull,
            _ => return None,
        })
    }

    /// Whether `method` on this endpoint streams blob data: blob GET/HEAD,
    /// upload POST/PATCH/PUT. Those may take as long as the data does.
    pub fn streams_blob_data(&self, method: &Method) -> bool {
        match self {
            Endpoint::Blob { .. } => method == Method::GET || method == Method::HEAD,
            Endpoint::UploadStart { .. } => method == Method::POST,
            Endpoint::Upload { .. } => method == Method::PATCH || method == Method::PUT,
            _ => false,
        }
    }
}

/// Parses the part of the path after `/v2/`. The resource is decided from the
/// right, so repository names may contain words like `blobs` or `manifests`.
pub fn parse(rest: &str) -> Result<Endpoint, PathError> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |k: usize, resource: Resource| -> Result<RepositoryName, PathError> {
        if k == 0 {
            return Err(PathError::NoSuchRoute);
        }
        // The first k segments, as they stand in `rest`.
        let end = segs[..k].iter().map(|s| s.len()).sum::<usize>() + k - 1;
        RepositoryName::parse(&rest[..end]).map_err(|e| PathError::NameInvalid { resource, reason: e.to_string() })
    };
    fn decoded(s: &str) -> std::borrow::Cow<'_, str> {
        percent_decode_str(s).decode_utf8_lossy()
    }
    let digest = |s: &str, resource| Digest::parse(&decoded(s)).map_err(|error| PathError::Digest { resource, error });
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(Endpoint::Tags { name: name_of(n - 2, Resource::Tags)? });
    }
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let name = name_of(n - 3, Resource::Upload)?;
        return Ok(if segs[n - 1].is_empty() {
            Endpoint::UploadStart { name }
        } else {
            Endpoint::Upload { name, id: segs[n - 1].to_owned() }
        });
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Endpoint::UploadStart { name: name_of(n - 2, Resource::Upload)? });
    }
    if n >= 2 {
        let last = segs[n - 1];
        match segs[n - 2] {
            "blobs" => {
                let name = name_of(n - 2, Resource::Blob)?;
                return Ok(Endpoint::Blob { name, digest: digest(last, Resource::Blob)? });
            }
            "referrers" => {
                let name = name_of(n - 2, Resource::Referrers)?;
                return Ok(Endpoint::Referrers { name, digest: digest(last, Resource::Referrers)? });
            }
            "manifests" => {
                let reference = match Reference::parse(&decoded(last)) {
                    Ok(r) => ManifestReference::Valid(r),
                    Err(e) => ManifestReference::Invalid(e),
                };
                return Ok(Endpoint::Manifest { name: name_of(n - 2, Resource::Manifest)?, reference });
            }
            _ => {}
        }
    }
    Err(PathError::NoSuchRoute)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_every_endpoint() {
        assert!(matches!(parse(&format!("a/b/blobs/{D}")), Ok(Endpoint::Blob { .. })));
        assert!(matches!(parse("a/b/blobs/uploads/"), Ok(Endpoint::UploadStart { .. })));
        assert!(matches!(parse("a/b/blobs/uploads"), Ok(Endpoint::UploadStart { .. })));
        assert!(matches!(parse("a/blobs/uploads/1234"), Ok(Endpoint::Upload { ref id, .. }) if id == "1234"));
        assert!(matches!(parse("a/manifests/latest"), Ok(Endpoint::Manifest { .. })));
        assert!(matches!(parse("a/b/c/tags/list"), Ok(Endpoint::Tags { .. })));
        assert!(matches!(parse(&format!("a/referrers/{D}")), Ok(Endpoint::Referrers { .. })));
    }

    #[test]
    fn only_blob_data_streams_escape_the_deadline() {
        let streams = |m: &Method, path: &str| {
            repository_path(path).and_then(|rest| parse(rest).ok()).is_some_and(|e| e.streams_blob_data(m))
        };
        let (get, head, post, put, patch, del) =
            (Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
        let upload = "/v2/a/blobs/uploads/5f0c7a3e-0000-4000-8000-000000000000";
        for (m, path) in [(&get, format!("/v2/a/blobs/{D}")), (&head, format!("/v2/a/blobs/{D}"))] {
            assert!(streams(m, &path), "{m} {path}");
        }
        for (m, path) in [(&post, "/v2/a/blobs/uploads/"), (&patch, upload), (&put, upload)] {
            assert!(streams(m, path), "{m} {path}");
        }
        let bounded = [
            (&post, "/v2/token".to_owned()),
            (&get, "/v2/token".to_owned()),
            (&get, "/v2/".to_owned()),
            (&get, "/v2/_catalog".to_owned()),
            (&get, "/api/v1/packages/acme".to_owned()),
            (&post, "/api/v1/admin/retention/rules".to_owned()),
            (&get, "/livez".to_owned()),
            (&put, "/v2/a/manifests/v1".to_owned()),
            (&get, "/v2/a/tags/list".to_owned()),
            (&del, format!("/v2/a/blobs/{D}")),
            (&get, upload.to_owned()),
            (&del, upload.to_owned()),
            (&get, "/v2/a/blobs/sha256:bad".to_owned()),
        ];
        for (m, path) in bounded {
            assert!(!streams(m, &path), "{m} {path}");
        }
    }

    #[test]
    fn names_may_contain_resource_words() {
        let e = parse("x/blobs/manifests/v1").unwrap();
        assert_eq!((e.name().as_str(), e.resource()), ("x/blobs", Resource::Manifest));
        let e = parse("tags/list/tags/list").unwrap();
        assert_eq!(e, Endpoint::Tags { name: RepositoryName::parse("tags/list").unwrap() });
    }

    #[test]
    fn rejects_bad_names_and_digests() {
        assert!(matches!(parse("Bad/manifests/x"), Err(PathError::NameInvalid { resource: Resource::Manifest, .. })));
        assert!(matches!(parse("a/blobs/sha256:xyz"), Err(PathError::Digest { error: DigestError::Invalid, .. })));
        assert_eq!(parse("a/nothing"), Err(PathError::NoSuchRoute));
        assert_eq!(parse("manifests/x"), Err(PathError::NoSuchRoute));
        assert!(matches!(
            parse("a/manifests/sha256:xyz"),
            Ok(Endpoint::Manifest { reference: ManifestReference::Invalid(_), .. })
        ));
    }

    #[test]
    fn invalid_tags_are_unknown_to_reads_and_invalid_to_pushes() {
        let invalid = || ManifestReference::Invalid(ReferenceError::InvalidTag);
        assert!(matches!(invalid().resolve(false), Err(ApiError::ManifestTagInvalid)));
        assert!(matches!(invalid().resolve(true), Err(ApiError::TagInvalid(_))));
        let bad_digest = ManifestReference::Invalid(ReferenceError::Digest(DigestError::Invalid));
        assert!(matches!(bad_digest.resolve(false), Err(ApiError::DigestInvalid(_))));
    }
}
