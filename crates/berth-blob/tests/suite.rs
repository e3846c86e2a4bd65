//! One suite for every blob store backend: each case runs on the
//! filesystem backend always, and on S3 when `BERTH_TEST_S3_ENDPOINT` names
//! an S3-compatible server (CI starts one; otherwise the S3 cases say
//! loudly that they did not run).

use std::io;
use std::sync::Arc;

use berth_blob::{
    BlobBody, BlobError, BlobStore, ByteRange, ByteStream, FsBlobStore, S3BlobStore, S3Settings, UploadCursor,
};
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures_util::{StreamExt, stream};

/// A store under test and what must outlive it.
struct Fixture {
    store: Arc<dyn BlobStore>,
    _dir: Option<tempfile::TempDir>,
    /// Part size the backend uses (so cases can cross part boundaries).
    part: usize,
}

fn fs_store() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).unwrap();
    Some(Fixture { store: Arc::new(store), _dir: Some(dir), part: 1 << 20 })
}

fn s3_store() -> Option<Fixture> {
    let Ok(endpoint) = std::env::var("BERTH_TEST_S3_ENDPOINT") else {
        eprintln!("NOT RUN: BERTH_TEST_S3_ENDPOINT is not set; S3 blob store tests skipped");
        return None;
    };
    let part = 5 * 1024 * 1024;
    let settings = S3Settings {
        bucket: std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "berth-test".into()),
        prefix: format!("blob-suite/{}", uuid::Uuid::new_v4()),
        region: "us-east-1".into(),
        endpoint,
        access_key_id: std::env::var("BERTH_TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        secret_access_key: std::env::var("BERTH_TEST_S3_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
        path_style: true,
        allow_http: true,
        part_size: part,
        redirect: None,
        read_timeout: std::time::Duration::from_secs(120),
    };
    Some(Fixture { store: Arc::new(S3BlobStore::open(&settings).unwrap()), _dir: None, part })
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let f = super::fs_store().unwrap();
                super::$case(&f).await;
            })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(f) = super::s3_store() {
                    super::$case(&f).await;
                }
            })*
        }
    };
}

suite!(
    upload_in_chunks_then_commit_and_read_ranges,
    failed_append_is_discarded_on_retry,
    empty_upload_and_duplicate_commit,
    lost_upload_data_is_reported,
    writable_check,
    many_small_appends_across_part_boundaries,
    upload_read_returns_everything_appended,
    abort_removes_upload_data,
    commit_is_idempotent,
    append_without_a_hasher_stores_the_same_bytes,
);

fn body(parts: &[&[u8]]) -> ByteStream {
    let owned: Vec<io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
    Box::pin(stream::iter(owned))
}

async fn collect(s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

async fn read_all(store: &dyn BlobStore, d: &Digest, range: Option<ByteRange>) -> Vec<u8> {
    match store.read(d, range).await.unwrap().body {
        BlobBody::Stream(s) => collect(s).await,
        BlobBody::Redirect(u) => panic!("unexpected redirect to {u}"),
    }
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn upload_in_chunks_then_commit_and_read_ranges(f: &Fixture) {
    let s = &*f.store;
    let u = id();
    let c0 = s.upload_start(&u).await.unwrap();
    let (c1, h) =
        s.upload_append(&u, &c0, body(&[b"hello ", b"wor"]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    assert_eq!(c1.offset, 9);
    let (c2, h) = s.upload_append(&u, &c1, body(&[b"ld"]), h).await.unwrap();
    let digest = h.unwrap().finish();
    assert_eq!(digest, Digest::sha256_of(b"hello world"));
    assert_eq!(s.stat(&digest).await.unwrap(), None);
    s.upload_commit(&u, &c2, &digest).await.unwrap();
    assert_eq!(s.stat(&digest).await.unwrap(), Some(11));
    assert_eq!(read_all(s, &digest, None).await, b"hello world");
    assert_eq!(read_all(s, &digest, Some(ByteRange { start: 6, end: 10 })).await, b"world");
    assert!(s.list().await.unwrap().iter().any(|b| b.digest == digest && b.size == 11));
    s.delete(&digest).await.unwrap();
    assert!(matches!(s.read(&digest, None).await, Err(BlobError::NotFound)));
    s.delete(&digest).await.unwrap();
}

async fn failed_append_is_discarded_on_retry(f: &Fixture) {
    let s = &*f.store;
    let u = id();
    let c0 = s.upload_start(&u).await.unwrap();
    let (c1, h) = s.upload_append(&u, &c0, body(&[b"abc"]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    let garbage = data(9, f.part + 1000);
    let failing: ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from(garbage)),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client left")),
    ]));
    let err = s.upload_append(&u, &c1, failing, h.clone()).await.unwrap_err();
    assert!(matches!(err, BlobError::Source(_)));
    // Retrying from the last good cursor drops whatever the failed request stored.
    let (c2, h) = s.upload_append(&u, &c1, body(&[b"def"]), h).await.unwrap();
    assert_eq!(c2.offset, 6);
    let d = h.unwrap().finish();
    assert_eq!(d, Digest::sha256_of(b"abcdef"));
    s.upload_commit(&u, &c2, &d).await.unwrap();
    assert_eq!(read_all(s, &d, None).await, b"abcdef");
}

async fn empty_upload_and_duplicate_commit(f: &Fixture) {
    let s = &*f.store;
    let empty = Digest::sha256_of(b"");
    let u = id();
    let c = s.upload_start(&u).await.unwrap();
    s.upload_commit(&u, &c, &empty).await.unwrap();
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
    assert_eq!(read_all(s, &empty, None).await, b"");
    // The same content committed again keeps one copy and removes the upload.
    let u2 = id();
    let c = s.upload_start(&u2).await.unwrap();
    let (c, _) = s.upload_append(&u2, &c, body(&[]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    s.upload_commit(&u2, &c, &empty).await.unwrap();
    let leftovers = s.list_uploads(i64::MAX).await.unwrap();
    assert!(!leftovers.contains(&u) && !leftovers.contains(&u2), "{leftovers:?}");
}

async fn lost_upload_data_is_reported(f: &Fixture) {
    let s = &*f.store;
    // Progress the store never saw (as after losing the upload's data).
    let fs_cursor = UploadCursor { offset: 5, state: String::new() };
    let s3_cursor = UploadCursor { offset: 5, state: r#"{"tail":5}"#.into() };
    let cursor = if s.backend() == "s3" { s3_cursor } else { fs_cursor };
    let u = id();
    let err = s.upload_append(&u, &cursor, body(&[b"x"]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap_err();
    assert!(matches!(err, BlobError::UploadLost), "{err:?}");
    let err = s.upload_commit(&u, &cursor, &Digest::sha256_of(b"x")).await.unwrap_err();
    assert!(matches!(err, BlobError::UploadLost), "{err:?}");
    assert!(matches!(s.upload_start("../etc").await, Err(BlobError::UploadLost)));
    s.upload_abort(&u, &cursor).await.unwrap();
}

async fn writable_check(f: &Fixture) {
    f.store.check_writable().await.unwrap();
}

/// Many requests with chunks smaller than a part, crossing part boundaries:
/// exercises S3's tail objects and multipart parts.
async fn many_small_appends_across_part_boundaries(f: &Fixture) {
    let s = &*f.store;
    let all = data(7, 2 * f.part + 12_345);
    let u = id();
    let mut cursor = s.upload_start(&u).await.unwrap();
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let step = f.part / 3 + 17;
    for piece in all.chunks(step) {
        let (c, h) = s
            .upload_append(&u, &cursor, body(&[&piece[..piece.len() / 2], &piece[piece.len() / 2..]]), Some(hasher))
            .await
            .unwrap();
        cursor = c;
        hasher = h.unwrap();
    }
    assert_eq!(cursor.offset, all.len() as u64);
    let d = hasher.finish();
    assert_eq!(d, Digest::sha256_of(&all));
    s.upload_commit(&u, &cursor, &d).await.unwrap();
    assert_eq!(read_all(s, &d, None).await, all);
    let r = ByteRange { start: f.part as u64 - 10, end: f.part as u64 + 9 };
    assert_eq!(read_all(s, &d, Some(r)).await, &all[f.part - 10..f.part + 10]);
}

async fn upload_read_returns_everything_appended(f: &Fixture) {
    let s = &*f.store;
    let all = data(3, f.part + 777);
    let u = id();
    let c0 = s.upload_start(&u).await.unwrap();
    let (c1, _) = s.upload_append(&u, &c0, body(&[&all[..100]]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    let (c2, _) = s.upload_append(&u, &c1, body(&[&all[100..]]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    assert_eq!(collect(s.upload_read(&u, &c2).await.unwrap()).await, all);
    // Finishing with another algorithm after reading back still commits.
    let d = Digest::of(Algorithm::Sha512, &all);
    s.upload_commit(&u, &c2, &d).await.unwrap();
    assert_eq!(read_all(s, &d, None).await, all);
}

async fn abort_removes_upload_data(f: &Fixture) {
    let s = &*f.store;
    let all = data(5, f.part + 10);
    let u = id();
    let c0 = s.upload_start(&u).await.unwrap();
    let (c1, _) = s.upload_append(&u, &c0, body(&[&all]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    assert!(s.list_uploads(i64::MAX).await.unwrap().contains(&u));
    s.upload_abort(&u, &c1).await.unwrap();
    assert!(!s.list_uploads(i64::MAX).await.unwrap().contains(&u));
    s.upload_abort(&u, &c1).await.unwrap();
}

/// A caller that verifies the bytes itself (the pull-through fetch) appends
/// with no hasher: the store keeps the bytes all the same and hands no hasher back.
async fn append_without_a_hasher_stores_the_same_bytes(f: &Fixture) {
    let s = &*f.store;
    let all = data(13, 2 * f.part + 99);
    let u = id();
    let c0 = s.upload_start(&u).await.unwrap();
    let (c1, h) = s.upload_append(&u, &c0, body(&[&all[..f.part + 1]]), None).await.unwrap();
    assert!(h.is_none());
    let (c2, h) = s.upload_append(&u, &c1, body(&[&all[f.part + 1..]]), None).await.unwrap();
    assert!(h.is_none());
    assert_eq!(c2.offset, all.len() as u64);
    let d = Digest::sha256_of(&all);
    s.upload_commit(&u, &c2, &d).await.unwrap();
    assert_eq!(read_all(s, &d, None).await, all);
}

async fn commit_is_idempotent(f: &Fixture) {
    let s = &*f.store;
    let all = data(11, f.part + 5);
    let u = id();
    let c0 = s.upload_start(&u).await.unwrap();
    let (c1, h) = s.upload_append(&u, &c0, body(&[&all]), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    let d = h.unwrap().finish();
    s.upload_commit(&u, &c1, &d).await.unwrap();
    // A crash after committing but before the database noticed: the retry succeeds.
    s.upload_commit(&u, &c1, &d).await.unwrap();
    assert_eq!(read_all(s, &d, None).await, all);
}
