//! Upload sessions: POST starts one, PATCH appends, PUT finishes, DELETE
//! cancels, GET reports progress. The session (offset and saved hasher
//! state) is persisted after every append, so an upload survives restarts
//! and may continue on another replica; the digest is computed while
//! streaming and never by re-reading, unless the client finishes with a
//! different algorithm than the session hashed with.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_blob::{ByteStream, UploadCursor};
use berth_meta::{UploadProgress, UploadSession};
use berth_oci::{Algorithm, Digest, Hasher, RepositoryName};
use futures_util::StreamExt;

use crate::{Registry, RegistryError, Result, now_ms};

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

/// What a PATCH declares about its chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkInfo {
    /// `Content-Range: start-end` (inclusive), if sent.
    pub range: Option<(u64, u64)>,
    /// `Content-Length`, if sent.
    pub length: Option<u64>,
}

impl ChunkInfo {
    /// The exact number of bytes the body must carry, if declared.
    fn expected_len(&self) -> Result<Option<u64>> {
        let from_range = match self.range {
            Some((start, end)) if end < start => {
                return Err(RegistryError::SizeInvalid(format!("Content-Range {start}-{end} is inverted")));
            }
            Some((start, end)) => Some(end - start + 1),
            None => None,
        };
        match (from_range, self.length) {
            (Some(r), Some(l)) if r != l => {
                Err(RegistryError::SizeInvalid(format!("Content-Range covers {r} bytes but Content-Length is {l}")))
            }
            (r, l) => Ok(r.or(l)),
        }
    }
}

/// How long a blob commit waits for the collector to finish deleting the
/// same digest before answering 503 (retry).
const RESERVE_WAIT: Duration = Duration::from_secs(10);
const RESERVE_POLL: Duration = Duration::from_millis(50);

fn new_upload_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn cursor_of(p: &UploadProgress) -> UploadCursor {
    UploadCursor { offset: p.offset, state: p.backend_state.clone() }
}

impl Registry {
    /// Opens an upload session (POST without a digest).
    pub async fn start_upload(&self, repo: &RepositoryName, algorithm: Algorithm) -> Result<UploadStatus> {
        self.refuse_upstream_writes(repo).await?;
        let id = new_upload_id();
        let cursor = self.inner.blobs.upload_start(&id).await?;
        let now = now_ms();
        let session = UploadSession {
            id: id.clone(),
            repository: repo.clone(),
            algorithm,
            progress: UploadProgress {
                offset: cursor.offset,
                hash_state: Hasher::new(algorithm).save(),
                backend_state: cursor.state,
                updated_at: now,
            },
            created_at: now,
        };
        self.inner.meta.create_upload(&session).await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Uploads a whole blob in one request (POST with `?digest=`, or a PUT on a
    /// session that received nothing yet). Nothing is persisted unless the
    /// digest verifies.
    pub async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
        length: Option<u64>,
    ) -> Result<u64> {
        if let Err(refused) = self.refuse_upstream_writes(repo).await {
            crate::quota::drain(body).await;
            return Err(refused);
        }
        let room = self.upload_room(repo, length).await?;
        if let Some(length) = length
            && let Err(refusal) = self.check_room(repo, room, length).await
        {
            crate::quota::drain(body).await;
            return Err(refusal);
        }
        let id = new_upload_id();
        let store = &self.inner.blobs;
        let start = store.upload_start(&id).await?;
        let (body, stopped) = Registry::within_room(limit_body(body, length), 0, room);
        let outcome = async {
            let (cursor, hasher) =
                store.upload_append(&id, &start, body, Some(Hasher::new(digest.algorithm()))).await?;
            check_length(length, cursor.offset)?;
            verify(digest, handed_back(hasher)?.finish())?;
            let reservation = self.reserve_blob(digest, cursor.offset).await?;
            store.upload_commit(&id, &cursor, digest).await?;
            Ok::<_, RegistryError>((cursor.offset, reservation))
        }
        .await;
        match outcome {
            Ok((size, reservation)) => {
                berth_metrics::metrics().bytes_pushed.inc_by(size);
                let linked = self.inner.meta.link_reserved_blob(repo, digest, &reservation).await;
                if !self.explain(repo, None, linked).await? {
                    return Err(RegistryError::Unavailable(format!(
                        "blob {digest} was garbage-collected while it was being uploaded; retry"
                    )));
                }
                Ok(size)
            }
            Err(e) => {
                let _ = store.upload_abort(&id, &start).await;
                if stopped.load(Ordering::Relaxed) {
                    return Err(self.stopped_by_room(repo, room).await);
                }
                Err(e)
            }
        }
    }

    /// The session, if it exists and belongs to `repo`.
    async fn session(&self, repo: &RepositoryName, id: &str) -> Result<UploadSession> {
        match self.inner.meta.get_upload(id).await? {
            Some(s) if &s.repository == repo => Ok(s),
            _ => Err(RegistryError::UploadUnknown),
        }
    }

    pub async fn upload_status(&self, repo: &RepositoryName, id: &str) -> Result<UploadStatus> {
        let s = self.session(repo, id).await?;
        Ok(UploadStatus { id: s.id, offset: s.progress.offset })
    }

    /// Appends a chunk (PATCH). A `Content-Range` must start at the current offset.
    pub async fn append_upload(
        &self,
        repo: &RepositoryName,
        id: &str,
        body: ByteStream,
        chunk: ChunkInfo,
    ) -> Result<UploadStatus> {
        let expected = chunk.expected_len()?;
        let _guard = self.inner.upload_locks.lock(id).await;
        let session = self.session(repo, id).await?;
        check_chunk_start(&chunk, session.progress.offset)?;
        let progress = self.append_and_save(&session, body, expected).await?;
        Ok(UploadStatus { id: session.id, offset: progress.offset })
    }

    /// Appends `body` to the session and persists the new progress.
    async fn append_and_save(
        &self,
        session: &UploadSession,
        body: ByteStream,
        expected: Option<u64>,
    ) -> Result<UploadProgress> {
        let progress = self.append(session, body, expected).await?;
        self.save(session, &progress).await?;
        Ok(progress)
    }

    /// Appends `body` to the session's data (made durable by the store) and
    /// returns the new progress, not yet recorded. An upload that would pass
    /// a size limit or its owner's quota is refused, and discarded, as soon
    /// as it does (before any byte when the chunk's declared length tells).
    async fn append(&self, session: &UploadSession, body: ByteStream, expected: Option<u64>) -> Result<UploadProgress> {
        let before = &session.progress;
        let repo = &session.repository;
        let room = self.upload_room(repo, expected.map(|n| before.offset.saturating_add(n))).await?;
        if let Some(n) = expected
            && let Err(refusal) = self.check_room(repo, room, before.offset.saturating_add(n)).await
        {
            crate::quota::drain(body).await;
            self.discard(session).await;
            return Err(refusal);
        }
        let hasher = Hasher::restore(session.algorithm, &before.hash_state).ok_or(RegistryError::UploadUnknown)?;
        let (body, stopped) = Registry::within_room(limit_body(body, expected), before.offset, room);
        let appended = self.inner.blobs.upload_append(&session.id, &cursor_of(before), body, Some(hasher)).await;
        let (cursor, hasher) = match appended {
            Ok(done) => done,
            Err(_) if stopped.load(Ordering::Relaxed) => {
                self.discard(session).await;
                return Err(self.stopped_by_room(repo, room).await);
            }
            Err(e) => return Err(e.into()),
        };
        check_length(expected, cursor.offset - before.offset)?;
        berth_metrics::metrics().bytes_pushed.inc_by(cursor.offset - before.offset);
        Ok(UploadProgress {
            offset: cursor.offset,
            hash_state: handed_back(hasher)?.save(),
            backend_state: cursor.state,
            updated_at: now_ms(),
        })
    }

    /// Records `progress` if the session still stands where it did.
    async fn save(&self, session: &UploadSession, progress: &UploadProgress) -> Result<()> {
        if !self.inner.meta.update_upload(&session.id, session.progress.offset, progress).await? {
            // Another process moved or finished the session meanwhile.
            return Err(RegistryError::UploadUnknown);
        }
        Ok(())
    }

    /// Finishes an upload (PUT `?digest=`), with an optional last chunk.
    pub async fn finish_upload(
        &self,
        repo: &RepositoryName,
        id: &str,
        digest: &Digest,
        last_chunk: Option<(ByteStream, ChunkInfo)>,
    ) -> Result<u64> {
        let _guard = self.inner.upload_locks.lock(id).await;
        let session = self.session(repo, id).await?;
        // The last chunk's progress is recorded before the commit: if the
        // process dies after moving the data but before the database says
        // so, the session then honestly reports where the data went. A
        // session that had received nothing (the whole blob in this PUT, as
        // small blobs are pushed) is the exception, recorded only if the
        // upload fails: after a crash it still says 0 bytes, which a PUT
        // with the body completes the same way (the commit finds the blob
        // in place). That saves a database write per blob.
        let (progress, unrecorded) = match last_chunk {
            Some((body, chunk)) => {
                let expected = chunk.expected_len()?;
                check_chunk_start(&chunk, session.progress.offset)?;
                if session.progress.offset == 0 {
                    (self.append(&session, body, expected).await?, true)
                } else {
                    (self.append_and_save(&session, body, expected).await?, false)
                }
            }
            None => (session.progress.clone(), false),
        };
        let finished = self.commit_upload(&session, &progress, digest).await;
        if finished.is_err() && unrecorded {
            // As if recorded before the commit; a session gone meanwhile stays gone.
            let _ = self.inner.meta.update_upload(id, session.progress.offset, &progress).await;
        }
        finished
    }

    /// Verifies the digest of an upload that stands at `progress`, commits
    /// its bytes and links the blob to the session's repository, ending the
    /// session. The caller holds the session's lock.
    async fn commit_upload(&self, session: &UploadSession, progress: &UploadProgress, digest: &Digest) -> Result<u64> {
        let (repo, id) = (&session.repository, session.id.as_str());
        let cursor = cursor_of(progress);
        let computed = if digest.algorithm() == session.algorithm {
            Hasher::restore(session.algorithm, &progress.hash_state).ok_or(RegistryError::UploadUnknown)?.finish()
        } else {
            // The client chose another algorithm than the session hashed with.
            let mut data = self.inner.blobs.upload_read(id, &cursor).await?;
            let mut h = Hasher::new(digest.algorithm());
            while let Some(chunk) = data.next().await {
                h.update(&chunk.map_err(|e| RegistryError::Internal(format!("re-reading upload: {e}")))?);
            }
            h.finish()
        };
        verify(digest, computed)?;
        let reservation = self.reserve_blob(digest, cursor.offset).await?;
        self.inner.blobs.upload_commit(id, &cursor, digest).await?;
        let completed = self.inner.meta.complete_upload(id, digest, &reservation).await;
        match self.explain(repo, None, completed).await {
            Ok(()) => Ok(cursor.offset),
            Err(refusal @ RegistryError::QuotaExceeded(_)) => {
                // The committed bytes are linked nowhere: garbage collection's.
                let _ = self.inner.meta.delete_upload(id).await;
                Err(refusal)
            }
            Err(e) => Err(e),
        }
    }

    /// Reserves `digest` in the metadata store before its bytes are
    /// committed, so that garbage collection cannot delete the stored object
    /// that the commit may find and keep (see [`crate::gc`]). If the
    /// collector is deleting that blob right now, waits (bounded) for it to
    /// finish, then reserves afresh; past the bound, a retryable 503.
    /// Returns the reservation to link the blob with once it is committed.
    pub(crate) async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<String> {
        let deadline = Instant::now() + RESERVE_WAIT;
        loop {
            if let Some(reservation) = self.inner.meta.reserve_blob(digest, size).await? {
                return Ok(reservation);
            }
            if Instant::now() >= deadline {
                return Err(RegistryError::Unavailable(format!("blob {digest} is being garbage-collected; retry")));
            }
            tokio::time::sleep(RESERVE_POLL).await;
        }
    }

    /// Ends a session refused for a limit, with its data (best effort: upload
    /// expiry removes whatever this leaves). The caller holds its lock.
    async fn discard(&self, session: &UploadSession) {
        let _ = self.inner.meta.delete_upload(&session.id).await;
        let _ = self.inner.blobs.upload_abort(&session.id, &cursor_of(&session.progress)).await;
    }

    /// Cancels an upload (DELETE on its location) and discards its data.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: &str) -> Result<()> {
        let _guard = self.inner.upload_locks.lock(id).await;
        let session = self.session(repo, id).await?;
        self.inner.meta.delete_upload(id).await?;
        self.inner.blobs.upload_abort(id, &cursor_of(&session.progress)).await?;
        Ok(())
    }
}

/// A chunk with a `Content-Range` must start exactly where the upload stands.
fn check_chunk_start(chunk: &ChunkInfo, offset: u64) -> Result<()> {
    match chunk.range {
        Some((start, _)) if start != offset => Err(RegistryError::RangeNotSatisfiable { offset }),
        _ => Ok(()),
    }
}

fn verify(expected: &Digest, computed: Digest) -> Result<()> {
    if &computed == expected { Ok(()) } else { Err(RegistryError::DigestMismatch { computed }) }
}

/// The hasher an append was given, as the store hands it back.
fn handed_back(hasher: Option<Hasher>) -> Result<Hasher> {
    hasher.ok_or_else(|| RegistryError::Internal("the blob store dropped the upload's hasher".into()))
}

fn check_length(expected: Option<u64>, got: u64) -> Result<()> {
    match expected {
        Some(n) if n != got => Err(RegistryError::SizeInvalid(format!("declared {n} bytes, received {got}"))),
        _ => Ok(()),
    }
}

/// Fails the stream as soon as it exceeds the declared length, instead of
/// storing bytes that will be rejected anyway.
fn limit_body(body: ByteStream, limit: Option<u64>) -> ByteStream {
    let Some(limit) = limit else { return body };
    let mut seen = 0u64;
    Box::pin(body.map(move |item| {
        let chunk = item?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("body longer than the declared {limit} bytes"),
            ));
        }
        Ok(chunk)
    }))
}
