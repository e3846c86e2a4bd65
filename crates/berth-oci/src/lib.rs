//! Protocol types for the OCI Distribution API, with no I/O.
//!
//! Everything a request carries is parsed and validated here before any
//! store is touched: digests (with a streaming, resumable hasher), tags and
//! references, repository names, manifests, and the OCI error codes.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{ErrorBody, ErrorCode};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest};
pub use name::{NameError, RepositoryName};
pub use reference::{Reference, ReferenceError, Tag};
