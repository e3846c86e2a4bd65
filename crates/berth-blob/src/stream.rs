//! Moving bytes between async request bodies and blocking file I/O without
//! holding more than a few chunks in memory.

use std::fs::File;
use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ByteStream;

/// An inclusive byte range `start..=end`, already validated against the blob size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Bytes per mapped window. Large enough that mapping and unmapping are
/// noise; small enough that a slow client pins little memory.
pub(crate) const WINDOW: u64 = 2 * 1024 * 1024;
/// Windows prepared ahead of the response.
const READ_AHEAD: usize = 3;
const PAGE: u64 = 4096;

/// A mapped window of a blob file, owned by the `Bytes` handed to the socket.
struct Window(memmap2::Mmap);

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps `len` bytes of `file` at `offset` (pre-faulted), as `Bytes`.
///
/// Mapping instead of reading saves a copy of every byte from the page
/// cache into a buffer: the socket write copies straight from the cache.
#[allow(unsafe_code)]
fn map_window(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let aligned = offset - offset % PAGE;
    let lead = (offset - aligned) as usize;
    // SAFETY: a mapping is only unsound if the file shrinks while mapped.
    // Committed blobs are content-addressed and immutable: Berth never
    // truncates or rewrites one (garbage collection unlinks, which leaves
    // existing mappings intact), and the file length was checked against
    // the requested range when the blob was opened.
    let map = unsafe { memmap2::MmapOptions::new().offset(aligned).len(lead + len as usize).populate().map(file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(Window(map)).slice(lead..lead + len as usize))
}

/// Streams `len` bytes of `file` from `start`, mapping windows on a blocking thread.
pub(crate) fn file_stream(file: File, start: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut pos = start;
        let end = start + len;
        while pos < end {
            let want = (end - pos).min(WINDOW);
            let item = map_window(&file, pos, want);
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return; // client went away, or the error was sent
            }
            pos += want;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}
