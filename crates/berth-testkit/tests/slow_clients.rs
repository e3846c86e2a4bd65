//! Slow clients and early answers, over real sockets against the real server:
//!
//! - every request but those streaming blob data is answered within
//!   `http.request_timeout`, however slowly its body arrives and however
//!   long authentication waits for an argon2 slot;
//! - connections over `http.max_connections` get a clean 503 and close;
//! - a request refused before its body is read (too large, unauthorized) is
//!   answered after the body is drained, so a client that writes everything
//!   before reading sees the answer, not a broken pipe.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_testkit::TestServer;
use common::{Cred, H, auth_header, client};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A response read off a raw connection.
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads one response (headers, then `Content-Length` bytes of body) within `limit`.
async fn read_response(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> std::io::Result<Raw> {
    tokio::time::timeout(limit, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut raw = Raw { status, head, body: buf[header_end..].to_vec() };
        let length: usize = raw.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while raw.body.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            raw.body.extend_from_slice(&chunk[..n]);
        }
        Ok(raw)
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in time")))
}

/// Asserts a 503 answer of the overall deadline, within about `timeout`.
#[track_caller]
fn assert_timed_out(what: &str, status: u16, body: &Value, elapsed: Duration, timeout: Duration) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{what}: {body}");
    assert_eq!(body["errors"][0]["message"], "request timed out", "{what}");
    assert!(elapsed >= timeout.saturating_sub(Duration::from_millis(100)), "{what}: answered early, after {elapsed:?}");
    assert!(elapsed < timeout + Duration::from_millis(1500), "{what}: answered after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_request_trickling_its_body_is_cut_at_the_deadline() {
    let timeout = Duration::from_secs(2);
    let h = H::start(|c| c.http.request_timeout = timeout).await;
    let mut stream = TcpStream::connect(h.server.addr).await.unwrap();
    let head = "POST /v2/token HTTP/1.1\r\nHost: registry\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte a second: never idle long enough for the body idle timeout.
    let trickle = tokio::spawn(async move {
        for b in b"grant_type=password&username=alice&password=".iter().cycle().take(100) {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let r = read_response(&mut reader, Duration::from_secs(10)).await.expect("answered within 10 s");
    let elapsed = started.elapsed();
    trickle.abort();
    assert_timed_out("POST /v2/token", r.status, &r.json(), elapsed, timeout);
}

/// Authentication runs inside the deadline on every route: with a deadline
/// far shorter than one argon2 check (an unknown user still costs the decoy
/// check), the token endpoint, the catalog and the package API answer 503 at
/// the deadline instead of waiting for the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_covers_token_catalog_and_packages_while_authentication_waits() {
    let timeout = Duration::from_millis(5);
    let h = H::start(|c| c.http.request_timeout = timeout).await;
    let paths = [
        "/v2/token?service=berth&scope=repository:acme/app:pull",
        "/v2/_catalog",
        "/api/v1/packages/acme?type=container",
        "/v2/",
    ];
    for (i, path) in paths.iter().enumerate() {
        let (http, url) = (client(None), h.url(path));
        let auth = auth_header(&Cred::basic(&format!("late{i}"), "wrong")).unwrap();
        let started = Instant::now();
        let r = http.get(url).header("authorization", auth).send().await.expect("answered");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_timed_out(path, status, &body, started.elapsed(), timeout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_a_clean_503() {
    let server = TestServer::start_with(|c| c.http.max_connections = 8).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    let mut ninth = TcpStream::connect(server.addr).await.unwrap();
    ninth.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    let r = read_response(&mut ninth, Duration::from_secs(5)).await.expect("a 503, not a reset");
    assert!(started.elapsed() < Duration::from_secs(2), "refused promptly, not after {:?}", started.elapsed());
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert_eq!(r.code(), "UNAVAILABLE");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), ninth.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the refused connection is closed: {closed:?}");

    // The idle connections were served all along, and their places free up when they go.
    idle[0].write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut idle[0], Duration::from_secs(5)).await.unwrap().status, 200);
    drop(idle);
    let http = client(None);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match http.get(server.url("/v2/")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(Instant::now() < deadline, "no room after the idle connections closed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `head` and all of `body` before reading anything, as Python's
/// http.client does, then reads the answer.
async fn send_all_then_read(addr: SocketAddr, head: &str, body: &[u8]) -> (TcpStream, Raw) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.expect("the whole body is accepted: no broken pipe or reset");
    let r = read_response(&mut stream, Duration::from_secs(10)).await.expect("an answer after the body");
    (stream, r)
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_manifest_sent_whole_before_reading_gets_its_413() {
    let server = TestServer::start().await;
    let manifest = vec![b' '; 5 * 1024 * 1024];
    let head = format!(
        "PUT /v2/big/app/manifests/v1 HTTP/1.1\r\nHost: registry\r\nContent-Type: {MANIFEST_TYPE}\r\n\
         Content-Length: {}\r\n\r\n",
        manifest.len()
    );
    let (mut stream, r) = send_all_then_read(server.addr, &head, &manifest).await;
    assert_eq!(r.status, 413, "{}", r.head);
    assert_eq!(r.code(), "SIZE_INVALID");
    // Drained to the end: the connection stays usable.
    stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream, Duration::from_secs(5)).await.unwrap().status, 200);

    // Without a declared length, the limit is found while reading; the rest is drained too.
    let head = format!(
        "PUT /v2/big/app/manifests/v1 HTTP/1.1\r\nHost: registry\r\nContent-Type: {MANIFEST_TYPE}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let (_, r) = send_all_then_read(server.addr, &head, &chunked(&manifest)).await;
    assert_eq!(r.status, 413, "{}", r.head);
    assert_eq!(r.code(), "SIZE_INVALID");

    // A bad digest in the URL is refused before reading, and seen too.
    let head = format!(
        "PUT /v2/big/app/manifests/sha256:nothex HTTP/1.1\r\nHost: registry\r\nContent-Type: {MANIFEST_TYPE}\r\n\
         Content-Length: {}\r\n\r\n",
        manifest.len()
    );
    let (_, r) = send_all_then_read(server.addr, &head, &manifest).await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"), "{}", r.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_push_sent_whole_before_reading_gets_its_401() {
    let h = H::default().await;
    let manifest = vec![b' '; 3 * 1024 * 1024];
    let head = format!(
        "PUT /v2/acme/app/manifests/v1 HTTP/1.1\r\nHost: registry\r\nContent-Type: {MANIFEST_TYPE}\r\n\
         Content-Length: {}\r\n\r\n",
        manifest.len()
    );
    let (_, r) = send_all_then_read(h.server.addr, &head, &manifest).await;
    assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"), "{}", r.head);
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer ")));
}
