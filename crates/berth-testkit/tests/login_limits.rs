//! Login limits over HTTP against the real server: password guessing is
//! slowed per address and per user, argon2 work is bounded before it is
//! spent, and none of it locks out the innocent (tokens, users at addresses
//! they have used, other users behind a shared address). Also how client
//! addresses are read behind `http.trusted_proxies`.
//!
//! Test clients bind distinct loopback addresses (127.0.0.x) to act as
//! different client addresses.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;

const ALICE_PW: &str = "alice-correct-horse";
const BOB_PW: &str = "bob-battery-staple";
const LIMIT: u32 = 2;

fn alice() -> Cred {
    Cred::basic("alice", ALICE_PW)
}

fn bob() -> Cred {
    Cred::basic("bob", BOB_PW)
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// alice and bob, each with an image pushed from 127.0.0.1 (so that address
/// is one they have logged in from), and a low failure limit.
async fn limited(customize: impl FnOnce(&mut berth_config::Config)) -> H {
    let h = H::start(|c| {
        c.auth.failed_login_limit = LIMIT;
        c.auth.lockout_max = Duration::from_secs(300);
        customize(c);
    })
    .await;
    h.user("alice", ALICE_PW).await;
    h.user("bob", BOB_PW).await;
    h.push_image("alice/app", "latest", &alice(), 1).await;
    h.push_image("bob/app", "latest", &bob(), 2).await;
    h
}

#[track_caller]
fn assert_throttled(r: &Resp) -> u64 {
    assert_error(r, 429, "TOOMANYREQUESTS");
    let after = r.header("retry-after").expect("Retry-After header");
    let secs: u64 = after.parse().unwrap_or_else(|_| panic!("Retry-After is a number of seconds: {after:?}"));
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

/// A GET from a client bound to `client`'s local address (build clients
/// before a lock starts: the first lock lasts only 1 s).
async fn get_from(h: &H, client: &reqwest::Client, path: &str, cred: &Cred) -> Resp {
    send_with(client, Method::GET, &h.url(path), cred, &[], None).await
}

#[tokio::test]
async fn failed_logins_lock_the_user_out_of_addresses_they_have_not_used() {
    let h = limited(|_| {}).await;
    let (attacker, new_laptop) = (client(Some(loopback(3))), client(Some(loopback(4))));
    let wrong = Cred::basic("alice", "wrong password");
    // The first LIMIT failures, and the one that crosses the limit, are plain 401s.
    for _ in 0..=LIMIT {
        h.assert_401(&get_from(&h, &attacker, "/v2/", &wrong).await, None, None);
    }
    // From addresses alice has not used, even the right password is refused
    // (for 1 s at first), on every endpoint.
    assert_eq!(assert_throttled(&get_from(&h, &new_laptop, "/v2/", &alice()).await), 1);
    assert_throttled(&get_from(&h, &new_laptop, "/v2/alice/app/manifests/latest", &alice()).await);
    assert_throttled(&get_from(&h, &attacker, "/v2/", &alice()).await);
    // From the address she pushed from, she is not locked out.
    assert_eq!(h.get("/v2/", &alice()).await.status, 200);
    assert_eq!(h.get_manifest("alice/app", "latest", &alice()).await.status, 200);
    // Another user from another address is not affected.
    assert_eq!(get_from(&h, &new_laptop, "/v2/", &bob()).await.status, 200);
    // The lock ends: the right password works from the new address too.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get_from(&h, &new_laptop, "/v2/", &alice()).await.status, 200);
}

#[tokio::test]
async fn failed_logins_back_off_and_retry_after_covers_the_lock() {
    let h = limited(|_| {}).await;
    let c = client(Some(loopback(5)));
    let wrong = Cred::basic("alice", "wrong password");
    for _ in 0..=LIMIT {
        h.assert_401(&get_from(&h, &c, "/v2/", &wrong).await, None, None);
    }
    let first = assert_throttled(&get_from(&h, &c, "/v2/", &alice()).await);
    tokio::time::sleep(Duration::from_secs(first) + Duration::from_millis(100)).await;
    // One more failure after the lock ended doubles it (2 s).
    h.assert_401(&get_from(&h, &c, "/v2/", &wrong).await, None, None);
    let second = assert_throttled(&get_from(&h, &c, "/v2/", &alice()).await);
    // A client that waits as told is let in.
    tokio::time::sleep(Duration::from_secs(second) + Duration::from_millis(100)).await;
    let r = get_from(&h, &c, "/v2/", &alice()).await;
    assert_eq!(r.status, 200, "waited Retry-After = {second} s and was refused again: {}", r.text());
    assert!(second >= 2, "Retry-After {second} for a lock of 2 s");
}

#[tokio::test]
async fn one_bad_script_behind_a_shared_address_locks_out_nobody_else() {
    let h = limited(|_| {}).await;
    let (_, pat) = h.pat("bob", &[READ], &[], None).await;
    // The shared address (a load balancer without trusted_proxies): alice
    // has logged in through it before.
    let shared = client(Some(loopback(2)));
    assert_eq!(get_from(&h, &shared, "/v2/", &alice()).await.status, 200);
    // A script guessing with stale passwords for other users.
    for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
        let r = get_from(&h, &shared, "/v2/", &Cred::basic(user, &format!("guess-{i}"))).await;
        h.assert_401(&r, None, None);
    }
    // Users new to that address are slowed there...
    assert_throttled(&get_from(&h, &shared, "/v2/", &bob()).await);
    // ...but alice, who used it, is not; tokens never are.
    assert_eq!(get_from(&h, &shared, "/v2/", &alice()).await.status, 200);
    assert_eq!(get_from(&h, &shared, "/v2/", &Cred::bearer(&pat)).await.status, 200);
    assert_eq!(get_from(&h, &shared, "/v2/bob/app/tags/list", &Cred::basic("bob", &pat)).await.status, 200);
    let r = h.token_with(&shared, &Cred::basic("bob", &pat), &["repository:bob/app:pull"]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // bob from an address of his own is fine.
    assert_eq!(h.get("/v2/", &bob()).await.status, 200);
}

#[tokio::test]
async fn failed_logins_spread_over_addresses_still_slow_the_user() {
    let h = limited(|_| {}).await;
    let (c20, c21) = (client(Some(loopback(20))), client(Some(loopback(21))));
    // One failure per address: no address reaches the limit, the user does.
    for last in 6..=(6 + LIMIT as u8) {
        let r = get_from(&h, &client(Some(loopback(last))), "/v2/", &Cred::basic("alice", "wrong")).await;
        h.assert_401(&r, None, None);
    }
    assert_throttled(&get_from(&h, &c20, "/v2/", &alice()).await);
    // The user name is matched case-insensitively by the limiter, so a
    // case variant does not dodge it either.
    assert_throttled(&get_from(&h, &c21, "/v2/", &Cred::basic("ALICE", "wrong")).await);
    assert_eq!(get_from(&h, &c20, "/v2/", &bob()).await.status, 200);
    // Where she has logged in before, she is not locked out.
    assert_eq!(h.get("/v2/", &alice()).await.status, 200);
}

#[tokio::test]
async fn a_user_lock_is_short_so_it_cannot_shut_the_user_out() {
    // A lockout_max of an hour applies to addresses; a user's own lock stays
    // at most a minute however many addresses guess.
    let h = limited(|c| c.auth.lockout_max = Duration::from_secs(3600)).await;
    for last in 30..60u8 {
        let r = get_from(&h, &client(Some(loopback(last))), "/v2/", &Cred::basic("alice", "wrong")).await;
        assert!(matches!(r.status, 401 | 429), "{}", r.status);
    }
    let wait = assert_throttled(&get_from(&h, &client(Some(loopback(61))), "/v2/", &alice()).await);
    assert!(wait <= 60, "a user's lock lasts at most 60 s, got Retry-After {wait}");
}

#[tokio::test]
async fn token_logins_are_never_locked_out() {
    let h = limited(|_| {}).await;
    let (_, pat) = h.pat("alice", &[READ], &[], None).await;
    // Guessed token secrets (well-formed, unknown) and wrong passwords from one address.
    let ip = client(Some(loopback(7)));
    for i in 0..=(3 * LIMIT) {
        let guess = format!("bpat_{i:0>43}");
        h.assert_401(&get_from(&h, &ip, "/v2/", &Cred::bearer(&guess)).await, None, None);
        let r = get_from(&h, &ip, "/v2/", &Cred::basic("alice", "wrong")).await;
        assert!(matches!(r.status, 401 | 429), "{}", r.status);
    }
    // The valid token still works from that address, however sent.
    assert_eq!(get_from(&h, &ip, "/v2/", &Cred::bearer(&pat)).await.status, 200);
    assert_eq!(get_from(&h, &ip, "/v2/alice/app/tags/list", &Cred::basic("alice", &pat)).await.status, 200);
    let r = h.token_with(&ip, &Cred::basic("alice", &pat), &["repository:alice/app:pull"]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The OAuth2 form at the token endpoint counts password failures as well.
    for _ in 0..=LIMIT {
        let r = h
            .token_form(&[
                ("grant_type", "password"),
                ("username", "carol"),
                ("password", "nope"),
                ("service", "berth"),
            ])
            .await;
        h.assert_401(&r, None, None);
    }
    let r = h
        .token_form(&[("grant_type", "password"), ("username", "carol"), ("password", "x"), ("service", "berth")])
        .await;
    assert_throttled(&r);
}

#[tokio::test]
async fn unknown_and_known_users_are_refused_alike() {
    let h = limited(|_| {}).await;
    let mut sequences = Vec::new();
    for (user, last) in [("alice", 70u8), ("nobody-here", 71u8)] {
        let c = client(Some(loopback(last)));
        let mut seq = Vec::new();
        for _ in 0..(LIMIT + 3) {
            let r = get_from(&h, &c, "/v2/", &Cred::basic(user, "wrong")).await;
            seq.push((r.status, r.header("retry-after").is_some(), r.www()));
        }
        sequences.push(seq);
    }
    assert_eq!(sequences[0], sequences[1], "refusals reveal whether a user exists");
}

/// Issue 9, item 2: 300 concurrent bad logins from one address, each on its
/// own connection, while a valid, uncached login comes from another address.
/// The flood is sent from its own thread with raw sockets, so the test's
/// client work does not compete with the server's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argon2_flood_is_bounded_before_it_is_spent() {
    // The production failure limit (5).
    let h = H::start(|c| c.auth.failed_login_limit = 5).await;
    h.user("carol", "carol-pw").await;
    let addr = h.server.addr;
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut streams = Vec::new();
            for i in 0..300 {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.bind((loopback(90), 0).into()).expect("bind 127.0.0.90");
                let mut stream = socket.connect(addr).await.expect("connect");
                let creds =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("nouser{i}:wrong"));
                let req = format!(
                    "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {creds}\r\nConnection: close\r\n\r\n"
                );
                tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes()).await.expect("send");
                streams.push(stream);
            }
            let mut statuses = Vec::new();
            for mut stream in streams {
                let mut buf = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf).await;
                let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned();
                statuses.push(head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0));
            }
            statuses
        })
    });
    // Let the flood land, then log in from elsewhere (never logged in: no cache).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let r = get_from(&h, &client(Some(loopback(91))), "/v2/", &Cred::basic("carol", "carol-pw")).await;
    let login = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let statuses = tokio::task::spawn_blocking(move || flood.join().expect("flood thread")).await.expect("join");
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "flood: {checked} checked (401), {refused} refused (429) in {:?}; valid login took {login:?}",
        started.elapsed()
    );
    assert_eq!(checked + refused, 300, "every flood request is answered 401 or 429: {statuses:?}");
    assert!(checked <= 10, "argon2 ran for {checked} of 300 bad logins from one address");
    assert!(login < Duration::from_secs(1), "a valid login during the flood took {login:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "the flood took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Behind a reverse proxy: http.trusted_proxies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn trusted_proxies_give_the_client_address_and_the_realm() {
    let h = limited(|c| c.http.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let proxy = client(Some(loopback(1)));
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let get_via = |ip: &'static str, cred: Cred| {
        let (proxy, url) = (proxy.clone(), h.url("/v2/"));
        async move { send_with(&proxy, Method::GET, &url, &cred, &from(ip), None).await }
    };
    // Guesses from one client behind the proxy lock that client only.
    for _ in 0..=LIMIT {
        let r = get_via("198.51.100.7", Cred::basic("u1", "wrong")).await;
        assert_eq!(r.status, 401);
    }
    assert_throttled(&get_via("198.51.100.7", bob()).await);
    assert_eq!(get_via("198.51.100.8", bob()).await.status, 200);
    // A client that adds its own X-Forwarded-For before the proxy's cannot
    // pose as someone else: the rightmost untrusted hop counts.
    let spoof = [("x-forwarded-for", "203.0.113.1, 198.51.100.7")];
    let r = send_with(&proxy, Method::GET, &h.url("/v2/"), &bob(), &spoof, None).await;
    assert_throttled(&r);

    // The realm follows the proxy's scheme and host when public_url is empty.
    let fwd = [("x-forwarded-proto", "https"), ("x-forwarded-host", "registry.example.com")];
    let r = send_with(&proxy, Method::GET, &h.url("/v2/"), &Cred::Anon, &fwd, None).await;
    assert_eq!(
        r.www().as_deref(),
        Some("Bearer realm=\"https://registry.example.com/v2/token\",service=\"berth\""),
        "{}",
        r.text()
    );
    let r = send_with(
        &proxy,
        Method::GET,
        &h.url("/v2/"),
        &Cred::Anon,
        &[("forwarded", "proto=https;host=reg.example")],
        None,
    )
    .await;
    assert_eq!(r.www().as_deref(), Some("Bearer realm=\"https://reg.example/v2/token\",service=\"berth\""));
}

#[tokio::test]
async fn forwarding_headers_from_untrusted_peers_are_ignored() {
    let h = limited(|c| c.http.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let outsider = client(Some(loopback(40)));
    // Rotating X-Forwarded-For does not make an untrusted peer several clients.
    for i in 0..=LIMIT {
        let fwd = format!("10.9.8.{i}");
        let headers = [("x-forwarded-for", fwd.as_str()), ("forwarded", "for=10.1.1.1")];
        let r = send_with(&outsider, Method::GET, &h.url("/v2/"), &Cred::basic("u9", "x"), &headers, None).await;
        assert_eq!(r.status, 401);
    }
    assert_throttled(&get_from(&h, &outsider, "/v2/", &bob()).await);
    // Nor can it steer the realm.
    let fwd = [("x-forwarded-proto", "https"), ("x-forwarded-host", "evil.example")];
    let r = send_with(&client(Some(loopback(41))), Method::GET, &h.url("/v2/"), &Cred::Anon, &fwd, None).await;
    assert_eq!(r.www().as_deref(), Some(h.challenge(None, None).as_str()));
}
