//! Kill -9 in the middle of uploads, restart, and check the promises:
//! no blob is visible whose bytes do not match its digest, and every
//! interrupted upload either resumes or answers BLOB_UPLOAD_UNKNOWN.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Digest;
use berth_testkit::fixtures::blob;
use bytes_stream::stalled_body;
use common::{BerthProcess, client, sha256_hex};

const REPO: &str = "crash/test";

mod bytes_stream {
    use std::convert::Infallible;

    /// A request body that sends `data` and then never finishes, so the
    /// request is still in flight when the server dies.
    pub fn stalled_body(data: Vec<u8>) -> reqwest::Body {
        let first = futures_util::stream::once(async move { Ok::<_, Infallible>(data) });
        let never = futures_util::stream::pending::<Result<Vec<u8>, Infallible>>();
        reqwest::Body::wrap_stream(futures_util::StreamExt::chain(first, never))
    }
}

/// What a client knows about one upload session when the server dies.
#[derive(Clone, Debug)]
struct Session {
    location: String,
    data: Vec<u8>,
    /// Bytes the server acknowledged with a 202.
    confirmed: u64,
    /// Bytes of a chunk sent but not acknowledged.
    in_flight: u64,
}

type Sessions = Arc<Mutex<HashMap<String, Session>>>;
/// Blobs whose upload the server confirmed with 201.
type Completed = Arc<Mutex<Vec<(Digest, Vec<u8>)>>>;

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
}

/// Pushes blobs in three requests each (POST, PATCH, PUT) until killed,
/// recording every session and what the server confirmed.
async fn churn(base: String, seed: u64, sessions: Sessions, done: Completed) {
    let c = client();
    for i in 0.. {
        let data = blob(seed * 1000 + i, 64 * 1024 + (i as usize % 7) * 4099);
        let digest = Digest::sha256_of(&data);
        let Ok(r) = c.post(format!("{base}/v2/{REPO}/blobs/uploads/")).send().await else { return };
        let Some(loc) = r.headers().get("location").and_then(|v| v.to_str().ok()).map(|l| absolute(&base, l)) else {
            return;
        };
        let half = data.len() / 2;
        let mut s = Session { location: loc.clone(), data: data.clone(), confirmed: 0, in_flight: half as u64 };
        sessions.lock().unwrap().insert(loc.clone(), s.clone());
        let patch = c
            .patch(&loc)
            .header("content-range", format!("0-{}", half - 1))
            .header("content-length", half.to_string())
            .body(data[..half].to_vec())
            .send()
            .await;
        if !matches!(patch, Ok(ref r) if r.status() == 202) {
            return;
        }
        s.confirmed = half as u64;
        s.in_flight = (data.len() - half) as u64;
        sessions.lock().unwrap().insert(loc.clone(), s);
        let put = c
            .put(format!("{loc}?digest={digest}"))
            .header("content-range", format!("{half}-{}", data.len() - 1))
            .header("content-length", (data.len() - half).to_string())
            .body(data[half..].to_vec())
            .send()
            .await;
        match put {
            Ok(r) if r.status() == 201 => {
                sessions.lock().unwrap().remove(&loc);
                done.lock().unwrap().push((digest, data));
            }
            _ => return,
        }
    }
}

/// Every committed blob file hashes to its own name.
fn assert_blob_files_match_names(data_dir: &std::path::Path) {
    let root = data_dir.join("blobs").join("blobs").join("sha256");
    let Ok(prefixes) = std::fs::read_dir(&root) else { return };
    let mut checked = 0;
    for p in prefixes {
        for f in std::fs::read_dir(p.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let bytes = std::fs::read(f.path()).unwrap();
            assert_eq!(
                sha256_hex(&bytes),
                f.file_name().to_string_lossy(),
                "blob file content does not match its name"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "expected some committed blobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_mid_upload_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sessions: Sessions = Arc::default();
    let done: Completed = Arc::default();
    let mut stalled: Vec<(String, Vec<u8>, u64)> = Vec::new();
    let mut never_finished: Vec<Digest> = Vec::new();
    let c = client();

    for round in 0..3u64 {
        let p = BerthProcess::start(dir.path(), &[]);
        let base = p.base.clone();
        // Uploads that are mid-body when the server dies: a whole-blob POST
        // and a streamed PATCH on a session that already holds a chunk.
        let mono = blob(900 + round, 3 << 20);
        let mono_digest = Digest::sha256_of(&mono);
        never_finished.push(mono_digest.clone());
        let c2 = client();
        let url = format!("{base}/v2/{REPO}/blobs/uploads/?digest={mono_digest}");
        tokio::spawn(async move {
            let _ = c2.post(url).body(stalled_body(mono[..(2 << 20)].to_vec())).send().await;
        });
        let data = blob(700 + round, 2 << 20);
        let r = c.post(format!("{base}/v2/{REPO}/blobs/uploads/")).send().await.unwrap();
        let loc = absolute(&base, r.headers()["location"].to_str().unwrap());
        let r = c
            .patch(&loc)
            .header("content-range", format!("0-{}", (1 << 20) - 1))
            .body(data[..(1 << 20)].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let c3 = client();
        let (loc2, tail) = (loc.clone(), data[(1 << 20)..].to_vec());
        tokio::spawn(async move {
            let _ = c3.patch(loc2).body(stalled_body(tail)).send().await;
        });
        stalled.push((loc, data, 1 << 20));
        // Many short uploads racing the kill at arbitrary points.
        for w in 0..4 {
            tokio::spawn(churn(base.clone(), round * 10 + w, sessions.clone(), done.clone()));
        }
        tokio::time::sleep(Duration::from_millis(400 + round * 150)).await;
        p.kill9();
    }

    let p = BerthProcess::start(dir.path(), &[]);
    let base = p.base.clone();
    let rebase = |loc: &str| {
        let path = &loc[loc.find("/v2/").unwrap()..];
        format!("{base}{path}")
    };
    assert_blob_files_match_names(dir.path());

    // Completed blobs are all there, intact.
    let done = done.lock().unwrap().clone();
    assert!(!done.is_empty(), "churn completed no uploads before the kills");
    for (digest, data) in &done {
        let r = c.get(format!("{base}/v2/{REPO}/blobs/{digest}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{digest}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    }

    // A whole-blob POST cut off mid-body left nothing visible.
    for digest in &never_finished {
        let r = c.head(format!("{base}/v2/{REPO}/blobs/{digest}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{digest} was never completed");
    }

    // Interrupted sessions resume from what the server persisted, or are unknown.
    let mut resumed = 0;
    let mut unknown = 0;
    let interrupted: Vec<Session> = sessions.lock().unwrap().values().cloned().collect();
    let stalled_sessions = stalled.iter().map(|(loc, data, confirmed)| Session {
        location: loc.clone(),
        data: data.clone(),
        confirmed: *confirmed,
        in_flight: data.len() as u64 - confirmed,
    });
    for s in interrupted.into_iter().chain(stalled_sessions) {
        let loc = rebase(&s.location);
        let r = c.get(&loc).send().await.unwrap();
        if r.status() == 404 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
            unknown += 1;
            continue;
        }
        assert_eq!(r.status(), 204, "{loc}");
        let range = r.headers()["range"].to_str().unwrap().to_owned();
        let end: u64 = range.trim_start_matches("0-").parse().unwrap();
        let offset = if s.confirmed == 0 && end == 0 { 0 } else { end + 1 };
        // The server may have persisted the in-flight chunk just before dying, never part of one.
        assert!(
            offset == s.confirmed || offset == s.confirmed + s.in_flight || offset == 0,
            "session {loc} resumed at {offset}, confirmed {}, in flight {}",
            s.confirmed,
            s.in_flight
        );
        let digest = Digest::sha256_of(&s.data);
        let rest = s.data[offset as usize..].to_vec();
        let mut put = c.put(format!("{loc}?digest={digest}"));
        if !rest.is_empty() {
            put = put.header("content-range", format!("{offset}-{}", s.data.len() - 1)).body(rest);
        }
        let r = put.send().await.unwrap();
        assert_eq!(r.status(), 201, "finishing resumed session {loc}");
        let got = c.get(format!("{base}/v2/{REPO}/blobs/{digest}")).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), &s.data[..]);
        resumed += 1;
    }
    assert!(resumed > 0, "at least the stalled sessions must resume");
    eprintln!("completed {} blobs; resumed {resumed} sessions, {unknown} unknown", done.len());
    assert_blob_files_match_names(dir.path());
}
