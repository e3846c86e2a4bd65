//! Postgres-specific concurrency: two stores (two replicas, two pools) on
//! one schema racing each other, and a store racing a transaction held open
//! on a plain connection, which pins down exactly which locks are taken.

mod common;

use std::sync::Arc;

use berth_meta::{
    BlobRef, MaintenanceStore, MetaError, MetaStore, NewManifest, RefProblem, UploadProgress, UploadSession, no_guard,
};
use berth_meta_postgres::PostgresMetaStore;
use berth_oci::{Algorithm, Digest, RepositoryName, Tag};
use common::{Schema, store_waits_for_lock};
use sqlx::{Connection, PgConnection};
use tokio::sync::Barrier;

const ROUNDS: usize = 12;

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("valid repository name")
}

fn tags(names: &[&str]) -> Vec<Tag> {
    names.iter().map(|n| Tag::parse(n).expect("valid tag")).collect()
}

fn blob(seed: &str) -> BlobRef {
    BlobRef { digest: Digest::sha256_of(seed.as_bytes()), size: seed.len() as u64 }
}

fn manifest(seed: &str, tag_names: &[&str]) -> NewManifest {
    let content = format!(r#"{{"schemaVersion":2,"seed":"{seed}"}}"#).into_bytes();
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        content,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: Vec::new(),
        manifests: Vec::new(),
        tags: tags(tag_names),
        pushed_by: None,
        created_at: 1,
    }
}

fn protect_releases(_: &RepositoryName, tag: &str) -> Option<String> {
    tag.starts_with('v').then(|| "v*".to_owned())
}

async fn tag_digest(store: &PostgresMetaStore, repository: &str, tag: &str) -> Option<Digest> {
    let tag = Tag::parse(tag).expect("tag");
    let found = store.get_manifest(&repo(repository), &berth_meta::ManifestRef::Tag(&tag), false).await;
    found.expect("get_manifest").map(|m| m.digest)
}

async fn has_manifest(store: &PostgresMetaStore, repository: &str, digest: &Digest) -> bool {
    let found = store.get_manifest(&repo(repository), &berth_meta::ManifestRef::Digest(digest), false).await;
    found.expect("get_manifest").is_some()
}

/// Two replicas of the registry: separate pools on the same schema.
async fn replicas(schema: &Schema) -> [Arc<PostgresMetaStore>; 2] {
    let first = schema.store().await;
    [Arc::new(first), Arc::new(schema.connect().await)]
}

/// Runs `op` on both replicas at the same instant; returns both results.
async fn race<T, F, Fut>(stores: &[Arc<PostgresMetaStore>; 2], op: F) -> [T; 2]
where
    T: Send + 'static,
    F: Fn(usize, Arc<PostgresMetaStore>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let tasks = [0, 1].map(|i| {
        let (barrier, work) = (Arc::clone(&barrier), op(i, Arc::clone(&stores[i])));
        tokio::spawn(async move {
            barrier.wait().await;
            work.await
        })
    });
    let [a, b] = tasks;
    [a.await.expect("task panicked"), b.await.expect("task panicked")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_an_immutable_tag_one_wins() {
    let Some(schema) = Schema::create().await else { return };
    let stores = replicas(&schema).await;
    for round in 0..ROUNDS {
        let tag = format!("v{round}");
        let pushed = [0, 1].map(|i| manifest(&format!("replica {i} round {round}"), &[&tag]));
        let results = race(&stores, |i, store| {
            let m = pushed[i].clone();
            async move { store.put_manifest(&repo("acme/app"), &m, false, &protect_releases).await }
        })
        .await;
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (winner, loser) = (winners[0], 1 - winners[0]);
        assert!(matches!(results[loser], Err(MetaError::ImmutableTag { .. })), "round {round}: {results:?}");
        assert_eq!(tag_digest(&stores[0], "acme/app", &tag).await, Some(pushed[winner].digest.clone()));
        assert!(!has_manifest(&stores[1], "acme/app", &pushed[loser].digest).await, "the loser stored nothing");
    }
}

/// Both pushes move the same tags, listed in opposite orders: neither may
/// deadlock or fail, and every tag ends on one of the two manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_moving_the_same_tags_both_succeed() {
    let Some(schema) = Schema::create().await else { return };
    let stores = replicas(&schema).await;
    for round in 0..ROUNDS {
        let pushed = [
            manifest(&format!("a{round}"), &["x", "y", "latest"]),
            manifest(&format!("b{round}"), &["latest", "y", "x"]),
        ];
        let results = race(&stores, |i, store| {
            let m = pushed[i].clone();
            async move { store.put_manifest(&repo("acme/app"), &m, false, &no_guard).await }
        })
        .await;
        assert!(results.iter().all(Result::is_ok), "round {round}: {results:?}");
        let digests = [&pushed[0].digest, &pushed[1].digest];
        for tag in ["x", "y", "latest"] {
            let current = tag_digest(&stores[0], "acme/app", tag).await.expect("tag exists");
            assert!(digests.contains(&&current), "round {round}: {tag} points elsewhere");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_linking_one_blob_into_a_new_repository_both_succeed() {
    let Some(schema) = Schema::create().await else { return };
    let stores = replicas(&schema).await;
    let layer = blob("shared layer");
    let token = stores[0].reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live");
    assert!(stores[0].link_reserved_blob(&repo("source/repo"), &layer.digest, &token).await.expect("link"));
    for round in 0..ROUNDS {
        let name = format!("new/repo-{round}");
        let results = race(&stores, |_, store| {
            let (name, layer) = (name.clone(), layer.clone());
            async move { store.link_blob(&repo(&name), &layer.digest).await }
        })
        .await;
        assert!(results.iter().all(|r| matches!(r, Ok(true))), "round {round}: {results:?}");
        assert_eq!(stores[1].blob_size(&repo(&name), &layer.digest).await.expect("size"), Some(layer.size));
    }
    let listed = stores[0].list_repositories(None, None).await.expect("list");
    assert_eq!(listed.len(), ROUNDS + 1, "each repository created once: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_completing_one_upload_one_wins() {
    let Some(schema) = Schema::create().await else { return };
    let stores = replicas(&schema).await;
    for round in 0..ROUNDS {
        let id = format!("upload-{round}");
        let session = UploadSession {
            id: id.clone(),
            repository: repo("acme/app"),
            algorithm: Algorithm::Sha256,
            progress: UploadProgress::default(),
            created_at: 1,
        };
        stores[0].create_upload(&session).await.expect("create");
        let finished = [0, 1].map(|i| blob(&format!("bytes from replica {i} round {round}")));
        let mut tokens = Vec::new();
        for layer in &finished {
            tokens.push(stores[0].reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live"));
        }
        let results = race(&stores, |i, store| {
            let (id, layer, token) = (id.clone(), finished[i].clone(), tokens[i].clone());
            async move { store.complete_upload(&id, &layer.digest, &token).await }
        })
        .await;
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = 1 - winners[0];
        assert!(matches!(results[loser], Err(MetaError::UploadUnknown)), "round {round}: {results:?}");
        let lost = &finished[loser].digest;
        assert_eq!(stores[0].global_blob_size(lost).await.expect("global"), None, "the loser linked nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_appending_to_one_upload_one_wins() {
    let Some(schema) = Schema::create().await else { return };
    let stores = replicas(&schema).await;
    for round in 0..ROUNDS {
        let id = format!("append-{round}");
        let session = UploadSession {
            id: id.clone(),
            repository: repo("acme/app"),
            algorithm: Algorithm::Sha256,
            progress: UploadProgress::default(),
            created_at: 1,
        };
        stores[0].create_upload(&session).await.expect("create");
        let results = race(&stores, |i, store| {
            let id = id.clone();
            let progress = UploadProgress { offset: 10 + i as u64, updated_at: 2, ..UploadProgress::default() };
            async move { store.update_upload(&id, 0, &progress).await.expect("update").then_some(10 + i as u64) }
        })
        .await;
        let winners: Vec<u64> = results.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = stores[1].get_upload(&id).await.expect("get").expect("exists");
        assert_eq!(stored.progress.offset, winners[0]);
    }
}

// --- a store against a transaction held open elsewhere ----------------------

async fn repository_id(conn: &mut PgConnection, name: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(name)
        .fetch_one(conn)
        .await
        .expect("repository id")
}

/// While another session adds a protected tag to a manifest (not yet
/// committed), deleting the manifest waits for it, then refuses; had it not
/// waited, the cascade would have deleted the freshly protected tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_manifest_waits_for_a_tag_being_added() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    for commit in [true, false] {
        let m = manifest(&format!("deletable {commit}"), &[]);
        store.put_manifest(&repo("acme/app"), &m, false, &no_guard).await.expect("put");
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/app").await;
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO tags (repository_id, name, digest, created_at, updated_at) VALUES ($1, 'v1', $2, 0, 0)",
        )
        .bind(id)
        .bind(m.digest.as_str())
        .execute(&mut *tx)
        .await
        .expect("insert tag");

        let deleting = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), m.digest.clone());
            async move { store.delete_manifest(&repo("acme/app"), &digest, &protect_releases).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "delete must wait for the tag insert");
        if commit {
            tx.commit().await.expect("commit");
            let result = deleting.await.expect("task");
            assert!(matches!(&result, Err(MetaError::ImmutableTag { tag, .. }) if tag == "v1"), "{result:?}");
            assert_eq!(tag_digest(&store, "acme/app", "v1").await, Some(m.digest.clone()));
            // Clear the way for the next iteration.
            assert!(store.delete_tag(&repo("acme/app"), &tags(&["v1"])[0], &no_guard).await.expect("untag"));
        } else {
            tx.rollback().await.expect("rollback");
            assert!(deleting.await.expect("task").expect("delete"), "nothing protects it any more");
            assert!(!has_manifest(&store, "acme/app", &m.digest).await);
        }
    }
}

/// A checked push keeps the blobs it approved: an unlink in flight makes it
/// wait, and once committed, the push sees the blob as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checked_push_waits_for_an_unlink_in_flight() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    let layer = blob("layer");
    for commit in [true, false] {
        let token = store.reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live");
        assert!(store.link_reserved_blob(&repo("acme/app"), &layer.digest, &token).await.expect("link"));
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query("DELETE FROM repository_blobs WHERE digest = $1")
            .bind(layer.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("unlink");

        let m = NewManifest { blobs: vec![layer.clone()], ..manifest(&format!("needs layer {commit}"), &[]) };
        let pushing = tokio::spawn({
            let (store, m) = (Arc::clone(&store), m.clone());
            async move { store.put_manifest(&repo("acme/app"), &m, true, &no_guard).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the check must wait for the unlink");
        if commit {
            tx.commit().await.expect("commit");
            let result = pushing.await.expect("task");
            let expected = RefProblem { missing: vec![layer.digest.clone()], wrong_size: Vec::new() };
            assert!(matches!(&result, Err(MetaError::References(p)) if *p == expected), "{result:?}");
            assert!(!has_manifest(&store, "acme/app", &m.digest).await);
        } else {
            tx.rollback().await.expect("rollback");
            pushing.await.expect("task").expect("push with the blob still linked");
        }
    }
}

/// A push to a protected tag that another session is creating right now
/// waits for it: refused if that session commits, applied if it rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_waits_for_an_uncommitted_immutable_tag() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    let first = manifest("first", &[]);
    store.put_manifest(&repo("acme/app"), &first, false, &no_guard).await.expect("put");
    for commit in [true, false] {
        let tag = if commit { "v1" } else { "v2" };
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/app").await;
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query("INSERT INTO tags (repository_id, name, digest, created_at, updated_at) VALUES ($1, $2, $3, 0, 0)")
            .bind(id)
            .bind(tag)
            .bind(first.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("insert tag");

        let second = manifest(&format!("second {tag}"), &[tag]);
        let pushing = tokio::spawn({
            let (store, second) = (Arc::clone(&store), second.clone());
            async move { store.put_manifest(&repo("acme/app"), &second, false, &protect_releases).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the push must wait for the tag insert");
        if commit {
            tx.commit().await.expect("commit");
            let result = pushing.await.expect("task");
            assert!(matches!(&result, Err(MetaError::ImmutableTag { tag, .. }) if tag == "v1"), "{result:?}");
            assert_eq!(tag_digest(&store, "acme/app", tag).await, Some(first.digest.clone()));
        } else {
            tx.rollback().await.expect("rollback");
            pushing.await.expect("task").expect("the tag is free again");
            assert_eq!(tag_digest(&store, "acme/app", tag).await, Some(second.digest.clone()));
        }
    }
}

// --- garbage collection against pushes in flight -------------------------------------

/// A cutoff every row is older than.
const ANY_AGE: i64 = i64::MAX / 4;

/// The collector's unlink waits for a checked push that holds the link
/// (`FOR KEY SHARE`), then sees the push's references if it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_unlink_waits_for_a_push_in_flight_and_sees_its_references() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    let layer = blob("layer");
    for commit in [true, false] {
        let token = store.reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live");
        assert!(store.link_reserved_blob(&repo("acme/app"), &layer.digest, &token).await.expect("link"));
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/app").await;
        let m = manifest(&format!("uses layer {commit}"), &[]);
        // What `manifests::put` does: lock the link, then record the manifest and its reference.
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE")
            .bind(id)
            .bind(layer.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("lock link");
        sqlx::query(
            "INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at) \
             VALUES ($1, $2, 'x', 0, ''::bytea, 1)",
        )
        .bind(id)
        .bind(m.digest.as_str())
        .execute(&mut *tx)
        .await
        .expect("manifest");
        sqlx::query(
            "INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, kind) \
             VALUES ($1, $2, $3, 'blob')",
        )
        .bind(id)
        .bind(m.digest.as_str())
        .bind(layer.digest.as_str())
        .execute(&mut *tx)
        .await
        .expect("reference");

        let unlinking = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), layer.digest.clone());
            async move { store.gc_unlink_blob(&repo("acme/app"), &digest, ANY_AGE).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the unlink must wait for the push");
        if commit {
            tx.commit().await.expect("commit");
            assert!(!unlinking.await.expect("task").expect("unlink"), "the committed reference keeps the link");
            assert!(store.delete_manifest(&repo("acme/app"), &m.digest, &no_guard).await.expect("clean up"));
        } else {
            tx.rollback().await.expect("rollback");
            assert!(unlinking.await.expect("task").expect("unlink"), "no reference: the link goes");
        }
    }
}

/// The collector's mark waits for a link in flight (which updates the blob
/// row first), then sees the link if it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_mark_waits_for_a_link_in_flight_and_sees_it() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    for commit in [true, false] {
        let layer = blob(&format!("layer {commit}"));
        let token = store.reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live");
        assert!(store.link_reserved_blob(&repo("acme/seed"), &layer.digest, &token).await.expect("seed repo"));
        assert!(store.unlink_blob(&repo("acme/seed"), &layer.digest, &no_guard).await.expect("unlink seed"));
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let id = repository_id(&mut raw, "acme/seed").await;
        // What `blobs::link` does: update the blob row, then insert the link.
        let mut tx = raw.begin().await.expect("begin");
        let touched = sqlx::query("UPDATE blobs SET last_linked = last_linked WHERE digest = $1 AND state = 'live'")
            .bind(layer.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("touch blob");
        assert_eq!(touched.rows_affected(), 1);
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at, linked_at) VALUES ($1, $2, 1, 1)",
        )
        .bind(id)
        .bind(layer.digest.as_str())
        .execute(&mut *tx)
        .await
        .expect("link");

        let marking = tokio::spawn({
            let (store, digest) = (Arc::clone(&store), layer.digest.clone());
            async move { store.gc_mark_blob(&digest, ANY_AGE).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the mark must wait for the link");
        if commit {
            tx.commit().await.expect("commit");
            assert_eq!(marking.await.expect("task").expect("mark"), None, "linked blobs are not marked");
        } else {
            tx.rollback().await.expect("rollback");
            assert_eq!(marking.await.expect("task").expect("mark"), Some(layer.size));
        }
    }
}

/// A reservation waits for a mark in flight, then is refused if it
/// committed (the upload waits for the collector) or granted if not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_waits_for_a_mark_in_flight() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    for commit in [true, false] {
        let layer = blob(&format!("layer {commit}"));
        let token = store.reserve_blob(&layer.digest, layer.size).await.expect("reserve").expect("live");
        let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
        let mut tx = raw.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE")
            .bind(layer.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("lock");
        sqlx::query("UPDATE blobs SET state = 'deleting' WHERE digest = $1")
            .bind(layer.digest.as_str())
            .execute(&mut *tx)
            .await
            .expect("mark");
        let reserving = tokio::spawn({
            let (store, layer) = (Arc::clone(&store), layer.clone());
            async move { store.reserve_blob(&layer.digest, layer.size).await }
        });
        assert!(store_waits_for_lock(&schema, &mut monitor).await, "the reservation must wait for the mark");
        if commit {
            tx.commit().await.expect("commit");
            assert_eq!(reserving.await.expect("task").expect("reserve"), None);
        } else {
            tx.rollback().await.expect("rollback");
            assert_eq!(reserving.await.expect("task").expect("reserve"), Some(token));
        }
    }
}
