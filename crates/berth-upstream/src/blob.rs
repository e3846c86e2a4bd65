//! Blobs, streamed: never held whole in memory, hashed on the way through,
//! and refused at the end if the bytes do not match the digest asked for.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_oci::{Digest, Hasher, RepositoryName};
use bytes::Bytes;
use futures_util::Stream;
use reqwest::Method;

use crate::client::{Call, UpstreamClient, content_length};
use crate::error::UpstreamError;
use crate::manifest::pull_scope;

type Inner = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A blob's body as a stream of chunks, with its length when the upstream
/// sent one.
///
/// The stream ends with an error instead of a clean end when the bytes
/// break off, stall for longer than the idle timeout, exceed the length, or
/// do not hash to the digest asked for: a consumer that commits only after a
/// clean end never commits wrong bytes.
pub struct BlobStream {
    client: UpstreamClient,
    what: String,
    inner: Inner,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    hasher: Option<Hasher>,
    digest: Digest,
    length: Option<u64>,
    expected: Option<u64>,
    received: u64,
    /// The idle timer runs only while the consumer waits on the upstream,
    /// not while it takes its time with the last chunk.
    waiting: bool,
    done: bool,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("what", &self.what)
            .field("length", &self.length)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl BlobStream {
    /// `Content-Length` of the upstream's answer.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes passed on so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Holds the blob to `size` (from the descriptor that named it): a
    /// different `Content-Length` is refused now, a body that runs past it
    /// as soon as it does, which bounds an endless chunked body.
    pub fn expect_size(mut self, size: u64) -> Result<Self, UpstreamError> {
        if let Some(len) = self.length
            && len != size
        {
            return Err(self.client.invalid(&self.what, format!("Content-Length {len}, but the blob is {size} bytes")));
        }
        self.expected = Some(size);
        Ok(self)
    }

    fn fail(&mut self, e: UpstreamError) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }

    /// Checks at the clean end: length and digest.
    fn finish(&mut self) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        self.done = true;
        let bound = self.expected.or(self.length);
        if let Some(size) = bound
            && size != self.received
        {
            let e = self.client.invalid(&self.what, format!("ended after {} of {size} bytes", self.received));
            return Poll::Ready(Some(Err(e)));
        }
        let got = self.hasher.take().expect("finish runs once").finish();
        if got != self.digest {
            let e = self.client.invalid(&self.what, format!("the bytes received hash to {got}"));
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(None)
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            this.waiting = true;
            let deadline = tokio::time::Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                if let Some(size) = this.expected.or(this.length)
                    && this.received > size
                {
                    let e = this.client.invalid(&this.what, format!("body runs past {size} bytes"));
                    return this.fail(e);
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                this.waiting = false;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = this.client.unavailable(
                    &this.what,
                    None,
                    format!("body broke off: {}", crate::client::with_causes("error reading the body", &e)),
                );
                this.fail(e)
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    let detail = format!("body stalled: no data for {:?} after {} bytes", this.idle, this.received);
                    let e = this.client.unavailable(&this.what, None, detail);
                    return this.fail(e);
                }
                Poll::Pending
            }
        }
    }
}

impl UpstreamClient {
    /// The blob's bytes as a verified stream (see [`BlobStream`]). Redirects
    /// (to object storage) are followed without the Authorization header.
    pub async fn get_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobStream, UpstreamError> {
        let what = format!("blob {repo}@{digest}");
        let call = Call {
            method: Method::GET,
            url: self.endpoint(&format!("{repo}/blobs/{digest}")),
            accept: None,
            scope: pull_scope(repo),
            what: what.clone(),
        };
        let resp = self.send(&call).await?;
        let resp = self.check(resp, &what).await?;
        let length = content_length(resp.headers());
        let idle = self.inner.idle_timeout;
        Ok(BlobStream {
            client: self.clone(),
            what,
            inner: Box::pin(resp.bytes_stream()),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            hasher: Some(Hasher::new(digest.algorithm())),
            digest: digest.clone(),
            length,
            expected: None,
            received: 0,
            waiting: false,
            done: false,
        })
    }
}
