//! Times the metadata side of small blob uploads on a file-backed SQLite
//! store: per blob, the calls a POST + PUT upload makes (create the session,
//! read it, record the last chunk's progress, reserve the blob, complete).
//! `cargo run --release -p berth-meta-sqlite --example upload_commits [-- N]`

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_meta::{MetaStore, UploadProgress, UploadSession};
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};
use berth_oci::{Algorithm, Digest, RepositoryName};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).expect("tempdir");
    let store = SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
    store.migrate().await.expect("migrate");
    let repo = RepositoryName::parse("bench/small").expect("name");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64;
    let started = Instant::now();
    let mut spent = [std::time::Duration::ZERO; 5];
    for i in 0..n {
        let id = format!("upload-{i}");
        let progress =
            |offset| UploadProgress { offset, hash_state: vec![7; 100], backend_state: String::new(), updated_at: now };
        let session = UploadSession {
            id: id.clone(),
            repository: repo.clone(),
            algorithm: Algorithm::Sha256,
            progress: progress(0),
            created_at: now,
        };
        let t = Instant::now();
        store.create_upload(&session).await.expect("create");
        spent[0] += t.elapsed();
        let t = Instant::now();
        store.get_upload(&id).await.expect("get").expect("session");
        spent[1] += t.elapsed();
        let t = Instant::now();
        assert!(store.update_upload(&id, 0, &progress(4096)).await.expect("update"));
        spent[2] += t.elapsed();
        let digest = Digest::sha256_of(id.as_bytes());
        let t = Instant::now();
        let token = store.reserve_blob(&digest, 4096).await.expect("reserve").expect("token");
        spent[3] += t.elapsed();
        let t = Instant::now();
        store.complete_upload(&id, &digest, &token).await.expect("complete");
        spent[4] += t.elapsed();
    }
    let elapsed = started.elapsed();
    let each = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "  per blob, µs: create {:.0}, get {:.0}, progress {:.0}, reserve {:.0}, complete {:.0}",
        each(spent[0]),
        each(spent[1]),
        each(spent[2]),
        each(spent[3]),
        each(spent[4])
    );
    println!(
        "{n} upload commits in {elapsed:.2?}: {:.0} /s, {:.3} ms each",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / n as f64
    );
}
