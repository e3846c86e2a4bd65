use std::io;

use berth_oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures_util::{StreamExt, stream};

use super::*;

fn body(parts: &[&'static [u8]]) -> ByteStream {
    Box::pin(stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()))
}

async fn collect(s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn store() -> (tempfile::TempDir, FsBlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn upload_in_chunks_then_commit_and_read_ranges() {
    let (_d, s) = store();
    let c0 = s.upload_start("u1").await.unwrap();
    let (c1, h) = s.upload_append("u1", &c0, body(&[b"hello ", b"wor"]), Hasher::new(Algorithm::Sha256)).await.unwrap();
    assert_eq!(c1.offset, 9);
    let (c2, h) = s.upload_append("u1", &c1, body(&[b"ld"]), h).await.unwrap();
    let digest = h.finish();
    assert_eq!(digest, Digest::sha256_of(b"hello world"));
    assert_eq!(s.stat(&digest).await.unwrap(), None);
    s.upload_commit("u1", &c2, &digest).await.unwrap();
    assert_eq!(s.stat(&digest).await.unwrap(), Some(11));
    let r = s.read(&digest, None).await.unwrap();
    assert_eq!(r.len, 11);
    let BlobBody::Stream(st) = r.body;
    assert_eq!(collect(st).await, b"hello world");
    let r = s.read(&digest, Some(ByteRange { start: 6, end: 10 })).await.unwrap();
    let BlobBody::Stream(st) = r.body;
    assert_eq!(collect(st).await, b"world");
    assert_eq!(s.list().await.unwrap().len(), 1);
    s.delete(&digest).await.unwrap();
    assert!(matches!(s.read(&digest, None).await, Err(BlobError::NotFound)));
}

#[tokio::test]
async fn failed_append_is_discarded_on_retry() {
    let (_d, s) = store();
    let c0 = s.upload_start("u2").await.unwrap();
    let (c1, h) = s.upload_append("u2", &c0, body(&[b"abc"]), Hasher::new(Algorithm::Sha256)).await.unwrap();
    let failing: ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"garbage")),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client left")),
    ]));
    let err = s.upload_append("u2", &c1, failing, h.clone()).await.unwrap_err();
    assert!(matches!(err, BlobError::Source(_)));
    // Retrying from the last good cursor drops the garbage.
    let (c2, h) = s.upload_append("u2", &c1, body(&[b"def"]), h).await.unwrap();
    assert_eq!(c2.offset, 6);
    let d = h.finish();
    assert_eq!(d, Digest::sha256_of(b"abcdef"));
    assert_eq!(collect(s.upload_read("u2", &c2).await.unwrap()).await, b"abcdef");
    s.upload_commit("u2", &c2, &d).await.unwrap();
    let BlobBody::Stream(st) = s.read(&d, None).await.unwrap().body;
    assert_eq!(collect(st).await, b"abcdef");
}

#[tokio::test]
async fn empty_upload_and_duplicate_commit() {
    let (_d, s) = store();
    let empty = Digest::sha256_of(b"");
    let c = s.upload_start("e1").await.unwrap();
    s.upload_commit("e1", &c, &empty).await.unwrap();
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
    // The same content committed again keeps one copy and removes the upload.
    let c = s.upload_start("e2").await.unwrap();
    let (c, _) = s.upload_append("e2", &c, body(&[]), Hasher::new(Algorithm::Sha256)).await.unwrap();
    s.upload_commit("e2", &c, &empty).await.unwrap();
    assert!(s.list_uploads(i64::MAX).await.unwrap().is_empty());
}

#[tokio::test]
async fn lost_upload_data_is_reported() {
    let (_d, s) = store();
    let cursor = UploadCursor { offset: 5, state: String::new() };
    let err = s.upload_append("gone", &cursor, body(&[b"x"]), Hasher::new(Algorithm::Sha256)).await.unwrap_err();
    assert!(matches!(err, BlobError::UploadLost));
    let err = s.upload_commit("gone", &cursor, &Digest::sha256_of(b"x")).await.unwrap_err();
    assert!(matches!(err, BlobError::UploadLost));
    assert!(matches!(s.upload_start("../etc").await, Err(BlobError::UploadLost)));
    s.upload_abort("gone", &cursor).await.unwrap();
}

#[tokio::test]
async fn writable_check() {
    let (_d, s) = store();
    s.check_writable().await.unwrap();
}
