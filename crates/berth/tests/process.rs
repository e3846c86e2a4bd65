//! The binary as an operator runs it: graceful shutdown, TLS, CLI commands.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{BerthProcess, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_uploads_finish() {
    let dir = tempfile::tempdir().unwrap();
    let p = BerthProcess::start(dir.path(), &[]);
    let c = client();
    let r = c.post(p.url("/v2/graceful/app/blobs/uploads/")).send().await.unwrap();
    let loc = p.url(r.headers()["location"].to_str().unwrap());
    // A streamed PATCH that is still sending when SIGTERM arrives.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let patch = tokio::spawn(c.patch(&loc).body(body).send());
    tx.send(Ok(vec![1u8; 1 << 20])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = tokio::task::spawn_blocking(move || p.terminate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(vec![2u8; 1 << 20])).await.unwrap();
    drop(tx);
    let r = patch.await.unwrap().expect("in-flight request completes during shutdown");
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], format!("0-{}", (2 << 20) - 1));
    assert_eq!(term.await.unwrap(), Some(0), "clean exit after draining");
}

#[tokio::test]
async fn serves_tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let p = BerthProcess::start(
        &data,
        &[("BERTH_TLS_CERT", cert_path.to_str().unwrap()), ("BERTH_TLS_KEY", key_path.to_str().unwrap())],
    );
    let addr = p.base.trim_start_matches("http://").to_owned();

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the configured certificate");
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("docker-distribution-api-version: registry/2.0"));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = client().get(format!("http://{addr}/v2/")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

fn berth(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn help_explains_every_command() {
    let out = berth(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "config", "health"] {
        assert!(text.contains(cmd), "--help lists {cmd}");
    }
    let out = berth(&["serve", "--help"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
}

#[test]
fn config_prints_effective_values_with_secrets_masked() {
    let out = berth(
        &["config"],
        &[("BERTH_DATABASE_URL", "postgres://u:hunter2@db/berth"), ("BERTH_MANIFESTS_ALLOW_SPARSE", "true")],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["manifests"]["allow_sparse"], true);
    assert_eq!(v["database"]["url"], "***");
}

#[test]
fn bad_config_is_a_clear_error() {
    let out = berth(&["config"], &[("BERTH_AUTH_ENABLED", "perhaps")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BERTH_AUTH_ENABLED"));
    let out = berth(&["config", "--config", "/nonexistent/berth.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_mistyped_variable_is_named_with_the_one_meant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let env = [
        ("BERTH_DATA_DIR", data),
        ("BERTH_AUTH_ENABLE", "false"),
        ("BERTH_TEST_POSTGRES_URL", "postgres://elsewhere"),
        ("BERTH_CONFORMANCE_URL", "http://elsewhere"),
    ];
    // Every subcommand warns, whether it logs to a server log or prints.
    for args in [&["config"][..], &["migrate"], &["user", "list"]] {
        let out = berth(args, &env);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "BERTH_AUTH_ENABLE is not a configuration key and is ignored; did you mean BERTH_AUTH_ENABLED?"
            ),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("BERTH_TEST_POSTGRES_URL") && !stderr.contains("BERTH_CONFORMANCE_URL"), "{stderr}");
    }
    // And so does a start that fails for another reason.
    let out = berth(&["config"], &[("BERTH_STORAGE_S3_BUKET", "b"), ("BERTH_AUTH_ENABLED", "perhaps")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean BERTH_STORAGE_S3_BUCKET?"));
}

#[test]
fn migrate_and_health_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = berth(&["migrate"], &[("BERTH_DATA_DIR", data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("berth.db").exists());
    let p = BerthProcess::start(dir.path(), &[]);
    assert!(berth(&["health", "--url", &p.base], &[]).status.success());
    drop(p);
    assert!(!berth(&["health", "--url", "http://127.0.0.1:9"], &[]).status.success());
}

/// With a hard open-file limit too low for `http.max_connections`, the
/// server says so at start (it raises the soft limit as far as it may).
#[test]
fn warns_when_max_connections_exceeds_the_open_file_limit() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && ulimit -Hn 512 && exec \"$0\" serve", env!("CARGO_BIN_EXE_berth")])
        .env_clear()
        .env("BERTH_DATA_DIR", dir.path())
        .env("BERTH_LISTEN", "127.0.0.1:0")
        .env("BERTH_LOG_FORMAT", "json")
        .env("BERTH_AUTH_ENABLED", "false")
        .env("BERTH_HTTP_MAX_CONNECTIONS", "1024")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        let ready = line.contains("berth ready");
        lines.push(line);
        if ready || lines.len() > 200 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = lines.iter().find(|l| l.contains("does not fit in the open-file limit"));
    let warning = warning.unwrap_or_else(|| panic!("no warning in {lines:#?}"));
    assert!(warning.contains("\"open_file_limit\":512"), "raised to the hard limit: {warning}");
}
