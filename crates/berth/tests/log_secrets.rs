//! No secret reaches a log line or `berth config`: the real binary, its
//! whole log captured (at debug level), after a barrage of failures that
//! carry secrets everywhere a careless log line might pick one up.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use berth_oci::Digest;
use berth_testkit::fixtures::{blob, image_manifest};
use common::{BerthProcess, berth};

const ADMIN_PASSWORD: &str = "AdminPw-S3cret-a1";
const HOOK_USER_PASSWORD: &str = "HookPass-S3cret-b2";
const HOOK_PATH_SECRET: &str = "PathS3cret-c3";
const HOOK_QUERY_SECRET: &str = "QueryS3cret-d4";
const HOOK_HMAC_SECRET: &str = "HmacS3cret-e5";

/// A token-shaped string (`bpat_` + 43 characters) that no token has.
fn fake_token(tag: char) -> String {
    format!("bpat_{}", std::iter::repeat_n(tag, 43).collect::<String>())
}

/// A port on loopback that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{secret}")))
}

/// A client whose requests come from `127.0.0.<n>` (each address has its own login backoff).
fn client_from(n: u8) -> reqwest::Client {
    berth_testkit::install_crypto_provider();
    reqwest::Client::builder().no_proxy().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))).build().unwrap()
}

async fn push_image(p: &BerthProcess, auth: &str) {
    let c = common::client();
    let (cfg, layer) = (b"{}".to_vec(), blob(9, 1000));
    for b in [&cfg, &layer] {
        let url = p.url(&format!("/v2/admin/app/blobs/uploads/?digest={}", Digest::sha256_of(b)));
        let r = c.post(url).header("authorization", auth).body(b.clone()).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = c
        .put(p.url("/v2/admin/app/manifests/v1"))
        .header("authorization", auth)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image_manifest(&cfg, &[&layer]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_or_berth_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let hook_url = format!(
        "http://hookuser:{HOOK_USER_PASSWORD}@127.0.0.1:{port}/services/T0/{HOOK_PATH_SECRET}?token={HOOK_QUERY_SECRET}"
    );
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!("[[webhooks]]\nname = \"chat\"\nurl = \"{hook_url}\"\nsecret = \"{HOOK_HMAC_SECRET}\"\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [
        ("BERTH_CONFIG", config.to_str().unwrap()),
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("RUST_LOG", "debug"),
    ];
    let p = BerthProcess::start(&data, &env);

    // A push: its webhook deliveries fail against the closed port.
    push_image(&p, &basic("admin", ADMIN_PASSWORD)).await;
    let (code, out, err) = berth(
        &data,
        &["token", "create", "admin", "--scopes", "read:package,write:package", "--name", "ci"],
        &env[..1],
    );
    assert_eq!(code, 0, "{err}");
    let real_token = out.lines().last().unwrap().trim().to_owned();
    assert!(real_token.starts_with("bpat_"), "{out}");

    let bogus_jwt = format!(
        "{}.{}.SigS3cret-f6",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"AlgS3cret-g7","kid":"KidS3cret-h8"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"SubS3cret-i9"}"#)
    );
    let (t1, t2, t3, t4, t5, t6) =
        (fake_token('A'), fake_token('B'), fake_token('C'), fake_token('D'), fake_token('E'), fake_token('F'));
    let invalid_user = "Mixed.Case UserS3cret-j0";
    let authorizations = vec![
        basic("admin", "WrongPw-S3cret-k1"),
        basic(&t1, &t2),
        basic(&real_token, &t3),
        basic(&t4, "NotAToken-S3cret-l2"),
        basic(invalid_user, "pw"),
        basic("admin", &t5),
        format!("Bearer {bogus_jwt}"),
        "Bearer eyJhbGciOiJFZERTQSJ9.PayloadS3cret-m3.SigS3cret-n4".to_owned(),
        format!("Bearer {t6}"),
        format!("token {t6}"),
    ];
    let form = format!("grant_type=password&username={t1}&password=FormPw-S3cret-o5");
    // Each client address fails freely first, then one address is throttled:
    // both audit lines (failure and backoff) see every credential.
    for round in 0..2u8 {
        for (i, auth) in authorizations.iter().enumerate() {
            let c = client_from(if round == 0 { 10 + i as u8 } else { 1 });
            for path in ["/v2/", "/v2/token?service=berth&scope=repository:admin/app:pull", "/api/v1/packages/admin"] {
                let r = c.get(p.url(path)).header("authorization", auth).send().await.unwrap();
                assert!([401, 429].contains(&r.status().as_u16()), "{path}: {}", r.status());
            }
            let r = c
                .put(p.url("/v2/admin/app/manifests/v2"))
                .header("authorization", auth)
                .body(vec![b' '; 4096])
                .send()
                .await
                .unwrap();
            assert!([401, 429].contains(&r.status().as_u16()), "{}", r.status());
        }
        let r = client_from(40 + round)
            .post(p.url("/v2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await
            .unwrap();
        assert!([401, 429].contains(&r.status().as_u16()), "{}", r.status());
    }

    // Both deliveries of the push (its push and tag events) have failed and been logged.
    let start = Instant::now();
    while p.logs().iter().filter(|l| l.contains("webhook delivery failed")).count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "no failed webhook deliveries logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = p.logs();
    let (_, config_out, config_err) = berth(&data, &["config"], &env[..3]);

    let mut secrets: Vec<String> = [
        ADMIN_PASSWORD,
        HOOK_USER_PASSWORD,
        HOOK_PATH_SECRET,
        HOOK_QUERY_SECRET,
        HOOK_HMAC_SECRET,
        "S3cret-",
        "hookuser",
        invalid_user,
        &real_token,
        &real_token["bpat_".len()..],
        &t1[..12],
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    secrets.extend(authorizations.iter().map(|a| a.split_once(' ').unwrap().1.to_owned()));
    secrets.extend([t1, t2, t3, t4, t5, t6, bogus_jwt, hook_url]);
    for secret in &secrets {
        for line in &logs {
            assert!(!line.contains(secret.as_str()), "{secret:?} logged: {line}");
        }
        assert!(!config_out.contains(secret.as_str()), "{secret:?} in berth config: {config_out}");
        assert!(!config_err.contains(secret.as_str()), "{secret:?} in berth config: {config_err}");
    }

    // What is shown instead.
    let masked = format!("http://127.0.0.1:{port}/***");
    let config: serde_json::Value = serde_json::from_str(&config_out).unwrap();
    assert_eq!(config["webhooks"][0]["url"], masked.as_str());
    assert_eq!(config["webhooks"][0]["secret"], "***");
    let failed = logs.iter().find(|l| l.contains("webhook delivery failed")).unwrap();
    assert!(failed.contains(&masked) && failed.contains("\"hook\":\"chat\""), "{failed}");
    assert!(failed.contains("error sending request"), "{failed}");
    let audit: Vec<&String> = logs.iter().filter(|l| l.contains("\"target\":\"audit\"")).collect();
    assert!(audit.iter().any(|l| l.contains("auth_failure") && l.contains("\"user\":\"<invalid>\"")));
    assert!(audit.iter().any(|l| l.contains("auth_throttled") && l.contains("\"user\":\"<invalid>\"")));
    assert!(audit.iter().any(|l| l.contains("auth_failure") && l.contains("\"user\":\"admin\"")));
}
