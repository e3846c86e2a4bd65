//! Deletes refused for content something still needs, against a
//! transaction held open on a plain connection: the delete must wait for
//! it, then see what it committed (a reference, an index, a protected tag)
//! and refuse; or, if it rolled back, go ahead.

mod common;

use std::sync::Arc;

use berth_meta::{BlobRef, MetaError, MetaStore, NewManifest, no_guard};
use berth_oci::{Digest, RepositoryName};
use common::{Schema, store_waits_for_lock};
use sqlx::{Connection, PgConnection};

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("valid repository name")
}

fn blob(seed: &str) -> BlobRef {
    BlobRef { digest: Digest::sha256_of(seed.as_bytes()), size: seed.len() as u64 }
}

fn manifest(seed: &str, children: &[&NewManifest]) -> NewManifest {
    let content = format!(r#"{{"schemaVersion":2,"seed":"{seed}"}}"#).into_bytes();
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: "application/vnd.oci.image.index.v1+json".to_owned(),
        content,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: Vec::new(),
        manifests: children.iter().map(|m| m.digest.clone()).collect(),
        tags: Vec::new(),
        pushed_by: None,
        created_at: 1,
    }
}

fn protect_releases(_: &RepositoryName, tag: &str) -> Option<String> {
    tag.starts_with('v').then(|| "v*".to_owned())
}

async fn repository_id(conn: &mut PgConnection, name: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(name)
        .fetch_one(conn)
        .await
        .expect("repository id")
}

async fn has_manifest(store: &dyn MetaStore, digest: &Digest) -> bool {
    let found = store.get_manifest(&repo("acme/app"), &berth_meta::ManifestRef::Digest(digest), false).await;
    found.expect("get_manifest").is_some()
}

/// Inserts a manifest row and its references as `manifests::put` does.
async fn insert_manifest(tx: &mut PgConnection, id: i64, digest: &Digest, targets: &[(&Digest, &str)]) {
    sqlx::query(
        "INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at) \
         VALUES ($1, $2, 'x', 0, ''::bytea, 1)",
    )
    .bind(id)
    .bind(digest.as_str())
    .execute(&mut *tx)
    .await
    .expect("manifest");
    for (target, kind) in targets {
        sqlx::query(
            "INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, kind) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(digest.as_str())
        .bind(target.as_str())
        .bind(*kind)
        .execute(&mut *tx)
        .await
        .expect("reference");
    }
}

async fn insert_tag(tx: &mut PgConnection, id: i64, name: &str, digest: &Digest) {
    sqlx::query("INSERT INTO tags (repository_id, name, digest, created_at, updated_at) VALUES ($1, $2, $3, 0, 0)")
        .bind(id)
        .bind(name)
        .bind(digest.as_str())
        .execute(tx)
        .await
        .expect("insert tag");
}

/// A checked push holds the link `FOR KEY SHARE` while it records its
/// references: the blob delete waits, then refuses if the push committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_delete_waits_for_a_push_in_flight_and_sees_its_reference() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    for commit in [true, false] {
        let layer = blob(&format!("layer {commit}"));
        let token = store.reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live");
        assert!(store.link_reserved_blob(&repo("acme/app"), &layer.digest, &token).await.expect("link"));
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/app").await;
        let m = manifest(&format!("uses layer {commit}"), &[]);
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE")
            .bind(id)
            .bind(layer.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("lock link");
        insert_manifest(&mut tx, id, &m.digest, &[(&layer.digest, "blob")]).await;

        let unlinking = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), layer.digest.clone());
            async move { store.unlink_blob(&repo("acme/app"), &digest, &protect_releases).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the delete must wait for the push");
        if commit {
            tx.commit().await.expect("commit");
            let result = unlinking.await.expect("task");
            assert!(matches!(&result, Err(MetaError::Referenced { by, .. }) if *by == m.digest), "{result:?}");
            assert_eq!(store.blob_size(&repo("acme/app"), &layer.digest).await.expect("size"), Some(layer.size));
        } else {
            tx.rollback().await.expect("rollback");
            assert!(unlinking.await.expect("task").expect("unlink"), "no reference: the link goes");
        }
    }
}

/// A checked index push holds its child `FOR KEY SHARE` while it records the
/// index and its protected tag: deleting the child waits, then refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_delete_waits_for_a_protected_index_push_in_flight() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    for commit in [true, false] {
        let child = manifest(&format!("child {commit}"), &[]);
        store.put_manifest(&repo("acme/app"), &child, false, &no_guard).await.expect("put child");
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/app").await;
        let index = manifest(&format!("index {commit}"), &[&child]);
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE")
            .bind(id)
            .bind(child.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("lock child");
        insert_manifest(&mut tx, id, &index.digest, &[(&child.digest, "manifest")]).await;
        insert_tag(&mut tx, id, &format!("v-{commit}"), &index.digest).await;

        let deleting = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), child.digest.clone());
            async move { store.delete_manifest(&repo("acme/app"), &digest, &protect_releases).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the delete must wait for the index push");
        if commit {
            tx.commit().await.expect("commit");
            let result = deleting.await.expect("task");
            assert!(matches!(&result, Err(MetaError::Protected { tag, .. }) if tag == "v-true"), "{result:?}");
            assert!(has_manifest(&*store, &child.digest).await);
        } else {
            tx.rollback().await.expect("rollback");
            assert!(deleting.await.expect("task").expect("delete"), "no index: the child goes");
            assert!(!has_manifest(&*store, &child.digest).await);
        }
    }
}

/// Tagging an index two levels above a manifest (its row held by the tag's
/// foreign key check) makes deleting the manifest wait, then refuse: the
/// delete locks every index above, not only the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_child_delete_waits_for_a_protected_tag_being_added_above() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    for commit in [true, false] {
        let leaf = manifest(&format!("leaf {commit}"), &[]);
        let inner = manifest(&format!("inner {commit}"), &[&leaf]);
        let outer = manifest(&format!("outer {commit}"), &[&inner]);
        for m in [&leaf, &inner, &outer] {
            store.put_manifest(&repo("acme/app"), m, true, &no_guard).await.expect("put");
        }
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/app").await;
        let mut tx = raw.begin().await.expect("begin");
        insert_tag(&mut tx, id, "v1", &outer.digest).await;

        let deleting = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), leaf.digest.clone());
            async move { store.delete_manifest(&repo("acme/app"), &digest, &protect_releases).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the delete must wait for the tag insert");
        if commit {
            tx.commit().await.expect("commit");
            let result = deleting.await.expect("task");
            assert!(matches!(&result, Err(MetaError::Protected { tag, .. }) if tag == "v1"), "{result:?}");
            assert!(has_manifest(&*store, &leaf.digest).await);
            // Clear the way for the next iteration.
            assert!(store.delete_manifest(&repo("acme/app"), &outer.digest, &no_guard).await.expect("untag"));
        } else {
            tx.rollback().await.expect("rollback");
            assert!(deleting.await.expect("task").expect("delete"), "nothing protects it");
        }
    }
}
