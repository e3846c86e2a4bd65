//! One upstream blob fetch, shared by every request for the blob, streamed
//! to each of them while it is written to the blob store.
//!
//! A fetch is a task of its own ([`Registry::blob_fetch`] starts it or
//! joins the one under way, per cached repository and digest): it sends
//! one GET upstream and feeds the chunks, as they arrive, both to the blob
//! store (the upload path of a push: `upload_start`, `upload_append`, then
//! `reserve_blob`, `upload_commit`, `link_reserved_blob`, so garbage
//! collection cannot free the blob under it; see [`crate::gc`]) and to the
//! requests reading it. The upstream stream verifies the digest at its end
//! ([`berth_upstream::BlobStream`]); nothing is committed unless it ended
//! cleanly, and readers get the last chunk only once it did, so a reader
//! never sees a whole body of wrong bytes. They get it without waiting for
//! the commit (the store's fsync and the database): the caller's bytes are
//! verified by then, and the cache's durability is the cache's business. A
//! reader whose body has the upstream's `Content-Length` ends there; one
//! without waits for the end of the fetch.
//!
//! Readers share the chunks in memory, in a window of at most [`WINDOW`]
//! bytes per fetch (none while nobody reads). A reader that falls behind
//! the window, or joins after it moved on, waits for the commit and reads
//! the rest from the blob store. Nobody waits for a slow reader: the fetch
//! runs at the upstream's and the store's pace.
//!
//! A reader that disconnects does not stop the fetch. A fetch nobody reads
//! (its readers left, or it was started by a HEAD) is finished if it can be
//! within [`ORPHAN_LIMIT`] of the last reader leaving, else dropped. Its
//! upload data, like any upload's, is removed by upload expiry if the
//! process dies meanwhile.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_blob::{BlobBody, BlobStore, ByteRange, ByteStream};
use berth_oci::{Digest, RepositoryName};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{Failed, Route};
use crate::{Registry, RegistryError};

/// How long a fetch nobody reads may still run.
pub(crate) const ORPHAN_LIMIT: Duration = Duration::from_secs(600);
/// Bytes of a fetch kept in memory for its readers.
pub(crate) const WINDOW: usize = 16 << 20;
/// Chunks queued for the blob store.
const STORE_QUEUE: usize = 8;

/// The fetches under way, by cached repository and digest.
#[derive(Default)]
pub(crate) struct BlobFetches {
    running: Mutex<HashMap<(RepositoryName, Digest), Arc<BlobFetch>>>,
}

pub(crate) struct BlobFetch {
    state: Mutex<State>,
    /// Bumped on every change of `state`, for readers waiting on one.
    version: watch::Sender<u64>,
}

struct State {
    /// From the upstream's `Content-Length`, or the stored size at the end.
    size: Option<u64>,
    /// Published chunks still held: `first_index..next_index`.
    chunks: VecDeque<Bytes>,
    first_index: u64,
    next_index: u64,
    held: usize,
    outcome: Option<Result<u64, Failed>>,
    readers: usize,
    orphaned_since: Option<Instant>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BlobFetch {
    fn new() -> Self {
        let state = State {
            size: None,
            chunks: VecDeque::new(),
            first_index: 0,
            next_index: 0,
            held: 0,
            outcome: None,
            readers: 0,
            orphaned_since: Some(Instant::now()),
        };
        BlobFetch { state: Mutex::new(state), version: watch::Sender::new(0) }
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn set_size(&self, size: Option<u64>) {
        lock(&self.state).size = size;
        self.changed();
    }

    fn publish(&self, chunk: Bytes) {
        {
            let mut s = lock(&self.state);
            s.held += chunk.len();
            s.chunks.push_back(chunk);
            s.next_index += 1;
            let keep = if s.readers == 0 { 0 } else { WINDOW };
            while s.held > keep && !s.chunks.is_empty() && !(keep > 0 && s.chunks.len() == 1) {
                let dropped = s.chunks.pop_front().map_or(0, |c| c.len());
                s.held -= dropped;
                s.first_index += 1;
            }
        }
        self.changed();
    }

    fn finish(&self, outcome: Result<u64, Failed>) {
        {
            let mut s = lock(&self.state);
            if let Ok(size) = &outcome {
                s.size = Some(*size);
            }
            s.outcome = Some(outcome);
        }
        self.changed();
    }

    /// Nobody has read it for longer than [`ORPHAN_LIMIT`].
    fn abandoned(&self) -> bool {
        lock(&self.state).orphaned_since.is_some_and(|t| t.elapsed() > ORPHAN_LIMIT)
    }

    /// Waits until `pick` finds what it wants in the state.
    async fn wait_for<T>(&self, mut pick: impl FnMut(&State) -> Option<T>) -> T {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(found) = pick(&lock(&self.state)) {
                return found;
            }
            // The sender lives in `self`: this never fails while we wait.
            let _ = rx.changed().await;
        }
    }

    /// The blob's size, once the upstream said it (or the fetch ended).
    pub(crate) async fn size(&self) -> Result<u64, Failed> {
        self.wait_for(|s| match (&s.size, &s.outcome) {
            (_, Some(Err(e))) => Some(Err(e.clone())),
            (Some(size), _) => Some(Ok(*size)),
            (None, Some(Ok(size))) => Some(Ok(*size)),
            (None, None) => None,
        })
        .await
    }

    /// The end of the fetch: the blob's size once stored and linked.
    pub(crate) async fn outcome(&self) -> Result<u64, Failed> {
        self.wait_for(|s| s.outcome.clone()).await
    }

    /// A reader from the first byte: live while the window still holds it.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Reader {
        let live = {
            let mut s = lock(&self.state);
            s.readers += 1;
            s.orphaned_since = None;
            s.first_index == 0
        };
        let cursor = if live { Cursor::Live { index: 0 } } else { Cursor::Behind };
        Reader { fetch: self.clone(), cursor, offset: 0 }
    }
}

/// One request's read of a fetch.
pub(crate) struct Reader {
    fetch: Arc<BlobFetch>,
    cursor: Cursor,
    offset: u64,
}

enum Cursor {
    /// The next chunk to take from the window.
    Live {
        index: u64,
    },
    /// Fell behind the window: the rest comes from the store after the commit.
    Behind,
    Stored(ByteStream),
    Finished,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut s = lock(&self.fetch.state);
        s.readers -= 1;
        if s.readers == 0 {
            s.orphaned_since = Some(Instant::now());
        }
    }
}

enum Step {
    Chunk(Bytes),
    Behind,
    End,
    Fail(Failed),
}

fn failure_text(f: &Failed) -> io::Error {
    io::Error::other(match f {
        Failed::Upstream(e) => e.to_string(),
        Failed::Local(e) => e.to_string(),
    })
}

impl Reader {
    /// The reader as a body stream, falling back to `blobs` (for `digest`)
    /// where the window no longer holds its next bytes.
    pub(crate) fn into_stream(self, blobs: Arc<dyn BlobStore>, digest: Digest) -> ByteStream {
        Box::pin(futures_util::stream::unfold((self, blobs, digest), |(mut r, blobs, digest)| async move {
            let item = r.next(&blobs, &digest).await?;
            Some((item, (r, blobs, digest)))
        }))
    }

    async fn next(&mut self, blobs: &Arc<dyn BlobStore>, digest: &Digest) -> Option<io::Result<Bytes>> {
        loop {
            match &mut self.cursor {
                Cursor::Finished => return None,
                Cursor::Stored(s) => {
                    let item = s.next().await;
                    if item.is_none() {
                        self.cursor = Cursor::Finished;
                    }
                    return item;
                }
                Cursor::Live { index } => {
                    let (at, offset) = (*index, self.offset);
                    let step = self
                        .fetch
                        .wait_for(|s| {
                            // All of a declared length was published, so the
                            // upstream's stream ended cleanly (its last chunk
                            // is held until then); the commit may still run.
                            if s.size.is_some_and(|size| size > 0 && offset >= size) {
                                return Some(Step::End);
                            }
                            if at < s.first_index {
                                return Some(Step::Behind);
                            }
                            if at < s.next_index {
                                return Some(Step::Chunk(s.chunks[(at - s.first_index) as usize].clone()));
                            }
                            match &s.outcome {
                                Some(Ok(_)) => Some(Step::End),
                                Some(Err(e)) => Some(Step::Fail(e.clone())),
                                None => None,
                            }
                        })
                        .await;
                    match step {
                        Step::Chunk(chunk) => {
                            self.cursor = Cursor::Live { index: at + 1 };
                            self.offset += chunk.len() as u64;
                            return Some(Ok(chunk));
                        }
                        Step::End => self.cursor = Cursor::Finished,
                        Step::Behind => self.cursor = Cursor::Behind,
                        Step::Fail(f) => {
                            self.cursor = Cursor::Finished;
                            return Some(Err(failure_text(&f)));
                        }
                    }
                }
                Cursor::Behind => match self.fetch.outcome().await {
                    Ok(size) if self.offset >= size => self.cursor = Cursor::Finished,
                    Ok(size) => match open_stored(blobs, digest, self.offset, size).await {
                        Ok(s) => self.cursor = Cursor::Stored(s),
                        Err(e) => {
                            self.cursor = Cursor::Finished;
                            return Some(Err(e));
                        }
                    },
                    Err(f) => {
                        self.cursor = Cursor::Finished;
                        return Some(Err(failure_text(&f)));
                    }
                },
            }
        }
    }
}

/// The stored blob from `offset` on.
async fn open_stored(blobs: &Arc<dyn BlobStore>, digest: &Digest, offset: u64, size: u64) -> io::Result<ByteStream> {
    let store_err = |e: berth_blob::BlobError| io::Error::other(e.to_string());
    if offset > 0 {
        let range = ByteRange { start: offset, end: size - 1 };
        if let BlobBody::Stream(s) = blobs.read(digest, Some(range)).await.map_err(store_err)?.body {
            return Ok(s);
        }
    }
    // From the start (or the store would redirect): skip what was sent.
    let (_, whole) = blobs.read_stream(digest).await.map_err(store_err)?;
    let mut skip = offset;
    Ok(Box::pin(whole.filter_map(move |item| {
        let out = match item {
            Ok(chunk) if skip >= chunk.len() as u64 => {
                skip -= chunk.len() as u64;
                None
            }
            Ok(chunk) => {
                let rest = chunk.slice(skip as usize..);
                skip = 0;
                Some(Ok(rest))
            }
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    })))
}

impl Registry {
    /// The fetch of `digest` into the cached repository: the one under way,
    /// or a new one, started in a task of its own. With `read`, a reader
    /// from the first byte, subscribed before a new fetch can publish any.
    pub(crate) fn blob_fetch(
        &self,
        route: &Route,
        digest: &Digest,
        read: bool,
    ) -> Option<(Arc<BlobFetch>, Option<Reader>)> {
        let proxy = self.inner.proxy.as_ref()?;
        let key = (route.local.clone(), digest.clone());
        let mut running = proxy.blobs.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fetch) = running.get(&key) {
            let reader = read.then(|| fetch.subscribe());
            return Some((fetch.clone(), reader));
        }
        let fetch = Arc::new(BlobFetch::new());
        let reader = read.then(|| fetch.subscribe());
        running.insert(key.clone(), fetch.clone());
        drop(running);
        let (registry, route, digest, task_fetch) = (self.clone(), route.clone(), digest.clone(), fetch.clone());
        tokio::spawn(async move {
            let work = registry.fetch_blob(&route, &digest, &task_fetch);
            let outcome = AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(Failed::Local(RegistryError::Internal("blob fetch panicked".into()))));
            if let Err(f) = &outcome {
                tracing::warn!(upstream = %route.upstream.name, repository = %route.local, %digest,
                    error = %failure_text(f), "blob fetch failed; nothing stored");
            }
            // Forgotten before readers hear of the end: a request from now
            // on finds the blob stored, or starts afresh.
            if let Some(proxy) = registry.inner.proxy.as_ref() {
                let mut running = proxy.blobs.running.lock().unwrap_or_else(|p| p.into_inner());
                if running.get(&key).is_some_and(|f| Arc::ptr_eq(f, &task_fetch)) {
                    running.remove(&key);
                }
            }
            task_fetch.finish(outcome);
        });
        Some((fetch, reader))
    }

    /// GET upstream, written to the store and published to readers as it
    /// comes, committed and linked into the cached repository once verified.
    async fn fetch_blob(&self, route: &Route, digest: &Digest, fetch: &BlobFetch) -> Result<u64, Failed> {
        let upstream = &route.upstream;
        let source = upstream.client.get_blob(&route.remote, digest).await.map_err(|e| {
            upstream.count_error(&e);
            Failed::Upstream(e)
        })?;
        fetch.set_size(source.length());
        let store = self.blob_store().clone();
        let id = uuid::Uuid::new_v4().to_string();
        let start = store.upload_start(&id).await.map_err(RegistryError::from)?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(STORE_QUEUE);
        let body: ByteStream =
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }));
        // No store hasher: the upstream stream checks length and digest
        // before it ends cleanly, and nothing is committed unless it did.
        let write = store.upload_append(&id, &start, body, None);
        let read = async move {
            let mut source = source;
            let mut held: Option<Bytes> = None;
            loop {
                if fetch.abandoned() {
                    let why = format!("blob {digest}: nobody read it for {} s; dropped", ORPHAN_LIMIT.as_secs());
                    return Err(Some(Failed::Local(RegistryError::Unavailable(why))));
                }
                match source.next().await {
                    Some(Ok(chunk)) => {
                        berth_metrics::metrics().proxy_fetched(&upstream.name, chunk.len() as u64);
                        if tx.send(Ok(chunk.clone())).await.is_err() {
                            return Err(None); // the store stopped: its error says why
                        }
                        if let Some(previous) = held.replace(chunk) {
                            fetch.publish(previous);
                        }
                    }
                    Some(Err(e)) => {
                        upstream.count_error(&e);
                        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                        return Err(Some(Failed::Upstream(e)));
                    }
                    None => {
                        // A clean end: the length and the digest are verified.
                        if let Some(last) = held {
                            fetch.publish(last);
                        }
                        return Ok(());
                    }
                }
            }
        };
        let (read, written) = tokio::join!(read, write);
        let (cursor, _) = match (read, written) {
            (Ok(()), Ok(written)) => written,
            (Err(Some(f)), _) => {
                let _ = store.upload_abort(&id, &start).await;
                return Err(f);
            }
            (_, Err(e)) => {
                let _ = store.upload_abort(&id, &start).await;
                return Err(Failed::Local(e.into()));
            }
            (Err(None), Ok(_)) => {
                let _ = store.upload_abort(&id, &start).await;
                return Err(Failed::Local(RegistryError::Internal("the blob store stopped reading".into())));
            }
        };
        let size = cursor.offset;
        let reservation = self.reserve_blob(digest, size).await?;
        store.upload_commit(&id, &cursor, digest).await.map_err(RegistryError::from)?;
        let linked = self.meta().link_reserved_blob(&route.local, digest, &reservation).await;
        if !self.explain(&route.local, None, linked).await? {
            return Err(Failed::Local(RegistryError::Unavailable(format!(
                "blob {digest} was garbage-collected while it was being fetched; retry"
            ))));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[tokio::test]
    async fn readers_share_the_window_and_late_ones_wait_for_the_store() {
        let fetch = Arc::new(BlobFetch::new());
        let mut early = fetch.subscribe();
        fetch.set_size(Some(3 * WINDOW as u64));
        for _ in 0..3 {
            fetch.publish(chunk(WINDOW));
        }
        // The window holds the last chunk only now: an early reader at 0 fell behind.
        let late = fetch.subscribe();
        assert!(matches!(late.cursor, Cursor::Behind));
        assert_eq!(fetch.size().await.unwrap(), 3 * WINDOW as u64);
        let step = {
            let s = lock(&fetch.state);
            (s.first_index, s.next_index, s.held)
        };
        assert_eq!(step, (2, 3, WINDOW));
        assert!(matches!(early.cursor, Cursor::Live { index: 0 }));
        early.cursor = Cursor::Live { index: 2 };
        fetch.finish(Ok(3 * WINDOW as u64));
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(berth_blob::FsBlobStore::open(dir.path()).unwrap());
        let d = Digest::sha256_of(b"x");
        let got = early.next(&blobs, &d).await.unwrap().unwrap();
        assert_eq!(got.len(), WINDOW);
        assert!(early.next(&blobs, &d).await.is_none(), "the end after the last chunk");
    }

    #[tokio::test]
    async fn a_reader_ends_at_the_declared_length_without_waiting_for_the_commit() {
        let fetch = Arc::new(BlobFetch::new());
        let mut reader = fetch.subscribe();
        fetch.set_size(Some(20));
        fetch.publish(chunk(10));
        fetch.publish(chunk(10));
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(berth_blob::FsBlobStore::open(dir.path()).unwrap());
        let d = Digest::sha256_of(b"x");
        for _ in 0..2 {
            assert_eq!(reader.next(&blobs, &d).await.unwrap().unwrap().len(), 10);
        }
        let end = tokio::time::timeout(Duration::from_secs(5), reader.next(&blobs, &d)).await;
        assert!(end.expect("no wait for the outcome").is_none());
        assert!(lock(&fetch.state).outcome.is_none(), "the fetch is still committing");
    }

    #[tokio::test]
    async fn nobody_reading_keeps_nothing_and_counts_as_orphaned() {
        let fetch = Arc::new(BlobFetch::new());
        fetch.publish(chunk(10));
        assert_eq!(lock(&fetch.state).held, 0);
        let reader = fetch.subscribe();
        assert!(matches!(reader.cursor, Cursor::Behind), "the first chunk is gone");
        assert!(lock(&fetch.state).orphaned_since.is_none());
        drop(reader);
        assert!(lock(&fetch.state).orphaned_since.is_some());
        assert!(!fetch.abandoned());
    }

    #[tokio::test]
    async fn a_failure_reaches_waiting_readers() {
        let fetch = Arc::new(BlobFetch::new());
        let mut reader = fetch.subscribe();
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(berth_blob::FsBlobStore::open(dir.path()).unwrap());
        let d = Digest::sha256_of(b"x");
        let waiting = tokio::spawn(async move { reader.next(&blobs, &d).await });
        tokio::task::yield_now().await;
        fetch.finish(Err(Failed::Local(RegistryError::Unavailable("gone".into()))));
        let item = waiting.await.unwrap().expect("an item");
        assert!(item.unwrap_err().to_string().contains("gone"));
        assert!(fetch.size().await.is_err());
    }
}
