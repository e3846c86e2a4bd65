//! Suite cases for [`MaintenanceStore`]: leases, the blob states garbage
//! collection relies on, its re-checking writes, retention reads and
//! conditional deletes, upload expiry, and the races the collector must
//! never lose (a link against a mark, a push against an unlink, an index push
//! against a manifest delete).
//!
//! Each case takes a fresh, empty, migrated store, as a [`MetaStore`] and as a
//! [`MaintenanceStore`]; `meta_store_suite!` runs them from its `maintenance`
//! list (a unit test checks that list is complete).
//!
//! Blob and link times are the store's clock, so "older than the grace
//! period" is expressed with a cutoff in the future ([`ANY_AGE`]) and "too
//! young" with one in the past ([`T0`]).

use std::sync::Arc;

use berth_oci::Digest;

use super::{OCI_INDEX, SIGNATURE, T0, blob, link, manifest, put, referrer, repo, reserve, tag, tags, upload};
use crate::maintenance::{GcBlob, LeaseOutcome, NewRetentionRule, RetentionRuleRecord, TagRecord};
use crate::{BlobRef, MaintenanceStore, MetaError, MetaStore, NewManifest, no_guard};

/// A cutoff every row is older than.
const ANY_AGE: i64 = i64::MAX / 4;
const ROUNDS: usize = 12;

fn index_of(seed: &str, children: &[&NewManifest]) -> NewManifest {
    NewManifest {
        media_type: OCI_INDEX.to_owned(),
        manifests: children.iter().map(|m| m.digest.clone()).collect(),
        ..manifest(seed)
    }
}

fn image(seed: &str, layers: &[&BlobRef]) -> NewManifest {
    NewManifest { blobs: layers.iter().map(|b| (*b).clone()).collect(), ..manifest(seed) }
}

// --- leases --------------------------------------------------------------------------

pub async fn lease_is_exclusive_until_released_or_expired(_meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    assert_eq!(store.get_lease("gc").await.expect("get"), None);
    assert_eq!(store.acquire_lease("gc", "a", 1_000, 100).await.expect("acquire"), LeaseOutcome::Acquired);
    assert_eq!(
        store.acquire_lease("gc", "b", 1_050, 100).await.expect("acquire"),
        LeaseOutcome::Held { holder: "a".into(), expires_at: 1_100 }
    );
    // Other leases are independent; the holder may re-acquire and renew.
    assert_eq!(store.acquire_lease("retention", "b", 1_050, 100).await.expect("other"), LeaseOutcome::Acquired);
    assert_eq!(store.acquire_lease("gc", "a", 1_060, 100).await.expect("again"), LeaseOutcome::Acquired);
    assert!(store.renew_lease("gc", "a", 1_090, 100).await.expect("renew"));
    assert!(!store.renew_lease("gc", "b", 1_090, 100).await.expect("renew by another"));
    assert!(matches!(store.acquire_lease("gc", "b", 1_150, 100).await.expect("still held"), LeaseOutcome::Held { .. }));

    // Expired: someone else takes it, and the old holder can no longer renew.
    assert_eq!(store.acquire_lease("gc", "b", 1_200, 100).await.expect("after expiry"), LeaseOutcome::Acquired);
    assert!(!store.renew_lease("gc", "a", 1_210, 100).await.expect("old holder renews"));
    assert!(!store.release_lease("gc", "a", Some(1_210)).await.expect("old holder releases"));

    // Released: free at once, with the run recorded.
    assert!(store.release_lease("gc", "b", Some(1_250)).await.expect("release"));
    let record = store.get_lease("gc").await.expect("get").expect("row stays");
    assert_eq!((record.holder.as_str(), record.expires_at, record.last_run_at), ("b", 0, Some(1_250)));
    assert!(!store.renew_lease("gc", "b", 1_260, 100).await.expect("renew after release"));
    assert_eq!(store.acquire_lease("gc", "c", 1_260, 100).await.expect("free"), LeaseOutcome::Acquired);
    // Releasing without a finished run keeps the last one.
    assert!(store.release_lease("gc", "c", None).await.expect("release"));
    assert_eq!(store.get_lease("gc").await.expect("get").and_then(|r| r.last_run_at), Some(1_250));

    // Racing for a free lease: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.acquire_lease("race", &format!("r{i}"), 5_000, 1_000).await })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.expect("task").expect("acquire") == LeaseOutcome::Acquired {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

// --- blob states -----------------------------------------------------------------------

pub async fn reserve_and_link_refuse_a_deleting_blob(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let (r, layer) = (repo("acme/app"), blob("layer"));
    // Never reserved: not linkable.
    assert!(!meta.link_reserved_blob(&r, &layer.digest, "made up").await.expect("link"));
    assert!(!meta.repository_exists(&r).await.expect("exists"), "a refused link writes nothing");

    let token = reserve(&*meta, &layer).await;
    assert_eq!(reserve(&*meta, &layer).await, token, "reserving again keeps the row");
    assert_eq!(store.gc_mark_blob(&layer.digest, ANY_AGE).await.expect("mark"), Some(layer.size));

    assert_eq!(meta.reserve_blob(&layer.digest, layer.size).await.expect("reserve deleting"), None);
    assert!(!meta.link_reserved_blob(&r, &layer.digest, &token).await.expect("link deleting"));
    meta.create_upload(&upload("up", "acme/app", T0)).await.expect("create");
    let completed = meta.complete_upload("up", &layer.digest, &token).await;
    assert!(matches!(completed, Err(MetaError::Unavailable(_))), "{completed:?}");
    assert!(meta.get_upload("up").await.expect("get").is_some(), "the session survives");
    assert_eq!(meta.global_blob_size(&layer.digest).await.expect("global"), None);

    // Once the collector forgets it, an upload reserves it afresh.
    assert!(store.gc_forget_blob(&layer.digest).await.expect("forget"));
    assert!(!store.gc_forget_blob(&layer.digest).await.expect("forget twice"));
    let fresh = reserve(&*meta, &layer).await;
    meta.complete_upload("up", &layer.digest, &fresh).await.expect("complete");
    assert_eq!(meta.blob_size(&r, &layer.digest).await.expect("size"), Some(layer.size));
}

/// An upload slower than the grace period whose reservation was collected,
/// and whose digest someone else reserved since, must not link the new row:
/// the bytes it committed (or found) may be gone, and the other upload may
/// never commit its own.
pub async fn a_recreated_blob_refuses_the_old_reservation(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let (r, layer) = (repo("acme/app"), blob("layer"));
    let slow = reserve(&*meta, &layer).await;
    assert!(store.gc_mark_blob(&layer.digest, ANY_AGE).await.expect("mark").is_some());
    assert!(store.gc_forget_blob(&layer.digest).await.expect("forget"));
    let other = reserve(&*meta, &layer).await;
    assert_ne!(other, slow, "a new incarnation, a new token");
    assert!(!meta.link_reserved_blob(&r, &layer.digest, &slow).await.expect("late link"));
    meta.create_upload(&upload("slow", "acme/app", T0)).await.expect("create");
    assert!(matches!(meta.complete_upload("slow", &layer.digest, &slow).await, Err(MetaError::Unavailable(_))));
    assert_eq!(meta.blob_size(&r, &layer.digest).await.expect("size"), None);
    assert!(meta.link_reserved_blob(&r, &layer.digest, &other).await.expect("current link"));
}

/// A mount copies an existing link: a blob linked nowhere (awaiting
/// collection, or only reserved) is not mountable.
pub async fn mounts_need_an_existing_link(meta: Arc<dyn MetaStore>, _store: Arc<dyn MaintenanceStore>) {
    let (src, dst, layer) = (repo("acme/src"), repo("acme/dst"), blob("layer"));
    assert!(!meta.link_blob(&dst, &layer.digest).await.expect("unknown"));
    reserve(&*meta, &layer).await;
    assert!(!meta.link_blob(&dst, &layer.digest).await.expect("only reserved"));
    assert!(!meta.repository_exists(&dst).await.expect("exists"));
    link(&*meta, "acme/src", &layer).await;
    assert!(meta.link_blob(&dst, &layer.digest).await.expect("mount"));
    assert!(meta.link_blob(&dst, &layer.digest).await.expect("mount again"));
    assert_eq!(meta.blob_size(&dst, &layer.digest).await.expect("size"), Some(layer.size));
    assert!(meta.unlink_blob(&src, &layer.digest, &no_guard).await.expect("unlink src"));
    assert!(meta.unlink_blob(&dst, &layer.digest, &no_guard).await.expect("unlink dst"));
    assert!(!meta.link_blob(&repo("acme/third"), &layer.digest).await.expect("linked nowhere"));
}

pub async fn mark_blob_rechecks_links_and_grace_period(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let (r, layer) = (repo("acme/app"), blob("layer"));
    assert_eq!(store.gc_mark_blob(&layer.digest, ANY_AGE).await.expect("unknown"), None);
    link(&*meta, "acme/app", &layer).await;
    assert_eq!(store.gc_mark_blob(&layer.digest, ANY_AGE).await.expect("linked"), None, "linked blobs stay");
    assert!(meta.unlink_blob(&r, &layer.digest, &no_guard).await.expect("unlink"));
    assert_eq!(store.gc_mark_blob(&layer.digest, T0).await.expect("young"), None, "within the grace period");
    assert_eq!(store.gc_mark_blob(&layer.digest, ANY_AGE).await.expect("old"), Some(layer.size));
    assert_eq!(store.gc_mark_blob(&layer.digest, ANY_AGE).await.expect("twice"), None, "already deleting");
    assert_eq!(
        store.deleting_blobs(ANY_AGE, 10).await.expect("deleting"),
        vec![GcBlob { digest: layer.digest, size: 5 }]
    );
    assert_eq!(store.deleting_blobs(T0, 10).await.expect("deleting"), Vec::new(), "marked after T0");
}

pub async fn orphan_and_deleting_rows_round_trip(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let (known, orphan) = (blob("known"), blob("orphan"));
    link(&*meta, "acme/app", &known).await;
    let asked = [known.digest.clone(), orphan.digest.clone()];
    assert_eq!(store.known_blobs(&asked).await.expect("known"), vec![known.digest.clone()]);
    assert!(!store.gc_mark_orphan(&known.digest, known.size, 1).await.expect("known is no orphan"));
    assert!(store.gc_mark_orphan(&orphan.digest, orphan.size, 1).await.expect("orphan"));
    assert_eq!(meta.reserve_blob(&orphan.digest, orphan.size).await.expect("reserve while deleting"), None);
    let mut usage = store.blob_usage(&asked).await.expect("usage");
    usage.sort_by_key(|u| u.links);
    assert_eq!(usage.len(), 2);
    assert!(usage[0].deleting && usage[0].links == 0 && usage[0].digest == orphan.digest);
    assert!(!usage[1].deleting && usage[1].links == 1 && usage[1].size == known.size);
    assert!(store.gc_forget_blob(&orphan.digest).await.expect("forget"));
    assert!(!store.gc_forget_blob(&known.digest).await.expect("live rows are not forgotten"));
    assert_eq!(store.deleting_blobs(ANY_AGE, 10).await.expect("deleting"), Vec::new());
    assert_eq!(store.known_blobs(&[]).await.expect("empty"), Vec::new());
    assert_eq!(store.blob_usage(&[]).await.expect("empty"), Vec::new());
}

// --- manifests and links ------------------------------------------------------------------

pub async fn gc_delete_manifest_rechecks_every_condition(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let r = repo("acme/app");
    let tagged = NewManifest { tags: tags(&["v1"]), ..manifest("tagged") };
    let child = manifest("child");
    let index = index_of("index", &[&child]);
    let subject = manifest("subject");
    let signature = referrer("sig", &subject.digest, SIGNATURE, None);
    let dangling = referrer("dangling", &manifest("absent").digest, SIGNATURE, None);
    let loose = manifest("loose");
    for m in [&tagged, &child, &index, &subject, &signature, &dangling, &loose] {
        put(&*meta, "acme/app", m).await;
    }
    let delete = |d: &Digest, cutoff: i64| {
        let (store, r, d) = (Arc::clone(&store), r.clone(), d.clone());
        async move { store.gc_delete_manifest(&r, &d, cutoff).await }
    };
    assert_eq!(delete(&tagged.digest, ANY_AGE).await.expect("tagged"), None);
    assert_eq!(delete(&child.digest, ANY_AGE).await.expect("child"), None, "an index references it");
    assert_eq!(delete(&signature.digest, ANY_AGE).await.expect("referrer"), None, "its subject is present");
    assert_eq!(delete(&loose.digest, T0).await.expect("young"), None, "within the grace period");
    assert_eq!(delete(&manifest("never").digest, ANY_AGE).await.expect("absent"), None);
    assert_eq!(store.gc_delete_manifest(&repo("nobody"), &loose.digest, ANY_AGE).await.expect("no repo"), None);

    assert_eq!(delete(&loose.digest, ANY_AGE).await.expect("loose"), Some(loose.content.len() as u64));
    assert_eq!(
        delete(&dangling.digest, ANY_AGE).await.expect("dangling referrer"),
        Some(dangling.content.len() as u64)
    );
    // Deleting the index frees its child; deleting the subject frees its referrer.
    assert!(delete(&index.digest, ANY_AGE).await.expect("index").is_some());
    assert!(delete(&child.digest, ANY_AGE).await.expect("child now").is_some());
    assert!(delete(&subject.digest, ANY_AGE).await.expect("subject").is_some());
    assert!(delete(&signature.digest, ANY_AGE).await.expect("referrer now").is_some());
    let graph = store.repository_graph(&r).await.expect("graph");
    assert_eq!(graph.manifests.iter().map(|m| &m.digest).collect::<Vec<_>>(), vec![&tagged.digest]);
    assert_eq!(graph.references, Vec::new(), "references went with their manifests");
}

pub async fn gc_unlink_blob_rechecks_references_and_grace_period(
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn MaintenanceStore>,
) {
    let (r, used, unused) = (repo("acme/app"), blob("used"), blob("unused"));
    link(&*meta, "acme/app", &used).await;
    link(&*meta, "acme/app", &unused).await;
    link(&*meta, "other/app", &unused).await;
    put(&*meta, "acme/app", &image("img", &[&used])).await;
    assert!(!store.gc_unlink_blob(&r, &used.digest, ANY_AGE).await.expect("referenced"));
    assert!(!store.gc_unlink_blob(&r, &unused.digest, T0).await.expect("young"));
    assert!(store.gc_unlink_blob(&r, &unused.digest, ANY_AGE).await.expect("unused"));
    assert!(!store.gc_unlink_blob(&r, &unused.digest, ANY_AGE).await.expect("twice"));
    assert_eq!(meta.blob_size(&r, &unused.digest).await.expect("size"), None);
    assert_eq!(meta.blob_size(&repo("other/app"), &unused.digest).await.expect("other"), Some(unused.size));
}

pub async fn repository_graph_lists_manifests_references_and_links(
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn MaintenanceStore>,
) {
    let r = repo("acme/app");
    assert_eq!(store.repository_graph(&r).await.expect("unknown"), Default::default());
    let layer = blob("layer");
    link(&*meta, "acme/app", &layer).await;
    let img = NewManifest { tags: tags(&["latest"]), ..image("img", &[&layer]) };
    let idx = index_of("idx", &[&img]);
    let sig = referrer("sig", &img.digest, SIGNATURE, None);
    for m in [&img, &idx, &sig] {
        put(&*meta, "acme/app", m).await;
    }
    let mut graph = store.repository_graph(&r).await.expect("graph");
    graph.manifests.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
    graph.references.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    assert_eq!(graph.manifests.len(), 3);
    let of = |d: &Digest| graph.manifests.iter().find(|m| &m.digest == d).expect("listed").clone();
    assert!(of(&img.digest).tagged && !of(&idx.digest).tagged);
    assert_eq!(of(&sig.digest).subject.as_ref(), Some(&img.digest));
    assert_eq!(of(&img.digest).size, img.content.len() as u64);
    assert_eq!(of(&img.digest).created_at, T0);
    let mut expected = vec![(img.digest.clone(), layer.digest.clone()), (idx.digest.clone(), img.digest.clone())];
    expected.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    assert_eq!(graph.references, expected);
    assert_eq!(graph.links.len(), 1);
    assert_eq!((&graph.links[0].digest, graph.links[0].size), (&layer.digest, layer.size));
    assert!(graph.links[0].linked_at > T0);
}

pub async fn unlinked_blobs_paginate_in_digest_order(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let mut loose: Vec<BlobRef> = (0..5).map(|i| blob(&format!("loose {i}"))).collect();
    loose.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
    for b in &loose {
        reserve(&*meta, b).await;
    }
    link(&*meta, "acme/app", &blob("linked")).await;
    assert_eq!(store.unlinked_blobs(T0, None, 10).await.expect("young"), Vec::new());
    let first = store.unlinked_blobs(ANY_AGE, None, 3).await.expect("first page");
    let rest = store.unlinked_blobs(ANY_AGE, Some(&first[2].digest), 3).await.expect("second page");
    let all: Vec<Digest> = first.iter().chain(&rest).map(|b| b.digest.clone()).collect();
    assert_eq!(all, loose.iter().map(|b| b.digest.clone()).collect::<Vec<_>>());
    assert_eq!(first[0].size, loose[0].size);
    // A deleting blob is no longer a candidate.
    assert!(store.gc_mark_blob(&loose[0].digest, ANY_AGE).await.expect("mark").is_some());
    assert_eq!(store.unlinked_blobs(ANY_AGE, None, 10).await.expect("after mark").len(), 4);
}

// --- retention and expiry -------------------------------------------------------------------

pub async fn retention_tags_and_conditional_delete(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let r = repo("acme/app");
    assert_eq!(store.repository_tags(&r).await.expect("unknown"), Vec::new());
    let child = NewManifest { tags: tags(&["child"]), ..manifest("child") };
    let lone = NewManifest { tags: tags(&["a", "b"]), created_at: T0 + 5, ..manifest("lone") };
    put(&*meta, "acme/app", &child).await;
    put(&*meta, "acme/app", &lone).await;
    put(&*meta, "acme/app", &index_of("idx", &[&child])).await;
    let mut listed = store.repository_tags(&r).await.expect("tags");
    listed.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    let record = |name: &str, m: &NewManifest, in_index| TagRecord {
        name: tag(name),
        digest: m.digest.clone(),
        updated_at: m.created_at,
        in_index,
    };
    assert_eq!(listed, vec![record("a", &lone, false), record("b", &lone, false), record("child", &child, true)]);

    // Moved or re-pushed since it was read: kept.
    assert!(!store.delete_tag_if_unchanged(&r, &tag("a"), &child.digest, T0 + 5).await.expect("other digest"));
    assert!(!store.delete_tag_if_unchanged(&r, &tag("a"), &lone.digest, T0).await.expect("other time"));
    assert!(store.delete_tag_if_unchanged(&r, &tag("a"), &lone.digest, T0 + 5).await.expect("delete"));
    assert!(!store.delete_tag_if_unchanged(&r, &tag("a"), &lone.digest, T0 + 5).await.expect("twice"));
    assert_eq!(store.repository_tags(&r).await.expect("tags").len(), 2);
}

/// Stored rules come back as added (globs, optional limits, author), by
/// id; a removed rule's id is not given out again.
pub async fn stored_retention_rules_round_trip(_meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    assert_eq!(store.list_retention_rules().await.expect("empty"), Vec::new());
    let full = NewRetentionRule {
        repositories: "acme/*".into(),
        keep_last: Some(u32::MAX),
        keep_tags: vec!["v*".into(), "stable".into(), "quote\"and,comma".into()],
        remove_tags: vec!["pr-*".into()],
        remove_older_than: Some(30 * 24 * 3600 * 1000),
        created_at: T0,
        created_by: "alice".into(),
    };
    let bare = NewRetentionRule {
        repositories: "*".into(),
        keep_last: Some(0),
        created_at: T0 + 1,
        created_by: "cli".into(),
        ..NewRetentionRule::default()
    };
    let first = store.add_retention_rule(&full).await.expect("add");
    let second = store.add_retention_rule(&bare).await.expect("add");
    assert!(second > first, "ids increase: {first} then {second}");
    let record = |id: i64, r: &NewRetentionRule| RetentionRuleRecord {
        id,
        repositories: r.repositories.clone(),
        keep_last: r.keep_last,
        keep_tags: r.keep_tags.clone(),
        remove_tags: r.remove_tags.clone(),
        remove_older_than: r.remove_older_than,
        created_at: r.created_at,
        created_by: r.created_by.clone(),
    };
    assert_eq!(store.list_retention_rules().await.expect("list"), vec![record(first, &full), record(second, &bare)]);

    assert!(store.remove_retention_rule(second).await.expect("remove"));
    assert!(!store.remove_retention_rule(second).await.expect("twice"));
    assert!(!store.remove_retention_rule(second + 1000).await.expect("unknown"));
    // The newest id is not reused once its rule is gone.
    let third = store.add_retention_rule(&bare).await.expect("add again");
    assert!(third > second, "{third} reuses an id (after {second})");
    assert_eq!(store.list_retention_rules().await.expect("list"), vec![record(first, &full), record(third, &bare)]);
}

pub async fn expire_upload_only_when_idle(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    meta.create_upload(&upload("idle", "acme/app", 100)).await.expect("create");
    meta.create_upload(&upload("busy", "acme/app", 300)).await.expect("create");
    assert!(!store.expire_upload("busy", 200).await.expect("busy"));
    assert!(store.expire_upload("idle", 200).await.expect("idle"));
    assert!(!store.expire_upload("idle", 200).await.expect("twice"));
    assert!(!store.expire_upload("never", 200).await.expect("unknown"));
    assert_eq!(meta.get_upload("idle").await.expect("get"), None);
    assert!(meta.get_upload("busy").await.expect("get").is_some());
}

// --- the races garbage collection must never lose ----------------------------------------

/// An upload linking the blob it reserved while the collector marks it:
/// never both. Whoever loses leaves the other's state intact.
pub async fn link_racing_mark_never_both_win(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    for round in 0..ROUNDS {
        let (name, layer) = (format!("race/r{round}"), blob(&format!("layer {round}")));
        let token = reserve(&*meta, &layer).await;
        let linking = tokio::spawn({
            let (meta, name, digest) = (Arc::clone(&meta), name.clone(), layer.digest.clone());
            async move { meta.link_reserved_blob(&repo(&name), &digest, &token).await }
        });
        let marking = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), layer.digest.clone());
            async move { store.gc_mark_blob(&digest, ANY_AGE).await }
        });
        let linked = linking.await.expect("task").expect("link");
        let marked = marking.await.expect("task").expect("mark").is_some();
        assert!(linked != marked, "round {round}: linked {linked}, marked {marked}");
        let visible = meta.blob_size(&repo(&name), &layer.digest).await.expect("size").is_some();
        assert_eq!(visible, linked, "round {round}");
        let deleting =
            store.deleting_blobs(ANY_AGE, 100).await.expect("deleting").iter().any(|b| b.digest == layer.digest);
        assert_eq!(deleting, marked, "round {round}");
    }
}

/// A checked manifest push relying on a link while the collector removes
/// it: either the push fails or the link stays.
pub async fn push_racing_unlink_never_both_win(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let r = repo("acme/app");
    for round in 0..ROUNDS {
        let layer = blob(&format!("layer {round}"));
        link(&*meta, "acme/app", &layer).await;
        let m = image(&format!("img {round}"), &[&layer]);
        let pushing = tokio::spawn({
            let (meta, m) = (Arc::clone(&meta), m.clone());
            async move { meta.put_manifest(&repo("acme/app"), &m, true, &no_guard).await }
        });
        let unlinking = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), layer.digest.clone());
            async move { store.gc_unlink_blob(&repo("acme/app"), &digest, ANY_AGE).await }
        });
        let pushed = pushing.await.expect("task");
        let unlinked = unlinking.await.expect("task").expect("unlink");
        match (&pushed, unlinked) {
            (Ok(()), false) => assert_eq!(meta.blob_size(&r, &layer.digest).await.expect("size"), Some(layer.size)),
            (Err(MetaError::References(p)), true) => assert_eq!(p.missing, vec![layer.digest.clone()]),
            other => panic!("round {round}: push and unlink both won or both lost: {other:?}"),
        }
    }
}

/// A checked index push relying on a child while the collector deletes it.
pub async fn index_push_racing_manifest_delete_never_both_win(
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn MaintenanceStore>,
) {
    let r = repo("acme/app");
    for round in 0..ROUNDS {
        let child = manifest(&format!("child {round}"));
        put(&*meta, "acme/app", &child).await;
        let index = index_of(&format!("index {round}"), &[&child]);
        let pushing = tokio::spawn({
            let (meta, index) = (Arc::clone(&meta), index.clone());
            async move { meta.put_manifest(&repo("acme/app"), &index, true, &no_guard).await }
        });
        let deleting = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), child.digest.clone());
            async move { store.gc_delete_manifest(&repo("acme/app"), &digest, ANY_AGE).await }
        });
        let pushed = pushing.await.expect("task");
        let deleted = deleting.await.expect("task").expect("delete").is_some();
        match (&pushed, deleted) {
            (Ok(()), false) => assert!(
                meta.get_manifest(&r, &crate::ManifestRef::Digest(&child.digest), false).await.expect("get").is_some()
            ),
            (Err(MetaError::References(p)), true) => assert_eq!(p.missing, vec![child.digest.clone()]),
            other => panic!("round {round}: index push and delete both won or both lost: {other:?}"),
        }
    }
}

/// Tagging an untagged manifest while the collector deletes it: the push
/// always succeeds and the tag always resolves afterwards (re-created if
/// the delete came first).
pub async fn tag_push_racing_manifest_delete_keeps_the_tag(meta: Arc<dyn MetaStore>, store: Arc<dyn MaintenanceStore>) {
    let r = repo("acme/app");
    for round in 0..ROUNDS {
        let m = manifest(&format!("untagged {round}"));
        put(&*meta, "acme/app", &m).await;
        let tagged = NewManifest { tags: tags(&["latest"]), ..m.clone() };
        let pushing = tokio::spawn({
            let meta = Arc::clone(&meta);
            async move { meta.put_manifest(&repo("acme/app"), &tagged, true, &no_guard).await }
        });
        let deleting = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), m.digest.clone());
            async move { store.gc_delete_manifest(&repo("acme/app"), &digest, ANY_AGE).await }
        });
        pushing.await.expect("task").unwrap_or_else(|e| panic!("round {round}: push failed: {e:?}"));
        deleting.await.expect("task").expect("delete");
        let latest = tag("latest");
        let found = meta.get_manifest(&r, &crate::ManifestRef::Tag(&latest), false).await.expect("get");
        assert_eq!(found.map(|f| f.digest), Some(m.digest.clone()), "round {round}");
    }
}
