//! Service-level tests over real stores (SQLite file + filesystem in a tempdir).

use std::io;
use std::sync::Arc;

use berth_blob::{ByteStream, FsBlobStore};
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};
use berth_oci::media_type::OCI_MANIFEST;
use berth_oci::{Algorithm, Digest, Reference, RepositoryName, Tag};
use bytes::Bytes;

use crate::uploads::ChunkInfo;
use crate::{ImmutableTags, Policy, Registry, RegistryError};

struct Fixture {
    registry: Registry,
    _dir: tempfile::TempDir,
}

async fn fixture(policy: Policy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("berth.db"))).await.unwrap();
    meta.migrate().await.unwrap();
    let blobs = FsBlobStore::open(dir.path().join("blobs")).unwrap();
    Fixture { registry: Registry::new(Arc::new(meta), Arc::new(blobs), policy), _dir: dir }
}

fn repo(s: &str) -> RepositoryName {
    RepositoryName::parse(s).unwrap()
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = data.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let d = |m: &str, b: &[u8]| serde_json::json!({"mediaType": m, "digest": Digest::sha256_of(b).as_str(), "size": b.len()});
    let layers: Vec<_> = layers.iter().map(|l| d("application/vnd.oci.image.layer.v1.tar", l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": d("application/vnd.oci.image.config.v1+json", config), "layers": layers,
    }))
    .unwrap()
}

#[tokio::test]
async fn chunked_upload_survives_a_new_registry_instance() {
    let f = fixture(Policy::default()).await;
    let r = repo("a/b");
    let data = b"hello chunked world".to_vec();
    let s = f.registry.start_upload(&r, Algorithm::Sha256).await.unwrap();
    let st = f
        .registry
        .append_upload(&r, &s.id, body(&data[..5]), ChunkInfo { range: Some((0, 4)), length: Some(5) })
        .await
        .unwrap();
    assert_eq!(st.offset, 5);
    // Out of order: refused, session intact.
    let err = f.registry.append_upload(&r, &s.id, body(b"xx"), ChunkInfo { range: Some((9, 10)), length: None }).await;
    assert!(matches!(err, Err(RegistryError::RangeNotSatisfiable { offset: 5 })));
    // A second service over the same stores continues the session (the hasher state is persisted).
    let other = Registry::new(f.registry.meta().clone(), f.registry.blob_store().clone(), Policy::default());
    other.append_upload(&r, &s.id, body(&data[5..]), ChunkInfo::default()).await.unwrap();
    let digest = Digest::sha256_of(&data);
    assert_eq!(other.finish_upload(&r, &s.id, &digest, None).await.unwrap(), data.len() as u64);
    assert_eq!(f.registry.blob_size(&r, &digest).await.unwrap(), data.len() as u64);
    assert!(matches!(f.registry.upload_status(&r, &s.id).await, Err(RegistryError::UploadUnknown)));
}

#[tokio::test]
async fn finishing_with_another_algorithm_rehashes() {
    let f = fixture(Policy::default()).await;
    let r = repo("alg");
    let data = vec![7u8; 10_000];
    let s = f.registry.start_upload(&r, Algorithm::Sha256).await.unwrap();
    f.registry.append_upload(&r, &s.id, body(&data), ChunkInfo::default()).await.unwrap();
    let sha512 = Digest::of(Algorithm::Sha512, &data);
    f.registry.finish_upload(&r, &s.id, &sha512, None).await.unwrap();
    assert_eq!(f.registry.blob_size(&r, &sha512).await.unwrap(), 10_000);
}

#[tokio::test]
async fn digest_mismatch_keeps_nothing_visible() {
    let f = fixture(Policy::default()).await;
    let r = repo("bad");
    let wrong = Digest::sha256_of(b"something else");
    let err = f.registry.put_blob(&r, &wrong, body(b"actual bytes"), None).await;
    assert!(matches!(err, Err(RegistryError::DigestMismatch { .. })));
    assert!(matches!(f.registry.blob_size(&r, &wrong).await, Err(RegistryError::BlobUnknown)));
    assert!(f.registry.blob_store().list().await.unwrap().is_empty());
    assert!(f.registry.blob_store().list_uploads(i64::MAX).await.unwrap().is_empty(), "temporary data removed");
}

#[tokio::test]
async fn declared_lengths_are_enforced() {
    let f = fixture(Policy::default()).await;
    let r = repo("len");
    let d = Digest::sha256_of(b"12345");
    assert!(matches!(f.registry.put_blob(&r, &d, body(b"12345"), Some(4)).await, Err(RegistryError::SizeInvalid(_))));
    assert!(matches!(f.registry.put_blob(&r, &d, body(b"12345"), Some(6)).await, Err(RegistryError::SizeInvalid(_))));
    let s = f.registry.start_upload(&r, Algorithm::Sha256).await.unwrap();
    let bad = ChunkInfo { range: Some((0, 9)), length: Some(5) };
    assert!(matches!(
        f.registry.append_upload(&r, &s.id, body(b"12345"), bad).await,
        Err(RegistryError::SizeInvalid(_))
    ));
    assert_eq!(f.registry.upload_status(&r, &s.id).await.unwrap().offset, 0);
}

#[tokio::test]
async fn uploads_belong_to_their_repository() {
    let f = fixture(Policy::default()).await;
    let s = f.registry.start_upload(&repo("mine"), Algorithm::Sha256).await.unwrap();
    assert!(matches!(f.registry.upload_status(&repo("theirs"), &s.id).await, Err(RegistryError::UploadUnknown)));
    assert!(matches!(f.registry.cancel_upload(&repo("theirs"), &s.id).await, Err(RegistryError::UploadUnknown)));
    f.registry.cancel_upload(&repo("mine"), &s.id).await.unwrap();
}

#[tokio::test]
async fn mounts_and_deletes() {
    let f = fixture(Policy::default()).await;
    let (src, dst) = (repo("src"), repo("dst"));
    let d = Digest::sha256_of(b"layer");
    f.registry.put_blob(&src, &d, body(b"layer"), Some(5)).await.unwrap();
    assert_eq!(f.registry.mount_blob(&dst, &d, Some(&repo("nowhere"))).await.unwrap(), None);
    assert_eq!(f.registry.mount_blob(&dst, &d, Some(&src)).await.unwrap(), Some(5));
    f.registry.delete_blob(&src, &d).await.unwrap();
    assert!(matches!(f.registry.blob_size(&src, &d).await, Err(RegistryError::BlobUnknown)));
    assert_eq!(f.registry.blob_size(&dst, &d).await.unwrap(), 5, "other repositories keep their link");
    assert_eq!(f.registry.mount_blob(&repo("third"), &d, None).await.unwrap(), Some(5), "anonymous mount");
}

#[tokio::test]
async fn manifests_need_their_blobs_unless_sparse() {
    let f = fixture(Policy::default()).await;
    let r = repo("img");
    let m = manifest(b"{}", &[b"layer"]);
    let tag = Reference::Tag(Tag::parse("v1").unwrap());
    let err = f.registry.put_manifest(&r, &tag, m.clone(), Some(OCI_MANIFEST), vec![], None).await.unwrap_err();
    let RegistryError::ManifestBlobUnknown(p) = err else { panic!("{err:?}") };
    assert_eq!(p.missing.len(), 2);
    for b in [&b"{}"[..], b"layer"] {
        f.registry.put_blob(&r, &Digest::sha256_of(b), body(b), None).await.unwrap();
    }
    let pushed = f.registry.put_manifest(&r, &tag, m.clone(), Some(OCI_MANIFEST), vec![], None).await.unwrap();
    assert_eq!(pushed.digest, Digest::sha256_of(&m));
    let got = f.registry.get_manifest(&r, &tag, true).await.unwrap();
    assert_eq!(got.content, m);

    let sparse = fixture(Policy { allow_sparse: true, ..Policy::default() }).await;
    sparse.registry.put_manifest(&r, &tag, m, None, vec![], None).await.unwrap();
}

#[tokio::test]
async fn manifest_limits_and_digests() {
    let f = fixture(Policy { allow_sparse: true, max_manifest_size: 100, ..Policy::default() }).await;
    let r = repo("lim");
    let m = manifest(b"{}", &[]);
    let tag = Reference::Tag(Tag::parse("t").unwrap());
    assert!(matches!(
        f.registry.put_manifest(&r, &tag, m.clone(), None, vec![], None).await,
        Err(RegistryError::ManifestTooLarge { limit: 100, .. })
    ));
    let f = fixture(Policy { allow_sparse: true, ..Policy::default() }).await;
    let wrong = Reference::Digest(Digest::sha256_of(b"other"));
    assert!(matches!(
        f.registry.put_manifest(&r, &wrong, m.clone(), None, vec![], None).await,
        Err(RegistryError::DigestMismatch { .. })
    ));
    let by512 = Reference::Digest(Digest::of(Algorithm::Sha512, &m));
    let extra = vec![Tag::parse("a").unwrap(), Tag::parse("b").unwrap()];
    let pushed = f.registry.put_manifest(&r, &by512, m.clone(), None, extra, None).await.unwrap();
    assert_eq!(pushed.tags.len(), 2);
    let via_tag = f.registry.get_manifest(&r, &Reference::Tag(Tag::parse("a").unwrap()), false).await.unwrap();
    assert_eq!(
        via_tag.digest.algorithm(),
        Algorithm::Sha512,
        "a tag set by a sha512 push resolves to the sha512 digest"
    );
    assert!(matches!(
        f.registry.put_manifest(&r, &tag, b"{".to_vec(), None, vec![], None).await,
        Err(RegistryError::ManifestInvalid(_))
    ));
}

#[tokio::test]
async fn immutable_tags_hold() {
    let policy =
        Policy { allow_sparse: true, immutable_tags: ImmutableTags::new(&["*:v*"]).unwrap(), ..Policy::default() };
    let f = fixture(policy).await;
    let r = repo("imm");
    let v1 = Reference::Tag(Tag::parse("v1").unwrap());
    let (m1, m2) = (manifest(b"{}", &[b"one"]), manifest(b"{}", &[b"two"]));
    f.registry.put_manifest(&r, &v1, m1.clone(), None, vec![], None).await.unwrap();
    f.registry.put_manifest(&r, &v1, m1.clone(), None, vec![], None).await.expect("same digest again is fine");
    let err = f.registry.put_manifest(&r, &v1, m2.clone(), None, vec![], None).await.unwrap_err();
    assert!(matches!(err, RegistryError::ImmutableTag { ref rule, .. } if rule == "*:v*"), "{err:?}");
    assert!(matches!(f.registry.delete_manifest(&r, &v1).await, Err(RegistryError::ImmutableTag { .. })));
    let by_digest = Reference::Digest(Digest::sha256_of(&m1));
    assert!(matches!(f.registry.delete_manifest(&r, &by_digest).await, Err(RegistryError::ImmutableTag { .. })));
    let latest = Reference::Tag(Tag::parse("latest").unwrap());
    f.registry.put_manifest(&r, &latest, m1, None, vec![], None).await.unwrap();
    f.registry.put_manifest(&r, &latest, m2, None, vec![], None).await.expect("mutable tags move");
}

mod maintenance;
