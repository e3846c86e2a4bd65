//! Suite cases for scrub ([`crate::ScrubStore`]): what it lists, where a
//! digest is reached from, and damage marks that hide a blob from readers
//! until a reserved upload (a push) or a clear repairs it.

use std::sync::Arc;

use super::{blob, link, manifest, put, repo, reserve, tags};
use crate::scrub::Reach;
use crate::{BlobRef, MetaStore, NewManifest};

fn image(seed: &str, blobs: &[&BlobRef], tag_names: &[&str]) -> NewManifest {
    NewManifest { blobs: blobs.iter().map(|b| (*b).clone()).collect(), tags: tags(tag_names), ..manifest(seed) }
}

/// Live linked blobs page in digest order, globally or per repository;
/// a reserved blob no repository links yet is left out (its bytes may not
/// be there yet); manifests come with their exact bytes.
pub async fn scrub_lists_linked_blobs_and_manifests(store: Arc<dyn MetaStore>) {
    let (a, b, c, reserved) = (blob("a"), blob("b"), blob("c"), blob("reserved only"));
    link(&*store, "acme/app", &a).await;
    link(&*store, "acme/app", &b).await;
    link(&*store, "other/lib", &c).await;
    reserve(&*store, &reserved).await;
    let mut expected = vec![a.digest.clone(), b.digest.clone(), c.digest.clone()];
    expected.sort();
    let first = store.scrub_blobs(None, None, 2).await.expect("page 1");
    let rest = store.scrub_blobs(None, Some(&first[1].digest), 2).await.expect("page 2");
    let all: Vec<_> = first.iter().chain(&rest).map(|b| b.digest.clone()).collect();
    assert_eq!(all, expected);
    assert!(first.iter().chain(&rest).all(|b| b.damage.is_none()));
    let sizes: Vec<u64> = first.iter().chain(&rest).map(|b| b.size).collect();
    assert!(sizes.iter().all(|s| *s == 1), "{sizes:?}");
    let app = store.scrub_blobs(Some(&repo("acme/app")), None, 10).await.expect("per repository");
    let mut want = vec![a.digest.clone(), b.digest.clone()];
    want.sort();
    assert_eq!(app.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(), want);

    let m = image("one", &[&a], &["1.0"]);
    put(&*store, "acme/app", &m).await;
    let manifests = store.scrub_manifests(&repo("acme/app"), None, 10).await.expect("manifests");
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0].digest, m.digest);
    assert_eq!(manifests[0].content, m.content);
    assert!(store.scrub_manifests(&repo("acme/app"), Some(&m.digest), 10).await.expect("after").is_empty());
    assert!(store.scrub_manifests(&repo("nobody/here"), None, 10).await.expect("unknown").is_empty());
}

/// A damaged blob is hidden from readers and mounts, and refuses an upload
/// that reserved it before the mark; an upload that reserves afresh links
/// it and clears the mark, as does `clear_blob_damage`.
pub async fn damage_hides_a_blob_until_a_fresh_upload_links_it(store: Arc<dyn MetaStore>) {
    let layer = blob("layer");
    let r = repo("acme/app");
    link(&*store, "acme/app", &layer).await;
    let before = reserve(&*store, &layer).await;
    assert!(store.mark_blob_damaged(&layer.digest, "digest mismatch", 42).await.expect("mark"));
    let entry = store.blob_entry(&r, &layer.digest).await.expect("entry").expect("still linked");
    assert_eq!(entry.size, layer.size);
    let damage = entry.damage.expect("damaged");
    assert_eq!((damage.problem.as_str(), damage.found_at), ("digest mismatch", 42));
    assert_eq!(store.blob_size(&r, &layer.digest).await.expect("size"), None, "not served");
    assert_eq!(store.global_blob_size(&layer.digest).await.expect("global"), None, "not mounted");
    let listed = store.scrub_blobs(None, None, 10).await.expect("list");
    assert!(listed[0].damage.is_some(), "scrub sees the mark");

    // The reservation from before the mark cannot link (its commit may have kept the damaged bytes).
    let linked = store.link_reserved_blob(&repo("acme/other"), &layer.digest, &before).await.expect("old link");
    assert!(!linked, "a reservation from before the mark must not repair the blob");
    // A fresh one can, and repairs it.
    let after = reserve(&*store, &layer).await;
    assert!(store.link_reserved_blob(&r, &layer.digest, &after).await.expect("link"));
    assert_eq!(store.blob_size(&r, &layer.digest).await.expect("size"), Some(layer.size));

    // Marked again, then cleared by a scrub that found the bytes whole.
    assert!(store.mark_blob_damaged(&layer.digest, "missing from storage", 43).await.expect("mark"));
    assert!(store.clear_blob_damage(&layer.digest).await.expect("clear"));
    assert!(!store.clear_blob_damage(&layer.digest).await.expect("clear again"), "nothing left to clear");
    assert_eq!(store.global_blob_size(&layer.digest).await.expect("global"), Some(layer.size));
    assert!(!store.mark_blob_damaged(&blob("unknown").digest, "x", 1).await.expect("unknown"), "no row");
}

/// Reach: through the manifests that reference the digest, and the indexes
/// that reference those, with every tag on the way; untagged ones too.
pub async fn reach_follows_indexes_to_their_tags(store: Arc<dyn MetaStore>) {
    let (layer, other) = (blob("shared layer"), blob("other layer"));
    for r in ["acme/app", "acme/base"] {
        link(&*store, r, &layer).await;
        link(&*store, r, &other).await;
    }
    let amd64 = image("amd64", &[&layer], &["amd64"]);
    let arm64 = image("arm64", &[&other], &[]);
    put(&*store, "acme/app", &amd64).await;
    put(&*store, "acme/app", &arm64).await;
    let index = NewManifest {
        manifests: vec![amd64.digest.clone(), arm64.digest.clone()],
        tags: tags(&["1.0", "latest"]),
        media_type: "application/vnd.oci.image.index.v1+json".to_owned(),
        ..manifest("index")
    };
    put(&*store, "acme/app", &index).await;
    let untagged = image("untagged", &[&layer], &[]);
    put(&*store, "acme/base", &untagged).await;

    let reach = store.reach(&layer.digest, 50).await.expect("reach");
    let mut got: Vec<(String, String, Option<String>)> = reach
        .iter()
        .map(|Reach { repository, manifest, tag }| (repository.to_string(), manifest.to_string(), tag.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        ("acme/app".to_owned(), amd64.digest.to_string(), Some("amd64".to_owned())),
        ("acme/app".to_owned(), index.digest.to_string(), Some("1.0".to_owned())),
        ("acme/app".to_owned(), index.digest.to_string(), Some("latest".to_owned())),
        ("acme/base".to_owned(), untagged.digest.to_string(), None),
    ];
    want.sort();
    assert_eq!(got, want);
    // A manifest's own digest reaches it and the indexes above it.
    let of_child = store.reach(&arm64.digest, 50).await.expect("reach child");
    let child_tags: Vec<Option<String>> = of_child.iter().map(|r| r.tag.clone()).collect();
    assert!(child_tags.contains(&None), "the untagged child itself: {child_tags:?}");
    assert!(child_tags.contains(&Some("latest".to_owned())), "{child_tags:?}");
    assert_eq!(store.reach(&layer.digest, 2).await.expect("limited").len(), 2);
    assert!(store.reach(&blob("nowhere").digest, 50).await.expect("nothing").is_empty());
}
