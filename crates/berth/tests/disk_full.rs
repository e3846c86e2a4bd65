//! A full disk answers 507 with a plain message, gives the space of the
//! failed write back at once, and loses nothing already stored. The data
//! directory is a small tmpfs, so this needs the right to mount (root, as in
//! CI); elsewhere it says loudly that it did not run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BerthProcess, client, sha256_hex};

/// A tmpfs mounted for the test's lifetime.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size_mib: u32) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_owned()))
    }

    fn used_kib(&self) -> u64 {
        let out = Command::new("df").arg("-Pk").arg(&self.0).output().expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.split_whitespace().nth(2)).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_keeps_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path(), 24) else {
        eprintln!("NOT RUN: cannot mount a tmpfs here (needs root); the disk-full test was skipped");
        return;
    };
    let p = BerthProcess::start(dir.path(), &[]);
    let c = client();

    // A blob that fits, stored before the disk fills.
    let kept = berth_testkit::fixtures::blob(7, 100_000);
    let kept_digest = format!("sha256:{}", sha256_hex(&kept));
    let r = c
        .post(p.url(&format!("/v2/a/b/blobs/uploads/?digest={kept_digest}")))
        .header("content-type", "application/octet-stream")
        .body(kept.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A chunk larger than the disk.
    let r = c.post(p.url("/v2/a/b/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = p.url(r.headers()["location"].to_str().unwrap());
    let big = vec![0x5a_u8; 30 << 20];
    let r = c.patch(&loc).header("content-type", "application/octet-stream").body(big).send().await.unwrap();
    assert_eq!(r.status(), 507);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNKNOWN");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("storage is full"), "{body}");

    // The failed write's space is free again, and the session still stands at 0.
    assert!(disk.used_kib() < 8 * 1024, "space not given back: {} KiB used", disk.used_kib());
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"].to_str().unwrap(), "0-0");

    // What was stored before is intact, and small pushes work again.
    let r = c.get(p.url(&format!("/v2/a/b/blobs/{kept_digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), kept.as_slice());
    let small = berth_testkit::fixtures::blob(8, 4096);
    let r = c
        .post(p.url(&format!("/v2/a/b/blobs/uploads/?digest=sha256:{}", sha256_hex(&small))))
        .header("content-type", "application/octet-stream")
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(p);
}
