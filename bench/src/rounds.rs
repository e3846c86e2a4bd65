//! One interleaved round: each metric runs on every client back to back
//! (in the round's order) before the next metric starts.

use std::collections::BTreeMap;

use http::{Method, StatusCode};

use crate::cli::Params;
use crate::client::Endpoint;
use crate::memory::AnonSampler;
use crate::suite::{ClientRef, MANIFEST_PUT_REPO, Recorder};
use crate::workloads::{self, BigBlobSource, Blob, MANIFEST_ACCEPT};
use crate::{MB, mib, servers, settle, stats};

/// The server's CPU time since `before`, in microseconds per operation
/// (NaN when `/proc` could not tell).
fn cpu_per_op_us(pid: u32, before: Option<f64>, ops: usize) -> f64 {
    match (before, servers::cpu_seconds(pid)) {
        (Some(b), Some(a)) if ops > 0 => (a - b) * 1e6 / ops as f64,
        _ => f64::NAN,
    }
}

/// What every metric of a round needs.
pub struct Round<'a> {
    pub suite: &'a str,
    pub round: usize,
    pub p: &'a Params,
    /// The clients in this round's order.
    pub order: Vec<&'a ClientRef>,
    pub big: &'a BigBlobSource,
    pub sampler: &'a AnonSampler,
    pub ceiling: Option<Endpoint>,
    pub manifest_path: &'a str,
    pub head_path: &'a str,
    /// The fixture image (config, layers) the manifest PUTs reference.
    pub image: (&'a Blob, &'a [Blob]),
}

impl Round<'_> {
    fn tag(&self, c: &ClientRef) -> String {
        format!("[{} {}/{}] {:<17}", self.suite, self.round + 1, self.p.rounds, c.label)
    }

    fn fail(&self, rec: &mut Recorder, c: &ClientRef, what: &str, e: impl std::fmt::Display) {
        rec.error(format!("{} round {} {} {what}: {e}", self.suite, self.round, c.label));
    }

    /// Every metric the run asks for.
    pub async fn run(&self, rec: &mut Recorder) {
        self.transfers(rec).await;
        for (metric, method, path, accept) in [
            ("manifest", Method::GET, self.manifest_path, Some(MANIFEST_ACCEPT)),
            ("head", Method::HEAD, self.head_path, None),
        ] {
            if self.p.on(metric) {
                self.load(rec, metric, method, path, accept).await;
            }
        }
        if self.p.on("small") {
            self.small(rec).await;
        }
        if self.p.on("manifest_put") {
            self.manifest_put(rec).await;
        }
        if self.p.on("tags") {
            self.tags(rec).await;
        }
    }

    /// The large-blob pushes and the pull, with each server's private-memory
    /// peak over them.
    async fn transfers(&self, rec: &mut Recorder) {
        let (suite, round, p) = (self.suite, self.round, self.p);
        if !(p.on("push_mono") || p.on("push_chunked") || p.on("pull")) {
            return;
        }
        self.sampler.window_start();
        let mut pushed: BTreeMap<String, Blob> = BTreeMap::new();
        if p.on("push_mono") {
            for c in &self.order {
                let blob = self.big.variant(&format!("{suite}/{round}/{}/mono", c.label));
                settle().await;
                match workloads::push_monolithic(&c.ep, "bench/big", &blob).await {
                    Ok(d) => {
                        let v = blob.len as f64 / MB / d.as_secs_f64();
                        eprintln!("  {} push_mono     {v:>9.1} MB/s", self.tag(c));
                        rec.add(suite, "push_mono_mbps", &c.label, v);
                        pushed.insert(c.label.clone(), blob);
                    }
                    Err(e) => self.fail(rec, c, "push_mono", e),
                }
            }
        }
        if p.on("push_chunked") {
            for c in &self.order {
                let blob = self.big.variant(&format!("{suite}/{round}/{}/chunked", c.label));
                settle().await;
                match workloads::push_chunked(&c.ep, "bench/big", &blob, p.chunk).await {
                    Ok(d) => {
                        let v = blob.len as f64 / MB / d.as_secs_f64();
                        eprintln!("  {} push_chunked  {v:>9.1} MB/s", self.tag(c));
                        rec.add(suite, "push_chunked_mbps", &c.label, v);
                        pushed.entry(c.label.clone()).or_insert(blob);
                    }
                    Err(e) => self.fail(rec, c, "push_chunked", e),
                }
            }
        }
        if p.on("pull") {
            for c in &self.order {
                let blob = match pushed.get(&c.label) {
                    Some(b) => b.clone(),
                    None => {
                        let b = self.big.variant(&format!("{suite}/{round}/{}/pull", c.label));
                        if let Err(e) = workloads::push_monolithic(&c.ep, "bench/big", &b).await {
                            self.fail(rec, c, "push for pull", e);
                            continue;
                        }
                        b
                    }
                };
                settle().await;
                match workloads::pull(&c.ep, "bench/big", &blob).await {
                    Ok(d) => {
                        let v = blob.len as f64 / MB / d.as_secs_f64();
                        eprintln!("  {} pull          {v:>9.1} MB/s", self.tag(c));
                        rec.add(suite, "pull_mbps", &c.label, v);
                    }
                    Err(e) => self.fail(rec, c, "pull", e),
                }
            }
        }
        let peaks = self.sampler.window_peaks();
        for c in &self.order {
            rec.add(suite, "anon_transfer_peak_mib", &c.label, mib(peaks[c.server]));
        }
    }

    /// A closed-loop req/s load on every client, and on the ceiling (first in
    /// even rounds, last in odd ones).
    async fn load(&self, rec: &mut Recorder, metric: &str, method: Method, path: &str, accept: Option<&'static str>) {
        let (suite, p) = (self.suite, self.p);
        let mut ceiling_rps = None;
        let ceiling_first = self.round.is_multiple_of(2);
        if ceiling_first {
            ceiling_rps = self.load_ceiling(rec, metric, method.clone(), path, accept).await;
        }
        let mut measured = Vec::new();
        for c in &self.order {
            match workloads::load(&c.ep, method.clone(), path, accept, StatusCode::OK, p.concurrency, p.duration).await
            {
                Ok(r) => {
                    eprintln!(
                        "  {} {metric:<13} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms{}",
                        self.tag(c),
                        r.rps(),
                        r.p50_ms,
                        r.p99_ms,
                        if r.errors > 0 { format!("  ({} errors)", r.errors) } else { String::new() }
                    );
                    rec.add(suite, &format!("{metric}_rps"), &c.label, r.rps());
                    rec.add(suite, &format!("{metric}_p50_ms"), &c.label, r.p50_ms);
                    rec.add(suite, &format!("{metric}_p99_ms"), &c.label, r.p99_ms);
                    measured.push((c.label.clone(), r.rps()));
                    if r.errors > 0 {
                        let first = r.first_error.unwrap_or_default();
                        self.fail(rec, c, metric, format!("{} failed requests, first: {first}", r.errors));
                    }
                }
                Err(e) => self.fail(rec, c, metric, e),
            }
        }
        if !ceiling_first {
            ceiling_rps = self.load_ceiling(rec, metric, method, path, accept).await;
        }
        if let Some(ceiling) = ceiling_rps {
            for (label, rps) in measured {
                rec.add(suite, &format!("{metric}_ceiling_rps"), &label, ceiling);
                rec.add(suite, &format!("{metric}_ceiling_share_pct"), &label, 100.0 * rps / ceiling);
            }
        }
    }

    async fn load_ceiling(
        &self,
        rec: &mut Recorder,
        metric: &str,
        method: Method,
        path: &str,
        accept: Option<&'static str>,
    ) -> Option<f64> {
        let ep = self.ceiling.as_ref()?;
        let p = self.p;
        match workloads::load(ep, method, path, accept, StatusCode::OK, p.concurrency, p.duration).await {
            Ok(r) if r.errors == 0 => {
                eprintln!(
                    "  [{} {}/{}] {:<17} {metric:<13} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                    self.suite,
                    self.round + 1,
                    p.rounds,
                    "ceiling (hyper)",
                    r.rps(),
                    r.p50_ms,
                    r.p99_ms
                );
                Some(r.rps())
            }
            Ok(r) => {
                rec.error(format!(
                    "{} round {} ceiling {metric}: {} failed requests",
                    self.suite, self.round, r.errors
                ));
                None
            }
            Err(e) => {
                rec.error(format!("{} round {} ceiling {metric}: {e}", self.suite, self.round));
                None
            }
        }
    }

    async fn small(&self, rec: &mut Recorder) {
        let (suite, round, p) = (self.suite, self.round, self.p);
        for c in &self.order {
            let blobs = workloads::small_blobs(
                &format!("{suite}/{round}/{}", c.label),
                p.small,
                p.small_min,
                p.small_max,
                round as u64,
            );
            settle().await;
            let cpu0 = servers::cpu_seconds(c.pid);
            match workloads::push_many(&c.ep, "bench/small", &blobs).await {
                Ok(d) => {
                    let v = blobs.len() as f64 / d.as_secs_f64();
                    let cpu = cpu_per_op_us(c.pid, cpu0, blobs.len());
                    eprintln!("  {} small         {v:>9.1} blobs/s  server CPU {cpu:.0} µs/blob", self.tag(c));
                    rec.add(suite, "small_blobs_per_s", &c.label, v);
                    rec.add(suite, "small_cpu_us", &c.label, cpu);
                }
                Err(e) => self.fail(rec, c, "small blobs", e),
            }
        }
    }

    /// `--manifest-puts` new manifests PUT by new tags over `--put-concurrency`
    /// connections: req/s and latency percentiles.
    async fn manifest_put(&self, rec: &mut Recorder) {
        let (suite, round, p) = (self.suite, self.round, self.p);
        let (config, layers) = self.image;
        for c in &self.order {
            let label = format!("{suite}/{round}/{}", c.label);
            let prefix = format!("r{round}-{}", workloads::tag_safe(&c.label));
            let manifests = workloads::distinct_manifests(&label, &prefix, p.manifest_puts, config, layers);
            settle().await;
            let cpu0 = servers::cpu_seconds(c.pid);
            match workloads::put_manifests(&c.ep, MANIFEST_PUT_REPO, &manifests, p.put_concurrency).await {
                Ok(r) => {
                    let cpu = cpu_per_op_us(c.pid, cpu0, manifests.len());
                    eprintln!(
                        "  {} manifest_put  {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  server CPU {cpu:.0} µs/PUT",
                        self.tag(c),
                        r.rps(),
                        r.p50_ms,
                        r.p99_ms
                    );
                    rec.add(suite, "manifest_put_rps", &c.label, r.rps());
                    rec.add(suite, "manifest_put_p50_ms", &c.label, r.p50_ms);
                    rec.add(suite, "manifest_put_p99_ms", &c.label, r.p99_ms);
                    rec.add(suite, "manifest_put_cpu_us", &c.label, cpu);
                }
                Err(e) => self.fail(rec, c, "manifest_put", e),
            }
        }
    }

    async fn tags(&self, rec: &mut Recorder) {
        let (suite, p) = (self.suite, self.p);
        for c in &self.order {
            match workloads::list_tags(&c.ep, "bench/tags", p.tag_requests).await {
                Ok((lat, n)) => {
                    let med = stats::median(&lat).unwrap_or(f64::NAN);
                    eprintln!("  {} tags          {med:>9.2} ms median ({n} tags)", self.tag(c));
                    if n != p.tags {
                        self.fail(rec, c, "tags/list", format!("{n} tags, expected {}", p.tags));
                    }
                    rec.add(suite, "tags_list_ms", &c.label, med);
                    rec.add(suite, "tags_list_rps", &c.label, 1000.0 / med);
                }
                Err(e) => self.fail(rec, c, "tags/list", e),
            }
        }
    }
}
