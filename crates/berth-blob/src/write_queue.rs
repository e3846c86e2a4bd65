//! The queue between an upload's request body (read on the async side) and
//! the thread that hashes and writes it, bounded in bytes.
//!
//! Every queued chunk is private memory, and more: a chunk split from an
//! HTTP read buffer keeps that whole buffer allocated until it is written.
//! A bound in chunks would cost whatever the body's source makes a chunk
//! (hyper's adaptive reads reach ~400 KiB: 16 of them were 14 MiB of
//! private memory during a 256 MiB push), so the bound is in bytes, with
//! each chunk charged at least [`MIN_CHARGE`] for the buffer behind it.
//! Smaller reads are not the cure: capped at 64 KiB (hyper's
//! `max_buf_size`), pushes were 1.4–1.7× slower for 20 % more server CPU.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Bytes queued at most. Hashing and writing keep pace with a loopback
/// socket on average (each takes about as long per byte); the queue only
/// absorbs their jitter, and a few socket reads' worth does that.
const QUEUE_BYTES: usize = 512 * 1024;
/// What a chunk is charged at least: the smallest buffer a body's bytes
/// are read into (hyper's first read size).
const MIN_CHARGE: usize = 8 * 1024;

/// A chunk and its share of the queue's room, given back once written.
pub(crate) struct Queued {
    pub(crate) chunk: Bytes,
    _room: OwnedSemaphorePermit,
}

/// The async end: waits for room before queueing a chunk.
pub(crate) struct ChunkSender {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
}

/// The writer gave up (its error is what the caller reports).
#[derive(Debug)]
pub(crate) struct WriterGone;

impl ChunkSender {
    pub(crate) async fn send(&self, chunk: Bytes) -> Result<(), WriterGone> {
        let charge = chunk.len().clamp(MIN_CHARGE, QUEUE_BYTES) as u32;
        // The semaphore is never closed; the writer leaving shows as a failed send.
        let room = self.room.clone().acquire_many_owned(charge).await.map_err(|_| WriterGone)?;
        self.tx.send(Queued { chunk, _room: room }).map_err(|_| WriterGone)
    }
}

/// A queue holding at most [`QUEUE_BYTES`]; the receiver is read with
/// `blocking_recv` on the writing thread.
pub(crate) fn write_queue() -> (ChunkSender, mpsc::UnboundedReceiver<Queued>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ChunkSender { tx, room: Arc::new(Semaphore::new(QUEUE_BYTES)) }, rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn chunk(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[tokio::test]
    async fn holds_at_most_its_bytes_and_frees_room_as_chunks_are_written() {
        let (tx, mut rx) = write_queue();
        let half = QUEUE_BYTES / 2;
        tx.send(chunk(half)).await.expect("room");
        tx.send(chunk(half)).await.expect("room");
        let full = tokio::time::timeout(Duration::from_millis(50), tx.send(chunk(1))).await;
        assert!(full.is_err(), "a full queue makes the sender wait");
        drop(rx.recv().await.expect("queued"));
        tokio::time::timeout(Duration::from_secs(5), tx.send(chunk(1))).await.expect("room again").expect("sent");
    }

    #[tokio::test]
    async fn small_chunks_are_charged_for_their_buffer() {
        let (tx, _rx) = write_queue();
        for _ in 0..QUEUE_BYTES / MIN_CHARGE {
            tx.send(chunk(1)).await.expect("room");
        }
        let full = tokio::time::timeout(Duration::from_millis(50), tx.send(chunk(1))).await;
        assert!(full.is_err());
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_queue_still_passes_and_a_gone_writer_fails_the_send() {
        let (tx, rx) = write_queue();
        tx.send(chunk(QUEUE_BYTES * 2)).await.expect("an empty queue takes any chunk");
        drop(rx);
        assert!(tx.send(chunk(1)).await.is_err());
    }
}
