//! Request bodies: byte streams for the blob store, small bodies read whole,
//! and the bounded drain of a refused request's body.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use berth_registry::ByteStream;
use futures_util::StreamExt;
use http::HeaderMap;
use http::header::EXPECT;
use http_body_util::BodyExt;

/// At most this much of a refused request's body is read before answering.
const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// ... and for at most this long.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

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
/// `Ok(None)` means the limit was exceeded; the rest stays in `body`, for
/// [`drain`].
pub async fn read_limited(body: &mut Body, limit: usize, idle: Duration) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(frame)) => frame.map_err(io::Error::other)?,
            Ok(None) => return Ok(Some(out)),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "request body idle timeout")),
        };
        let Ok(chunk) = frame.into_data() else { continue };
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
}

/// Reads and discards the rest of a refused request's body (at most 8 MiB,
/// for at most 5 s) before the answer goes out. Answered and closed while
/// still sending, a client that reads only after sending everything
/// (Python's http.client, some Go paths) sees a broken pipe or a reset
/// instead of the error. A body declared larger than that is not read at
/// all: the connection must close anyway, and reading part of it is waste.
pub async fn drain(body: &mut Body) {
    if body.is_end_stream() || body.size_hint().lower() > DRAIN_MAX_BYTES {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > DRAIN_MAX_BYTES {
                return;
            }
        }
    })
    .await;
}

/// [`drain`] for a body nothing has read yet, unless the client waits for
/// `100 Continue`: then it has sent nothing and, answered first, never will
/// (reading would ask it for the body).
pub async fn drain_unread(headers: &HeaderMap, body: &mut Body) {
    let waits = headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        drain(body).await;
    }
}

/// Answers a request refused before its body was read (see [`drain_unread`]).
pub async fn refuse(req: Request, answer: impl IntoResponse) -> Response {
    let (parts, mut body) = req.into_parts();
    drain_unread(&parts.headers, &mut body).await;
    answer.into_response()
}
