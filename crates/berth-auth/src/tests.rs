//! Authentication and authorization over a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use berth_meta::AuthStore;
use berth_meta_sqlite::{SqliteMetaStore, SqliteSettings};
use berth_oci::RepositoryName;

use crate::admin::{self, TokenRequest};
use crate::*;

struct Fixture {
    auth: AuthService,
    store: Arc<SqliteMetaStore>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_with(UpstreamNamespaces::default()).await
}

async fn fixture_with(upstreams: UpstreamNamespaces) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.unwrap());
    store.migrate().await.unwrap();
    let keys = JwtKeys::load(&dir.path().join("jwt.pem"), &[], "berth", "berth", Duration::from_secs(300)).unwrap();
    let settings = AuthSettings {
        allow_password: true,
        failed_login_limit: 3,
        lockout_max: Duration::from_secs(60),
        session_ttl: Duration::from_secs(3600),
    };
    let auth = AuthService::new(store.clone(), keys, settings).unwrap().with_upstreams(upstreams);
    Fixture { auth, store, _dir: dir }
}

fn repo(s: &str) -> RepositoryName {
    RepositoryName::parse(s).unwrap()
}

fn basic<'a>(user: &'a str, secret: &'a str) -> Credentials<'a> {
    Credentials::Basic { user, secret }
}

#[tokio::test]
async fn passwords_tokens_and_rights() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "alice", Some("pw-alice"), false).await.unwrap();
    admin::create_user(s, "bob", Some("pw-bob"), false).await.unwrap();
    assert!(matches!(admin::create_user(s, "alice", None, false).await, Err(admin::AdminError::Exists(_))));
    assert!(matches!(admin::create_user(s, "Alice", None, false).await, Err(admin::AdminError::Invalid(_))));

    let alice = f.auth.authenticate(basic("alice", "pw-alice"), None).await.unwrap();
    assert!(matches!(f.auth.authenticate(basic("alice", "nope"), None).await, Err(AuthError::InvalidCredentials)));
    assert!(matches!(f.auth.authenticate(basic("nobody", "x"), None).await, Err(AuthError::InvalidCredentials)));
    assert_eq!(f.auth.rights(&alice, &repo("alice/app")).await.unwrap(), Actions::ALL);
    assert_eq!(f.auth.rights(&alice, &repo("bob/app")).await.unwrap(), Actions::NONE);
    assert_eq!(f.auth.rights(&alice, &repo("ghost/app")).await.unwrap(), Actions::NONE);

    // A read token restricted to one pattern.
    let req = TokenRequest {
        scopes: vec!["read:package".into()],
        repositories: vec!["alice/ci-*".into()],
        ..Default::default()
    };
    let (id, secret) = admin::create_token(s, "alice", &req).await.unwrap();
    let via_token = f.auth.authenticate(basic("whatever", &secret), None).await.unwrap();
    assert_eq!(f.auth.rights(&via_token, &repo("alice/ci-web")).await.unwrap(), Actions::PULL);
    assert_eq!(f.auth.rights(&via_token, &repo("alice/prod")).await.unwrap(), Actions::NONE);
    let bearer = f.auth.authenticate(Credentials::Bearer(&secret), None).await.unwrap();
    assert!(bearer.is_authenticated());
    admin::revoke_token(s, id).await.unwrap();
    assert!(f.auth.authenticate(basic("alice", &secret), None).await.is_err(), "revoked");

    // Expired token.
    let short =
        TokenRequest { scopes: vec!["write:package".into()], expires_in: Some(Duration::ZERO), ..Default::default() };
    let (_, expired) = admin::create_token(s, "alice", &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(f.auth.authenticate(basic("alice", &expired), None).await.is_err(), "expired");

    // Disabled users authenticate no more.
    admin::set_disabled(s, "bob", true).await.unwrap();
    assert!(f.auth.authenticate(basic("bob", "pw-bob"), None).await.is_err());
}

#[tokio::test]
async fn orgs_admins_and_visibility() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    for (u, admin) in [("root", true), ("reader", false), ("writer", false), ("outsider", false)] {
        admin::create_user(s, u, Some("pw"), admin).await.unwrap();
    }
    admin::create_org(s, "acme").await.unwrap();
    assert!(matches!(admin::create_org(s, "reader").await, Err(admin::AdminError::Exists(_))), "one namespace");
    admin::set_member(s, "acme", "reader", "read").await.unwrap();
    admin::set_member(s, "acme", "writer", "write").await.unwrap();
    assert!(admin::set_member(s, "acme", "ghost", "read").await.is_err());
    let login = |u: &'static str| f.auth.authenticate(basic(u, "pw"), None);
    let app = repo("acme/app");
    assert_eq!(f.auth.rights(&login("reader").await.unwrap(), &app).await.unwrap(), Actions::PULL);
    assert_eq!(f.auth.rights(&login("writer").await.unwrap(), &app).await.unwrap(), Actions::ALL);
    assert_eq!(f.auth.rights(&login("outsider").await.unwrap(), &app).await.unwrap(), Actions::NONE);
    assert_eq!(f.auth.rights(&login("root").await.unwrap(), &repo("anything/at/all")).await.unwrap(), Actions::ALL);
    assert_eq!(f.auth.rights(&Principal::Anonymous, &app).await.unwrap(), Actions::NONE);

    admin::set_visibility(s, "acme/app", true).await.unwrap();
    assert_eq!(f.auth.rights(&Principal::Anonymous, &app).await.unwrap(), Actions::PULL);
    assert_eq!(f.auth.rights(&Principal::Anonymous, &repo("acme/other")).await.unwrap(), Actions::NONE);
    admin::set_visibility(s, "acme", true).await.unwrap();
    assert_eq!(
        f.auth.rights(&Principal::Anonymous, &repo("acme/other")).await.unwrap(),
        Actions::NONE,
        "a missing repository looks private, even in a public namespace"
    );
    s.set_repository_public(&repo("acme/other"), None, 0).await.unwrap();
    assert_eq!(f.auth.rights(&Principal::Anonymous, &repo("acme/other")).await.unwrap(), Actions::PULL);
    admin::set_visibility(s, "acme/app", false).await.unwrap();
    assert_eq!(f.auth.rights(&Principal::Anonymous, &app).await.unwrap(), Actions::NONE, "repository overrides owner");

    let outsider = login("outsider").await.unwrap();
    assert_eq!(f.auth.readable_repositories(&outsider, None, 10).await.unwrap(), vec!["acme/other".to_owned()]);
    let root = login("root").await.unwrap();
    assert_eq!(f.auth.readable_repositories(&root, None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn token_grants_are_intersections() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "carol", Some("pw"), false).await.unwrap();
    let req = TokenRequest { scopes: vec!["read:package".into()], ..Default::default() };
    let (_, secret) = admin::create_token(s, "carol", &req).await.unwrap();
    let p = f.auth.authenticate(basic("carol", &secret), None).await.unwrap();
    let scopes = Scope::parse_all("repository:carol/app:pull,push repository:dave/app:pull registry:catalog:*");
    let issued = f.auth.issue_token(&p, &scopes).await.unwrap();
    let claims = f.auth.keys().verify(&issued.token).unwrap();
    assert_eq!(claims.sub, "carol");
    assert_eq!(claims.access.len(), 2, "{:?}", claims.access);
    assert_eq!(claims.access[0].actions, vec!["pull".to_owned()], "read token: no push");
    let bearer = f.auth.authenticate(Credentials::Bearer(&issued.token), None).await.unwrap();
    assert_eq!(f.auth.allowed(&bearer, &repo("carol/app"), Actions::PULL).await.unwrap(), Actions::PULL);
    assert!(f.auth.allowed(&bearer, &repo("carol/app"), Actions::of(&[Action::Push])).await.unwrap().is_empty());
    assert!(f.auth.allowed(&bearer, &repo("dave/app"), Actions::PULL).await.unwrap().is_empty());

    let anon = f.auth.issue_token(&Principal::Anonymous, &scopes).await.unwrap();
    assert!(f.auth.keys().verify(&anon.token).unwrap().access.is_empty());
}

#[tokio::test]
async fn failed_logins_back_off() {
    let f = fixture().await;
    admin::create_user(f.store.as_ref(), "eve", Some("right"), false).await.unwrap();
    let ip = Some("192.0.2.7".parse().unwrap());
    for _ in 0..4 {
        let _ = f.auth.authenticate(basic("eve", "wrong"), ip).await;
    }
    assert!(matches!(f.auth.authenticate(basic("eve", "right"), ip).await, Err(AuthError::TooManyAttempts(_))));
    assert!(
        matches!(f.auth.authenticate(basic("eve", "right"), None).await, Err(AuthError::TooManyAttempts(_))),
        "per user too"
    );
}

#[tokio::test]
async fn only_enabled_site_admins_administer_the_site() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "root", Some("pw"), true).await.unwrap();
    admin::create_user(s, "alice", Some("pw"), false).await.unwrap();
    let (read, write) = (Actions::PULL, Actions::READ_WRITE);
    let root = f.auth.authenticate(basic("root", "pw"), None).await.unwrap();
    assert!(f.auth.is_site_admin(&root, read) && f.auth.is_site_admin(&root, write));
    let alice = f.auth.authenticate(basic("alice", "pw"), None).await.unwrap();
    assert!(!f.auth.is_site_admin(&alice, read));
    assert!(!f.auth.is_site_admin(&Principal::Anonymous, read));

    // Tokens: the scope must cover the request, and no repository limit.
    let token = |scopes: &[&str], repositories: &[&str]| TokenRequest {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        repositories: repositories.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let (_, reader) = admin::create_token(s, "root", &token(&["read:package"], &[])).await.unwrap();
    let reader = f.auth.authenticate(Credentials::Bearer(&reader), None).await.unwrap();
    assert!(f.auth.is_site_admin(&reader, read) && !f.auth.is_site_admin(&reader, write));
    let (_, writer) = admin::create_token(s, "root", &token(&["write:package"], &[])).await.unwrap();
    let writer = f.auth.authenticate(Credentials::Bearer(&writer), None).await.unwrap();
    assert!(f.auth.is_site_admin(&writer, write));
    let (_, narrow) = admin::create_token(s, "root", &token(&["write:package"], &["acme/*"])).await.unwrap();
    let narrow = f.auth.authenticate(Credentials::Bearer(&narrow), None).await.unwrap();
    assert!(!f.auth.is_site_admin(&narrow, read), "a token limited to some repositories");

    // A bearer JWT grants repository access only.
    let issued = f.auth.issue_token(&root, &Scope::parse_all("repository:acme/app:pull")).await.unwrap();
    let jwt = f.auth.authenticate(Credentials::Bearer(&issued.token), None).await.unwrap();
    assert!(!f.auth.is_site_admin(&jwt, read));

    // Disabled admins authenticate no more.
    admin::set_disabled(s, "root", true).await.unwrap();
    assert!(f.auth.authenticate(basic("root", "pw"), None).await.is_err());
}

/// The store's row for a token: its argon2id verifier and lookup key.
async fn stored_token(f: &Fixture, secret: &str) -> berth_meta::auth::TokenCandidate {
    let mut found = f.store.tokens_by_lookup_key(&secrets::token_lookup_key(secret), None).await.unwrap();
    assert_eq!(found.len(), 1);
    found.remove(0)
}

#[tokio::test]
async fn tokens_are_stored_as_argon2id_and_verified_against_it() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "alice", None, false).await.unwrap();
    let req = TokenRequest { scopes: vec!["read:package".into()], ..Default::default() };
    let (id, secret) = admin::create_token(s, "alice", &req).await.unwrap();
    assert!(secrets::looks_like_token(&secret));

    // The row holds an argon2id PHC string (random salt) and an 8-byte key; never the secret.
    let row = stored_token(&f, &secret).await;
    assert_eq!(row.token.id, id);
    assert!(row.secret_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", row.secret_hash);
    assert!(secrets::verify_password(&secret, &row.secret_hash));
    assert!(!row.secret_hash.contains(&secret[secrets::TOKEN_PREFIX.len()..]));
    let (_, again) = admin::create_token(s, "alice", &req).await.unwrap();
    assert_ne!(stored_token(&f, &again).await.secret_hash, row.secret_hash);

    // Right secret: in, and the use is recorded.
    let p = f.auth.authenticate(Credentials::Bearer(&secret), None).await.unwrap();
    assert_eq!(p.user_name(), Some("alice"));
    assert!(s.get_token(id).await.unwrap().unwrap().last_used_at.is_some(), "last use recorded");
    // Token as the Basic user name (Gitea style), and the /v2/token flow.
    assert!(f.auth.authenticate(basic(&secret, ""), None).await.is_ok());
    let p = f.auth.authenticate(basic("alice", &secret), None).await.unwrap();
    let issued = f.auth.issue_token(&p, &Scope::parse_all("repository:alice/app:pull")).await.unwrap();
    assert_eq!(f.auth.keys().verify(&issued.token).unwrap().pat, Some(id));

    // Wrong secrets of the right shape: out. One differs in its last
    // character (same prefix, different lookup key); none is cached as valid.
    let mut wrong = secret.clone();
    let last = if wrong.ends_with('A') { "B" } else { "A" };
    wrong.replace_range(wrong.len() - 1.., last);
    for bad in [wrong.as_str(), &secrets::new_token_secret().unwrap()] {
        let r = f.auth.authenticate(Credentials::Bearer(bad), None).await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
}

#[tokio::test]
async fn revocation_expiry_and_disabling_beat_the_verified_cache() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "alice", None, false).await.unwrap();
    let req = TokenRequest { scopes: vec!["read:package".into()], ..Default::default() };
    let (id, secret) = admin::create_token(s, "alice", &req).await.unwrap();

    // A successful login fills the cache: the next one needs no argon2.
    f.auth.authenticate(Credentials::Bearer(&secret), None).await.unwrap();
    let row = stored_token(&f, &secret).await;
    assert!(f.auth.verified.recently_verified(secrets::Subject::Token(id), &row.secret_hash, &secret));
    f.auth.authenticate(basic("alice", &secret), None).await.unwrap();

    // Revoked: refused at once, although the cache still vouches for the secret.
    admin::revoke_token(s, id).await.unwrap();
    assert!(f.auth.verified.recently_verified(secrets::Subject::Token(id), &row.secret_hash, &secret));
    let r = f.auth.authenticate(basic("alice", &secret), None).await;
    assert!(matches!(r, Err(AuthError::InvalidCredentials)), "revoked: {r:?}");
    assert!(f.auth.authenticate(Credentials::Bearer(&secret), None).await.is_err(), "revoked");

    // Expired: the same, while cached. (Times are whole seconds: a token
    // made late in a second has just over one left, argon2 included.)
    let short = TokenRequest { expires_in: Some(Duration::from_secs(2)), ..req.clone() };
    let (_, expiring) = admin::create_token(s, "alice", &short).await.unwrap();
    f.auth.authenticate(Credentials::Bearer(&expiring), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(f.auth.authenticate(Credentials::Bearer(&expiring), None).await.is_err(), "expired");

    // A disabled user's cached token: refused; enabled again: accepted.
    let (_, other) = admin::create_token(s, "alice", &req).await.unwrap();
    f.auth.authenticate(Credentials::Bearer(&other), None).await.unwrap();
    admin::set_disabled(s, "alice", true).await.unwrap();
    assert!(f.auth.authenticate(Credentials::Bearer(&other), None).await.is_err(), "disabled");
    admin::set_disabled(s, "alice", false).await.unwrap();
    assert!(f.auth.authenticate(Credentials::Bearer(&other), None).await.is_ok());
}

#[tokio::test]
async fn credentials_read_with_the_repository_decide_as_a_separate_read_would() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    for (u, admin) in [("root", true), ("reader", false), ("writer", false), ("outsider", false)] {
        admin::create_user(s, u, Some("pw"), admin).await.unwrap();
    }
    admin::create_org(s, "acme").await.unwrap();
    admin::set_member(s, "acme", "reader", "read").await.unwrap();
    admin::set_member(s, "acme", "writer", "write").await.unwrap();
    s.set_repository_public(&repo("acme/public"), Some(true), 0).await.unwrap();
    s.set_repository_public(&repo("acme/app"), None, 0).await.unwrap();
    let write = TokenRequest { scopes: vec!["write:package".into()], ..Default::default() };
    let narrow_req = TokenRequest {
        scopes: vec!["read:package".into()],
        repositories: vec!["acme/app".into()],
        ..Default::default()
    };
    let repos = ["acme/app", "acme/public", "acme/missing", "writer/x", "ghost/app"].map(repo);
    for user in ["root", "reader", "writer", "outsider"] {
        let (_, token) = admin::create_token(s, user, &write).await.unwrap();
        let (_, narrow) = admin::create_token(s, user, &narrow_req).await.unwrap();
        let creds = [basic(user, "pw"), basic(user, &token), Credentials::Bearer(&token), basic(&narrow, "")];
        for creds in creds {
            let plain = f.auth.authenticate(creds, None).await.unwrap();
            for target in &repos {
                let with = f.auth.authenticate_for(creds, None, Some(target)).await.unwrap();
                assert!(matches!(&with, Principal::User { access: Some(_), .. }), "{user}: facts read with {creds:?}");
                let expected = f.auth.rights(&plain, target).await.unwrap();
                assert_eq!(f.auth.rights(&with, target).await.unwrap(), expected, "{user} on {target} by {creds:?}");
                // Facts of one repository never decide another's.
                for other in &repos {
                    let fresh = f.auth.rights(&plain, other).await.unwrap();
                    assert_eq!(f.auth.rights(&with, other).await.unwrap(), fresh, "{user}: {target}, then {other}");
                }
            }
        }
    }

    // The facts are those of the moment the credentials were checked, like
    // the user record: the request is decided without another query; the
    // next request sees the change.
    let (id, token) = admin::create_token(s, "reader", &write).await.unwrap();
    let app = repo("acme/app");
    let before = f.auth.authenticate_for(basic("reader", &token), None, Some(&app)).await.unwrap();
    admin::set_member(s, "acme", "reader", "write").await.unwrap();
    assert_eq!(f.auth.rights(&before, &app).await.unwrap(), Actions::PULL, "decided on the facts read with it");
    let after = f.auth.authenticate_for(basic("reader", &token), None, Some(&app)).await.unwrap();
    assert_eq!(f.auth.rights(&after, &app).await.unwrap(), Actions::ALL);

    // Revoked tokens and disabled users are refused at once, as without a repository.
    admin::revoke_token(s, id).await.unwrap();
    let r = f.auth.authenticate_for(basic("reader", &token), None, Some(&app)).await;
    assert!(matches!(r, Err(AuthError::InvalidCredentials)), "revoked: {r:?}");
    let (_, other) = admin::create_token(s, "writer", &write).await.unwrap();
    f.auth.authenticate_for(Credentials::Bearer(&other), None, Some(&app)).await.unwrap();
    f.auth.authenticate_for(basic("writer", "pw"), None, Some(&app)).await.unwrap();
    admin::set_disabled(s, "writer", true).await.unwrap();
    assert!(f.auth.authenticate_for(Credentials::Bearer(&other), None, Some(&app)).await.is_err(), "disabled");
    assert!(f.auth.authenticate_for(basic("writer", "pw"), None, Some(&app)).await.is_err(), "disabled");
}

#[tokio::test]
async fn colliding_lookup_keys_are_each_verified() {
    use berth_meta::auth::NewToken;
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "mallory", None, true).await.unwrap();
    admin::create_user(s, "alice", None, false).await.unwrap();
    let mallory = s.get_user("mallory").await.unwrap().unwrap();
    let secret = secrets::new_token_secret().unwrap();
    // Rows carrying the key of alice's secret, created before hers: a
    // usable one with another secret's verifier (a collision), and a revoked
    // one with the right verifier.
    let row = |name: &str, hash: String| NewToken {
        user_id: mallory.id,
        name: name.into(),
        lookup_key: secrets::token_lookup_key(&secret),
        secret_hash: hash,
        scopes: vec!["write:package".into()],
        repositories: Vec::new(),
        expires_at: None,
        created_at: 0,
    };
    s.create_token(&row("collision", secrets::hash_token("bpat_other").unwrap())).await.unwrap();
    let revoked = s.create_token(&row("revoked", secrets::hash_token(&secret).unwrap())).await.unwrap();
    s.revoke_token(revoked, 1).await.unwrap();
    assert!(f.auth.authenticate(Credentials::Bearer(&secret), None).await.is_err(), "no usable match yet");

    let alice = s.get_user("alice").await.unwrap().unwrap();
    let mine = NewToken {
        user_id: alice.id,
        name: "mine".into(),
        secret_hash: secrets::hash_token(&secret).unwrap(),
        scopes: vec!["read:package".into()],
        ..row("", String::new())
    };
    let id = s.create_token(&mine).await.unwrap();
    let Principal::User { user, token, .. } = f.auth.authenticate(Credentials::Bearer(&secret), None).await.unwrap()
    else {
        panic!("a user")
    };
    assert_eq!((user.name.as_str(), token.map(|t| t.id)), ("alice", Some(id)));
}

#[tokio::test]
async fn rows_without_an_argon2_verifier_match_nothing() {
    // What migration 0006 leaves of older tokens: an empty key and verifier.
    use berth_meta::auth::NewToken;
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "alice", None, false).await.unwrap();
    let alice = s.get_user("alice").await.unwrap().unwrap();
    let secret = secrets::new_token_secret().unwrap();
    let old = NewToken {
        user_id: alice.id,
        name: "old".into(),
        lookup_key: secrets::token_lookup_key(&secret),
        secret_hash: String::new(),
        scopes: vec!["read:package".into()],
        repositories: Vec::new(),
        expires_at: None,
        created_at: 0,
    };
    s.create_token(&old).await.unwrap();
    assert!(f.auth.authenticate(Credentials::Bearer(&secret), None).await.is_err());
}

/// A burst of identical token logins (a client opening many connections at
/// once, right after its cache entry expired) shares one argon2 check
/// instead of overflowing the bounded queue into 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_identical_token_logins_shares_one_check() {
    let f = fixture().await;
    let s: &dyn AuthStore = f.store.as_ref();
    admin::create_user(s, "ci", None, false).await.unwrap();
    let req = TokenRequest { scopes: vec!["read:package".into()], name: "burst".into(), ..Default::default() };
    let (_, secret) = admin::create_token(s, "ci", &req).await.unwrap();
    let auth = Arc::new(f.auth);
    let logins = (0..64).map(|_| {
        let (auth, secret) = (auth.clone(), secret.clone());
        tokio::spawn(async move { auth.authenticate(basic("ci", &secret), None).await.map(|_| ()) })
    });
    for login in logins.collect::<Vec<_>>() {
        login.await.unwrap().expect("every login of the burst succeeds");
    }
}

/// The same for passwords: identical concurrent logins wait for the first
/// one's verdict instead of each taking a slot of the per-user gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_identical_password_logins_shares_one_check() {
    let f = fixture().await;
    admin::create_user(f.store.as_ref(), "ci", Some("pw-ci-burst"), false).await.unwrap();
    let auth = Arc::new(f.auth);
    let logins = (0..64).map(|_| {
        let auth = auth.clone();
        tokio::spawn(async move { auth.authenticate(basic("ci", "pw-ci-burst"), None).await.map(|_| ()) })
    });
    for login in logins.collect::<Vec<_>>() {
        login.await.unwrap().expect("every login of the burst succeeds");
    }
    // A burst of one wrong password still counts as attempts (the limit is 3).
    let wrong = (0..8).map(|_| {
        let auth = auth.clone();
        tokio::spawn(async move { auth.authenticate(basic("ci", "wrong"), None).await.map(|_| ()) })
    });
    let outcomes: Vec<_> = futures_join(wrong.collect()).await;
    assert!(outcomes.iter().all(Result::is_err));
    assert!(matches!(
        auth.authenticate(basic("ci", "pw-ci-burst-other"), None).await,
        Err(AuthError::TooManyAttempts(_))
    ));
}

/// Steady traffic across the expiry of the cached check: every request
/// renewing its login entry kept it alive past the check, and then every
/// concurrent request was a "repeat" needing argon2 at once, overflowing the
/// per-user gate into 429s (seen in the benchmark with 32 connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_password_logins_survive_the_cached_check_expiring() {
    let mut f = fixture().await;
    admin::create_user(f.store.as_ref(), "ci", Some("pw-ci-steady"), false).await.unwrap();
    f.auth.verified = Arc::new(crate::secrets::VerifiedCache::new(Duration::from_millis(1500)));
    let auth = Arc::new(f.auth);
    let until = std::time::Instant::now() + Duration::from_millis(4000);
    while std::time::Instant::now() < until {
        let wave = (0..48).map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authenticate(basic("ci", "pw-ci-steady"), None).await.map(|_| ()) })
        });
        for outcome in futures_join(wave.collect()).await {
            outcome.expect("no login of steady traffic is refused");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<Result<()>>>) -> Vec<Result<()>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn upstream_namespaces_follow_their_access_level() {
    let ns = |name: &str, access, mirror_root| UpstreamNamespace { name: name.into(), access, mirror_root };
    let f = fixture_with(UpstreamNamespaces::new(vec![
        ns("hub", UpstreamAccess::Public, false),
        ns("ghcr", UpstreamAccess::Users, false),
        ns("corp", UpstreamAccess::Members, true),
    ]))
    .await;
    let auth = &f.auth;
    let s: &dyn AuthStore = f.store.as_ref();
    for (u, admin) in [("root", true), ("alice", false), ("member", false)] {
        admin::create_user(s, u, Some("pw"), admin).await.unwrap();
    }
    admin::create_org(s, "corp").await.unwrap();
    admin::set_member(s, "corp", "member", "read").await.unwrap();
    let login = |u: &'static str| auth.authenticate(basic(u, "pw"), None);
    let (root, alice, member) =
        (login("root").await.unwrap(), login("alice").await.unwrap(), login("member").await.unwrap());
    let anon = Principal::Anonymous;
    let delete = Actions::of(&[Action::Pull, Action::Delete]);

    // Public: anyone pulls, even what is not cached yet; nobody pushes; admins evict.
    let hub = repo("hub/library/alpine");
    assert_eq!(auth.rights(&anon, &hub).await.unwrap(), Actions::PULL);
    assert_eq!(auth.rights(&alice, &hub).await.unwrap(), Actions::PULL);
    assert_eq!(auth.rights(&root, &hub).await.unwrap(), delete);
    // Users: signed-in callers only.
    let ghcr = repo("ghcr/acme/tool");
    assert_eq!(auth.rights(&anon, &ghcr).await.unwrap(), Actions::NONE);
    assert_eq!(auth.rights(&alice, &ghcr).await.unwrap(), Actions::PULL);
    // Members of the organization named like the upstream, by prefix and at the root.
    for r in [repo("corp/team/app"), repo("library/alpine")] {
        assert_eq!(auth.rights(&anon, &r).await.unwrap(), Actions::NONE, "{r}");
        assert_eq!(auth.rights(&alice, &r).await.unwrap(), Actions::NONE, "{r}");
        assert_eq!(auth.rights(&member, &r).await.unwrap(), Actions::PULL, "{r}");
        assert_eq!(auth.rights(&root, &r).await.unwrap(), delete, "{r}");
    }
    // Local owners win at the root.
    assert_eq!(auth.rights(&alice, &repo("alice/app")).await.unwrap(), Actions::ALL);
    assert_eq!(auth.rights(&member, &repo("alice/app")).await.unwrap(), Actions::NONE);

    // A token narrows as anywhere: one limited to other repositories reads nothing here.
    let req = TokenRequest {
        scopes: vec!["read:package".into()],
        repositories: vec!["alice/*".into()],
        ..Default::default()
    };
    let (_, secret) = admin::create_token(s, "member", &req).await.unwrap();
    let narrow = auth.authenticate(basic("member", &secret), None).await.unwrap();
    assert_eq!(auth.rights(&narrow, &repo("corp/team/app")).await.unwrap(), Actions::NONE);
    // The token endpoint grants what the level allows, and never push.
    let scope = |name: &str| Scope::Repository { name: repo(name), actions: Actions::ALL };
    let issued = auth.issue_token(&member, &[scope("corp/team/app")]).await.unwrap();
    let claims = auth.keys().verify(&issued.token).unwrap();
    assert_eq!(claims.access[0].actions, vec!["pull".to_owned()]);
}
