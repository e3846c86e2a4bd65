//! The ceiling: a minimal hyper server, on the same machine and with the same
//! number of runtime threads as Berth, that answers every GET with the
//! manifest and every HEAD with the blob headers Berth itself answered (the
//! same status, headers and body bytes, captured from Berth once the
//! fixtures are pushed). It does nothing else: no routing, no
//! authentication, no store. Manifest GET and blob HEAD are reported as a
//! share of its req/s, i.e. how close Berth comes to what HTTP alone costs
//! on this machine with this client.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::client::{Conn, Endpoint, Keep, Parts, Result};

/// One canned answer: status, headers in order, body.
#[derive(Debug, Clone)]
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Answer {
    fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "headers": self.headers,
            "body": base64::engine::general_purpose::STANDARD.encode(&self.body),
        })
    }

    fn from_json(v: &Value) -> Result<Answer> {
        let status = v["status"].as_u64().ok_or("answer without status")? as u16;
        let headers = v["headers"]
            .as_array()
            .ok_or("answer without headers")?
            .iter()
            .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
            .collect();
        let body = base64::engine::general_purpose::STANDARD.decode(v["body"].as_str().unwrap_or_default())?;
        Ok(Answer { status, headers, body: Bytes::from(body) })
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body.clone()));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
                r.headers_mut().append(k, v);
            }
        }
        r
    }
}

/// What the ceiling answers: GET (the manifest) and HEAD (the blob).
#[derive(Debug, Clone)]
pub struct Answers {
    get: Answer,
    head: Answer,
}

impl Answers {
    /// Asks `ep` (Berth) for the manifest and the blob HEAD the loads request.
    pub async fn capture(ep: &Endpoint, manifest_path: &str, manifest_accept: &str, head_path: &str) -> Result<Self> {
        let mut conn = Conn::connect(ep).await?;
        let mut answer = async |method: Method, path: &str, headers: &[(HeaderName, &str)]| -> Result<Answer> {
            let r = conn.send(method.clone(), path, headers, Parts::empty(), Keep::Body).await?;
            let r = r.expect(StatusCode::OK, &format!("{method} {path} for the ceiling"))?;
            let headers = r
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            Ok(Answer { status: r.status.as_u16(), headers, body: r.body })
        };
        let get = answer(Method::GET, manifest_path, &[(http::header::ACCEPT, manifest_accept)]).await?;
        let head = answer(Method::HEAD, head_path, &[]).await?;
        Ok(Answers { get, head })
    }

    fn to_json(&self) -> Value {
        json!({ "get": self.get.to_json(), "head": self.head.to_json() })
    }

    fn from_json(v: &Value) -> Result<Self> {
        Ok(Answers { get: Answer::from_json(&v["get"])?, head: Answer::from_json(&v["head"])? })
    }
}

/// The running ceiling process (killed on drop).
pub struct Ceiling {
    pub addr: SocketAddr,
    child: Child,
}

impl Ceiling {
    /// Starts `berth-bench --serve-ceiling` (this binary) with `answers`, in `dir`.
    pub fn start(dir: &Path, answers: &Answers) -> Result<Ceiling> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("answers.json");
        std::fs::write(&file, serde_json::to_vec(&answers.to_json())?)?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--serve-ceiling")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr = line.trim().parse().map_err(|e| format!("the ceiling server printed {line:?}: {e}"))?;
        Ok(Ceiling { addr, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.addr, authorization: None }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server side (`--serve-ceiling FILE`): prints its address, then serves
/// until killed. One keep-alive HTTP/1.1 connection per client connection,
/// `TCP_NODELAY`, like Berth.
pub async fn serve(file: &Path) -> Result<()> {
    let answers = Arc::new(Answers::from_json(&serde_json::from_slice(&std::fs::read(file)?)?)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let answer = match *req.method() {
                    Method::HEAD => Some(&answers.head),
                    Method::GET => Some(&answers.get),
                    _ => None,
                };
                let response = answer.map_or_else(
                    || {
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    },
                    Answer::response,
                );
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
