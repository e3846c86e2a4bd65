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
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.unwrap());
    store.migrate().await.unwrap();
    let keys = JwtKeys::load(&dir.path().join("jwt.pem"), &[], "berth", "berth", Duration::from_secs(300)).unwrap();
    let settings = AuthSettings { allow_password: true, failed_login_limit: 3, lockout_max: Duration::from_secs(60) };
    let auth = AuthService::new(store.clone(), keys, settings).unwrap();
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
