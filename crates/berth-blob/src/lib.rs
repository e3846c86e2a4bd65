//! Blob storage: content-addressed, immutable blobs plus upload sessions.
//!
//! A blob becomes readable only through [`BlobStore::upload_commit`], which
//! the registry calls after the digest of everything appended has been
//! verified. Upload data lives apart from committed blobs until then, so a
//! crash at any instant leaves no half-written blob visible. Nothing in this
//! trait assumes a POSIX rename: an object store commits by its own means.
//!
//! Upload progress (offset, backend state) is returned to the caller, which
//! persists it in the metadata store; the blob store keeps no session table.

pub mod fs;
pub mod s3;
mod stream;
mod write_queue;

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use berth_oci::{Digest, Hasher};
use bytes::Bytes;
use futures_util::Stream;

pub use fs::{FsBlobStore, blob_relative_path};
pub use s3::{S3BlobStore, S3Settings};
pub use stream::ByteRange;

/// A stream of body bytes, from a client or from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found")]
    NotFound,
    /// The upload's data is gone or inconsistent with its recorded progress.
    #[error("upload data missing or inconsistent")]
    UploadLost,
    /// Reading the incoming body failed (client disconnect, idle timeout,
    /// size limit): the client's fault, not storage's.
    #[error("reading request body: {0}")]
    Source(io::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where an upload stands, as returned by the store and persisted by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadCursor {
    /// Bytes stored so far.
    pub offset: u64,
    /// Backend-specific state (empty for the filesystem), opaque to callers.
    pub state: String,
}

/// An open blob (or a range of one) ready to stream.
pub struct BlobRead {
    /// Bytes this stream yields.
    pub len: u64,
    pub body: BlobBody,
}

pub enum BlobBody {
    Stream(ByteStream),
    /// Fetch the blob from this (presigned) URL instead.
    Redirect(String),
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead").field("len", &self.len).finish_non_exhaustive()
    }
}

/// A committed blob found while listing the store (for garbage collection).
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// Last modification, ms since the Unix epoch.
    pub modified_ms: i64,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Backend name for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Checks that the store is writable (for `/readyz`).
    async fn check_writable(&self) -> Result<()>;

    /// Size of a committed blob.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Opens a committed blob, optionally a byte range of it (already
    /// validated against the blob's size by the caller).
    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead>;

    /// Opens a whole committed blob as a stream of its bytes, even where
    /// [`BlobStore::read`] would redirect (for scrub, which hashes them).
    async fn read_stream(&self, digest: &Digest) -> Result<(u64, ByteStream)>;

    /// Removes a committed blob; absent blobs are not an error.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Moves a committed blob whose bytes failed their digest check out of
    /// the blob namespace, into `quarantine/` (kept for the operator to
    /// inspect), so that a new upload of the digest writes fresh bytes.
    /// Returns where it went, or `None` if there was nothing to move.
    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>>;

    /// Every committed blob (for garbage collection).
    async fn list(&self) -> Result<Vec<StoredBlob>>;

    /// Begins an upload session.
    async fn upload_start(&self, id: &str) -> Result<UploadCursor>;

    /// Appends `data` after `cursor.offset`, feeding every byte stored to
    /// `hasher`, and makes it durable before returning the new cursor. Bytes
    /// beyond `cursor.offset` left by an earlier failed append are discarded.
    /// Without a hasher the caller must verify the bytes itself (a fetch
    /// whose source stream checks the digest): hashing twice would cost a
    /// second pass over every byte.
    async fn upload_append(
        &self,
        id: &str,
        cursor: &UploadCursor,
        data: ByteStream,
        hasher: Option<Hasher>,
    ) -> Result<(UploadCursor, Option<Hasher>)>;

    /// Reads back the first `cursor.offset` bytes of an upload (to hash them
    /// with another algorithm than the session's).
    async fn upload_read(&self, id: &str, cursor: &UploadCursor) -> Result<ByteStream>;

    /// Makes the upload's bytes readable as `digest` and ends the session.
    /// The caller has verified the digest. If the blob already exists the
    /// upload's copy is dropped (same digest, same bytes).
    async fn upload_commit(&self, id: &str, cursor: &UploadCursor, digest: &Digest) -> Result<()>;

    /// Discards an upload's data. Unknown uploads are not an error.
    async fn upload_abort(&self, id: &str, cursor: &UploadCursor) -> Result<()>;

    /// Upload ids with data older than `before_ms` (orphans left by crashes),
    /// for the expiry job to reconcile against the metadata store.
    async fn list_uploads(&self, before_ms: i64) -> Result<Vec<String>>;
}
