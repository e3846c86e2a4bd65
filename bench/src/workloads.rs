//! The measured operations, each against one client endpoint. Every function
//! checks status codes (and sizes) so a fast error can never pass for a fast
//! success.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use http::{HeaderName, Method, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::client::{Conn, Endpoint, Keep, Parts, Result};
use crate::stats::{Rng, percentile_sorted};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// What containerd sends when it resolves a tag.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

const SUFFIX_LEN: usize = 64;

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A blob held as shared slices (no copy per request).
#[derive(Clone)]
pub struct Blob {
    parts: Vec<Bytes>,
    pub digest: String,
    pub len: u64,
}

impl Blob {
    pub fn from_bytes(b: Bytes) -> Self {
        let digest = sha256_digest(&b);
        Blob { len: b.len() as u64, parts: vec![b], digest }
    }

    pub fn body(&self) -> Parts {
        Parts::new(self.parts.iter().cloned())
    }

    /// Bytes `start..end` of the blob.
    pub fn slice(&self, start: u64, end: u64) -> Parts {
        let mut out = Vec::new();
        let mut base = 0u64;
        for p in &self.parts {
            let (ps, pe) = (base, base + p.len() as u64);
            let (s, e) = (start.max(ps), end.min(pe));
            if s < e {
                out.push(p.slice((s - ps) as usize..(e - ps) as usize));
            }
            base = pe;
        }
        Parts::new(out)
    }
}

/// A large random buffer from which unique large blobs are made cheaply:
/// each variant shares all but its last 64 bytes, and the SHA-256 state of
/// the shared part is computed once.
pub struct BigBlobSource {
    shared: Bytes,
    hasher: Sha256,
}

impl BigBlobSource {
    pub fn new(size: usize, seed: u64) -> Self {
        assert!(size > SUFFIX_LEN, "blob size must exceed {SUFFIX_LEN} bytes");
        let mut buf = vec![0u8; size - SUFFIX_LEN];
        Rng::new(seed).fill(&mut buf);
        let mut hasher = Sha256::new();
        hasher.update(&buf);
        BigBlobSource { shared: Bytes::from(buf), hasher }
    }

    /// A blob unique to `label` (different labels give different digests).
    pub fn variant(&self, label: &str) -> Blob {
        let mut suffix = [0u8; SUFFIX_LEN];
        let tag = Sha256::digest(label.as_bytes());
        suffix[..32].copy_from_slice(&tag);
        suffix[32..].copy_from_slice(&tag);
        let mut h = self.hasher.clone();
        h.update(suffix);
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        let len = (self.shared.len() + SUFFIX_LEN) as u64;
        Blob { parts: vec![self.shared.clone(), Bytes::copy_from_slice(&suffix)], digest, len }
    }
}

/// `count` distinct small blobs of `min..=max` bytes, unique to `label`.
pub fn small_blobs(label: &str, count: usize, min: usize, max: usize, seed: u64) -> Vec<Blob> {
    let mut rng = Rng::new(seed ^ u64::from_le_bytes(Sha256::digest(label.as_bytes())[..8].try_into().unwrap()));
    (0..count)
        .map(|i| {
            let size = rng.range(min as u64, max as u64) as usize;
            let mut buf = vec![0u8; size];
            rng.fill(&mut buf);
            let header = format!("{label}/{i}/");
            let n = header.len().min(size);
            buf[..n].copy_from_slice(&header.as_bytes()[..n]);
            Blob::from_bytes(Bytes::from(buf))
        })
        .collect()
}

/// The path and query of a `Location` header (absolute or relative).
fn location_path(loc: &str) -> String {
    match loc.find("://") {
        Some(i) => match loc[i + 3..].find('/') {
            Some(j) => loc[i + 3 + j..].to_owned(),
            None => "/".to_owned(),
        },
        None => loc.to_owned(),
    }
}

fn with_digest(path: &str, digest: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}digest={digest}")
}

async fn start_upload(conn: &mut Conn, repo: &str) -> Result<String> {
    let r = conn.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], Parts::empty(), Keep::Body).await?;
    let r = r.expect(StatusCode::ACCEPTED, "POST upload")?;
    Ok(location_path(r.header(LOCATION.as_str()).ok_or("POST upload: no Location")?))
}

const OCTET: (HeaderName, &str) = (CONTENT_TYPE, "application/octet-stream");

/// Pushes a blob with POST then PUT `?digest=` carrying the whole body, on `conn`.
pub async fn push_monolithic_on(conn: &mut Conn, repo: &str, blob: &Blob) -> Result<()> {
    let loc = start_upload(conn, repo).await?;
    let r = conn.send(Method::PUT, &with_digest(&loc, &blob.digest), &[OCTET], blob.body(), Keep::Body).await?;
    r.expect(StatusCode::CREATED, "PUT blob")?;
    Ok(())
}

/// Monolithic push on a fresh connection; returns the time from POST to the PUT's answer.
pub async fn push_monolithic(ep: &Endpoint, repo: &str, blob: &Blob) -> Result<Duration> {
    let mut conn = Conn::connect(ep).await?;
    let t0 = Instant::now();
    push_monolithic_on(&mut conn, repo, blob).await?;
    Ok(t0.elapsed())
}

/// POST, one PATCH per `chunk` bytes with `Content-Range`, then PUT `?digest=`.
pub async fn push_chunked(ep: &Endpoint, repo: &str, blob: &Blob, chunk: u64) -> Result<Duration> {
    let mut conn = Conn::connect(ep).await?;
    let t0 = Instant::now();
    let mut loc = start_upload(&mut conn, repo).await?;
    let mut offset = 0;
    while offset < blob.len {
        let end = (offset + chunk).min(blob.len);
        let range = format!("{}-{}", offset, end - 1);
        let r = conn
            .send(Method::PATCH, &loc, &[OCTET, (CONTENT_RANGE, &range)], blob.slice(offset, end), Keep::Body)
            .await?;
        let r = r.expect(StatusCode::ACCEPTED, "PATCH chunk")?;
        loc = location_path(r.header(LOCATION.as_str()).ok_or("PATCH: no Location")?);
        offset = end;
    }
    let r = conn.send(Method::PUT, &with_digest(&loc, &blob.digest), &[], Parts::empty(), Keep::Body).await?;
    r.expect(StatusCode::CREATED, "PUT finishing chunked upload")?;
    Ok(t0.elapsed())
}

/// GET of a blob, body counted and discarded; returns the time to the last byte.
pub async fn pull(ep: &Endpoint, repo: &str, blob: &Blob) -> Result<Duration> {
    let mut conn = Conn::connect(ep).await?;
    let t0 = Instant::now();
    let r = conn
        .send(Method::GET, &format!("/v2/{repo}/blobs/{}", blob.digest), &[], Parts::empty(), Keep::Discard)
        .await?;
    let elapsed = t0.elapsed();
    if r.status != StatusCode::OK || r.body_len != blob.len {
        return Err(format!("GET blob: status {}, {} of {} bytes", r.status, r.body_len, blob.len).into());
    }
    Ok(elapsed)
}

/// Pushes `blobs` one after another on one connection (POST + PUT each).
pub async fn push_many(ep: &Endpoint, repo: &str, blobs: &[Blob]) -> Result<Duration> {
    let mut conn = Conn::connect(ep).await?;
    let t0 = Instant::now();
    for b in blobs {
        push_monolithic_on(&mut conn, repo, b).await?;
    }
    Ok(t0.elapsed())
}

/// An image manifest referencing `config` and `layers`.
pub fn image_manifest(config: &Blob, layers: &[Blob]) -> Bytes {
    Bytes::from(serde_json::to_vec(&manifest_json(config, layers)).expect("JSON"))
}

fn manifest_json(config: &Blob, layers: &[Blob]) -> serde_json::Value {
    let desc = |media: &str, b: &Blob| serde_json::json!({ "mediaType": media, "digest": b.digest, "size": b.len });
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    })
}

/// A client label as part of a tag: `Berth B (PAT)` -> `berth-b--pat-`.
pub fn tag_safe(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// `count` distinct manifests (an annotation unique to `label` and the
/// index) of the same image, each with its tag `<prefix>-<index>`.
pub fn distinct_manifests(
    label: &str,
    prefix: &str,
    count: usize,
    config: &Blob,
    layers: &[Blob],
) -> Vec<(String, Bytes)> {
    (0..count)
        .map(|i| {
            let mut m = manifest_json(config, layers);
            m["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": format!("{label}/{i}") });
            (format!("{prefix}-{i:05}"), Bytes::from(serde_json::to_vec(&m).expect("JSON")))
        })
        .collect()
}

pub fn image_config(layers: usize) -> Blob {
    let diff_ids: Vec<String> = (0..layers).map(|i| sha256_digest(format!("layer {i}").as_bytes())).collect();
    let c = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    Blob::from_bytes(Bytes::from(serde_json::to_vec(&c).expect("JSON")))
}

pub async fn put_manifest(conn: &mut Conn, repo: &str, reference: &str, manifest: &Bytes) -> Result<()> {
    let r = conn
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(CONTENT_TYPE, OCI_MANIFEST)],
            Parts::from(manifest.clone()),
            Keep::Body,
        )
        .await?;
    r.expect(StatusCode::CREATED, "PUT manifest")?;
    Ok(())
}

/// Pushes an image's blobs and its manifest under each of `tags`, with
/// `parallel` connections for the tags.
pub async fn push_image(
    ep: &Endpoint,
    repo: &str,
    blobs: &[Blob],
    manifest: &Bytes,
    tags: &[String],
    parallel: usize,
) -> Result<()> {
    let mut conn = Conn::connect(ep).await?;
    for b in blobs {
        push_monolithic_on(&mut conn, repo, b).await?;
    }
    let tags = Arc::new(tags.to_vec());
    let mut tasks = Vec::new();
    for w in 0..parallel.max(1) {
        let (ep, repo, manifest, tags) = (ep.clone(), repo.to_owned(), manifest.clone(), tags.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&ep).await?;
            for t in tags.iter().skip(w).step_by(parallel.max(1)) {
                put_manifest(&mut conn, &repo, t, &manifest).await?;
            }
            Ok::<_, crate::client::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// PUTs each `(tag, manifest)` by tag, spread over `parallel` keep-alive
/// connections (connection `w` takes every `parallel`-th, in order); req/s
/// and latency percentiles over all of them. The clock starts once every
/// connection is open.
pub async fn put_manifests(
    ep: &Endpoint,
    repo: &str,
    manifests: &[(String, Bytes)],
    parallel: usize,
) -> Result<LoadResult> {
    let parallel = parallel.clamp(1, manifests.len().max(1));
    let manifests = Arc::new(manifests.to_vec());
    let mut conns = Vec::with_capacity(parallel);
    for _ in 0..parallel {
        conns.push(Conn::connect(ep).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(parallel);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (repo, manifests) = (repo.to_owned(), manifests.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(manifests.len() / parallel + 1);
            for (tag, manifest) in manifests.iter().skip(w).step_by(parallel) {
                let t0 = Instant::now();
                put_manifest(&mut conn, &repo, tag, manifest).await?;
                latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok::<_, crate::client::Error>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(manifests.len());
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let ms = |p: f64| percentile_sorted(&all, p).map_or(f64::NAN, |us| us as f64 / 1000.0);
    Ok(LoadResult {
        requests: all.len() as u64,
        errors: 0,
        elapsed,
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        first_error: None,
    })
}

/// What a closed-loop load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` connections, each sending `method path` back to back for
/// `duration`; every response must have status `want`.
pub async fn load(
    ep: &Endpoint,
    method: Method,
    path: &str,
    accept: Option<&'static str>,
    want: StatusCode,
    concurrency: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(Conn::connect(ep).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for mut conn in conns {
        let (method, path) = (method.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(HeaderName, &str)> = accept.map(|a| (ACCEPT, a)).into_iter().collect();
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let (mut errors, mut first_error) = (0u64, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = conn.send(method.clone(), &path, &headers, Parts::empty(), Keep::Discard).await;
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match r {
                    Ok(r) if r.status == want => latencies.push(us),
                    Ok(r) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("status {}", r.status));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (l, e, f) = t.await?;
        all.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let ms = |p: f64| percentile_sorted(&all, p).map_or(f64::NAN, |us| us as f64 / 1000.0);
    Ok(LoadResult { requests: all.len() as u64, errors, elapsed, p50_ms: ms(50.0), p99_ms: ms(99.0), first_error })
}

/// `count` sequential GETs of the tag list on one connection; returns the
/// median latency and the number of tags in the last answer.
pub async fn list_tags(ep: &Endpoint, repo: &str, count: usize) -> Result<(Vec<f64>, usize)> {
    let mut conn = Conn::connect(ep).await?;
    let path = format!("/v2/{repo}/tags/list");
    let mut lat = Vec::with_capacity(count);
    let mut tags = 0;
    for i in 0..count {
        let t0 = Instant::now();
        let r = conn.send(Method::GET, &path, &[], Parts::empty(), Keep::Body).await?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        let r = r.expect(StatusCode::OK, "GET tags/list")?;
        if i + 1 == count {
            let v: serde_json::Value = serde_json::from_slice(&r.body)?;
            tags = v["tags"].as_array().map_or(0, Vec::len);
        }
    }
    Ok((lat, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location_path("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=y"),
            "/v2/a/blobs/uploads/x?_state=y"
        );
        assert_eq!(location_path("/v2/a/blobs/uploads/x"), "/v2/a/blobs/uploads/x");
        assert_eq!(with_digest("/u?_state=y", "sha256:00"), "/u?_state=y&digest=sha256:00");
        assert_eq!(with_digest("/u", "sha256:00"), "/u?digest=sha256:00");
    }

    #[test]
    fn big_blob_variants_are_unique_and_correct() {
        let src = BigBlobSource::new(1000, 7);
        let (a, b) = (src.variant("a"), src.variant("b"));
        assert_ne!(a.digest, b.digest);
        assert_eq!(a.len, 1000);
        let mut whole = Vec::new();
        for p in &a.parts {
            whole.extend_from_slice(p);
        }
        assert_eq!(sha256_digest(&whole), a.digest);
        // Slices cover the blob exactly, across the part boundary.
        let mut joined = Vec::new();
        for (s, e) in [(0, 300), (300, 950), (950, 1000)] {
            let parts = a.slice(s, e);
            assert_eq!(parts.len(), e - s);
            joined.extend(a.slice(s, e).into_vec());
        }
        assert_eq!(joined, whole);
    }

    #[test]
    fn distinct_manifests_differ_and_reference_the_image() {
        let config = image_config(1);
        let layers = small_blobs("l", 1, 100, 100, 1);
        let v = distinct_manifests("x", "m", 3, &config, &layers);
        let mut digests: Vec<String> = v.iter().map(|(_, m)| sha256_digest(m)).collect();
        digests.dedup();
        assert_eq!(digests.len(), 3);
        assert_eq!(v[2].0, "m-00002");
        let m: serde_json::Value = serde_json::from_slice(&v[0].1).unwrap();
        assert_eq!(m["config"]["digest"], config.digest.as_str());
        assert_eq!(m["layers"][0]["digest"], layers[0].digest.as_str());
    }

    #[test]
    fn small_blobs_are_distinct_and_sized() {
        let v = small_blobs("x", 50, 4096, 16384, 1);
        let mut digests: Vec<&str> = v.iter().map(|b| b.digest.as_str()).collect();
        digests.sort_unstable();
        digests.dedup();
        assert_eq!(digests.len(), 50);
        assert!(v.iter().all(|b| (4096..=16384).contains(&b.len)));
    }
}
