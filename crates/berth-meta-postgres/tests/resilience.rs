//! Failures of the database underneath the store: unreachable server, killed
//! sessions (what a restart or failover does to a pool), exhausted pool,
//! statement timeout. Each must surface as `Unavailable`, and the pool must
//! recover by itself.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_meta::{MetaError, MetaStore, UploadProgress, UploadSession};
use berth_meta_postgres::{PostgresMetaStore, PostgresSettings};
use berth_oci::{Algorithm, RepositoryName};
use common::{Schema, store_waits_for_lock};
use sqlx::{Connection, PgConnection};

/// Ends every session the schema's stores hold, as a server restart would.
async fn terminate_store_sessions(schema: &Schema, admin: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
    )
    .bind(schema.name())
    .fetch_one(admin)
    .await
    .expect("terminate sessions")
}

fn session(id: &str) -> UploadSession {
    UploadSession {
        id: id.to_owned(),
        repository: RepositoryName::parse("acme/app").expect("name"),
        algorithm: Algorithm::Sha256,
        progress: UploadProgress::default(),
        created_at: 1,
    }
}

/// Holds the row lock on upload `id` in a transaction on `raw`, so store
/// calls touching it block until the returned transaction ends.
async fn lock_upload<'c>(raw: &'c mut PgConnection, id: &str) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut tx = raw.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM uploads WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *tx).await.expect("lock");
    tx
}

fn progress() -> UploadProgress {
    UploadProgress { offset: 1, updated_at: 2, ..UploadProgress::default() }
}

/// Runs without a database: there is none at port 1.
#[tokio::test]
async fn unreachable_server_is_unavailable_and_the_password_stays_secret() {
    let settings = PostgresSettings {
        acquire_timeout: Duration::from_millis(300),
        ..PostgresSettings::new("postgres://berth:hunter2@127.0.0.1:1/berth")
    };
    let err = PostgresMetaStore::connect(&settings).await.expect_err("nothing listens on port 1");
    assert!(matches!(err, MetaError::Unavailable(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_connections_are_replaced_transparently() {
    let Some(schema) = Schema::create().await else { return };
    let store = schema.store().await;
    // Warm the pool, then kill its sessions behind its back.
    let warm = tokio::join!(store.ping(), store.ping(), store.ping());
    for ping in [warm.0, warm.1, warm.2] {
        ping.expect("ping");
    }
    let mut admin = schema.raw().await;
    assert!(terminate_store_sessions(&schema, &mut admin).await > 0);
    // test_before_acquire finds each dead connection and opens a new one.
    for _ in 0..5 {
        store.ping().await.expect("ping after the sessions were killed");
        store.list_repositories(None, None).await.expect("query after the sessions were killed");
    }
    let _ = admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_mid_query_is_unavailable_then_recovers() {
    let Some(schema) = Schema::create().await else { return };
    let store = Arc::new(schema.store().await);
    store.create_upload(&session("stuck")).await.expect("create");
    let (mut raw, mut admin) = (schema.raw().await, schema.raw().await);
    let tx = lock_upload(&mut raw, "stuck").await;

    let updating = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.update_upload("stuck", 0, &progress()).await }
    });
    assert!(store_waits_for_lock(&schema, &mut admin).await, "the update must be blocked");
    terminate_store_sessions(&schema, &mut admin).await;
    let result = updating.await.expect("task");
    // SQLSTATE 57P01 (admin_shutdown) or the closed socket: either way 503.
    assert!(matches!(result, Err(MetaError::Unavailable(_))), "{result:?}");

    tx.rollback().await.expect("rollback");
    assert!(store.update_upload("stuck", 0, &progress()).await.expect("update after recovery"));
    let _ = (raw.close().await, admin.close().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_unavailable() {
    let Some(schema) = Schema::create().await else { return };
    let settings = PostgresSettings { statement_timeout: Some(Duration::from_millis(300)), ..schema.settings() };
    let store = PostgresMetaStore::connect(&settings).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.create_upload(&session("slow")).await.expect("create");
    let mut raw = schema.raw().await;
    let tx = lock_upload(&mut raw, "slow").await;

    let result = store.update_upload("slow", 0, &progress()).await;
    assert!(matches!(&result, Err(MetaError::Unavailable(m)) if m.contains("57014")), "{result:?}");

    tx.rollback().await.expect("rollback");
    assert!(store.update_upload("slow", 0, &progress()).await.expect("update once unblocked"));
    let _ = raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_unavailable() {
    let Some(schema) = Schema::create().await else { return };
    let settings =
        PostgresSettings { max_connections: 1, acquire_timeout: Duration::from_millis(300), ..schema.settings() };
    let store = Arc::new(PostgresMetaStore::connect(&settings).await.expect("connect"));
    store.migrate().await.expect("migrate");
    store.create_upload(&session("busy")).await.expect("create");
    let (mut raw, mut monitor) = (schema.raw().await, schema.raw().await);
    let tx = lock_upload(&mut raw, "busy").await;

    // The only connection is now stuck behind the lock.
    let blocked = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.update_upload("busy", 0, &progress()).await }
    });
    assert!(store_waits_for_lock(&schema, &mut monitor).await);
    let result = store.ping().await;
    assert!(matches!(result, Err(MetaError::Unavailable(_))), "{result:?}");

    tx.rollback().await.expect("rollback");
    assert!(blocked.await.expect("task").expect("update"));
    store.ping().await.expect("ping once the connection is free");
    let _ = (raw.close().await, monitor.close().await);
}

/// Byte-order listing depends on the "C" collation, which the test
/// database's default (C.UTF-8) would hide; check the schema itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_names_use_the_c_collation() {
    let Some(schema) = Schema::create().await else { return };
    let _store = schema.store().await;
    let mut raw = schema.raw().await;
    let collations: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, collation_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND column_name IN ('name', 'digest', 'id') AND data_type = 'text' \
           AND table_name IN ('repositories', 'tags', 'manifests', 'blobs', 'repository_blobs', 'uploads', 'owners') \
         ORDER BY 1, 2",
    )
    .bind(schema.name())
    .fetch_all(&mut raw)
    .await
    .expect("read collations");
    for table in ["repositories", "tags", "manifests", "blobs", "repository_blobs", "uploads", "owners"] {
        assert!(collations.iter().any(|(t, _, _)| t == table), "{table} missing from {collations:?}");
    }
    for (table, column, collation) in &collations {
        assert_eq!(collation.as_deref(), Some("C"), "{table}.{column}");
    }
    let _ = raw.close().await;
}
