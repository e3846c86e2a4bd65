//! `berth sync` end to end: the real binary copies from a real source into
//! a test server's database and storage, over loopback.
//!
//! Sources: a second Berth with authentication on (the Bearer token flow),
//! Debian's `docker-registry` (CNCF Distribution, htpasswd Basic auth,
//! `_catalog`, no referrers API), and a Berth behind a proxy that refuses
//! `_catalog` so Gitea's package API is used. The copies are compared with
//! their sources tag by tag, manifest by manifest, blob by blob (read back
//! and hashed) and referrer by referrer.

mod content;
// Debian's `docker-registry` on a loopback port, shared with berth-upstream's tests.
#[path = "../../../berth-upstream/tests/common/distribution.rs"]
#[allow(dead_code)]
mod distribution;
mod proxy;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_auth::admin::{self, TokenRequest};
use berth_oci::{Digest, Reference, Tag};
use berth_testkit::TestServer;
use content::{Expected, assert_copied, name, populate};
use proxy::{GiteaAccount, Proxy};

/// The source account's password; the tests check it is never printed.
const LOGIN_PASSWORD: &str = "source-login-pw-7Qx2";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "berth sync failed:\n{}\n{}", self.stdout, self.stderr);
        self
    }

    fn never_shows(&self, secret: &str) {
        assert!(!self.stdout.contains(secret), "the secret is in stdout:\n{}", self.stdout);
        assert!(!self.stderr.contains(secret), "the secret is in stderr:\n{}", self.stderr);
    }
}

/// `berth sync ARGS` over `dest`'s data directory and database, with
/// authentication on or off there, `stdin` fed in, and `env` added.
fn command(dest: &TestServer, auth: bool, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("sync")
        .args(args)
        .env_clear()
        .env("BERTH_DATA_DIR", dest.data_dir())
        .env("BERTH_AUTH_ENABLED", auth.to_string())
        .env("RUST_LOG", "info");
    for (k, v) in dest.cli_env() {
        cmd.env(k, v);
    }
    for (k, v) in storage_env(&dest.config) {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The server's S3 settings as variables (`cli_env` names only the
/// database), so the CLI writes where the server reads under
/// `BERTH_TEST_BACKENDS=postgres-s3`.
fn storage_env(config: &berth_config::Config) -> Vec<(&'static str, String)> {
    if config.storage.backend != berth_config::StorageBackend::S3 {
        return Vec::new();
    }
    let s3 = &config.storage.s3;
    vec![
        ("BERTH_STORAGE_BACKEND", "s3".into()),
        ("BERTH_STORAGE_S3_ENDPOINT", s3.endpoint.clone()),
        ("BERTH_STORAGE_S3_BUCKET", s3.bucket.clone()),
        ("BERTH_STORAGE_S3_PREFIX", s3.prefix.clone()),
        ("BERTH_STORAGE_S3_REGION", s3.region.clone()),
        ("BERTH_STORAGE_S3_ACCESS_KEY_ID", s3.access_key_id.expose().to_owned()),
        ("BERTH_STORAGE_S3_SECRET_ACCESS_KEY", s3.secret_access_key.expose().to_owned()),
        ("BERTH_STORAGE_S3_PATH_STYLE", s3.path_style.to_string()),
        ("BERTH_STORAGE_S3_ALLOW_HTTP", s3.allow_http.to_string()),
        ("BERTH_STORAGE_S3_PART_SIZE", s3.part_size.to_string()),
    ]
}

async fn sync(dest: &TestServer, auth: bool, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = command(dest, auth, args, env);
    let stdin = stdin.map(|s| format!("{s}\n"));
    tokio::task::spawn_blocking(move || {
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run berth sync");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if std::env::var_os("BERTH_TEST_SHOW_LOGS").is_some() {
            eprintln!(
                "[berth sync] {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

async fn server(auth: bool) -> TestServer {
    TestServer::start_with(|c| {
        c.auth.enabled = auth;
        c.auth.failed_login_limit = 1000;
    })
    .await
}

fn accounts(server: &TestServer) -> &dyn berth_meta::AuthStore {
    server.auth.as_ref().expect("auth is on").store().as_ref()
}

/// A read-only personal access token of `user` at `server`.
async fn read_token(server: &TestServer, user: &str) -> String {
    let req = TokenRequest {
        scopes: vec!["read:package".into()],
        repositories: Vec::new(),
        expires_in: None,
        name: "sync".into(),
    };
    admin::create_token(accounts(server), user, &req).await.unwrap().1
}

async fn tag_digest(server: &TestServer, repo: &str, tag: &str) -> Option<Digest> {
    let reference = Reference::Tag(Tag::parse(tag).unwrap());
    server.registry.get_manifest(&name(repo), &reference, false).await.ok().map(|m| m.digest)
}

async fn referrer_digests(server: &TestServer, repo: &str, subject: &Digest) -> Vec<Digest> {
    server.registry.referrers(&name(repo), subject, None).await.unwrap().into_iter().map(|r| r.digest).collect()
}

async fn assert_expected(source: &TestServer, dest: &TestServer, from_owner: &str, to_owner: &str, e: &Expected) {
    for repo in ["app", "tools"] {
        let checked = assert_copied(
            &source.registry,
            &format!("{from_owner}/{repo}"),
            &dest.registry,
            &format!("{to_owner}/{repo}"),
        )
        .await;
        assert!(checked >= 1);
    }
    let app = format!("{to_owner}/app");
    assert_eq!(tag_digest(dest, &app, "latest").await.as_ref(), Some(&e.index));
    assert!(tag_digest(dest, &app, &e.signature_tag).await.is_some(), "the cosign tag");
    assert_eq!(referrer_digests(dest, &app, &e.arm64).await, vec![e.attestation.clone()], "a child's referrer");
    let v2 = tag_digest(dest, &app, "v2").await.unwrap();
    assert_eq!(referrer_digests(dest, &app, &v2).await, vec![e.sbom.clone()], "an untagged referrer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_berth_with_bearer_tokens() {
    let source = server(true).await;
    admin::create_user(accounts(&source), "admin", Some(LOGIN_PASSWORD), false).await.unwrap();
    let token = read_token(&source, "admin").await;
    let expected = populate(&source.registry, "admin").await;
    let dest = server(true).await;
    admin::create_user(accounts(&dest), "admin", None, false).await.unwrap();
    admin::create_org(accounts(&dest), "acme").await.unwrap();
    let from = source.url("");
    let login = ["--from", from.as_str(), "--username", "admin", "--password-stdin"];
    let mut runs = Vec::new();

    // A dry run lists what it would copy and copies nothing.
    let dry = sync(&dest, true, &[&login[..], &["--dry-run"]].concat(), Some(&token), &[]).await;
    dry.assert_ok();
    for needle in
        ["would copy admin/app:v1 ", "would copy admin/tools:1.0 ", "nothing was copied", "listed by /v2/_catalog"]
    {
        assert!(dry.stdout.contains(needle), "{needle} missing:\n{}", dry.stdout);
    }
    assert!(dry.stdout.contains("would copy referrer admin/app@"), "{}", dry.stdout);
    assert!(dest.registry.list_tags(&name("admin/app"), None, None).await.is_err(), "nothing copied");
    assert!(dest.stored_blobs().await.is_empty());
    runs.push(dry);

    // The copy: every tag, manifest, blob and referrer, recorded as pushed by sync.
    let first = sync(&dest, true, &login, Some(&token), &[("RUST_LOG", "trace")]).await;
    first.assert_ok();
    assert!(first.stdout.contains("copied admin/app:latest "), "{}", first.stdout);
    assert_expected(&source, &dest, "admin", "admin", &expected).await;
    let versions = dest.registry.package_versions("admin").await.unwrap();
    assert!(!versions.is_empty() && versions.iter().all(|v| v.pushed_by.as_deref() == Some("sync")), "{versions:?}");
    assert!(first.stderr.contains("sync_tag"), "the audit log names each tag:\n{}", first.stderr);
    runs.push(first);

    // A second run copies nothing.
    let again = sync(&dest, true, &login, Some(&token), &[]).await;
    again.assert_ok();
    assert!(
        again.stdout.contains("copied 0 tags, 0 manifests, 0 blobs, 0 B; skipped 7 tags up to date"),
        "{}",
        again.stdout
    );
    runs.push(again);

    // --to renames the owner; the password may come from the environment.
    // Every blob is here already (under admin), so it is linked, not copied.
    let args = ["--from", from.as_str(), "--username", "admin", "--repository", "admin/*", "--to", "acme"];
    let renamed = sync(&dest, true, &args, None, &[("BERTH_SYNC_PASSWORD", &token)]).await;
    renamed.assert_ok();
    assert!(renamed.stdout.contains("copied acme/app:v1 "), "{}", renamed.stdout);
    assert!(renamed.stdout.contains(" 0 blobs, "), "blobs are linked, not copied again:\n{}", renamed.stdout);
    assert_expected(&source, &dest, "admin", "acme", &expected).await;
    runs.push(renamed);

    // An owner that does not exist here is a failure with its reason (exit 4).
    let args = ["--from", from.as_str(), "--username", "admin", "--repository", "admin/tools", "--to", "ghost"];
    let ghost = sync(&dest, true, &args, None, &[("BERTH_SYNC_PASSWORD", &token)]).await;
    assert_eq!(ghost.code, 4, "{}\n{}", ghost.stdout, ghost.stderr);
    assert!(ghost.stdout.contains("ghost/tools: owner \"ghost\" does not exist here"), "{}", ghost.stdout);
    assert!(ghost.stdout.contains("1 failed"), "{}", ghost.stdout);
    runs.push(ghost);

    // Wrong credentials: the sync cannot run (exit 1), and says why.
    let wrong = sync(&dest, true, &login, Some("not-the-token"), &[]).await;
    assert_eq!(wrong.code, 1, "{}\n{}", wrong.stdout, wrong.stderr);
    assert!(wrong.stderr.contains("unauthorized"), "{}", wrong.stderr);
    runs.push(wrong);

    // Nor as the Basic header it is sent in.
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("admin:{token}"));
    for run in &runs {
        run.never_shows(&token);
        run.never_shows(&basic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_distribution_with_basic_auth_and_catalog() {
    let Some(reg) = distribution::Distribution::start("from_distribution_with_basic_auth_and_catalog", true).await
    else {
        return;
    };
    let fixtures = content::distribution_images(&reg).await;
    let dest = server(false).await;
    let from = reg.url.clone();
    let args = ["--from", from.as_str(), "--username", distribution::USER, "--password-stdin", "--to", "hub"];
    let run = sync(&dest, false, &args, Some(distribution::PASSWORD), &[("RUST_LOG", "debug")]).await;
    run.assert_ok();
    run.never_shows(distribution::PASSWORD);
    assert!(run.stdout.contains("listed by /v2/_catalog"), "{}", run.stdout);
    for (repo, tag, digest, bytes) in &fixtures {
        let here = format!("hub/{}", repo.rsplit('/').next().unwrap());
        let reference = Reference::Tag(Tag::parse(tag).unwrap());
        let m = dest.registry.get_manifest(&name(&here), &reference, true).await.unwrap();
        assert_eq!((&m.digest, &m.content), (digest, bytes), "{here}:{tag}");
    }
    // The index's children came along, and so did the cosign tag (Distribution has no referrers API).
    let again = sync(&dest, false, &args, Some(distribution::PASSWORD), &[]).await;
    again.assert_ok();
    assert!(again.stdout.contains("copied 0 tags, 0 manifests, 0 blobs"), "{}", again.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_refused_lists_through_the_gitea_package_api() {
    let source = server(true).await;
    admin::create_user(accounts(&source), "admin", Some(LOGIN_PASSWORD), false).await.unwrap();
    admin::create_org(accounts(&source), "acme").await.unwrap();
    admin::set_member(accounts(&source), "acme", "admin", "read").await.unwrap();
    let token = read_token(&source, "admin").await;
    let expected = populate(&source.registry, "admin").await;
    content::image(&source.registry, "acme/web", 9, &[4000], &["v3"]).await;
    // Newer versions list first: 60 of them push acme/web to the second page
    // (50 a page), so a listing that stopped after one page would miss it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let many: Vec<String> = (0..60).map(|i| format!("t{i:02}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    content::image(&source.registry, "acme/many", 10, &[100], &many).await;
    let proxy = Proxy::start(&source.url("")).await;
    proxy.state.refuse_catalog.store(true, Ordering::Relaxed);
    *proxy.state.gitea.lock().unwrap() =
        Some(GiteaAccount { login: "admin".into(), password: token.clone(), orgs: vec!["acme".into()] });
    let dest = server(false).await;
    let login = ["--from", proxy.url.as_str(), "--username", "admin", "--password-stdin"];

    // Owners named by the glob: only their packages are listed.
    let run = sync(&dest, false, &[&login[..], &["--repository", "acme/*"]].concat(), Some(&token), &[]).await;
    run.assert_ok().never_shows(&token);
    assert!(run.stdout.contains("listed by Gitea's package API for acme"), "{}", run.stdout);
    assert_copied(&source.registry, "acme/web", &dest.registry, "acme/web").await;
    assert_copied(&source.registry, "acme/many", &dest.registry, "acme/many").await;
    assert!(dest.registry.list_tags(&name("admin/app"), None, None).await.is_err(), "only acme/*");
    let requests = proxy.requests();
    assert!(requests.iter().any(|r| r.starts_with("GET /v2/_catalog")), "{requests:?}");
    let pages = requests.iter().filter(|r| r.starts_with("GET /api/v1/packages/acme?type=container")).count();
    assert_eq!(pages, 2, "{requests:?}");
    assert!(!requests.iter().any(|r| r.starts_with("GET /api/v1/user")), "{requests:?}");

    // No owner in the filter: the signed-in user and its organizations.
    let run = sync(&dest, false, &login, Some(&token), &[]).await;
    run.assert_ok().never_shows(&token);
    assert!(run.stdout.contains("listed by Gitea's package API for acme, admin"), "{}", run.stdout);
    assert_expected(&source, &dest, "admin", "admin", &expected).await;
    assert_copied(&source.registry, "acme/web", &dest.registry, "acme/web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sync_resumes_and_completes() {
    let source = server(false).await;
    let expected = populate(&source.registry, "admin").await;
    let big_layer = 40 << 20;
    content::image(&source.registry, "admin/big", 7, &[big_layer], &["v1"]).await;
    let proxy = Proxy::start(&source.url("")).await;
    proxy.state.blob_rate.store(16 << 20, Ordering::Relaxed);
    let dest = server(false).await;
    let args = ["--from", proxy.url.as_str(), "--concurrency", "1"];

    // Kill it (SIGKILL) in the middle of the large blob.
    let mut child = command(&dest, false, &args, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while proxy.state.blob_bytes.load(Ordering::Relaxed) < 8 << 20 {
        assert!(child.try_wait().unwrap().is_none(), "sync finished before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let sent = proxy.state.blob_bytes.load(Ordering::Relaxed);
    assert!(sent < (big_layer as u64), "killed midway, after {sent} bytes");
    assert!(tag_digest(&dest, "admin/big", "v1").await.is_none(), "the large image is not there yet");
    assert_copied(&source.registry, "admin/app", &dest.registry, "admin/app").await;

    // The rerun completes: everything intact, and what was there is not copied again.
    proxy.state.blob_rate.store(0, Ordering::Relaxed);
    let rerun = sync(&dest, false, &args, None, &[]).await;
    rerun.assert_ok();
    assert!(rerun.stdout.contains("copied admin/big:v1 "), "{}", rerun.stdout);
    assert!(!rerun.stdout.contains("copied admin/app:"), "{}", rerun.stdout);
    assert_expected(&source, &dest, "admin", "admin", &expected).await;
    assert_copied(&source.registry, "admin/big", &dest.registry, "admin/big").await;
    let last = sync(&dest, false, &args, None, &[]).await;
    last.assert_ok();
    assert!(last.stdout.contains("copied 0 tags, 0 manifests, 0 blobs"), "{}", last.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_refusals_fail_with_reasons_and_transient_errors_are_retried() {
    let source = server(false).await;
    populate(&source.registry, "admin").await;
    let proxy = Proxy::start(&source.url("")).await;
    let args = ["--from", proxy.url.as_str()];

    // 429 then 503 on blob fetches: retried, and the copy completes.
    proxy.state.fail_blobs.store(2, Ordering::Relaxed);
    let dest = server(false).await;
    sync(&dest, false, &args, None, &[]).await.assert_ok();
    assert_eq!(proxy.state.fail_blobs.load(Ordering::Relaxed), 0, "both failures were met");
    assert_copied(&source.registry, "admin/app", &dest.registry, "admin/app").await;

    // An immutable tag here that points elsewhere: that tag fails, the rest is copied.
    let dest = server(false).await;
    let (other, _) = content::image(&dest.registry, "admin/app", 42, &[10], &["v1"]).await;
    let immutable = [("BERTH_TAGS_IMMUTABLE", r#"["*:v*"]"#)];
    let run = sync(&dest, false, &args, None, &immutable).await;
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("admin/app:v1: here: tag \"v1\" is immutable"), "{}", run.stdout);
    assert!(run.stdout.contains("; 1 failed"), "{}", run.stdout);
    assert_eq!(tag_digest(&dest, "admin/app", "v1").await, Some(other), "the immutable tag is untouched");
    assert_eq!(tag_digest(&source, "admin/app", "v2").await, tag_digest(&dest, "admin/app", "v2").await);
    assert_copied(&source.registry, "admin/tools", &dest.registry, "admin/tools").await;

    // A quota too small for the app: failures naming the quota, no crash.
    let dest = server(false).await;
    let limits = berth_registry::quota::QuotaLimits { bytes: Some(100 << 10), repositories: None };
    dest.registry.set_quota("admin", limits).await.unwrap();
    let run = sync(&dest, false, &args, None, &[]).await;
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("quota exceeded"), "{}", run.stdout);
    assert!(tag_digest(&dest, "admin/app", "latest").await.is_none());
}
