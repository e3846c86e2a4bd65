//! Start-up: several replicas connecting and migrating at the same moment.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_meta::MetaStore;
use berth_meta_postgres::{PostgresMetaStore, PostgresSettings};
use common::Schema;
use sqlx::Connection;
use tokio::sync::Barrier;

const REPLICAS: usize = 3;

/// What one replica does at start-up; returns how long it took.
async fn boot(settings: PostgresSettings, barrier: Arc<Barrier>) -> Duration {
    barrier.wait().await;
    let started = Instant::now();
    let store = PostgresMetaStore::connect(&settings).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.ping().await.expect("ping");
    let elapsed = started.elapsed();
    store.close().await;
    elapsed
}

/// Boots [`REPLICAS`] stores at once; returns each one's time and the total.
async fn boot_together(schema: &Schema) -> (Vec<Duration>, Duration) {
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let started = Instant::now();
    let tasks: Vec<_> = (0..REPLICAS).map(|_| tokio::spawn(boot(schema.settings(), Arc::clone(&barrier)))).collect();
    let mut times = Vec::new();
    for task in tasks {
        times.push(task.await.expect("boot task panicked"));
    }
    (times, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_booting_together_all_succeed_and_are_quick_once_migrated() {
    let Some(schema) = Schema::create().await else { return };

    // A fresh schema: one replica applies the migrations, the others wait
    // for the advisory lock and then find nothing to do.
    let (cold, cold_total) = boot_together(&schema).await;
    eprintln!("cold boot of {REPLICAS} replicas: {cold:?}, total {cold_total:?}");

    let mut raw = schema.raw().await;
    let applied: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut raw)
        .await
        .expect("read _sqlx_migrations");
    let expected: Vec<(i64, bool)> = migration_versions().into_iter().map(|v| (v, true)).collect();
    assert_eq!(applied, expected, "each migration applied exactly once");

    // The usual restart: the schema is current.
    let (warm, warm_total) = boot_together(&schema).await;
    eprintln!("warm boot of {REPLICAS} replicas: {warm:?}, total {warm_total:?}");
    assert!(warm_total < Duration::from_secs(5), "warm boot took {warm_total:?}");
    let _ = raw.close().await;
}

/// Versions of the migration files the crate embeds, in order.
fn migration_versions() -> Vec<i64> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/postgres");
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .expect("read migrations/postgres")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.split('_').next()?.parse().ok())
        .collect();
    versions.sort_unstable();
    assert!(!versions.is_empty(), "no migrations found in {dir}");
    versions
}

/// The key sqlx's Postgres migrator passes to `pg_advisory_lock`: CRC-32
/// (IEEE) of the database name times a constant (sqlx-postgres, migrate.rs).
fn sqlx_migration_lock_id(database: &str) -> i64 {
    let mut crc = !0u32;
    for byte in database.bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    0x3d32_ad9e * i64::from(!crc)
}

/// Verifies, rather than assumes, that migrate() serializes on the advisory
/// lock: while another session holds it, migrate() waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_the_advisory_lock() {
    let Some(schema) = Schema::create().await else { return };
    assert_eq!(sqlx_migration_lock_id("123456789"), 0x3d32_ad9e * 0xCBF4_3926, "CRC-32 check value");
    let store = schema.connect().await;
    let mut holder = schema.raw().await;
    let database: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut holder).await.expect("db");
    let lock_id = sqlx_migration_lock_id(&database);
    sqlx::query("SELECT pg_advisory_lock($1)").bind(lock_id).execute(&mut holder).await.expect("take the lock");

    let migrating = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let finished_early = migrating.is_finished();
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock_id).execute(&mut holder).await.expect("release");
    assert!(!finished_early, "migrate() must wait while another session holds the migration lock");
    migrating.await.expect("migrate task").expect("migrate after the lock is released");
    store.ping().await.expect("ping");
    let _ = holder.close().await;
}

/// A failed migration must not leave the advisory lock held on a pooled
/// connection: another replica's migrate() still gets it while the first
/// store lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_releases_the_lock() {
    let Some(schema) = Schema::create().await else { return };
    // A conflicting table makes migration 1 fail half-way.
    let mut raw = schema.raw().await;
    sqlx::query("CREATE TABLE blobs (x INT)").execute(&mut raw).await.expect("create conflicting table");
    let store = schema.connect().await;
    assert!(store.migrate().await.is_err(), "migration must fail on the conflicting table");

    sqlx::query("DROP TABLE blobs").execute(&mut raw).await.expect("drop conflicting table");
    let other = schema.connect().await;
    let retried = tokio::time::timeout(Duration::from_secs(10), other.migrate()).await;
    retried.expect("another replica's migrate() must not wait for a leaked lock").expect("migrate");
    store.ping().await.expect("ping");
    let _ = raw.close().await;
}

/// Migration 7 drops the copied webhook URL (often a credential) and
/// forgets recorded errors that embedded it; queued deliveries stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_7_removes_webhook_urls_from_the_queue() {
    use berth_meta::events::EventStore;

    let Some(schema) = Schema::create().await else { return };
    let mut raw = schema.raw().await;
    let all = sqlx::migrate!("../../migrations/postgres");
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(all.iter().filter(|m| m.version < 7).cloned().collect()),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&mut raw).await.expect("migrations 1 to 6");
    sqlx::raw_sql(
        "INSERT INTO webhook_deliveries (id, hook, url, event, payload, next_attempt_at, last_error, created_at) \
         VALUES ('a', 'chat', 'https://hooks.example.com/T0/s3cret', 'push', '{}', 0, \
                 'request failed: error sending request for url (https://hooks.example.com/T0/s3cret)', 0), \
                ('b', 'chat', 'https://hooks.example.com/T0/s3cret', 'push', '{}', 0, 'receiver answered 500', 0);",
    )
    .execute(&mut raw)
    .await
    .expect("old deliveries");

    let store = schema.connect().await;
    store.migrate().await.expect("migration 7");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'webhook_deliveries'",
    )
    .fetch_all(&mut raw)
    .await
    .expect("columns");
    assert!(!columns.is_empty() && !columns.iter().any(|c| c == "url"), "{columns:?}");
    let errors: Vec<Option<String>> = sqlx::query_scalar("SELECT last_error FROM webhook_deliveries ORDER BY id")
        .fetch_all(&mut raw)
        .await
        .expect("errors");
    assert_eq!(errors, vec![None, Some("receiver answered 500".to_owned())]);
    let claimed = store.claim_deliveries(1, 60_001, 10).await.expect("claim");
    assert_eq!(claimed.iter().map(|d| d.hook.as_str()).collect::<Vec<_>>(), vec!["chat", "chat"]);
    let _ = raw.close().await;
    store.close().await;
}
