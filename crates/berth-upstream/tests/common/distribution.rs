//! Debian's `docker-registry` (CNCF Distribution 2.8) on a random loopback
//! port, anonymous or with htpasswd Basic auth, and a plain-reqwest pusher.
//!
//! The registry is told to listen on `127.0.0.1:0` and the port it got is
//! read from its log line `listening on 127.0.0.1:PORT`: no port is picked
//! and released before the server binds it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_oci::Digest;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct-horse-battery";

pub struct Distribution {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(bin)).find(|p| p.is_file())
}

impl Distribution {
    /// Starts the registry, or prints `NOT RUN: ...` and returns `None` when
    /// `docker-registry` (or `htpasswd`, for `basic_auth`) is not installed.
    pub async fn start(test: &str, basic_auth: bool) -> Option<Distribution> {
        let Some(bin) = find("docker-registry") else {
            eprintln!(
                "NOT RUN: {test}: `docker-registry` is not installed (apt-get install -y docker-registry apache2-utils)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut auth_section = String::new();
        if basic_auth {
            let Some(htpasswd) = find("htpasswd") else {
                eprintln!("NOT RUN: {test}: `htpasswd` is not installed (apt-get install -y apache2-utils)");
                return None;
            };
            let out = Command::new(htpasswd).args(["-Bbn", USER, PASSWORD]).output().unwrap();
            assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth_section = format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", file.display());
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  secret: berth-upstream-test\n{auth_section}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let mut d = Distribution {
            url: String::new(),
            child,
            dir,
            http,
            auth: basic_auth.then(|| (USER.to_owned(), PASSWORD.to_owned())),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = text.split("listening on ").nth(1).and_then(|s| s.split(['"', ' ']).next()) {
                d.url = format!("http://{addr}");
                break;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(d)
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Monolithic upload: POST for a session, then PUT with the digest and all the bytes.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let r =
            self.req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.url)).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let mut url = reqwest::Url::parse(&self.url).unwrap().join(&location).unwrap();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let r = self
            .req(reqwest::Method::PUT, url.as_str())
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        digest
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Digest {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let r = self
            .req(reqwest::Method::PUT, &url)
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let digest = Digest::sha256_of(bytes);
        assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), digest.as_str());
        digest
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}
