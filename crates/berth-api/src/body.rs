//! Request bodies as byte streams for the blob store.

use std::io;
use std::time::Duration;

use axum::body::Body;
use berth_blob::ByteStream;
use futures_util::StreamExt;

/// Turns a request body into a stream that fails if the client sends
/// nothing for `idle` (a stalled upload must not hold a connection forever).
pub fn byte_stream(body: Body, idle: Duration) -> ByteStream {
    let inner = body.into_data_stream();
    Box::pin(futures_util::stream::unfold(inner, move |mut inner| async move {
        match tokio::time::timeout(idle, inner.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), inner)),
            Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), inner)),
            Ok(None) => None,
            Err(_) => Some((Err(io::Error::new(io::ErrorKind::TimedOut, "request body idle timeout")), inner)),
        }
    }))
}

/// Reads a small body (a manifest) fully, refusing more than `limit` bytes.
/// `Ok(None)` means the limit was exceeded.
pub async fn read_limited(body: Body, limit: usize, idle: Duration) -> io::Result<Option<Vec<u8>>> {
    let mut stream = byte_stream(body, idle);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}
