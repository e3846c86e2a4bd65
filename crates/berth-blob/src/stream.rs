//! Moving bytes between async request bodies and blocking file I/O without
//! holding more than a few chunks in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::{Bytes, BytesMut};
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
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let result = read_full(&mut file, &mut buf).and_then(|n| {
                if n == 0 {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than recorded"))
                } else {
                    Ok(n)
                }
            });
            match result {
                Ok(n) => {
                    buf.truncate(n);
                    remaining -= n as u64;
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
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

/// Reads until `buf` is full or EOF.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
