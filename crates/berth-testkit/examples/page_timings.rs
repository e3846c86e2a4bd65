//! Page timings (issue #11): the versions page of a repository with 10,000
//! tags, the owner page of an owner with 500 repositories, and the version
//! page of a 40-layer image, each requested sequentially by a signed-in
//! viewer over loopback HTTP; prints p50/p99/max and the page weight.
//!
//!   cargo run --release -p berth-testkit --example page_timings -- [sqlite|postgres] [samples]
//!
//! `postgres` needs BERTH_TEST_POSTGRES_URL. Times are whole round trips
//! (an upper bound on server time).

use std::time::{Duration, Instant};

use berth_oci::{Digest, Reference, RepositoryName, Tag};
use berth_registry::Registry;
use berth_testkit::backends::{Database, Storage};
use berth_testkit::{TestServer, fixtures};
use futures_util::stream;

const TAGS: usize = 10_000;

const REPOSITORIES: usize = 500;
const LAYERS: usize = 40;

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("repository name")
}

async fn put_blob(registry: &Registry, repository: &RepositoryName, data: &[u8]) {
    let digest = Digest::sha256_of(data);
    let body: berth_registry::ByteStream = Box::pin(stream::iter([Ok(bytes::Bytes::copy_from_slice(data))]));
    registry.put_blob(repository, &digest, body, Some(data.len() as u64)).await.expect("blob");
}

async fn put_manifest(registry: &Registry, repository: &RepositoryName, tag: &str, content: Vec<u8>) {
    let reference = Reference::Tag(Tag::parse(tag).expect("tag"));
    registry.put_manifest(repository, &reference, content, None, Vec::new(), Some("alice")).await.expect("manifest");
}

/// An image manifest made distinct by an annotation.
fn image(config: &[u8], layers: &[&[u8]], seed: usize) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&fixtures::image_manifest(config, layers)).expect("json");
    m["annotations"] = serde_json::json!({ "seed": seed.to_string() });
    serde_json::to_vec(&m).expect("json")
}

async fn seed(server: &TestServer) {
    let registry = &server.registry;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {"org.opencontainers.image.source": "https://example.com"}}
    }))
    .expect("json");
    let layer = fixtures::blob(1, 4096);
    let started = Instant::now();
    let many = repo("alice/many");
    put_blob(registry, &many, &config).await;
    put_blob(registry, &many, &layer).await;
    for i in 0..TAGS {
        put_manifest(registry, &many, &format!("v{i}"), image(&config, &[&layer], i)).await;
    }
    eprintln!("seeded {TAGS} tags in {:.1?}", started.elapsed());
    let started = Instant::now();
    for i in 0..REPOSITORIES {
        let r = repo(&format!("bulk/app-{i:03}"));
        put_blob(registry, &r, &config).await;
        put_blob(registry, &r, &layer).await;
        put_manifest(registry, &r, "latest", image(&config, &[&layer], i)).await;
    }
    eprintln!("seeded {REPOSITORIES} repositories in {:.1?}", started.elapsed());
    let big = repo("alice/big");
    put_blob(registry, &big, &config).await;
    let layers: Vec<Vec<u8>> = (0..LAYERS).map(|i| fixtures::blob(100 + i as u64, 2048)).collect();
    for l in &layers {
        put_blob(registry, &big, l).await;
    }
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    put_manifest(registry, &big, "v1", image(&config, &refs, 0)).await;
}

async fn sign_in(http: &reqwest::Client, server: &TestServer) -> String {
    let form = http.get(server.url("/user/login")).send().await.expect("login form");
    let cookie = form.headers().get("set-cookie").expect("login cookie").to_str().expect("ascii").to_owned();
    let login_cookie = cookie.split(';').next().expect("pair").to_owned();
    let csrf = login_cookie.split_once('=').expect("value").1.to_owned();
    let r = http
        .post(server.url("/user/login"))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&user=alice&password=alice-password&next=%2F"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 303, "signed in");
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .find(|c| c.starts_with("berth_session="))
        .expect("session cookie");
    session.split(';').next().expect("pair").to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    berth_testkit::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let db = match args.get(1).map(String::as_str) {
        Some("postgres") => Database::Postgres,
        _ => Database::Sqlite,
    };
    let samples: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let server = TestServer::start_on(db, Storage::Filesystem, |c| {
        c.auth.enabled = true;
        c.auth.failed_login_limit = 1000;
    })
    .await;
    let auth = server.auth.clone().expect("auth on");
    berth_auth::admin::create_user(auth.store().as_ref(), "alice", Some("alice-password"), false).await.expect("alice");
    berth_auth::admin::create_org(auth.store().as_ref(), "bulk").await.expect("org");
    berth_auth::admin::set_member(auth.store().as_ref(), "bulk", "alice", "read").await.expect("member");
    seed(&server).await;

    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let cookie = sign_in(&http, &server).await;
    let pages = [
        ("versions page, 10,000 tags (page 1)", "/alice/-/packages/container/many/versions"),
        ("versions page, 10,000 tags (page 150)", "/alice/-/packages/container/many/versions?page=150"),
        ("owner page, 500 repositories (page 1)", "/bulk/-/packages"),
        ("owner page, 500 repositories (page 10)", "/bulk/-/packages?page=10"),
        ("version page, 40 layers", "/alice/-/packages/container/big/v1"),
        ("package page (newest of 10,000)", "/alice/-/packages/container/many"),
    ];
    println!("database: {db:?}, {samples} sequential requests per page");
    println!("{:<42} {:>9} {:>9} {:>9} {:>9}", "page", "p50 ms", "p99 ms", "max ms", "KB");
    for (label, path) in pages {
        let url = server.url(path);
        let mut times = Vec::with_capacity(samples);
        let mut bytes = 0;
        for i in 0..samples + 5 {
            let start = Instant::now();
            let r = http.get(&url).header("cookie", &cookie).send().await.expect("page");
            let status = r.status();
            let body = r.bytes().await.expect("body");
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body[..body.len().min(400)]));
            if i >= 5 {
                times.push(start.elapsed());
            }
            bytes = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{label:<42} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().expect("samples")),
            bytes as f64 / 1024.0
        );
    }
    server.stop().await;
}
