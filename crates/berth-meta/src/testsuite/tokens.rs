//! Suite cases for [`AuthStore`]'s personal access tokens: creating,
//! finding by lookup key (with the access facts of the request's
//! repository, in the same query), revoking, recording use.
//!
//! Each case takes a fresh, empty, migrated store; `meta_store_suite!` runs
//! them from its `tokens` list (a unit test checks that list is complete).

use std::sync::Arc;

use super::auth::{facts, new_org, new_user, set_public};
use super::{T0, repo, strings};
use crate::AuthStore;
use crate::auth::{AccessFacts, NewToken, OrgRole, TokenCandidate, TokenRecord, UserRecord};

// --- helpers -------------------------------------------------------------------

/// A stand-in for a token's argon2id verifier (the store keeps it verbatim).
fn phc(name: &str) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{name}$hash-of-{name}")
}

/// A read-only token for every repository, found by `lookup_key`.
fn token(user_id: i64, name: &str, lookup_key: &[u8]) -> NewToken {
    NewToken {
        user_id,
        name: name.to_owned(),
        lookup_key: lookup_key.to_vec(),
        secret_hash: phc(name),
        scopes: strings(&["read:package"]),
        repositories: Vec::new(),
        expires_at: None,
        created_at: T0,
    }
}

async fn get_token(store: &dyn AuthStore, id: i64) -> TokenRecord {
    store.get_token(id).await.expect("get_token").expect("token exists")
}

async fn by_key(store: &dyn AuthStore, key: &[u8]) -> Vec<TokenCandidate> {
    store.tokens_by_lookup_key(key, None).await.expect("tokens_by_lookup_key")
}

/// The tokens with this lookup key, each with its user's facts on `repository`.
async fn by_key_for(store: &dyn AuthStore, key: &[u8], repository: &str) -> Vec<TokenCandidate> {
    store.tokens_by_lookup_key(key, Some(&repo(repository))).await.expect("tokens_by_lookup_key with a repository")
}

/// The one token with this lookup key, with its user's facts on `repository`.
async fn one_by_key_for(store: &dyn AuthStore, key: &[u8], repository: &str) -> TokenCandidate {
    let mut found = by_key_for(store, key, repository).await;
    assert_eq!(found.len(), 1, "tokens with key {key:?}: {found:?}");
    found.remove(0)
}

/// The one token with this lookup key.
async fn one_by_key(store: &dyn AuthStore, key: &[u8]) -> TokenCandidate {
    let mut found = by_key(store, key).await;
    assert_eq!(found.len(), 1, "tokens with key {key:?}: {found:?}");
    found.remove(0)
}

// --- cases -------------------------------------------------------------------

pub async fn tokens_create_lookup_and_list(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let ci = NewToken {
        user_id: alice.id,
        name: "ci".into(),
        lookup_key: vec![1, 2, 3, 0, 255, 6, 7, 8],
        secret_hash: phc("ci"),
        scopes: strings(&["read:package", "write:package"]),
        repositories: strings(&["alice/ci-*", "alice/app"]),
        expires_at: Some(T0 + 86_400_000),
        created_at: T0,
    };
    let ci_id = store.create_token(&ci).await.expect("create ci token");
    let laptop_id = store
        .create_token(&NewToken { created_at: T0 + 1, ..token(alice.id, "laptop", b"laptop") })
        .await
        .expect("laptop");
    let bob_id = store.create_token(&token(bob.id, "bob", b"bob")).await.expect("bob's token");

    let ci_record = TokenRecord {
        id: ci_id,
        user_id: alice.id,
        name: "ci".into(),
        scopes: strings(&["read:package", "write:package"]),
        repositories: strings(&["alice/ci-*", "alice/app"]),
        expires_at: Some(T0 + 86_400_000),
        last_used_at: None,
        revoked_at: None,
        created_at: T0,
    };
    assert_eq!(get_token(&*store, ci_id).await, ci_record);
    let laptop = get_token(&*store, laptop_id).await;
    assert_eq!((laptop.scopes, laptop.repositories), (strings(&["read:package"]), Vec::new()), "empty means all");
    assert_eq!((laptop.expires_at, laptop.created_at), (None, T0 + 1));
    assert_eq!(store.get_token(i64::MAX).await.expect("get_token"), None);

    // By lookup key, with the token's user and its verifier, kept verbatim.
    let found = by_key(&*store, &[1, 2, 3, 0, 255, 6, 7, 8]).await;
    let expected =
        TokenCandidate { token: ci_record.clone(), user: alice.clone(), secret_hash: phc("ci"), access: None };
    assert_eq!(found, vec![expected]);
    let found = one_by_key(&*store, b"bob").await;
    assert_eq!((found.token.id, found.user, found.secret_hash), (bob_id, bob, phc("bob")));
    assert_eq!(by_key(&*store, b"unknown").await, Vec::new());
    assert_eq!(by_key(&*store, &[1, 2, 3]).await, Vec::new(), "a prefix is not the key");
    assert_eq!(by_key(&*store, &[]).await, Vec::new());

    // The user comes as it is now.
    assert!(store.set_user_disabled("alice", true).await.expect("disable alice"));
    let found = one_by_key(&*store, b"laptop").await;
    assert_eq!((found.token.id, found.user), (laptop_id, UserRecord { disabled: true, ..alice }));

    let ids = |tokens: Vec<TokenRecord>| tokens.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let alices = store.list_tokens("alice").await.expect("list");
    assert_eq!(alices.first(), Some(&ci_record));
    assert_eq!(ids(alices), vec![ci_id, laptop_id], "oldest first");
    assert_eq!(ids(store.list_tokens("bob").await.expect("list")), vec![bob_id]);
    assert_eq!(store.list_tokens("nobody").await.expect("list"), Vec::new());
}

pub async fn revoke_token_only_once(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let id = store.create_token(&token(alice.id, "ci", b"first")).await.expect("create");
    let other = store.create_token(&token(alice.id, "other", b"second")).await.expect("create");

    assert!(store.revoke_token(id, T0 + 10).await.expect("revoke"));
    assert_eq!(get_token(&*store, id).await.revoked_at, Some(T0 + 10));
    assert!(!store.revoke_token(id, T0 + 20).await.expect("revoke again"));
    assert_eq!(get_token(&*store, id).await.revoked_at, Some(T0 + 10), "the first revocation stays");
    assert!(!store.revoke_token(i64::MAX, T0).await.expect("unknown token"));
    assert_eq!(get_token(&*store, other).await.revoked_at, None);

    // Revoked tokens are still found and listed; the caller refuses them.
    let found = one_by_key(&*store, b"first").await;
    assert_eq!((found.token.id, found.token.revoked_at), (id, Some(T0 + 10)));
    assert_eq!(store.list_tokens("alice").await.expect("list").len(), 2);

    // Of concurrent revocations, exactly one reports it.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.revoke_token(other, T0 + 100 + i).await })
        })
        .collect();
    let mut revoked = 0;
    for task in tasks {
        revoked += usize::from(task.await.expect("revoke task panicked").expect("revoke"));
    }
    assert_eq!(revoked, 1);
    assert!(get_token(&*store, other).await.revoked_at.is_some());
}

pub async fn touch_token_records_last_use(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let id = store.create_token(&token(alice.id, "ci", b"first")).await.expect("create");
    let other = store.create_token(&token(alice.id, "other", b"second")).await.expect("create");
    assert_eq!(get_token(&*store, id).await.last_used_at, None);

    store.touch_token(id, T0 + 100).await.expect("touch");
    assert_eq!(get_token(&*store, id).await.last_used_at, Some(T0 + 100));
    store.touch_token(id, T0 + 200).await.expect("touch again");
    let touched = get_token(&*store, id).await;
    assert_eq!((touched.last_used_at, touched.revoked_at), (Some(T0 + 200), None));
    assert_eq!(get_token(&*store, other).await.last_used_at, None, "other tokens untouched");

    store.touch_token(i64::MAX, T0).await.expect("touching an unknown token is not an error");
}

pub async fn token_lookup_keys_may_collide(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let first = store.create_token(&token(alice.id, "first", b"same")).await.expect("create");
    // Another token (another secret and verifier) whose key is the same:
    // both are stored, and the lookup returns both, oldest first, each with
    // its own verifier and user, for the caller to verify each.
    let second = store.create_token(&token(bob.id, "second", b"same")).await.expect("a colliding key is no conflict");
    let third = store.create_token(&token(alice.id, "third", b"same")).await.expect("and again");
    let found = by_key(&*store, b"same").await;
    let seen: Vec<_> = found.iter().map(|c| (c.token.id, c.user.id, c.secret_hash.clone())).collect();
    assert_eq!(
        seen,
        vec![(first, alice.id, phc("first")), (second, bob.id, phc("second")), (third, alice.id, phc("third"))]
    );
    assert_eq!(store.list_tokens("bob").await.expect("list").len(), 1);

    // Revoking one leaves the others as they were.
    assert!(store.revoke_token(second, T0 + 5).await.expect("revoke"));
    let revoked: Vec<_> = by_key(&*store, b"same").await.into_iter().map(|c| c.token.revoked_at).collect();
    assert_eq!(revoked, vec![None, Some(T0 + 5), None]);

    // Names need not be unique either.
    store.create_token(&token(alice.id, "first", b"different")).await.expect("same name, other key");
    assert_eq!(store.list_tokens("alice").await.expect("list").len(), 3);
    assert_eq!(one_by_key(&*store, b"different").await.token.name, "first");
}

pub async fn token_lookup_reads_access_facts_of_the_repository(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    new_org(&*store, "acme").await;
    store.set_org_member("acme", "bob", OrgRole::Read).await.expect("add bob");
    set_public(&*store, "alice/app", Some(true)).await;
    set_public(&*store, "acme/team/app", None).await;
    store.create_token(&token(alice.id, "alice", b"alice")).await.expect("alice's token");
    store.create_token(&token(bob.id, "bob", b"bob")).await.expect("bob's token");

    // The token, its user and verifier as without a repository, plus exactly
    // what `access_facts` says of the token's user and the repository:
    // own, foreign, organization (member or not), deep, missing repository,
    // missing owner, one-component name.
    let cases = ["alice/app", "alice/nothing", "acme/team/app", "acme/other", "bob/app", "ghost/app", "alice"];
    for (key, user) in [(&b"alice"[..], &alice), (&b"bob"[..], &bob)] {
        let plain = one_by_key(&*store, key).await;
        assert_eq!(plain.access, None, "no repository, no facts");
        for repository in cases {
            let found = one_by_key_for(&*store, key, repository).await;
            let expected = facts(&*store, repository, Some(user)).await;
            assert_eq!(found.access.as_ref(), Some(&expected), "{} on {repository}", user.name);
            assert_eq!(TokenCandidate { access: None, ..found }, plain, "{} on {repository}", user.name);
        }
    }
    let bobs = one_by_key_for(&*store, b"bob", "acme/team/app").await.access.expect("facts");
    assert_eq!((bobs.role, bobs.repository_exists, bobs.repository_public), (Some(OrgRole::Read), true, None));
    let alices = one_by_key_for(&*store, b"alice", "alice/app").await.access.expect("facts");
    assert_eq!((alices.owner.map(|o| o.id), alices.repository_public), (Some(alice.id), Some(true)));
    assert_eq!(one_by_key_for(&*store, b"alice", "ghost/app").await.access, Some(AccessFacts::default()));
    assert_eq!(by_key_for(&*store, b"unknown", "alice/app").await, Vec::new());
}

pub async fn token_lookup_with_facts_sees_every_change_at_once(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    new_org(&*store, "acme").await;
    let id = store.create_token(&token(alice.id, "ci", b"ci")).await.expect("create");
    let before = one_by_key_for(&*store, b"ci", "acme/app").await;
    assert_eq!(before.access.as_ref().map(|f| f.role), Some(None), "not a member yet");

    // Nothing is remembered between lookups: membership, visibility,
    // revocation and a disabled user all show in the next one.
    store.set_org_member("acme", "alice", OrgRole::Write).await.expect("add alice");
    set_public(&*store, "acme/app", Some(true)).await;
    assert!(store.revoke_token(id, T0 + 1).await.expect("revoke"));
    assert!(store.set_user_disabled("alice", true).await.expect("disable"));
    let after = one_by_key_for(&*store, b"ci", "acme/app").await;
    assert_eq!(after.token.revoked_at, Some(T0 + 1));
    assert_eq!(after.user, UserRecord { disabled: true, ..alice.clone() });
    let facts_after = after.access.expect("facts");
    assert_eq!(facts_after.role, Some(OrgRole::Write));
    assert_eq!((facts_after.repository_exists, facts_after.repository_public), (true, Some(true)));

    assert!(store.remove_org_member("acme", "alice").await.expect("remove alice"));
    assert_eq!(one_by_key_for(&*store, b"ci", "acme/app").await.access.expect("facts").role, None);
}

pub async fn colliding_tokens_each_bring_their_own_users_facts(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    new_org(&*store, "acme").await;
    store.set_org_member("acme", "bob", OrgRole::Admin).await.expect("add bob");
    let first = store.create_token(&token(alice.id, "first", b"same")).await.expect("create");
    let second = store.create_token(&token(bob.id, "second", b"same")).await.expect("a colliding key");

    // One row per token, oldest first, each with its own user's role.
    let found = by_key_for(&*store, b"same", "acme/app").await;
    let seen: Vec<_> = found.iter().map(|c| (c.token.id, c.user.id, c.access.as_ref().and_then(|f| f.role))).collect();
    assert_eq!(seen, vec![(first, alice.id, None), (second, bob.id, Some(OrgRole::Admin))]);
    assert_eq!(found[0].access, Some(facts(&*store, "acme/app", Some(&alice)).await));
    assert_eq!(found[1].access, Some(facts(&*store, "acme/app", Some(&bob)).await));
}
