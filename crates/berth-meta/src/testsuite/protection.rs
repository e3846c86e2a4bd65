//! Suite cases for deletes refused because something still needs the
//! content: a blob a manifest references (config or layer), and anything a
//! tag protected by an immutability rule reaches, through any number of
//! indexes. Also the races: a push relying on content while it is deleted.
//!
//! Each case takes a fresh, empty, migrated store; `meta_store_suite!` runs
//! them from its `protection` list (a unit test checks that list is complete).

use std::fmt::Debug;
use std::sync::Arc;

use berth_oci::Digest;

use super::{OCI_INDEX, blob, has_manifest, link, manifest, protect_releases, put, repo, tags};
use crate::{BlobRef, MetaError, MetaStore, NewManifest, Result, no_guard};

const ROUNDS: usize = 12;

fn image(seed: &str, blobs: &[&BlobRef]) -> NewManifest {
    NewManifest { blobs: blobs.iter().map(|b| (*b).clone()).collect(), ..manifest(seed) }
}

fn index_of(seed: &str, children: &[&NewManifest]) -> NewManifest {
    NewManifest {
        media_type: OCI_INDEX.to_owned(),
        manifests: children.iter().map(|m| m.digest.clone()).collect(),
        ..manifest(seed)
    }
}

/// `(digest, repository, tag, rule)` of a Protected error.
fn expect_protected<T: Debug>(result: Result<T>) -> (Digest, String, String, String) {
    match result {
        Err(MetaError::Protected { digest, repository, tag, rule }) => (digest, repository, tag, rule),
        other => panic!("expected a Protected error, got {other:?}"),
    }
}

/// `(digest, by)` of a Referenced error.
fn expect_referenced<T: Debug>(result: Result<T>) -> (Digest, Digest) {
    match result {
        Err(MetaError::Referenced { digest, by }) => (digest, by),
        other => panic!("expected a Referenced error, got {other:?}"),
    }
}

async fn linked(store: &dyn MetaStore, repository: &str, b: &BlobRef) -> bool {
    store.blob_size(&repo(repository), &b.digest).await.expect("blob_size") == Some(b.size)
}

pub async fn blob_delete_refused_while_a_manifest_references_it(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let (config, layer, loose) = (blob("config"), blob("layer"), blob("loose"));
    for b in [&config, &layer, &loose] {
        link(&*store, "acme/app", b).await;
    }
    let img = NewManifest { tags: tags(&["latest"]), ..image("img", &[&config, &layer]) };
    store.put_manifest(&r, &img, true, &protect_releases).await.expect("push");
    for b in [&config, &layer] {
        let refused = expect_referenced(store.unlink_blob(&r, &b.digest, &protect_releases).await);
        assert_eq!(refused, (b.digest.clone(), img.digest.clone()));
        assert!(linked(&*store, "acme/app", b).await, "a refused unlink keeps the link");
    }
    // An untagged manifest keeps its blobs just the same.
    let other = image("other", &[&layer]);
    put(&*store, "acme/app", &other).await;
    assert!(store.delete_manifest(&r, &img.digest, &protect_releases).await.expect("delete img"));
    assert!(store.unlink_blob(&r, &config.digest, &protect_releases).await.expect("config is free"));
    let (_, by) = expect_referenced(store.unlink_blob(&r, &layer.digest, &no_guard).await);
    assert_eq!(by, other.digest);
    assert!(store.delete_manifest(&r, &other.digest, &no_guard).await.expect("delete other"));
    assert!(store.unlink_blob(&r, &layer.digest, &protect_releases).await.expect("layer is free"));
    assert!(!store.unlink_blob(&r, &layer.digest, &protect_releases).await.expect("twice"));
    // Never referenced: deleted at once.
    assert!(store.unlink_blob(&r, &loose.digest, &protect_releases).await.expect("loose"));
}

pub async fn blob_delete_refused_where_a_protected_tag_reaches_it(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let (config1, layer1, config2, layer2) = (blob("config 1"), blob("layer 1"), blob("config 2"), blob("layer 2"));
    for b in [&config1, &layer1, &config2, &layer2] {
        link(&*store, "acme/app", b).await;
    }
    // Tagged directly, with two protected tags: the first by name is named.
    let img1 = NewManifest { tags: tags(&["v1", "latest", "v0"]), ..image("img 1", &[&config1, &layer1]) };
    put(&*store, "acme/app", &img1).await;
    // Reached only through two indexes: v2 -> outer -> inner -> img2.
    let img2 = image("img 2", &[&config2, &layer2]);
    let inner = NewManifest { tags: tags(&["inner"]), ..index_of("inner", &[&img2]) };
    let outer = NewManifest { tags: tags(&["v2"]), ..index_of("outer", &[&inner]) };
    for m in [&img2, &inner, &outer] {
        put(&*store, "acme/app", m).await;
    }

    for b in [&config1, &layer1] {
        let refused = expect_protected(store.unlink_blob(&r, &b.digest, &protect_releases).await);
        assert_eq!(refused, (b.digest.clone(), "acme/app".to_owned(), "v0".to_owned(), "v*".to_owned()));
    }
    for b in [&config2, &layer2] {
        let (digest, _, tag, _) = expect_protected(store.unlink_blob(&r, &b.digest, &protect_releases).await);
        assert_eq!((digest, tag.as_str()), (b.digest.clone(), "v2"));
    }
    // No rule: still refused, as referenced.
    let (_, by) = expect_referenced(store.unlink_blob(&r, &layer2.digest, &no_guard).await);
    assert_eq!(by, img2.digest);
    for b in [&config1, &layer1, &config2, &layer2] {
        assert!(linked(&*store, "acme/app", b).await);
    }
}

pub async fn child_delete_refused_where_a_protected_index_reaches_it(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let (amd64, arm64) = (manifest("amd64"), manifest("arm64"));
    let inner = NewManifest { tags: tags(&["latest"]), ..index_of("inner", &[&amd64, &arm64]) };
    let outer = NewManifest { tags: tags(&["v2", "stable"]), ..index_of("outer", &[&inner]) };
    for m in [&amd64, &arm64, &inner, &outer] {
        put(&*store, "acme/app", m).await;
    }
    for m in [&amd64, &arm64, &inner] {
        let refused = expect_protected(store.delete_manifest(&r, &m.digest, &protect_releases).await);
        assert_eq!(refused, (m.digest.clone(), "acme/app".to_owned(), "v2".to_owned(), "v*".to_owned()));
    }
    // The index's own tag: the existing refusal.
    assert!(matches!(
        store.delete_manifest(&r, &outer.digest, &protect_releases).await,
        Err(MetaError::ImmutableTag { ref tag, .. }) if tag == "v2"
    ));
    for m in [&amd64, &arm64, &inner, &outer] {
        assert!(has_manifest(&*store, "acme/app", &m.digest).await, "refused deletes keep everything");
    }
    // Once nothing protected reaches them, the children may go.
    assert!(store.delete_manifest(&r, &outer.digest, &no_guard).await.expect("delete outer"));
    assert!(store.delete_manifest(&r, &amd64.digest, &protect_releases).await.expect("delete amd64"));
    assert!(store.delete_manifest(&r, &inner.digest, &protect_releases).await.expect("delete inner"));
    assert!(has_manifest(&*store, "acme/app", &arm64.digest).await);
}

pub async fn unprotected_indexes_do_not_keep_their_children(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let layer = blob("layer");
    link(&*store, "acme/app", &layer).await;
    let child = image("child", &[&layer]);
    let index = NewManifest { tags: tags(&["latest"]), ..index_of("index", &[&child]) };
    put(&*store, "acme/app", &child).await;
    put(&*store, "acme/app", &index).await;
    assert!(store.delete_manifest(&r, &child.digest, &protect_releases).await.expect("delete child"));
    assert!(has_manifest(&*store, "acme/app", &index.digest).await);
    // Its layer is referenced by nothing now.
    assert!(store.unlink_blob(&r, &layer.digest, &protect_releases).await.expect("unlink"));
}

pub async fn protection_is_per_repository(store: Arc<dyn MetaStore>) {
    let (layer, img) = (blob("layer"), image("img", &[&blob("layer")]));
    for name in ["acme/a", "acme/b", "acme/c"] {
        link(&*store, name, &layer).await;
    }
    put(&*store, "acme/a", &NewManifest { tags: tags(&["v1"]), ..img.clone() }).await;
    put(&*store, "acme/b", &img).await;
    assert!(store.delete_manifest(&repo("acme/b"), &img.digest, &protect_releases).await.expect("delete in b"));
    assert!(store.unlink_blob(&repo("acme/b"), &layer.digest, &protect_releases).await.expect("unlink in b"));
    assert!(store.unlink_blob(&repo("acme/c"), &layer.digest, &protect_releases).await.expect("unlink in c"));
    let (_, repository, tag, _) =
        expect_protected(store.unlink_blob(&repo("acme/a"), &layer.digest, &protect_releases).await);
    assert_eq!((repository.as_str(), tag.as_str()), ("acme/a", "v1"));
}

/// A checked push relying on a layer while a client deletes it: one wins.
pub async fn push_racing_blob_delete_never_both_win(store: Arc<dyn MetaStore>) {
    for round in 0..ROUNDS {
        let layer = blob(&format!("layer {round}"));
        link(&*store, "acme/app", &layer).await;
        let m = NewManifest { tags: tags(&[&format!("v{round}")]), ..image(&format!("img {round}"), &[&layer]) };
        let pushing = tokio::spawn({
            let (store, m) = (Arc::clone(&store), m.clone());
            async move { store.put_manifest(&repo("acme/app"), &m, true, &protect_releases).await }
        });
        let unlinking = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), layer.digest.clone());
            async move { store.unlink_blob(&repo("acme/app"), &digest, &protect_releases).await }
        });
        let pushed = pushing.await.expect("task");
        let unlinked = unlinking.await.expect("task");
        match (&pushed, &unlinked) {
            (Ok(()), Err(MetaError::Protected { tag, .. })) => {
                assert_eq!(tag, &format!("v{round}"));
                assert!(linked(&*store, "acme/app", &layer).await);
            }
            (Err(MetaError::References(p)), Ok(true)) => {
                assert_eq!(p.missing, vec![layer.digest.clone()]);
                assert!(!has_manifest(&*store, "acme/app", &m.digest).await);
            }
            other => panic!("round {round}: push and blob delete both won or both lost: {other:?}"),
        }
    }
}

/// A checked push of a protected index while a client deletes its child: one wins.
pub async fn protected_index_push_racing_child_delete_never_both_win(store: Arc<dyn MetaStore>) {
    for round in 0..ROUNDS {
        let child = manifest(&format!("child {round}"));
        put(&*store, "acme/app", &child).await;
        let index =
            NewManifest { tags: tags(&[&format!("v{round}")]), ..index_of(&format!("index {round}"), &[&child]) };
        let pushing = tokio::spawn({
            let (store, index) = (Arc::clone(&store), index.clone());
            async move { store.put_manifest(&repo("acme/app"), &index, true, &protect_releases).await }
        });
        let deleting = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), child.digest.clone());
            async move { store.delete_manifest(&repo("acme/app"), &digest, &protect_releases).await }
        });
        let pushed = pushing.await.expect("task");
        let deleted = deleting.await.expect("task");
        match (&pushed, &deleted) {
            (Ok(()), Err(MetaError::Protected { tag, .. })) => {
                assert_eq!(tag, &format!("v{round}"));
                assert!(has_manifest(&*store, "acme/app", &child.digest).await);
            }
            (Err(MetaError::References(p)), Ok(true)) => {
                assert_eq!(p.missing, vec![child.digest.clone()]);
                assert!(!has_manifest(&*store, "acme/app", &index.digest).await);
            }
            other => panic!("round {round}: index push and child delete both won or both lost: {other:?}"),
        }
    }
}
