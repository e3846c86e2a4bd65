//! Header names of the distribution API.

use http::HeaderName;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// First value of a header as text, if present and valid.
pub fn get(headers: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
