//! Suite cases for the pull-through cache's records ([`crate::ProxyStore`]):
//! tag checks, last pulls, owner existence, and reference lookups.

use std::sync::Arc;

use super::{T0, blob, manifest, put, repo, tag};
use crate::{AuthStore, MetaStore, NewManifest};

/// A check is read back as recorded, a newer one replaces it, and each
/// counts as a pull of its repository (which records the upstream).
pub async fn tag_checks_round_trip_and_count_as_pulls(store: Arc<dyn MetaStore>, _auth: Arc<dyn AuthStore>) {
    let (r, latest) = (repo("hub/library/alpine"), tag("latest"));
    assert_eq!(store.tag_check(&r, &latest).await.expect("check"), None);
    assert_eq!(store.cached_repository(&r).await.expect("repository"), None);
    let (a, b) = (manifest("a").digest, manifest("b").digest);
    store.record_tag_check(&r, "hub", &latest, &a, T0).await.expect("record");
    let check = store.tag_check(&r, &latest).await.expect("check").expect("recorded");
    assert_eq!((check.digest, check.checked_at), (a.clone(), T0));
    store.record_tag_check(&r, "hub", &latest, &b, T0 + 5).await.expect("record again");
    let check = store.tag_check(&r, &latest).await.expect("check").expect("recorded");
    assert_eq!((check.digest, check.checked_at), (b, T0 + 5));
    // Per repository and tag.
    assert_eq!(store.tag_check(&r, &tag("3.20")).await.expect("other tag"), None);
    assert_eq!(store.tag_check(&repo("hub/library/busybox"), &latest).await.expect("other repo"), None);
    let cached = store.cached_repository(&r).await.expect("repository").expect("recorded");
    assert_eq!((cached.repository, cached.upstream.as_str(), cached.last_pulled_at), (r, "hub", T0 + 5));
}

/// The last pull only moves forward, whatever order the records arrive in.
pub async fn last_pull_never_goes_back(store: Arc<dyn MetaStore>, _auth: Arc<dyn AuthStore>) {
    let r = repo("ghcr/acme/tool");
    store.record_pull(&r, "ghcr", T0 + 10).await.expect("pull");
    store.record_pull(&r, "ghcr", T0 + 3).await.expect("older pull");
    let cached = store.cached_repository(&r).await.expect("repository").expect("recorded");
    assert_eq!(cached.last_pulled_at, T0 + 10);
    store.record_pull(&r, "ghcr", T0 + 20).await.expect("newer pull");
    let cached = store.cached_repository(&r).await.expect("repository").expect("recorded");
    assert_eq!(cached.last_pulled_at, T0 + 20);
    assert_eq!(store.cached_repository(&repo("ghcr/acme/other")).await.expect("unknown"), None);
}

/// Users and organizations both count as owners; nothing else does.
pub async fn owners_exist_by_name(store: Arc<dyn MetaStore>, auth: Arc<dyn AuthStore>) {
    assert!(!store.owner_exists("library").await.expect("nobody"));
    auth.create_org("acme", T0).await.expect("create org");
    auth.create_user("alice", None, false, T0).await.expect("create user");
    assert!(store.owner_exists("acme").await.expect("org"));
    assert!(store.owner_exists("alice").await.expect("user"));
    assert!(!store.owner_exists("library").await.expect("still nobody"));
    // A repository alone makes no owner.
    put(&*store, "library/alpine", &manifest("m")).await;
    assert!(!store.owner_exists("library").await.expect("repository is no owner"));
}

/// A stored manifest's config, layers and children are references of its
/// repository, even before their content is there; nothing else is.
pub async fn references_cover_layers_and_children(store: Arc<dyn MetaStore>, _auth: Arc<dyn AuthStore>) {
    let (config, layer, stranger) = (blob("config"), blob("layer"), blob("stranger"));
    let image = NewManifest { blobs: vec![config.clone(), layer.clone()], ..manifest("image") };
    let index = NewManifest { manifests: vec![image.digest.clone()], ..manifest("index") };
    put(&*store, "hub/library/alpine", &image).await;
    put(&*store, "hub/library/alpine", &index).await;
    let r = repo("hub/library/alpine");
    for d in [&config.digest, &layer.digest, &image.digest] {
        assert!(store.references(&r, d).await.expect("references"), "{d}");
    }
    assert!(!store.references(&r, &stranger.digest).await.expect("stranger"));
    assert!(!store.references(&r, &index.digest).await.expect("the index itself"));
    assert!(!store.references(&repo("hub/library/busybox"), &layer.digest).await.expect("other repository"));
}
