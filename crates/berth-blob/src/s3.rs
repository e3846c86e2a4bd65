//! S3-compatible backend (AWS, MinIO, Ceph RGW, R2, ...) over `object_store`.
//!
//! Object layout under the configured prefix:
//! ```text
//! blobs/<algorithm>/<first two hex digits>/<hex>   committed blobs, immutable
//! uploads/<id>/data                                multipart upload target of a session
//! uploads/<id>/tail-<offset>                       bytes of a session not yet a part
//! ```
//! An upload session maps onto one S3 multipart upload. Each PATCH streams
//! into parts of `part_size` (one part filling, one in flight: bounded
//! memory, never the blob). Bytes left over at the end of a request that do
//! not fill a part (S3 parts must be at least 5 MiB, except the last) are
//! stored as a small tail object, named by the offset it starts at, and
//! prepended to the next request's data. The session state (multipart id,
//! part ETags, tail) travels in the cursor, which the registry persists in
//! the database after every request, so any replica can continue the upload.
//!
//! Commit completes the multipart upload (the tail becomes the last part)
//! and copies the result to the content-addressed key, server-side (chunked
//! through Berth only above S3's 5 GiB CopyObject limit). Committed keys are
//! only ever written after the digest verified, so "the key exists" means
//! "these bytes are verified"; commit is idempotent.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{BlobBody, BlobError, BlobRead, BlobStore, ByteRange, ByteStream, Result, StoredBlob, UploadCursor};

/// Largest object S3's CopyObject accepts.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    pub region: String,
    /// Custom endpoint (MinIO, Ceph, R2...); empty for AWS.
    pub endpoint: String,
    /// Empty: taken from the standard AWS environment variables.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style requests (`endpoint/bucket/key`), as most self-hosted stores need.
    pub path_style: bool,
    pub allow_http: bool,
    pub part_size: usize,
    /// Answer blob GETs with a redirect to a URL presigned for this long.
    pub redirect: Option<Duration>,
    /// A request fails (and is retried) after this long without a byte moving.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    prefix: String,
    part_size: usize,
    redirect: Option<Duration>,
}

/// Session state carried in the cursor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SessionState {
    /// S3 multipart upload id, once the first part was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    /// ETags of the parts written so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<String>,
    /// Bytes held in the tail object (which starts at `offset - tail`).
    #[serde(default)]
    tail: u64,
}

fn parse_state(cursor: &UploadCursor) -> Result<SessionState> {
    if cursor.state.is_empty() {
        return Ok(SessionState::default());
    }
    serde_json::from_str(&cursor.state).map_err(|_| BlobError::UploadLost)
}

fn backend_err(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        e => BlobError::Backend(e.to_string()),
    }
}

impl S3BlobStore {
    pub fn open(s: &S3Settings) -> Result<Self> {
        // object_store's HTTP client uses rustls with the process-wide crypto
        // provider (ring, as elsewhere in Berth; aws-lc is not built).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Credentials may come from AWS_* variables; explicit settings win.
        // object_store caps whole requests at 30 s by default, which cuts a
        // multi-GiB GET or a slow CompleteMultipartUpload short: detect
        // stalls instead. (Client options first: they replace allow_http.)
        let client =
            ClientOptions::new().with_timeout_disabled().with_read_timeout(s.read_timeout.max(Duration::from_secs(1)));
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(client)
            .with_bucket_name(&s.bucket)
            .with_allow_http(s.allow_http);
        if !s.region.is_empty() {
            b = b.with_region(&s.region);
        }
        if !s.endpoint.is_empty() {
            b = b.with_endpoint(&s.endpoint);
        }
        if !s.access_key_id.is_empty() {
            b = b.with_access_key_id(&s.access_key_id).with_secret_access_key(&s.secret_access_key);
        }
        b = b.with_virtual_hosted_style_request(!s.path_style);
        let store = b.build().map_err(|e| BlobError::Backend(format!("S3 configuration: {e}")))?;
        let prefix = s.prefix.trim_matches('/').to_owned();
        Ok(S3BlobStore {
            store: Arc::new(store),
            prefix,
            part_size: s.part_size.max(MIN_PART_SIZE),
            redirect: s.redirect,
        })
    }

    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() { Path::from(rest) } else { Path::from(format!("{}/{rest}", self.prefix)) }
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.key(&format!("blobs/{}/{}/{hex}", digest.algorithm().as_str(), &hex[..2]))
    }

    fn check_id(id: &str) -> Result<()> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(BlobError::UploadLost);
        }
        Ok(())
    }

    fn data_key(&self, id: &str) -> Path {
        self.key(&format!("uploads/{id}/data"))
    }

    fn tail_key(&self, id: &str, start: u64) -> Path {
        self.key(&format!("uploads/{id}/tail-{start}"))
    }

    async fn read_all(&self, key: &Path, expected: u64) -> Result<Bytes> {
        let got = self.store.get(key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BlobError::UploadLost,
            e => backend_err(e),
        })?;
        let bytes = got.bytes().await.map_err(backend_err)?;
        if bytes.len() as u64 != expected {
            return Err(BlobError::UploadLost);
        }
        Ok(bytes)
    }

    /// Deletes every object of a session (data, tails).
    async fn remove_session_objects(&self, id: &str) -> Result<()> {
        let prefix = self.key(&format!("uploads/{id}"));
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(backend_err)?;
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(backend_err(e)),
            }
        }
        Ok(())
    }

    /// Copies `from` to the committed key of `digest`, server-side when S3 allows.
    async fn copy_to_blob(&self, from: &Path, size: u64, digest: &Digest) -> Result<()> {
        self.copy_object(from, &self.blob_key(digest), size).await
    }

    /// Copies `from` to `to`, server-side when S3 allows.
    async fn copy_object(&self, from: &Path, to: &Path, size: u64) -> Result<()> {
        if size <= MAX_COPY {
            return self.store.copy(from, to).await.map_err(backend_err);
        }
        // Above CopyObject's limit: stream it through, one part at a time.
        let id = self.store.create_multipart(to).await.map_err(backend_err)?;
        let result = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            while start < size {
                let end = (start + self.part_size as u64).min(size);
                let chunk = self.store.get_range(from, start..end).await.map_err(backend_err)?;
                parts.push(self.store.put_part(to, &id, parts.len(), chunk.into()).await.map_err(backend_err)?);
                start = end;
            }
            self.store.complete_multipart(to, &id, parts).await.map_err(backend_err)
        }
        .await;
        if result.is_err() {
            let _ = self.store.abort_multipart(to, &id).await;
        }
        result.map(|_| ())
    }

    /// Completes the session's multipart upload into its data object,
    /// putting the tail in as the last part. Idempotent: a data object of
    /// the right size means an earlier call got there.
    async fn complete_data(&self, id: &str, cursor: &UploadCursor, state: &SessionState) -> Result<Path> {
        let data = self.data_key(id);
        let multipart = state.multipart.as_ref().ok_or(BlobError::UploadLost)?;
        if let Ok(meta) = self.store.head(&data).await
            && meta.size == cursor.offset
        {
            return Ok(data);
        }
        let mut parts: Vec<PartId> = state.parts.iter().map(|e| PartId { content_id: e.clone() }).collect();
        if state.tail > 0 {
            let tail = self.read_all(&self.tail_key(id, cursor.offset - state.tail), state.tail).await?;
            parts.push(self.store.put_part(&data, multipart, parts.len(), tail.into()).await.map_err(backend_err)?);
        }
        self.store.complete_multipart(&data, multipart, parts).await.map_err(|e| match e {
            // Completed and cleaned up meanwhile, or never existed.
            object_store::Error::NotFound { .. } => BlobError::UploadLost,
            e => backend_err(e),
        })?;
        Ok(data)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn backend(&self) -> &'static str {
        "s3"
    }

    async fn check_writable(&self) -> Result<()> {
        let probe = self.key("uploads/.readyz");
        self.store.put(&probe, Bytes::from_static(b"ok").into()).await.map_err(backend_err)?;
        self.store.delete(&probe).await.map_err(backend_err)
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err(e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead> {
        let key = self.blob_key(digest);
        if let Some(ttl) = self.redirect {
            let url = self.store.signed_url(http::Method::GET, &key, ttl).await.map_err(backend_err)?;
            return Ok(BlobRead { len: 0, body: BlobBody::Redirect(url.to_string()) });
        }
        let opts = GetOptions { range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)), ..Default::default() };
        let result = self.store.get_opts(&key, opts).await.map_err(backend_err)?;
        let len = range.map_or(result.meta.size, |r| r.len());
        let stream = result.into_stream().map(|item| item.map_err(|e| io::Error::other(e.to_string())));
        Ok(BlobRead { len, body: BlobBody::Stream(Box::pin(stream)) })
    }

    async fn read_stream(&self, digest: &Digest) -> Result<(u64, ByteStream)> {
        let result = self.store.get(&self.blob_key(digest)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            e => backend_err(e),
        })?;
        let len = result.meta.size;
        let stream = result.into_stream().map(|item| item.map_err(|e| io::Error::other(e.to_string())));
        Ok((len, Box::pin(stream)))
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.store.delete(&self.blob_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_err(e)),
        }
    }

    /// A copy to `quarantine/<algorithm>/<hex>.<ms>`, then a delete.
    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>> {
        let from = self.blob_key(digest);
        let size = match self.store.head(&from).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(backend_err(e)),
        };
        let to = self.key(&format!("quarantine/{}/{}.{}", digest.algorithm().as_str(), digest.hex(), crate::now_ms()));
        self.copy_object(&from, &to, size).await?;
        self.delete(digest).await?;
        Ok(Some(to.to_string()))
    }

    async fn list(&self) -> Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let prefix = self.key(&format!("blobs/{}", alg.as_str()));
            let mut listing = self.store.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(backend_err)?;
                let Some(hex) = meta.location.filename() else { continue };
                if let Ok(digest) = Digest::parse(&format!("{}:{hex}", alg.as_str())) {
                    out.push(StoredBlob {
                        digest,
                        size: meta.size,
                        modified_ms: meta.last_modified.timestamp_millis(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn upload_start(&self, id: &str) -> Result<UploadCursor> {
        Self::check_id(id)?;
        Ok(UploadCursor::default())
    }

    async fn upload_append(
        &self,
        id: &str,
        cursor: &UploadCursor,
        mut data: ByteStream,
        mut hasher: Option<Hasher>,
    ) -> Result<(UploadCursor, Option<Hasher>)> {
        Self::check_id(id)?;
        let mut state = parse_state(cursor)?;
        let data_key = self.data_key(id);
        let mut buf = PartBuffer::new(self.part_size);
        if state.tail > 0 {
            // Already hashed when it arrived; only its bytes are needed.
            buf.push(&self.read_all(&self.tail_key(id, cursor.offset - state.tail), state.tail).await?);
        }
        let mut received = 0u64;
        // One part uploading while the next one fills.
        let mut in_flight: Option<tokio::task::JoinHandle<Result<PartId>>> = None;
        let mut source_error = None;
        loop {
            let chunk = match data.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    source_error = Some(e);
                    break;
                }
                None => break,
            };
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            received += chunk.len() as u64;
            buf.push(&chunk);
            drop(chunk);
            while let Some(part) = buf.pop_full() {
                if let Some(prev) = in_flight.take() {
                    state.parts.push(join_part(prev).await?.content_id);
                }
                let multipart = match &state.multipart {
                    Some(m) => m.clone(),
                    None => {
                        let m = self.store.create_multipart(&data_key).await.map_err(backend_err)?;
                        state.multipart = Some(m.clone());
                        m
                    }
                };
                let (store, key, index) = (self.store.clone(), data_key.clone(), state.parts.len());
                in_flight = Some(tokio::spawn(async move {
                    store.put_part(&key, &multipart, index, part).await.map_err(backend_err)
                }));
            }
        }
        if let Some(prev) = in_flight.take() {
            state.parts.push(join_part(prev).await?.content_id);
        }
        if let Some(e) = source_error {
            // Parts written past the recorded state are overwritten by the retry.
            return Err(BlobError::Source(e));
        }
        let offset = cursor.offset + received;
        state.tail = buf.rest_len() as u64;
        if state.tail > 0 {
            let key = self.tail_key(id, offset - state.tail);
            self.store.put(&key, buf.take_rest()).await.map_err(backend_err)?;
        }
        let state = serde_json::to_string(&state).map_err(|e| BlobError::Backend(e.to_string()))?;
        Ok((UploadCursor { offset, state }, hasher))
    }

    async fn upload_read(&self, id: &str, cursor: &UploadCursor) -> Result<ByteStream> {
        Self::check_id(id)?;
        let state = parse_state(cursor)?;
        if state.multipart.is_none() {
            // Everything is in the tail.
            if state.tail == 0 {
                return Ok(Box::pin(futures_util::stream::empty()));
            }
            let tail = self.read_all(&self.tail_key(id, cursor.offset - state.tail), state.tail).await?;
            return Ok(Box::pin(futures_util::stream::once(async move { Ok(tail) })));
        }
        // S3 cannot read parts of an open upload: complete it (commit accepts that).
        let data = self.complete_data(id, cursor, &state).await?;
        let result = self.store.get(&data).await.map_err(backend_err)?;
        Ok(Box::pin(result.into_stream().map(|item| item.map_err(|e| io::Error::other(e.to_string())))))
    }

    async fn upload_commit(&self, id: &str, cursor: &UploadCursor, digest: &Digest) -> Result<()> {
        Self::check_id(id)?;
        let state = parse_state(cursor)?;
        let exists = self.stat(digest).await?.is_some();
        if !exists {
            if state.multipart.is_none() {
                // Small blob: the tail holds it all.
                let bytes = if state.tail == 0 {
                    Bytes::new()
                } else {
                    self.read_all(&self.tail_key(id, cursor.offset - state.tail), state.tail).await?
                };
                let key = self.blob_key(digest);
                let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
                match self.store.put_opts(&key, bytes.clone().into(), opts).await {
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                    // Stores without conditional writes: the bytes are verified, overwriting is harmless.
                    Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                        self.store.put(&key, bytes.into()).await.map_err(backend_err)?;
                    }
                    Err(e) => return Err(backend_err(e)),
                }
            } else {
                let data = self.complete_data(id, cursor, &state).await?;
                self.copy_to_blob(&data, cursor.offset, digest).await?;
            }
        }
        if let Some(m) = &state.multipart
            && exists
        {
            // Deduplicated: the open upload is no longer needed.
            let _ = self.store.abort_multipart(&self.data_key(id), m).await;
        }
        self.remove_session_objects(id).await
    }

    async fn upload_abort(&self, id: &str, cursor: &UploadCursor) -> Result<()> {
        Self::check_id(id)?;
        if let Ok(SessionState { multipart: Some(m), .. }) = parse_state(cursor) {
            match self.store.abort_multipart(&self.data_key(id), &m).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(backend_err(e)),
            }
        }
        self.remove_session_objects(id).await
    }

    async fn list_uploads(&self, before_ms: i64) -> Result<Vec<String>> {
        let prefix = self.key("uploads");
        let mut newest: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(backend_err)?;
            let parts: Vec<_> = meta.location.parts().collect();
            // .../uploads/<id>/<object>
            if parts.len() < 2 {
                continue;
            }
            let id = parts[parts.len() - 2].as_ref().to_owned();
            let t = meta.last_modified.timestamp_millis();
            let e = newest.entry(id).or_insert(t);
            *e = (*e).max(t);
        }
        Ok(newest.into_iter().filter(|(id, t)| *t < before_ms && id != ".readyz").map(|(id, _)| id).collect())
    }
}

/// Collects incoming bytes into parts of exactly `part_size`. Chunks are
/// copied into one buffer per part: a memcpy costs far less than the part's
/// upload, and it lets the HTTP layer reuse its read buffers at once, so an
/// upload holds about two parts of memory (one filling, one in flight) and
/// nothing else.
struct PartBuffer {
    part_size: usize,
    filling: BytesMut,
    full: std::collections::VecDeque<Bytes>,
}

impl PartBuffer {
    fn new(part_size: usize) -> Self {
        PartBuffer { part_size, filling: BytesMut::new(), full: Default::default() }
    }

    fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = BytesMut::with_capacity(self.part_size);
            }
            let n = (self.part_size - self.filling.len()).min(chunk.len());
            self.filling.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.filling.len() == self.part_size {
                self.full.push_back(std::mem::take(&mut self.filling).freeze());
            }
        }
    }

    /// A completed part, if one is ready.
    fn pop_full(&mut self) -> Option<PutPayload> {
        self.full.pop_front().map(PutPayload::from)
    }

    /// Bytes received that do not fill a part.
    fn rest_len(&self) -> usize {
        self.filling.len()
    }

    fn take_rest(&mut self) -> PutPayload {
        std::mem::take(&mut self.filling).freeze().into()
    }
}

async fn join_part(handle: tokio::task::JoinHandle<Result<PartId>>) -> Result<PartId> {
    handle.await.map_err(|e| BlobError::Backend(format!("part upload task failed: {e}")))?
}
