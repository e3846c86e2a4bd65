//! Service-level tests over real stores, on SQLite and on Postgres (see
//! [`backends`]), each with a filesystem blob store in a tempdir.

mod backends;
mod maintenance;

use std::io;

use berth_blob::ByteStream;
use berth_oci::media_type::OCI_MANIFEST;
use berth_oci::{Algorithm, Digest, Reference, RepositoryName, Tag};
use bytes::Bytes;

use self::backends::{Db, Stores, on_both_databases};
use crate::blobs::{AnyoneMounts, Mount, MountAuthorizer, RangeSpec};
use crate::uploads::ChunkInfo;
use crate::{ImmutableTags, Policy, Registry, RegistryError};

on_both_databases!(
    chunked_upload_survives_a_new_registry_instance,
    finishing_with_another_algorithm_rehashes,
    digest_mismatch_keeps_nothing_visible,
    whole_blob_put_on_an_empty_session,
    declared_lengths_are_enforced,
    uploads_belong_to_their_repository,
    mounts_and_deletes,
    mounts_ask_the_authorizer,
    blob_reads_check_visibility_and_ranges,
    manifests_need_their_blobs_unless_sparse,
    manifest_limits_and_digests,
    immutable_tags_hold,
);

struct Fixture {
    registry: Registry,
    _stores: Stores,
}

async fn fixture(db: Db, policy: Policy) -> Fixture {
    let stores = Stores::open(db).await;
    Fixture { registry: Registry::new(stores.meta(), stores.blobs.clone(), policy), _stores: stores }
}

async fn size(r: &Registry, repo: &RepositoryName, digest: &Digest) -> Result<u64, RegistryError> {
    r.stat_blob(repo, digest, None).await.map(|s| s.size)
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

async fn chunked_upload_survives_a_new_registry_instance(db: Db) {
    let f = fixture(db, Policy::default()).await;
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
    assert_eq!(size(&f.registry, &r, &digest).await.unwrap(), data.len() as u64);
    assert!(matches!(f.registry.upload_status(&r, &s.id).await, Err(RegistryError::UploadUnknown)));
}

async fn finishing_with_another_algorithm_rehashes(db: Db) {
    let f = fixture(db, Policy::default()).await;
    let r = repo("alg");
    let data = vec![7u8; 10_000];
    let s = f.registry.start_upload(&r, Algorithm::Sha256).await.unwrap();
    f.registry.append_upload(&r, &s.id, body(&data), ChunkInfo::default()).await.unwrap();
    let sha512 = Digest::of(Algorithm::Sha512, &data);
    f.registry.finish_upload(&r, &s.id, &sha512, None).await.unwrap();
    assert_eq!(size(&f.registry, &r, &sha512).await.unwrap(), 10_000);
}

async fn digest_mismatch_keeps_nothing_visible(db: Db) {
    let f = fixture(db, Policy::default()).await;
    let r = repo("bad");
    let wrong = Digest::sha256_of(b"something else");
    let err = f.registry.put_blob(&r, &wrong, body(b"actual bytes"), None).await;
    assert!(matches!(err, Err(RegistryError::DigestMismatch { .. })));
    assert!(matches!(size(&f.registry, &r, &wrong).await, Err(RegistryError::BlobUnknown)));
    assert!(f.registry.blob_store().list().await.unwrap().is_empty());
    assert!(f.registry.blob_store().list_uploads(i64::MAX).await.unwrap().is_empty(), "temporary data removed");
}

/// A PUT carrying the whole blob on a session that received nothing skips
/// recording its progress when it succeeds, but a failed one leaves the
/// session where a recorded append would have: it can still be finished.
async fn whole_blob_put_on_an_empty_session(db: Db) {
    let f = fixture(db, Policy::default()).await;
    let r = repo("whole");
    let data = b"one request".to_vec();
    let digest = Digest::sha256_of(&data);
    let s = f.registry.start_upload(&r, Algorithm::Sha256).await.unwrap();
    assert_eq!(
        f.registry.finish_upload(&r, &s.id, &digest, Some((body(&data), ChunkInfo::default()))).await.unwrap(),
        11
    );
    assert_eq!(size(&f.registry, &r, &digest).await.unwrap(), 11);
    assert!(matches!(f.registry.upload_status(&r, &s.id).await, Err(RegistryError::UploadUnknown)));

    let wrong = Digest::sha256_of(b"something else");
    let s = f.registry.start_upload(&r, Algorithm::Sha256).await.unwrap();
    let err = f.registry.finish_upload(&r, &s.id, &wrong, Some((body(&data), ChunkInfo::default()))).await;
    assert!(matches!(err, Err(RegistryError::DigestMismatch { .. })));
    assert_eq!(f.registry.upload_status(&r, &s.id).await.unwrap().offset, 11, "progress recorded on failure");
    assert_eq!(f.registry.finish_upload(&r, &s.id, &digest, None).await.unwrap(), 11);
    assert!(f.registry.blob_store().list_uploads(i64::MAX).await.unwrap().is_empty(), "temporary data moved");
}

async fn declared_lengths_are_enforced(db: Db) {
    let f = fixture(db, Policy::default()).await;
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

async fn uploads_belong_to_their_repository(db: Db) {
    let f = fixture(db, Policy::default()).await;
    let s = f.registry.start_upload(&repo("mine"), Algorithm::Sha256).await.unwrap();
    assert!(matches!(f.registry.upload_status(&repo("theirs"), &s.id).await, Err(RegistryError::UploadUnknown)));
    assert!(matches!(f.registry.cancel_upload(&repo("theirs"), &s.id).await, Err(RegistryError::UploadUnknown)));
    f.registry.cancel_upload(&repo("mine"), &s.id).await.unwrap();
}

async fn mounts_and_deletes(db: Db) {
    let f = fixture(db, Policy::default()).await;
    let (src, dst) = (repo("src"), repo("dst"));
    let d = Digest::sha256_of(b"layer");
    f.registry.put_blob(&src, &d, body(b"layer"), Some(5)).await.unwrap();
    assert_eq!(f.registry.mount_blob(&dst, &d, Some(&repo("nowhere"))).await.unwrap(), None);
    assert_eq!(f.registry.mount_blob(&dst, &d, Some(&src)).await.unwrap(), Some(5));
    f.registry.delete_blob(&src, &d).await.unwrap();
    assert!(matches!(size(&f.registry, &src, &d).await, Err(RegistryError::BlobUnknown)));
    assert_eq!(size(&f.registry, &dst, &d).await.unwrap(), 5, "other repositories keep their link");
    assert_eq!(f.registry.mount_blob(&repo("third"), &d, None).await.unwrap(), Some(5), "anonymous mount");
}

/// Answers as a caller allowed to pull `readable` and able to obtain pull on `obtainable`.
struct Rights {
    readable: Vec<RepositoryName>,
    obtainable: Vec<RepositoryName>,
}

impl MountAuthorizer for Rights {
    type Error = ();

    async fn may_pull(&self, repo: &RepositoryName) -> Result<bool, ()> {
        Ok(self.readable.contains(repo))
    }

    async fn could_obtain_pull(&self, repo: &RepositoryName) -> Result<bool, ()> {
        Ok(self.obtainable.contains(repo))
    }
}

async fn mounts_ask_the_authorizer(db: Db) {
    let f = fixture(db, Policy::default()).await;
    let (a, b, dst) = (repo("a/src"), repo("b/src"), repo("c/dst"));
    let d = Digest::sha256_of(b"shared");
    for r in [&a, &b] {
        f.registry.put_blob(r, &d, body(b"shared"), None).await.unwrap();
    }
    let none = Rights { readable: vec![], obtainable: vec![] };
    let only_b = Rights { readable: vec![b.clone()], obtainable: vec![] };
    let token_lacks_a = Rights { readable: vec![], obtainable: vec![a.clone()] };
    let mount = async |from: Option<&str>, who: &Rights| {
        f.registry.mount_or_upload(&dst, &d, from, who).await.map_err(|_| "mount failed")
    };
    // Without rights anywhere: an ordinary upload, and nothing visible.
    let Ok(Mount::Upload(session)) = mount(Some("a/src"), &none).await else { panic!("expected an upload") };
    assert_eq!(session.offset, 0);
    assert!(matches!(size(&f.registry, &dst, &d).await, Err(RegistryError::BlobUnknown)));
    // `from` names one the caller may not pull: not taken from another either.
    assert!(matches!(mount(Some("a/src"), &only_b).await, Ok(Mount::Upload(_))));
    // An invalid `from` holds nothing.
    assert!(matches!(mount(Some("Not Valid"), &only_b).await, Ok(Mount::Upload(_))));
    // A bearer token lacking pull its holder could get: told which scope to ask for.
    assert_eq!(mount(None, &token_lacks_a).await, Ok(Mount::NeedsScope { source: a.clone() }));
    // Without `from`, any repository the caller may pull.
    assert_eq!(mount(None, &only_b).await, Ok(Mount::Mounted { source: b.clone(), size: 6 }));
    assert_eq!(size(&f.registry, &dst, &d).await.unwrap(), 6);
    let other = repo("c/other");
    let mounted = f.registry.mount_or_upload(&other, &d, Some("a/src"), &AnyoneMounts).await.ok();
    assert_eq!(mounted, Some(Mount::Mounted { source: a, size: 6 }), "auth disabled: anyone mounts");
}

async fn blob_reads_check_visibility_and_ranges(db: Db) {
    use futures_util::StreamExt;
    let f = fixture(db, Policy::default()).await;
    let (mine, theirs) = (repo("mine"), repo("theirs"));
    let data = b"0123456789".to_vec();
    let d = Digest::sha256_of(&data);
    f.registry.put_blob(&mine, &d, body(&data), None).await.unwrap();
    let read = async |range| {
        let content = f.registry.read_blob(&mine, &d, range).await?;
        let crate::blobs::BlobBody::Stream(mut s) = content.body else { panic!("filesystem streams") };
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        Ok::<_, RegistryError>((content.stat, out))
    };
    let (stat, bytes) = read(None).await.unwrap();
    assert_eq!((stat.size, stat.range, bytes), (10, None, data.clone()));
    let (stat, bytes) = read(Some(RangeSpec::Last(3))).await.unwrap();
    assert_eq!((stat.size, stat.len(), bytes), (10, 3, b"789".to_vec()));
    assert!(matches!(read(Some(RangeSpec::From(10))).await, Err(RegistryError::BlobRangeNotSatisfiable { size: 10 })));
    // Visibility is the service's: another repository does not see the blob.
    assert!(matches!(f.registry.read_blob(&theirs, &d, None).await, Err(RegistryError::BlobUnknown)));
    assert!(matches!(f.registry.stat_blob(&theirs, &d, None).await, Err(RegistryError::BlobUnknown)));
    let stat = f.registry.stat_blob(&mine, &d, Some(RangeSpec::FromTo(2, 4))).await.unwrap();
    assert_eq!(stat.len(), 3);
}

async fn manifests_need_their_blobs_unless_sparse(db: Db) {
    let f = fixture(db, Policy::default()).await;
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

    let sparse = fixture(db, Policy { allow_sparse: true, ..Policy::default() }).await;
    sparse.registry.put_manifest(&r, &tag, m, None, vec![], None).await.unwrap();
}

async fn manifest_limits_and_digests(db: Db) {
    let f = fixture(db, Policy { allow_sparse: true, max_manifest_size: 100, ..Policy::default() }).await;
    let r = repo("lim");
    let m = manifest(b"{}", &[]);
    let tag = Reference::Tag(Tag::parse("t").unwrap());
    assert!(matches!(
        f.registry.put_manifest(&r, &tag, m.clone(), None, vec![], None).await,
        Err(RegistryError::ManifestTooLarge { limit: 100, .. })
    ));
    let f = fixture(db, Policy { allow_sparse: true, ..Policy::default() }).await;
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

async fn immutable_tags_hold(db: Db) {
    let policy =
        Policy { allow_sparse: true, immutable_tags: ImmutableTags::new(&["*:v*"]).unwrap(), ..Policy::default() };
    let f = fixture(db, policy).await;
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
