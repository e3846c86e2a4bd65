//! Moving bytes between async request bodies and blocking file I/O without
//! holding more than a few chunks in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

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

/// Read size per chunk: large enough that syscalls and channel hops are noise.
pub(crate) const READ_CHUNK: usize = 512 * 1024;
/// Chunks buffered between the reading thread and the response.
const READ_AHEAD: usize = 4;

/// Streams `len` bytes of `file` from `start`, reading on a blocking thread.
pub(crate) fn file_stream(mut file: File, start: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        if start > 0
            && let Err(e) = file.seek(SeekFrom::Start(start))
        {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut remaining = len;
        while remaining > 0 {
            let want = remaining.min(READ_CHUNK as u64);
            // `take` + `read_to_end` fills spare capacity directly: no zeroing first.
            let mut buf = Vec::with_capacity(want as usize);
            let result = (&mut file).take(want).read_to_end(&mut buf).and_then(|n| {
                if n == 0 {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than recorded"))
                } else {
                    Ok(n)
                }
            });
            match result {
                Ok(n) => {
                    remaining -= n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}
