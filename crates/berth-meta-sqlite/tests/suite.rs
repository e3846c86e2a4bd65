//! Runs the backend-neutral `berth-meta` suite against SQLite: every case on
//! a fresh, migrated database file in its own temporary directory.

use berth_meta::testsuite::Fixture;
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};

async fn fresh_store() -> Fixture {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let settings = SqliteSettings { max_connections: 4, ..SqliteSettings::for_path(dir.path().join("berth.db")) };
    let store = SqliteMetaStore::connect(&settings).await.expect("connect to SQLite");
    store.migrate().await.expect("migrate");
    // The directory is removed when the case ends, after the store is dropped.
    Fixture::with_keep_alive(store, dir)
}

async fn fresh_in_memory_store() -> Fixture {
    let store = SqliteMetaStore::connect(&SqliteSettings::in_memory()).await.expect("connect to SQLite");
    store.migrate().await.expect("migrate");
    Fixture::new(store)
}

berth_meta::meta_store_suite!(sqlite, fresh_store());
berth_meta::meta_store_suite!(sqlite_memory, fresh_in_memory_store());
