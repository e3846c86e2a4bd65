//! Several `berth serve` processes sharing Postgres and S3, as stateless
//! replicas behind a load balancer. Needs BERTH_TEST_POSTGRES_URL and
//! BERTH_TEST_S3_ENDPOINT (CI sets both); otherwise says so and skips.

mod common;

use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_testkit::backends::TempDatabase;
use berth_testkit::fixtures::{blob, image_manifest};
use common::{BerthProcess, client};

const ADMIN_PW: &str = "replica-admin-pw";

/// A fresh database, bucket prefix and shared signing key for a set of replicas.
struct Cluster {
    _db: TempDatabase,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Option<Cluster> {
    let (Ok(_), Ok(endpoint)) = (std::env::var("BERTH_TEST_POSTGRES_URL"), std::env::var("BERTH_TEST_S3_ENDPOINT"))
    else {
        eprintln!(
            "NOT RUN: BERTH_TEST_POSTGRES_URL and BERTH_TEST_S3_ENDPOINT must both be set; replica tests skipped"
        );
        return None;
    };
    let (db, url) = TempDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt.pem");
    let env = vec![
        ("BERTH_DATABASE_URL", url),
        ("BERTH_STORAGE_BACKEND", "s3".into()),
        ("BERTH_STORAGE_S3_ENDPOINT", endpoint),
        ("BERTH_STORAGE_S3_BUCKET", std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "berth-test".into())),
        ("BERTH_STORAGE_S3_PREFIX", format!("replicas/{}", uuid_like())),
        ("BERTH_STORAGE_S3_ACCESS_KEY_ID", "test".into()),
        ("BERTH_STORAGE_S3_SECRET_ACCESS_KEY", "test".into()),
        ("BERTH_STORAGE_S3_PATH_STYLE", "true".into()),
        ("BERTH_STORAGE_S3_ALLOW_HTTP", "true".into()),
        ("BERTH_STORAGE_S3_PART_SIZE", (5 * 1024 * 1024).to_string()),
        ("BERTH_AUTH_ENABLED", "true".into()),
        // Replicas must share the token signing key.
        ("BERTH_AUTH_JWT_KEY_FILE", key.display().to_string()),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW.into()),
    ];
    Some(Cluster { _db: db, env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), _dir: dir })
}

fn uuid_like() -> String {
    Digest::sha256_of(format!("{:?}", Instant::now()).as_bytes()).hex()[..16].to_owned()
}

impl Cluster {
    fn start(&self) -> BerthProcess {
        let data = tempfile::tempdir().unwrap().keep();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        BerthProcess::start(&data, &env)
    }
}

fn req(c: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url).basic_auth("admin", Some(ADMIN_PW))
}

fn location(base: &str, r: &reqwest::Response) -> String {
    let l = r.headers()["location"].to_str().unwrap();
    if l.starts_with("http") { l.to_owned() } else { format!("{base}{l}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_moves_between_replicas_and_pulls_anywhere() {
    let Some(cl) = cluster().await else { return };
    let (a, b) = (cl.start(), cl.start());
    let c = client();
    let data = blob(1, 12 * 1024 * 1024 + 123);
    let digest = Digest::sha256_of(&data);
    let repo = "admin/spread";
    // POST on A, PATCH on B, PATCH on A, PUT on A.
    let r = req(&c, reqwest::Method::POST, a.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let path = location("", &r);
    let path = &path[path.find("/v2/").unwrap()..];
    let half = data.len() / 2;
    let r = req(&c, reqwest::Method::PATCH, b.url(path))
        .header("content-range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let r = req(&c, reqwest::Method::PATCH, a.url(path))
        .header("content-range", format!("{half}-{}", data.len() - 1))
        .body(data[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = req(&c, reqwest::Method::PUT, a.url(&format!("{path}?digest={digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);

    // Push a manifest on B, pull everything from A.
    let config = b"{}".to_vec();
    let r = req(
        &c,
        reqwest::Method::POST,
        b.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", Digest::sha256_of(&config))),
    )
    .body(config.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = image_manifest(&config, &[&data]);
    let r = req(&c, reqwest::Method::PUT, b.url(&format!("/v2/{repo}/manifests/v1")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = req(&c, reqwest::Method::GET, a.url(&format!("/v2/{repo}/manifests/v1"))).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &manifest[..]);
    let got = req(&c, reqwest::Method::GET, a.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);

    // A bearer token issued by one replica works on the other.
    let token: serde_json::Value =
        req(&c, reqwest::Method::GET, a.url(&format!("/v2/token?service=berth&scope=repository:{repo}:pull")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let r = c
        .get(b.url(&format!("/v2/{repo}/manifests/v1")))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_one_blob_and_one_tag_stay_consistent() {
    let Some(cl) = cluster().await else { return };
    let (a, b) = (cl.start(), cl.start());
    let repo = "admin/race";
    let data = blob(2, 6 * 1024 * 1024 + 7);
    let digest = Digest::sha256_of(&data);
    let config = b"{}".to_vec();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let (data, config, digest) = (data.clone(), config.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let r = req(&c, reqwest::Method::POST, format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
                .body(data.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "blob push {i}");
            let cfg_digest = Digest::sha256_of(&config);
            let r = req(&c, reqwest::Method::POST, format!("{base}/v2/{repo}/blobs/uploads/?digest={cfg_digest}"))
                .body(config.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            // Each push a distinct manifest to the same tag.
            let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(&config, &[&data])).unwrap();
            m["annotations"] = serde_json::json!({ "push": i.to_string() });
            let body = serde_json::to_vec(&m).unwrap();
            let r = req(&c, reqwest::Method::PUT, format!("{base}/v2/{repo}/manifests/latest"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "manifest push {i}");
            Digest::sha256_of(&body)
        }));
    }
    let mut pushed = Vec::new();
    for t in tasks {
        pushed.push(t.await.unwrap());
    }
    let c = client();
    let mut seen = Vec::new();
    for p in [&a, &b] {
        let r = req(&c, reqwest::Method::HEAD, p.url(&format!("/v2/{repo}/manifests/latest"))).send().await.unwrap();
        seen.push(r.headers()["docker-content-digest"].to_str().unwrap().to_owned());
        let got = req(&c, reqwest::Method::GET, p.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..], "blob intact on every replica");
    }
    assert_eq!(seen[0], seen[1], "both replicas agree on the tag");
    assert!(pushed.iter().any(|d| d.as_str() == seen[0]), "the tag points at one of the pushes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_boot_together_quickly() {
    let Some(cl) = cluster().await else { return };
    // First boot migrates; then three replicas start together on the up-to-date schema.
    drop(cl.start());
    let started = Instant::now();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let env = cl.env.clone();
            std::thread::spawn(move || {
                let data = tempfile::tempdir().unwrap().keep();
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                BerthProcess::start(&data, &env)
            })
        })
        .collect();
    let replicas: Vec<BerthProcess> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    eprintln!("3 replicas ready in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "3 replicas took {elapsed:?}");
    let c = client();
    for r in &replicas {
        assert_eq!(c.get(r.url("/readyz")).send().await.unwrap().status(), 200);
    }
}
