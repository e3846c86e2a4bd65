//! One suite (`noauth` or `auth`): start both servers and the ceiling, push
//! the fixtures, warm up, run the interleaved rounds, read memory, stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::ceiling::{Answers, Ceiling};
use crate::cli::{Cli, Params};
use crate::client::{Endpoint, Result};
use crate::memory::AnonSampler;
use crate::mib;
use crate::rounds::Round;
use crate::servers::{self, BerthSpec, Server};
use crate::workloads::{self, BigBlobSource, Blob, MANIFEST_ACCEPT};

/// Where manifest_put PUTs its manifests (the image's blobs are pushed there first).
pub const MANIFEST_PUT_REPO: &str = "bench/mput";

/// Every number measured: (suite, metric key, client label) -> one value per round.
#[derive(Debug, Default)]
pub struct Recorder {
    pub values: BTreeMap<(String, String, String), Vec<f64>>,
    /// Client labels per suite (suites in run order), Berth's first, in column order.
    pub clients: Vec<(String, Vec<String>)>,
    pub errors: Vec<String>,
}

impl Recorder {
    pub fn add(&mut self, suite: &str, key: &str, client: &str, v: f64) {
        self.values.entry((suite.to_owned(), key.to_owned(), client.to_owned())).or_default().push(v);
    }

    pub fn error(&mut self, what: String) {
        eprintln!("  ERROR {what}");
        self.errors.push(what);
    }
}

/// A client: a label, the server it talks to (index into the suite's servers), and how.
pub struct ClientRef {
    pub label: String,
    pub server: usize,
    /// The server's process id (its CPU time is read around some metrics).
    pub pid: u32,
    pub ep: Endpoint,
}

/// Runs one suite (both servers, every client, every round).
pub async fn run_suite(
    suite: &str,
    cli: &Cli,
    berth_bin: &Path,
    p: &Params,
    big: &BigBlobSource,
    workdir: &Path,
    rec: &mut Recorder,
) -> Result<()> {
    let auth = suite == "auth";
    eprintln!("== suite {suite}: starting servers");
    let spec = BerthSpec { bin: berth_bin, env: &cli.berth_env };
    let berth = servers::start_berth(spec, &workdir.join(format!("{suite}-berth")), auth, "Berth").await?;
    eprintln!("   Berth pid {} on {}", berth.pid(), berth.addr);
    let mut servers: Vec<Server> = vec![berth];
    if !cli.no_distribution {
        let dist = servers::start_distribution(
            &cli.distribution,
            &cli.htpasswd,
            &workdir.join(format!("{suite}-distribution")),
            auth,
        )
        .await?;
        eprintln!("   Distribution pid {} on {}", dist.pid(), dist.addr);
        servers.push(dist);
    }
    if let Some(bin) = &cli.berth_b {
        let spec = BerthSpec { bin, env: &cli.berth_b_env };
        let b = servers::start_berth(spec, &workdir.join(format!("{suite}-berth-b")), auth, "Berth B").await?;
        eprintln!("   Berth B pid {} on {} ({})", b.pid(), b.addr, bin.display());
        servers.push(b);
    }

    let mut clients = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        for (label, ep) in &s.clients {
            if label.ends_with("(password)") && !cli.berth_password {
                continue;
            }
            clients.push(ClientRef { label: label.clone(), server: i, pid: s.pid(), ep: ep.clone() });
        }
    }
    rec.clients.push((suite.to_owned(), clients.iter().map(|c| c.label.clone()).collect()));
    let labels_of = |server: usize| -> Vec<String> {
        clients.iter().filter(|c| c.server == server).map(|c| c.label.clone()).collect()
    };

    // Idle memory: after start-up, before any request but the readiness probe.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, s) in servers.iter().enumerate() {
        if let Some(m) = s.memory() {
            for l in labels_of(i) {
                rec.add(suite, "rss_idle_mib", &l, mib(m.rss));
                rec.add(suite, "anon_idle_mib", &l, mib(m.anon));
            }
        }
    }
    let sampler = AnonSampler::start(servers.iter().map(Server::pid).collect());

    // Fixtures: an image (config + 3 layers) tagged `latest` in bench/app,
    // the same manifest under `tags` tags in bench/tags, and the image's
    // blobs (no manifest) in bench/mput, where manifest_put PUTs manifests.
    let config = workloads::image_config(3);
    let layers = workloads::small_blobs("layers", 3, 8 * 1024, 8 * 1024, 42);
    let manifest = workloads::image_manifest(&config, &layers);
    let mut fixtures: Vec<Blob> = vec![config.clone()];
    fixtures.extend(layers.iter().cloned());
    let tag_names: Vec<String> = (0..p.tags).map(|i| format!("t{i:05}")).collect();
    for (i, s) in servers.iter().enumerate() {
        let ep = &clients.iter().find(|c| c.server == i).expect("each server has a client").ep;
        let t0 = std::time::Instant::now();
        workloads::push_image(ep, "bench/app", &fixtures, &manifest, &["latest".to_owned()], 1).await?;
        if p.on("tags") {
            workloads::push_image(ep, "bench/tags", &fixtures, &manifest, &tag_names, 4).await?;
        }
        if p.on("manifest_put") {
            workloads::push_image(ep, MANIFEST_PUT_REPO, &fixtures, &manifest, &[], 1).await?;
        }
        eprintln!("   {} fixtures pushed in {:.1} s", s.kind.name(), t0.elapsed().as_secs_f64());
    }
    let manifest_path = "/v2/bench/app/manifests/latest".to_owned();
    let head_path = format!("/v2/bench/app/blobs/{}", layers[0].digest);

    // The ceiling answers exactly what Berth answered to the same requests.
    let ceiling = if p.on("manifest") || p.on("head") {
        let answers = Answers::capture(&clients[0].ep, &manifest_path, MANIFEST_ACCEPT, &head_path).await?;
        let c = Ceiling::start(&workdir.join(format!("{suite}-ceiling")), &answers)?;
        eprintln!("   ceiling (hyper) pid {} on {}", c.pid(), c.addr);
        Some(c)
    } else {
        None
    };

    // Warm-up (not recorded): connections, caches, lazy initialisation.
    let ceiling_ep = ceiling.as_ref().map(Ceiling::endpoint);
    for ep in clients.iter().map(|c| &c.ep).chain(ceiling_ep.as_ref()) {
        let d = Duration::from_millis(300);
        let conc = p.concurrency.min(8);
        if p.on("manifest") {
            workloads::load(ep, Method::GET, &manifest_path, Some(MANIFEST_ACCEPT), StatusCode::OK, conc, d).await?;
        }
        if p.on("head") {
            workloads::load(ep, Method::HEAD, &head_path, None, StatusCode::OK, conc, d).await?;
        }
    }
    for c in &clients {
        if p.on("small") || p.on("push_mono") || p.on("push_chunked") {
            let warm = workloads::small_blobs(&format!("{suite}/warm/{}", c.label), 5, 4096, 4096, 3);
            workloads::push_many(&c.ep, "bench/small", &warm).await?;
        }
        if p.on("manifest_put") {
            let label = format!("{suite}/warm/{}", c.label);
            let tag = format!("warm-{}", workloads::tag_safe(&c.label));
            let warm = workloads::distinct_manifests(&label, &tag, 5, &config, &layers);
            workloads::put_manifests(&c.ep, MANIFEST_PUT_REPO, &warm, p.put_concurrency).await?;
        }
    }

    for round in 0..p.rounds {
        // Rotate who goes first so no client always follows the same one.
        let mut order: Vec<&ClientRef> = clients.iter().collect();
        order.rotate_left(round % clients.len());
        let r = Round {
            suite,
            round,
            p,
            order,
            big,
            sampler: &sampler,
            ceiling: ceiling_ep.clone(),
            manifest_path: &manifest_path,
            head_path: &head_path,
            image: (&config, &layers),
        };
        r.run(rec).await;
    }
    drop(ceiling);

    // Memory after the load, once the servers had a moment to go idle, and the peak.
    tokio::time::sleep(Duration::from_secs(if p.quick { 1 } else { 3 })).await;
    let anon_peaks = sampler.stop().await;
    for (i, s) in servers.iter().enumerate() {
        match s.memory() {
            Some(m) => {
                for l in labels_of(i) {
                    rec.add(suite, "rss_peak_mib", &l, mib(m.hwm));
                    rec.add(suite, "anon_peak_mib", &l, mib(anon_peaks[i].max(m.anon)));
                    rec.add(suite, "rss_after_mib", &l, mib(m.rss));
                    rec.add(suite, "anon_after_mib", &l, mib(m.anon));
                }
            }
            None => rec.error(format!("{suite}: {} exited during the run (see {})", s.kind.name(), s.dir.display())),
        }
    }
    for s in servers {
        let dir = s.dir.clone();
        let kind = s.kind;
        s.stop();
        if !cli.keep {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("   could not remove {}: {e}", dir.display());
            }
        } else {
            eprintln!("   {} data and log kept in {}", kind.name(), dir.display());
        }
    }
    if !cli.keep {
        let _ = std::fs::remove_dir_all(workdir.join(format!("{suite}-ceiling")));
    }
    Ok(())
}
