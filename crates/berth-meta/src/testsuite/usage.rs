//! Suite cases for storage accounting and quotas ([`crate::UsageStore`]):
//! exact figures after every kind of write, limits that refuse without
//! leaving anything behind, racing writers that cannot pass a limit
//! together, and a recount that finds no drift after a random mix of
//! operations (garbage collection's deletes included).

use std::fmt::Debug;
use std::sync::Arc;

use super::{blob, link, manifest, repo, reserve, tags, upload};
use crate::{
    BlobRef, MaintenanceStore, MetaError, MetaStore, NewManifest, OwnerUsage, QuotaKind, QuotaLimits, Result, no_guard,
};

fn image(seed: &str, blobs: &[&BlobRef]) -> NewManifest {
    NewManifest { blobs: blobs.iter().map(|b| (*b).clone()).collect(), ..manifest(seed) }
}

/// A blob of exactly `size` bytes' worth of accounting (the digest is made up).
fn sized(seed: &str, size: u64) -> BlobRef {
    BlobRef { size, ..blob(seed) }
}

fn usage(owner: &str, bytes: u64, repositories: u64, manifests: u64, tags: u64) -> OwnerUsage {
    OwnerUsage { owner: owner.to_owned(), bytes, repositories, manifests, tags }
}

fn expect_quota<T: Debug>(result: Result<T>) -> QuotaKind {
    match result {
        Err(MetaError::QuotaExceeded(kind)) => kind,
        other => panic!("expected a QuotaExceeded error, got {other:?}"),
    }
}

fn bytes_limit(bytes: u64) -> QuotaLimits {
    QuotaLimits { bytes: Some(bytes), repositories: None }
}

async fn assert_no_drift(store: &dyn MetaStore) {
    let drift = store.recount_usage().await.expect("recount");
    assert!(drift.is_empty(), "usage drifted: {drift:?}");
}

pub async fn usage_counts_each_blob_once_per_owner(store: Arc<dyn MetaStore>, _: Arc<dyn MaintenanceStore>) {
    let (shared, own) = (sized("shared", 1000), sized("own", 300));
    link(&*store, "acme/a", &shared).await;
    link(&*store, "acme/b", &shared).await;
    link(&*store, "acme/b", &own).await;
    link(&*store, "bob/x", &shared).await;
    assert_eq!(store.owner_usage("acme").await.expect("usage"), usage("acme", 1300, 2, 0, 0));
    assert_eq!(store.owner_usage("bob").await.expect("usage"), usage("bob", 1000, 1, 0, 0));
    assert_eq!(store.owner_usage("nobody").await.expect("usage"), usage("nobody", 0, 0, 0, 0));

    // Manifests count their own bytes; tags are counted.
    let img = NewManifest { tags: tags(&["v1", "latest"]), ..image("img", &[&shared]) };
    store.put_manifest(&repo("acme/a"), &img, true, &no_guard).await.expect("push");
    let m = img.content.len() as u64;
    assert_eq!(store.owner_usage("acme").await.expect("usage"), usage("acme", 1300 + m, 2, 1, 2));

    let per_repo = store.repository_usage("acme").await.expect("repository usage");
    let figures: Vec<(String, u64, u64, u64)> =
        per_repo.iter().map(|r| (r.repository.to_string(), r.bytes, r.manifests, r.tags)).collect();
    assert_eq!(figures, vec![("acme/a".into(), 1000 + m, 1, 2), ("acme/b".into(), 1300, 0, 0)]);

    // The blob stays counted while one repository of the owner still links it.
    assert!(store.unlink_blob(&repo("acme/b"), &shared.digest, &no_guard).await.expect("unlink"));
    assert_eq!(store.owner_usage("acme").await.expect("usage").bytes, 1300 + m);
    assert!(store.delete_tag(&repo("acme/a"), &tags(&["latest"])[0], &no_guard).await.expect("delete tag"));
    assert!(store.delete_manifest(&repo("acme/a"), &img.digest, &no_guard).await.expect("delete"));
    assert!(store.unlink_blob(&repo("acme/a"), &shared.digest, &no_guard).await.expect("unlink"));
    assert_eq!(store.owner_usage("acme").await.expect("usage"), usage("acme", 300, 2, 0, 0));
    assert_eq!(store.owner_usage("bob").await.expect("usage").bytes, 1000, "bob's count is his own");
    let all: Vec<String> = store.all_owner_usage().await.expect("all").into_iter().map(|u| u.owner).collect();
    assert_eq!(all, vec!["acme".to_owned(), "bob".to_owned()]);
    assert_no_drift(&*store).await;
}

pub async fn bytes_quota_refuses_a_link_and_writes_nothing(store: Arc<dyn MetaStore>, _: Arc<dyn MaintenanceStore>) {
    link(&*store, "acme/app", &sized("base", 800)).await;
    store.set_quota("acme", bytes_limit(1000)).await.expect("set quota");
    let big = sized("big", 300);
    let token = reserve(&*store, &big).await;
    let refused = store.link_reserved_blob(&repo("acme/app"), &big.digest, &token).await;
    assert_eq!(expect_quota(refused), QuotaKind::Bytes);
    assert_eq!(store.blob_size(&repo("acme/app"), &big.digest).await.expect("size"), None, "no orphan link");
    assert_eq!(store.owner_usage("acme").await.expect("usage").bytes, 800, "nothing half-recorded");

    // A mount into another repository of the owner is refused the same way...
    link(&*store, "other/src", &big).await;
    assert_eq!(expect_quota(store.link_blob(&repo("acme/app"), &big.digest).await), QuotaKind::Bytes);
    // ...and so is completing an upload; the session survives for the caller to cancel.
    let session = upload("u1", "acme/app", 1);
    store.create_upload(&session).await.expect("create upload");
    let token = reserve(&*store, &big).await;
    assert_eq!(expect_quota(store.complete_upload("u1", &big.digest, &token).await), QuotaKind::Bytes);
    assert!(store.get_upload("u1").await.expect("get").is_some());

    // A blob the owner already holds costs nothing more: linking it elsewhere is fine.
    link(&*store, "acme/second", &sized("base", 800)).await;
    // Within the limit is fine; exactly at it too.
    link(&*store, "acme/app", &sized("fits", 200)).await;
    assert_eq!(store.owner_usage("acme").await.expect("usage").bytes, 1000);
    // Deleting brings usage down at once, and the refused blob then fits.
    for (r, b) in [("acme/app", sized("fits", 200)), ("acme/app", sized("base", 800))] {
        assert!(store.unlink_blob(&repo(r), &b.digest, &no_guard).await.expect("unlink"));
    }
    assert_eq!(store.owner_usage("acme").await.expect("usage").bytes, 800, "acme/second still links base");
    assert!(store.unlink_blob(&repo("acme/second"), &sized("base", 800).digest, &no_guard).await.expect("unlink"));
    assert!(store.link_blob(&repo("acme/app"), &big.digest).await.expect("mount after cleanup"));
    assert_eq!(store.owner_usage("acme").await.expect("usage").bytes, 300);
    assert_no_drift(&*store).await;
}

pub async fn manifest_push_past_the_quota_is_refused(store: Arc<dyn MetaStore>, _: Arc<dyn MaintenanceStore>) {
    let layer = sized("layer", 1000);
    link(&*store, "acme/app", &layer).await;
    store.set_quota("acme", bytes_limit(1010)).await.expect("set quota");
    let img = NewManifest { tags: tags(&["latest"]), ..image("img", &[&layer]) };
    assert_eq!(expect_quota(store.put_manifest(&repo("acme/app"), &img, true, &no_guard).await), QuotaKind::Bytes);
    assert_eq!(store.list_tags(&repo("acme/app"), None, None).await.expect("tags"), Some(Vec::new()));
    assert_eq!(store.owner_usage("acme").await.expect("usage"), usage("acme", 1000, 1, 0, 0));
    store.set_quota("acme", QuotaLimits::default()).await.expect("back to the default");
    store.put_manifest(&repo("acme/app"), &img, true, &no_guard).await.expect("push without a limit");
    assert_no_drift(&*store).await;
}

pub async fn defaults_apply_and_owners_override_them(store: Arc<dyn MetaStore>, _: Arc<dyn MaintenanceStore>) {
    store.set_default_quota(QuotaLimits { bytes: Some(100), repositories: Some(2) }).await.expect("defaults");
    link(&*store, "acme/a", &sized("a", 60)).await;
    link(&*store, "acme/b", &sized("b", 40)).await;
    // A third repository passes the default of two.
    let c = sized("c", 0);
    let token = reserve(&*store, &c).await;
    let refused = store.link_reserved_blob(&repo("acme/c"), &c.digest, &token).await;
    assert_eq!(expect_quota(refused), QuotaKind::Repositories);
    assert!(!store.repository_exists(&repo("acme/c")).await.expect("exists"), "no repository left behind");

    // An owner's own limit wins; NULL keeps the default for that figure; 0 is unlimited.
    store.set_quota("acme", QuotaLimits { bytes: Some(0), repositories: None }).await.expect("override");
    link(&*store, "acme/a", &sized("more", 500)).await;
    let token = reserve(&*store, &c).await;
    assert_eq!(
        expect_quota(store.link_reserved_blob(&repo("acme/c"), &c.digest, &token).await),
        QuotaKind::Repositories
    );
    let (usage_now, own) = store.owner_usage_and_quota("acme").await.expect("usage and quota");
    assert_eq!((usage_now.bytes, own), (600, Some(QuotaLimits { bytes: Some(0), repositories: None })));
    let (nobody, none) = store.owner_usage_and_quota("nobody").await.expect("usage and quota");
    assert_eq!((nobody, none), (usage("nobody", 0, 0, 0, 0), None));
    let listed = store.quotas().await.expect("quotas");
    assert_eq!(listed.len(), 1, "the defaults row is not an owner's quota: {listed:?}");
    assert_eq!(listed[0].limits, QuotaLimits { bytes: Some(0), repositories: None });
    assert!(store.remove_quota("acme").await.expect("remove"));
    assert!(!store.remove_quota("acme").await.expect("remove again"));
    assert!(!store.remove_quota("").await.expect("the defaults are not removable this way"));
    // Over the default again: growth is refused, shrinking is not.
    link(&*store, "other/x", &sized("elsewhere", 10)).await;
    assert_eq!(expect_quota(store.link_blob(&repo("acme/b"), &blob("elsewhere").digest).await), QuotaKind::Bytes);
    // A blob the owner already holds costs nothing, even over the limit.
    assert!(store.link_blob(&repo("acme/b"), &sized("more", 500).digest).await.expect("already held"));
    assert!(store.unlink_blob(&repo("acme/b"), &sized("more", 500).digest, &no_guard).await.expect("unlink"));
    assert!(store.unlink_blob(&repo("acme/a"), &sized("more", 500).digest, &no_guard).await.expect("unlink"));
    store.set_default_quota(QuotaLimits::default()).await.expect("no defaults");
    assert_no_drift(&*store).await;
}

/// Twenty writers race for the room of five blobs: exactly five win.
pub async fn racing_links_cannot_pass_the_quota_together(store: Arc<dyn MetaStore>, _: Arc<dyn MaintenanceStore>) {
    const RACERS: usize = 20;
    link(&*store, "acme/base", &sized("base", 500)).await;
    store.set_quota("acme", bytes_limit(1000)).await.expect("set quota");
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let b = sized(&format!("racer-{i}"), 100);
                let token = store.reserve_blob(&b.digest, b.size).await.expect("reserve").expect("live");
                barrier.wait().await;
                store.link_reserved_blob(&repo(&format!("acme/r{}", i % 4)), &b.digest, &token).await
            })
        })
        .collect();
    let (mut won, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(true) => won += 1,
            Err(MetaError::QuotaExceeded(QuotaKind::Bytes)) => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((won, refused), (5, RACERS - 5));
    assert_eq!(store.owner_usage("acme").await.expect("usage").bytes, 1000);
    assert_no_drift(&*store).await;
}

/// A small deterministic generator (no dependency needed for a test mix).
struct Mix(u64);

impl Mix {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

/// Pushes, mounts, tag moves, deletes of tags, manifests and blobs, and
/// garbage collection's own deletes, in a random order across owners and
/// repositories: the stored usage always matches a recount.
pub async fn usage_matches_a_recount_after_a_random_mix(
    store: Arc<dyn MetaStore>,
    maintenance: Arc<dyn MaintenanceStore>,
) {
    const REPOS: [&str; 5] = ["acme/a", "acme/b", "acme/c/deep", "bob/x", "solo"];
    let blobs: Vec<BlobRef> = (0..12).map(|i| sized(&format!("mix-{i}"), 100 + i as u64 * 37)).collect();
    let mut mix = Mix(0x5eed);
    let mut pushed: Vec<(&str, NewManifest)> = Vec::new();
    for step in 0..400 {
        let r = REPOS[mix.next(REPOS.len())];
        let b = &blobs[mix.next(blobs.len())];
        match mix.next(7) {
            0 | 1 => link(&*store, r, b).await,
            2 => {
                let _ = store.link_blob(&repo(r), &b.digest).await.expect("mount");
            }
            3 => {
                // Unlinks a blob no manifest needs (refusals are expected otherwise).
                match store.unlink_blob(&repo(r), &b.digest, &no_guard).await {
                    Ok(_) | Err(MetaError::Referenced { .. }) => {}
                    Err(e) => panic!("unlink: {e}"),
                }
            }
            4 => {
                let linked = store.blob_size(&repo(r), &b.digest).await.expect("size").is_some();
                if linked {
                    let tag = format!("t{}", mix.next(4));
                    let img = NewManifest { tags: tags(&[tag.as_str()]), ..image(&format!("m{step}"), &[b]) };
                    store.put_manifest(&repo(r), &img, true, &no_guard).await.expect("push");
                    pushed.push((r, img));
                }
            }
            5 => {
                if !pushed.is_empty() {
                    let (r, img) = pushed.swap_remove(mix.next(pushed.len()));
                    if mix.next(2) == 0 {
                        store.delete_manifest(&repo(r), &img.digest, &no_guard).await.expect("delete manifest");
                    } else {
                        let _ = maintenance.gc_delete_manifest(&repo(r), &img.digest, i64::MAX).await.expect("gc");
                    }
                }
            }
            _ => {
                let _ = maintenance.gc_unlink_blob(&repo(r), &b.digest, i64::MAX).await.expect("gc unlink");
            }
        }
    }
    let total: u64 = store.all_owner_usage().await.expect("all").iter().map(|u| u.bytes).sum();
    assert!(total > 0, "the mix stored something");
    assert_no_drift(&*store).await;
}
