//! Garbage collection, retention and upload expiry over real stores, on
//! SQLite and on Postgres (see [`super::backends`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_blob::{BlobBody, BlobStore, UploadCursor};
use berth_meta::{MetaStore, NewManifest, UploadProgress, no_guard};
use berth_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use berth_oci::{Algorithm, Digest, Hasher, Reference, Tag};
use futures_util::StreamExt;
use serde_json::json;

use super::backends::{Db, Store, Stores, on_both_databases};
use super::{body, repo};
use crate::gc::{GcOptions, GcReport, no_progress};
use crate::maintenance::{GC_LEASE, Maintenance};
use crate::retention::{RetentionPolicy, RetentionRule, RuleSource};
use crate::retention_rules::{RuleError, SourcedRule};
use crate::uploads::ChunkInfo;
use crate::{ImmutableTags, Policy, Registry, RegistryError, now_ms};

on_both_databases!(
    gc_frees_every_unreferenced_blob_and_keeps_everything_referenced,
    grace_period_protects_recent_content,
    package_api_deletes_make_content_collectable,
    an_upload_waits_for_the_collector_to_finish_the_same_digest,
    retention_keeps_the_30_newest_plus_latest_and_protected_tags,
    gc_and_retention_never_free_what_a_protected_tag_reaches,
    the_effective_policy_is_config_rules_then_stored_ones_read_per_run,
    upload_expiry_purges_idle_sessions_and_orphan_data,
    leases_keep_runners_apart,
);

struct Env {
    registry: Registry,
    maintenance: Maintenance,
    store: Arc<dyn Store>,
    _stores: Stores,
}

async fn env(db: Db, policy: Policy) -> Env {
    let stores = Stores::open(db).await;
    let registry = Registry::new(stores.meta(), stores.blobs.clone(), policy);
    let maintenance = Maintenance::new(registry.clone(), stores.maintenance());
    Env { registry, maintenance, store: stores.store.clone(), _stores: stores }
}

fn desc(media_type: &str, data: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": Digest::sha256_of(data).as_str(), "size": data.len()})
}

/// An image manifest over `config` and `layers`, optionally referring to `subject`.
fn image(config: &[u8], layers: &[&[u8]], subject: Option<&[u8]>) -> Vec<u8> {
    let layers: Vec<_> = layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect();
    let mut m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config), "layers": layers,
    });
    if let Some(s) = subject {
        m["subject"] = desc(OCI_MANIFEST, s);
        m["artifactType"] = json!("application/vnd.example.signature");
    }
    serde_json::to_vec(&m).unwrap()
}

fn index(children: &[&[u8]]) -> Vec<u8> {
    let list: Vec<_> = children.iter().map(|c| desc(OCI_MANIFEST, c)).collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list})).unwrap()
}

fn tag(name: &str) -> Reference {
    Reference::Tag(Tag::parse(name).unwrap())
}

fn by_digest(content: &[u8]) -> Reference {
    Reference::Digest(Digest::sha256_of(content))
}

async fn upload(r: &Registry, repository: &str, data: &[u8]) {
    r.put_blob(&repo(repository), &Digest::sha256_of(data), body(data), Some(data.len() as u64)).await.unwrap();
}

/// Uploads the image's blobs, then pushes it under `reference`.
async fn push(
    r: &Registry,
    repository: &str,
    reference: &Reference,
    config: &[u8],
    layers: &[&[u8]],
    subject: Option<&[u8]>,
) -> Vec<u8> {
    for b in std::iter::once(config).chain(layers.iter().copied()) {
        upload(r, repository, b).await;
    }
    let m = image(config, layers, subject);
    r.put_manifest(&repo(repository), reference, m.clone(), Some(OCI_MANIFEST), vec![], None).await.unwrap();
    m
}

async fn read_blob(r: &Registry, repository: &str, digest: &Digest) -> Vec<u8> {
    let read = r.read_blob(&repo(repository), digest, None).await.unwrap();
    let BlobBody::Stream(mut s) = read.body else { panic!("filesystem streams") };
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// The manifest is pullable by `reference` and each of `blobs` reads back intact.
async fn assert_pullable(r: &Registry, repository: &str, reference: &Reference, manifest: &[u8], blobs: &[&[u8]]) {
    let got = r.get_manifest(&repo(repository), reference, true).await.unwrap();
    assert_eq!(got.content, manifest, "{repository} {reference:?}");
    for b in blobs {
        let d = Digest::sha256_of(b);
        assert_eq!(read_blob(r, repository, &d).await, *b, "{repository}: blob {d} intact");
    }
}

async fn stored(r: &Registry) -> BTreeSet<Digest> {
    r.blob_store().list().await.unwrap().into_iter().map(|b| b.digest).collect()
}

async fn gc(m: &Maintenance, min_age: Duration, dry_run: bool) -> GcReport {
    m.collect_garbage(&GcOptions { min_age, dry_run }, None, &no_progress).await.unwrap()
}

/// Writes an object straight into the blob store, as a crash between the
/// storage commit and the database would leave it.
async fn orphan_object(blobs: &dyn BlobStore, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let id = uuid::Uuid::new_v4().to_string();
    let start = blobs.upload_start(&id).await.unwrap();
    let (cursor, _) = blobs.upload_append(&id, &start, body(data), Some(Hasher::new(Algorithm::Sha256))).await.unwrap();
    blobs.upload_commit(&id, &cursor, &digest).await.unwrap();
    digest
}

async fn gc_frees_every_unreferenced_blob_and_keeps_everything_referenced(db: Db) {
    let e = env(db, Policy::default()).await;
    let r = &e.registry;
    let (c1, l1, l2, l3, l4, l5) = (
        &b"{\"c\":1}"[..],
        &b"layer one"[..],
        &b"layer two"[..],
        &b"layer three"[..],
        &b"layer four"[..],
        &b"layer five"[..],
    );
    // Kept: a tagged image, its signature, a tagged index and its untagged child.
    let img1 = push(r, "acme/app", &tag("v1"), c1, &[l1, l2], None).await;
    let sig1 =
        push(r, "acme/app", &by_digest(&image(b"{\"sig\":1}", &[], Some(&img1))), b"{\"sig\":1}", &[], Some(&img1))
            .await;
    let child = push(r, "acme/idx", &by_digest(&image(b"{\"c\":9}", &[l5], None)), b"{\"c\":9}", &[l5], None).await;
    let kept_index = index(&[&child]);
    r.put_manifest(&repo("acme/idx"), &tag("multi"), kept_index.clone(), Some(OCI_INDEX), vec![], None).await.unwrap();

    // Garbage: an image whose tag is deleted, its signature, an untagged
    // index and its children, a blob uploaded and never referenced, a link
    // in a repository without manifests.
    let img2 = push(r, "acme/app", &tag("old"), b"{\"c\":2}", &[l2, l3], None).await;
    push(r, "acme/app", &by_digest(&image(b"{\"sig\":2}", &[], Some(&img2))), b"{\"sig\":2}", &[], Some(&img2)).await;
    r.delete_manifest(&repo("acme/app"), &tag("old")).await.unwrap();
    let a = push(r, "acme/app", &by_digest(&image(b"{\"c\":3}", &[l4], None)), b"{\"c\":3}", &[l4], None).await;
    let b = push(r, "acme/app", &by_digest(&image(b"{\"c\":4}", &[l4], None)), b"{\"c\":4}", &[l4], None).await;
    r.put_manifest(&repo("acme/app"), &by_digest(&index(&[&a, &b])), index(&[&a, &b]), Some(OCI_INDEX), vec![], None)
        .await
        .unwrap();
    upload(r, "acme/app", b"uploaded, never referenced").await;
    assert_eq!(
        r.mount_blob(&repo("acme/other"), &Digest::sha256_of(l1), Some(&repo("acme/app"))).await.unwrap(),
        Some(9)
    );
    // Crash leftovers: an object without a row, a reservation whose upload
    // died, a blob a crashed collector marked but did not finish.
    let orphan = orphan_object(r.blob_store().as_ref(), b"orphan bytes").await;
    let reserved = Digest::sha256_of(b"reserved, never committed");
    assert!(e.store.reserve_blob(&reserved, 25).await.unwrap().is_some());
    upload(r, "tmp/x", b"half deleted").await;
    r.delete_blob(&repo("tmp/x"), &Digest::sha256_of(b"half deleted")).await.unwrap();
    assert!(e.store.gc_mark_blob(&Digest::sha256_of(b"half deleted"), i64::MAX / 4).await.unwrap().is_some());
    assert!(stored(r).await.contains(&orphan));
    // Resumed only once marked before the run starts (by the clock's millisecond).
    tokio::time::sleep(Duration::from_millis(5)).await;

    let dry = gc(&e.maintenance, Duration::ZERO, true).await;
    let report = gc(&e.maintenance, Duration::ZERO, false).await;
    // img2, its signature (next pass), the index, its two children (next pass).
    assert_eq!(report.manifests.count, 5, "{report:?}");
    assert_eq!(report.manifest_passes, 2);
    // acme/app: img2's config, l3, l4, sig2's config, the two children's
    // configs, the unreferenced upload; acme/other: l1.
    assert_eq!(report.links.count, 8, "{report:?}");
    // Those, except l1 (still in acme/app), plus the dead reservation.
    assert_eq!(report.blobs.count, 8, "{report:?}");
    assert_eq!(report.orphans.count, 1);
    assert_eq!(report.resumed.count, 1);
    assert_eq!(report.errors, 0);
    // The dry run predicted exactly this.
    for (kind, d, real) in [
        ("manifests", dry.manifests, report.manifests),
        ("links", dry.links, report.links),
        ("blobs", dry.blobs, report.blobs),
        ("orphans", dry.orphans, report.orphans),
        ("resumed", dry.resumed, report.resumed),
    ] {
        assert_eq!(d, real, "dry run vs real run: {kind}");
    }

    // Exactly the referenced blobs remain, and everything kept is intact.
    let referenced: BTreeSet<Digest> =
        [c1, l1, l2, b"{\"sig\":1}", b"{\"c\":9}", l5].iter().map(|b| Digest::sha256_of(b)).collect();
    assert_eq!(stored(r).await, referenced);
    assert_pullable(r, "acme/app", &tag("v1"), &img1, &[c1, l1, l2]).await;
    assert_pullable(r, "acme/app", &by_digest(&sig1), &sig1, &[b"{\"sig\":1}"]).await;
    assert_pullable(r, "acme/idx", &tag("multi"), &kept_index, &[]).await;
    assert_pullable(r, "acme/idx", &by_digest(&child), &child, &[b"{\"c\":9}", l5]).await;
    assert_eq!(r.referrers(&repo("acme/app"), &Digest::sha256_of(&img1), None).await.unwrap().len(), 1);
    assert!(matches!(
        r.get_manifest(&repo("acme/app"), &by_digest(&img2), false).await,
        Err(RegistryError::ManifestUnknown)
    ));
    assert!(e.store.deleting_blobs(i64::MAX, 10).await.unwrap().is_empty());
    assert!(e.store.known_blobs(&[reserved.clone(), orphan.clone()]).await.unwrap().is_empty());

    // Nothing left to do; and a freed blob can be pushed again.
    let again = gc(&e.maintenance, Duration::ZERO, false).await;
    assert_eq!((again.manifests.count, again.links.count, again.blobs_deleted()), (0, 0, 0), "{again:?}");
    let img3 = push(r, "acme/app", &tag("v3"), b"{\"c\":2}", &[l3], None).await;
    assert_pullable(r, "acme/app", &tag("v3"), &img3, &[b"{\"c\":2}", l3]).await;
}

async fn grace_period_protects_recent_content(db: Db) {
    let e = env(db, Policy::default()).await;
    let r = &e.registry;
    push(r, "acme/app", &tag("t"), b"{}", &[b"layer"], None).await;
    r.delete_manifest(&repo("acme/app"), &tag("t")).await.unwrap();
    upload(r, "acme/app", b"fresh upload").await;
    orphan_object(r.blob_store().as_ref(), b"fresh orphan").await;
    let report = gc(&e.maintenance, Duration::from_secs(3600), false).await;
    assert_eq!((report.manifests.count, report.links.count, report.blobs_deleted()), (0, 0, 0), "{report:?}");
    assert_eq!(stored(r).await.len(), 4);
    let report = gc(&e.maintenance, Duration::ZERO, false).await;
    assert_eq!((report.manifests.count, report.blobs.count, report.orphans.count), (1, 3, 1), "{report:?}");
    assert!(stored(r).await.is_empty());
}

async fn package_api_deletes_make_content_collectable(db: Db) {
    let e = env(db, Policy::default()).await;
    let r = &e.registry;
    let tagged = push(r, "acme/pkg", &tag("v1"), b"{\"p\":1}", &[b"pkg layer 1"], None).await;
    let untagged = push(
        r,
        "acme/pkg",
        &by_digest(&image(b"{\"p\":2}", &[b"pkg layer 2"], None)),
        b"{\"p\":2}",
        &[b"pkg layer 2"],
        None,
    )
    .await;
    let keep = push(r, "acme/pkg", &tag("v2"), b"{\"p\":3}", &[b"pkg layer 3"], None).await;
    // As `DELETE /api/v1/packages/acme/container/pkg/{version}` does.
    r.delete_package_version(&repo("acme/pkg"), "v1", None).await.unwrap();
    r.delete_package_version(&repo("acme/pkg"), Digest::sha256_of(&untagged).as_str(), None).await.unwrap();
    let report = gc(&e.maintenance, Duration::ZERO, false).await;
    assert_eq!(report.manifests.count, 1, "the untagged manifest left by deleting v1");
    assert_eq!(report.blobs.count, 4, "both images' configs and layers");
    assert!(matches!(
        r.get_manifest(&repo("acme/pkg"), &by_digest(&tagged), false).await,
        Err(RegistryError::ManifestUnknown)
    ));
    assert_pullable(r, "acme/pkg", &tag("v2"), &keep, &[b"{\"p\":3}", b"pkg layer 3"]).await;
    assert_eq!(stored(r).await.len(), 2);
}

async fn an_upload_waits_for_the_collector_to_finish_the_same_digest(db: Db) {
    let e = env(db, Policy::default()).await;
    let r = &e.registry;
    let data = b"contended layer".to_vec();
    let digest = Digest::sha256_of(&data);
    upload(r, "a/one", &data).await;
    r.delete_blob(&repo("a/one"), &digest).await.unwrap();
    // The collector has marked it and is about to delete its bytes.
    assert!(e.store.gc_mark_blob(&digest, i64::MAX / 4).await.unwrap().is_some());
    let pushing = tokio::spawn({
        let (r, data, digest) = (r.clone(), data.clone(), digest.clone());
        async move { r.put_blob(&repo("b/two"), &digest, body(&data), None).await }
    });
    // A chunked upload finishing meanwhile waits too.
    let session = r.start_upload(&repo("c/three"), Algorithm::Sha256).await.unwrap();
    r.append_upload(&repo("c/three"), &session.id, body(&data), ChunkInfo::default()).await.unwrap();
    let finishing = tokio::spawn({
        let (r, digest, id) = (r.clone(), digest.clone(), session.id.clone());
        async move { r.finish_upload(&repo("c/three"), &id, &digest, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pushing.is_finished() && !finishing.is_finished(), "uploads wait while the blob is being deleted");
    r.blob_store().delete(&digest).await.unwrap();
    assert!(e.store.gc_forget_blob(&digest).await.unwrap());
    assert_eq!(pushing.await.unwrap().unwrap(), data.len() as u64);
    assert_eq!(finishing.await.unwrap().unwrap(), data.len() as u64);
    for name in ["b/two", "c/three"] {
        assert_eq!(read_blob(r, name, &digest).await, data, "the bytes were written again");
    }
}

async fn retention_keeps_the_30_newest_plus_latest_and_protected_tags(db: Db) {
    let policy = Policy {
        allow_sparse: true,
        immutable_tags: ImmutableTags::new(&["acme/app:rel-*"]).unwrap(),
        ..Policy::default()
    };
    let e = env(db, policy).await;
    let meta: &dyn MetaStore = e.store.as_ref();
    let r = repo("acme/app");
    let base = now_ms() - 10 * 24 * 3600 * 1000;
    let put = |seed: String, tags: &[&str], at: i64, subject: Option<Digest>, children: Vec<Digest>| {
        let content = format!(r#"{{"schemaVersion":2,"seed":"{seed}"}}"#).into_bytes();
        NewManifest {
            digest: Digest::sha256_of(&content),
            media_type: if children.is_empty() { OCI_MANIFEST.into() } else { OCI_INDEX.into() },
            content,
            artifact_type: None,
            subject,
            annotations: None,
            blobs: Vec::new(),
            manifests: children,
            tags: tags.iter().map(|t| Tag::parse(t).unwrap()).collect(),
            pushed_by: None,
            created_at: at,
        }
    };
    let mut images = Vec::new();
    for i in 0..100 {
        let m = put(format!("img{i}"), &[&format!("t{i:03}")], base + i64::from(i) * 1000, None, Vec::new());
        meta.put_manifest(&r, &m, false, &no_guard).await.unwrap();
        images.push(m.digest);
    }
    let old = base - 1000;
    let special = [
        put("latest".into(), &["latest"], old, None, Vec::new()),
        put("release".into(), &["rel-1"], old, None, Vec::new()),
        put("child".into(), &["child-tag"], old, None, Vec::new()),
    ];
    for m in &special {
        meta.put_manifest(&r, m, false, &no_guard).await.unwrap();
    }
    let idx = put("idx".into(), &[], old, None, vec![special[2].digest.clone()]);
    meta.put_manifest(&r, &idx, false, &no_guard).await.unwrap();
    let sig_tag = |d: &Digest| format!("sha256-{}.sig", d.hex());
    let kept_sig = put("sig99".into(), &[&sig_tag(&images[99])], old, Some(images[99].clone()), Vec::new());
    let lost_sig = put("sig5".into(), &[&sig_tag(&images[5])], old, Some(images[5].clone()), Vec::new());
    meta.put_manifest(&r, &kept_sig, false, &no_guard).await.unwrap();
    meta.put_manifest(&r, &lost_sig, false, &no_guard).await.unwrap();
    // Another repository, governed by no rule, is left alone.
    meta.put_manifest(&repo("other/app"), &put("x".into(), &["t000"], old, None, Vec::new()), false, &no_guard)
        .await
        .unwrap();

    let policy = RetentionPolicy::new(vec![RetentionRule {
        repositories: "acme/*".into(),
        keep_last: Some(30),
        ..RetentionRule::default()
    }])
    .unwrap();
    let mut expected: BTreeSet<String> = (70..100).map(|i| format!("t{i:03}")).collect();
    expected.extend(["latest", "rel-1", "child-tag"].map(String::from));
    expected.insert(sig_tag(&images[99]));
    let tags_now =
        || async { meta.list_tags(&r, None, None).await.unwrap().unwrap().into_iter().collect::<BTreeSet<_>>() };

    let dry = e.maintenance.apply_retention(&policy, true, None).await.unwrap();
    assert_eq!(dry.removed(), 71, "t000..t069 and the signature of t005");
    assert_eq!(tags_now().await.len(), 105, "a dry run removes nothing");
    let report = e.maintenance.apply_retention(&policy, false, None).await.unwrap();
    assert_eq!(report.repositories.len(), 1);
    let outcome = &report.repositories[0];
    assert_eq!(outcome.removed.len(), 71);
    assert_eq!(outcome.immutable, vec!["rel-1".to_owned()]);
    assert_eq!(outcome.kept, 33, "besides the immutable one");
    assert!(outcome.removed.iter().any(|t| t.tag == sig_tag(&images[5])));
    assert_eq!(tags_now().await, expected);
    assert_eq!(meta.list_tags(&repo("other/app"), None, None).await.unwrap().unwrap(), vec!["t000".to_owned()]);

    // Garbage collection then frees what the removed tags left untagged.
    let freed = gc(&e.maintenance, Duration::ZERO, false).await;
    // t000..t069's manifests, the lost signature (after its subject), and the untagged index.
    assert_eq!(freed.manifests.count, 72, "{freed:?}");
    // The untagged index went with them, so its child's tag is no longer protected.
    let again = e.maintenance.apply_retention(&policy, false, None).await.unwrap();
    let removed: Vec<&str> = again.repositories.iter().flat_map(|r| &r.removed).map(|t| t.tag.as_str()).collect();
    assert_eq!(removed, vec!["child-tag"]);
}

/// Retention skips the protected tag and collection keeps everything it
/// reaches: the index, both platform images, their configs and layers.
/// Deleting any of those by hand is refused as well.
async fn gc_and_retention_never_free_what_a_protected_tag_reaches(db: Db) {
    let policy = Policy { immutable_tags: ImmutableTags::new(&["*:v*"]).unwrap(), ..Policy::default() };
    let e = env(db, policy).await;
    let r = &e.registry;
    let name = "alice/multi";
    let platforms: [(&[u8], &[u8]); 2] =
        [(b"{\"arch\":\"amd64\"}", b"amd64 layer"), (b"{\"arch\":\"arm64\"}", b"arm64 layer")];
    let mut children = Vec::new();
    for (config, layer) in platforms {
        children.push(push(r, name, &by_digest(&image(config, &[layer], None)), config, &[layer], None).await);
    }
    let idx = index(&[&children[0], &children[1]]);
    r.put_manifest(&repo(name), &tag("v2.0"), idx.clone(), Some(OCI_INDEX), vec![], None).await.unwrap();
    // Beside it, a tag the rule removes, so the runs demonstrably do work.
    push(r, name, &tag("old"), b"{\"old\":1}", &[b"old layer"], None).await;

    let rule = RetentionRule { repositories: "alice/*".into(), keep_last: Some(0), ..RetentionRule::default() };
    let report = e.maintenance.apply_retention(&RetentionPolicy::new(vec![rule]).unwrap(), false, None).await.unwrap();
    let outcome = &report.repositories[0];
    assert_eq!(outcome.removed.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(), vec!["old"]);
    assert_eq!(outcome.immutable, vec!["v2.0".to_owned()]);

    let freed = gc(&e.maintenance, Duration::ZERO, false).await;
    assert_eq!((freed.manifests.count, freed.blobs.count), (1, 2), "only old's manifest, config and layer: {freed:?}");
    assert_pullable(r, name, &tag("v2.0"), &idx, &[]).await;
    for (child, (config, layer)) in children.iter().zip(platforms) {
        assert_pullable(r, name, &by_digest(child), child, &[config, layer]).await;
        let refused = r.delete_blob(&repo(name), &Digest::sha256_of(layer)).await;
        assert!(matches!(refused, Err(RegistryError::Protected { ref tag, .. }) if tag == "v2.0"), "{refused:?}");
        let refused = r.delete_manifest(&repo(name), &by_digest(child)).await;
        assert!(matches!(refused, Err(RegistryError::Protected { ref rule, .. }) if rule == "*:v*"), "{refused:?}");
    }
    let again = gc(&e.maintenance, Duration::ZERO, false).await;
    assert_eq!((again.manifests.count, again.links.count, again.blobs_deleted()), (0, 0, 0), "{again:?}");
    assert_eq!(stored(r).await.len(), 4, "both platforms' configs and layers");
}

async fn the_effective_policy_is_config_rules_then_stored_ones_read_per_run(db: Db) {
    let e = env(db, Policy::default()).await;
    let rule = |repositories: &str, keep_last: Option<u32>| RetentionRule {
        repositories: repositories.into(),
        keep_last,
        ..RetentionRule::default()
    };
    let config = RetentionPolicy::new(vec![rule("acme/special", Some(5))]).unwrap();
    let m = e.maintenance.clone().with_config_rules(config);
    // Refused before anything is stored.
    let refused = m.add_retention_rule(rule("acme/*", None), "alice").await;
    assert!(matches!(refused, Err(RuleError::Invalid(ref m)) if m.contains("must limit")), "{refused:?}");
    assert!(e.store.list_retention_rules().await.unwrap().is_empty());

    let id = |r: &SourcedRule| match &r.source {
        RuleSource::Stored { id, created_by, .. } => {
            assert!(!created_by.is_empty());
            *id
        }
        RuleSource::Config { .. } => panic!("a stored rule has an id"),
    };
    let acme = m.add_retention_rule(rule("acme/*", Some(1)), "alice").await.unwrap();
    let any = m.add_retention_rule(rule("*", Some(2)), "cli").await.unwrap();
    assert!(matches!(&acme.source, RuleSource::Stored { created_by, .. } if created_by == "alice"));
    let policy = m.retention_policy().await.unwrap();
    let order: Vec<String> = policy.entries().map(|(s, _)| s.to_string()).collect();
    assert_eq!(
        order,
        ["config rule 1".to_owned(), format!("stored rule {}", id(&acme)), format!("stored rule {}", id(&any))]
    );
    let governing = |p: &RetentionPolicy, name: &str| p.rule_for(&repo(name)).map(|(i, _)| i);
    assert_eq!(governing(&policy, "acme/special"), Some(0), "config rules come first");
    assert_eq!(governing(&policy, "acme/app"), Some(1));
    assert_eq!(governing(&policy, "other/app"), Some(2));

    // Another handle on the same database (the CLI, a replica) removes a
    // rule: the next read no longer has it. That handle has no config rules.
    assert!(e.maintenance.remove_retention_rule(id(&acme), "bob").await.unwrap());
    assert!(!e.maintenance.remove_retention_rule(id(&acme), "bob").await.unwrap());
    assert_eq!(e.maintenance.retention_rules().await.unwrap(), vec![any.clone()]);
    let policy = m.retention_policy().await.unwrap();
    assert_eq!(governing(&policy, "acme/app"), Some(1), "now the catch-all rule");

    // A run reports which rule governed each repository.
    push(&e.registry, "acme/app", &tag("t1"), b"c1", &[], None).await;
    let report = m.apply_retention(&policy, true, None).await.unwrap();
    assert_eq!(report.repositories.len(), 1);
    assert_eq!(report.repositories[0].source, any.source);
}

async fn upload_expiry_purges_idle_sessions_and_orphan_data(db: Db) {
    let e = env(db, Policy::default()).await;
    let r = &e.registry;
    let idle = r.start_upload(&repo("a/b"), Algorithm::Sha256).await.unwrap();
    r.append_upload(&repo("a/b"), &idle.id, body(b"abandoned"), ChunkInfo::default()).await.unwrap();
    let session = e.store.get_upload(&idle.id).await.unwrap().unwrap();
    let stale = UploadProgress { updated_at: now_ms() - 2 * 3600 * 1000, ..session.progress.clone() };
    assert!(e.store.update_upload(&idle.id, session.progress.offset, &stale).await.unwrap());
    let busy = r.start_upload(&repo("a/b"), Algorithm::Sha256).await.unwrap();
    r.append_upload(&repo("a/b"), &busy.id, body(b"in progress"), ChunkInfo::default()).await.unwrap();
    let blobs = r.blob_store();
    let start = blobs.upload_start("orphan-upload").await.unwrap();
    blobs
        .upload_append("orphan-upload", &start, body(b"no session"), Some(Hasher::new(Algorithm::Sha256)))
        .await
        .unwrap();
    let listed = || async { blobs.list_uploads(i64::MAX).await.unwrap().into_iter().collect::<BTreeSet<_>>() };
    assert_eq!(listed().await.len(), 3);

    let report = e.maintenance.expire_uploads(Duration::from_secs(3600), None).await.unwrap();
    assert_eq!((report.sessions, report.orphans, report.errors), (1, 0, 0));
    assert!(matches!(r.upload_status(&repo("a/b"), &idle.id).await, Err(RegistryError::UploadUnknown)));
    assert_eq!(listed().await, [busy.id.clone(), "orphan-upload".to_owned()].into_iter().collect());
    assert_eq!(r.upload_status(&repo("a/b"), &busy.id).await.unwrap().offset, 11);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = e.maintenance.expire_uploads(Duration::ZERO, None).await.unwrap();
    assert_eq!((report.sessions, report.orphans), (1, 1));
    assert!(listed().await.is_empty());
    // An expired session's data is gone for good: finishing it fails cleanly.
    let err = r.finish_upload(&repo("a/b"), &busy.id, &Digest::sha256_of(b"in progress"), None).await;
    assert!(matches!(err, Err(RegistryError::UploadUnknown)), "{err:?}");
    blobs.upload_abort("never-existed", &UploadCursor::default()).await.unwrap();
}

async fn leases_keep_runners_apart(db: Db) {
    let e = env(db, Policy::default()).await;
    let ttl = Duration::from_millis(400);
    let first = Maintenance::with_lease_ttl(e.registry.clone(), e.store.clone(), ttl);
    let second = Maintenance::with_lease_ttl(e.registry.clone(), e.store.clone(), ttl);
    assert_ne!(first.holder(), second.holder());
    let lease = first.try_lease(GC_LEASE).await.unwrap().expect("free");
    let held = second.try_lease(GC_LEASE).await.unwrap().expect_err("held");
    assert_eq!(held.holder, first.holder());

    // The holder renews it past its lifetime; the second runner waits.
    let waiting = tokio::spawn({
        let second = second.clone();
        async move { second.lease(GC_LEASE, |_| {}).await }
    });
    tokio::time::sleep(ttl * 3).await;
    assert!(!waiting.is_finished(), "a renewed lease is not taken over");
    lease.ensure_held().unwrap();
    lease.release(true).await.unwrap();
    let taken =
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("taken after release").unwrap().unwrap();
    assert!(e.store.get_lease(GC_LEASE).await.unwrap().unwrap().last_run_at.is_some());

    // A lease taken away (here: released behind its holder's back) is noticed.
    assert!(e.store.release_lease(GC_LEASE, second.holder(), None).await.unwrap());
    tokio::time::sleep(ttl).await;
    assert!(taken.ensure_held().is_err());
    let options = GcOptions { min_age: Duration::ZERO, dry_run: false };
    assert!(
        second.collect_garbage(&options, Some(&taken), &no_progress).await.is_err(),
        "a run stops without its lease"
    );
}
