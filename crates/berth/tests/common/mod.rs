//! Runs the real `berth` binary as a child process, for tests that need a
//! process to kill, restart or measure.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub struct BerthProcess {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    /// The server's last log lines, printed if the test fails.
    recent_logs: Arc<Mutex<VecDeque<String>>>,
    /// Every log line, for tests that inspect the whole log.
    all_logs: Arc<Mutex<Vec<String>>>,
}

const KEPT_LOG_LINES: usize = 40;

impl BerthProcess {
    /// Starts `berth serve` on a kernel-chosen loopback port over `data_dir`
    /// and waits for its "berth ready" line, which carries the bound address.
    pub fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> BerthProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("serve")
            .env_clear()
            .env("BERTH_DATA_DIR", data_dir)
            .env("BERTH_LISTEN", "127.0.0.1:0")
            .env("BERTH_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // Tests here exercise storage and the process; auth tests opt back in.
            .env("BERTH_AUTH_ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn berth");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let recent_logs = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LOG_LINES)));
        let all_logs = Arc::new(Mutex::new(Vec::new()));
        let (kept, all) = (recent_logs.clone(), all_logs.clone());
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("berth ready") {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    let _ = tx.send(v["listen"].as_str().unwrap_or_default().to_owned());
                    sent = true;
                }
                if std::env::var_os("BERTH_TEST_SHOW_LOGS").is_some() {
                    eprintln!("[berth] {line}");
                }
                all.lock().unwrap().push(line.clone());
                let mut kept = kept.lock().unwrap();
                if kept.len() == KEPT_LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("berth did not report ready within 30 s");
        BerthProcess { child, base: format!("http://{addr}"), data_dir: data_dir.to_owned(), recent_logs, all_logs }
    }

    /// Every line the server has logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.all_logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit; returns the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- last log lines of berth at {} ----", self.base);
            for line in self.recent_logs.lock().unwrap().iter() {
                eprintln!("[berth] {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

pub fn client() -> reqwest::Client {
    berth_testkit::install_crypto_provider();
    reqwest::Client::builder().no_proxy().build().expect("client")
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex_encode(&Sha256::digest(data))
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a `berth` subcommand over `data_dir`: (exit code, stdout, stderr).
pub fn berth(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).env_clear().env("BERTH_DATA_DIR", data_dir).env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a `berth` subcommand on a test server's data directory and
/// database (SQLite or Postgres), with `env` added.
pub fn berth_on(server: &berth_testkit::TestServer, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let database = server.cli_env();
    let mut all: Vec<(&str, &str)> = database.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(env);
    berth(server.data_dir(), args, &all)
}
