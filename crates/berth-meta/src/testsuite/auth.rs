//! Suite cases for [`AuthStore`]: users and organizations, memberships,
//! visibility and access facts (personal access tokens: [`super::tokens`]).
//!
//! Each case takes a fresh, empty, migrated store; `meta_store_suite!` runs
//! them from its `auth` list (a unit test checks that list is complete).

use std::fmt::Debug;
use std::sync::Arc;

use super::{T0, repo, strings};
use crate::auth::{AccessFacts, Membership, OrgRole, OwnerKind, OwnerRecord, UserRecord};
use crate::{AuthStore, MetaError, Result};

// --- helpers -------------------------------------------------------------------

fn expect_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(MetaError::Conflict(_)) => {}
        other => panic!("expected a Conflict error, got {other:?}"),
    }
}

/// Returns the error's text, which names what is missing.
fn expect_not_found<T: Debug>(result: Result<T>) -> String {
    match result {
        Err(MetaError::NotFound(what)) => what,
        other => panic!("expected a NotFound error, got {other:?}"),
    }
}

async fn user(store: &dyn AuthStore, name: &str) -> UserRecord {
    store.get_user(name).await.expect("get_user").expect("user exists")
}

/// A regular user with a password, created at `T0`.
pub(super) async fn new_user(store: &dyn AuthStore, name: &str) -> UserRecord {
    store.create_user(name, Some(&format!("phc of {name}")), false, T0).await.expect("create_user");
    user(store, name).await
}

async fn new_admin(store: &dyn AuthStore, name: &str) -> UserRecord {
    store.create_user(name, None, true, T0).await.expect("create_user");
    user(store, name).await
}

pub(super) async fn new_org(store: &dyn AuthStore, name: &str) -> i64 {
    store.create_org(name, T0).await.expect("create_org")
}

pub(super) async fn set_public(store: &dyn AuthStore, repository: &str, public: Option<bool>) {
    store.set_repository_public(&repo(repository), public, T0).await.expect("set_repository_public");
}

async fn readable(store: &dyn AuthStore, user: Option<&UserRecord>) -> Vec<String> {
    store.readable_repositories(user, None, 1000).await.expect("readable_repositories")
}

pub(super) async fn facts(store: &dyn AuthStore, repository: &str, user: Option<&UserRecord>) -> AccessFacts {
    store.access_facts(&repo(repository), user.map(|u| u.id)).await.expect("access_facts")
}

async fn owner(store: &dyn AuthStore, name: &str) -> OwnerRecord {
    store.get_owner(name).await.expect("get_owner").expect("owner exists")
}

// --- users and organizations -----------------------------------------------------

pub async fn users_and_orgs_share_one_namespace(store: Arc<dyn AuthStore>) {
    let alice = store.create_user("alice", Some("phc"), false, T0).await.expect("create user");
    let acme = store.create_org("acme", T0 + 1).await.expect("create org");
    assert_ne!(alice, acme, "users and organizations share one id space");

    expect_conflict(store.create_user("alice", None, true, T0).await);
    expect_conflict(store.create_user("acme", None, false, T0).await);
    expect_conflict(store.create_org("acme", T0).await);
    expect_conflict(store.create_org("alice", T0).await);

    // Refused creations change nothing.
    let stored = user(&*store, "alice").await;
    assert_eq!((stored.id, stored.password_hash.as_deref(), stored.is_admin), (alice, Some("phc"), false));
    assert_eq!(store.list_users().await.expect("list_users"), vec![stored]);
    let org = owner(&*store, "acme").await;
    assert_eq!((org.id, org.kind, org.created_at), (acme, OwnerKind::Org, T0 + 1));

    // An organization is not a user.
    assert_eq!(store.get_user("acme").await.expect("get_user"), None);
    assert_eq!(store.get_user_by_id(acme).await.expect("get_user_by_id"), None);
}

pub async fn concurrent_creates_of_one_name_one_wins(store: Arc<dyn AuthStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let kind = if i % 2 == 0 { OwnerKind::User } else { OwnerKind::Org };
                let result = match kind {
                    OwnerKind::User => store.create_user("dup", None, false, T0).await,
                    OwnerKind::Org => store.create_org("dup", T0).await,
                };
                (kind, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("create task panicked") {
            (kind, Ok(id)) => winners.push((kind, id)),
            (_, result) => expect_conflict(result),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creation wins: {winners:?}");
    let stored = owner(&*store, "dup").await;
    assert_eq!((stored.kind, stored.id), winners[0]);
    let users = store.list_users().await.expect("list_users");
    assert_eq!(users.len(), usize::from(stored.kind == OwnerKind::User));
}

pub async fn get_user_by_name_and_id(store: Arc<dyn AuthStore>) {
    let alice_id = store.create_user("alice", Some("$argon2id$v=19$x"), false, T0).await.expect("create alice");
    let root_id = store.create_user("root", None, true, T0 + 5).await.expect("create root");

    let alice = UserRecord {
        id: alice_id,
        name: "alice".into(),
        password_hash: Some("$argon2id$v=19$x".into()),
        is_admin: false,
        disabled: false,
        created_at: T0,
    };
    let root = UserRecord {
        id: root_id,
        name: "root".into(),
        password_hash: None,
        is_admin: true,
        disabled: false,
        created_at: T0 + 5,
    };
    assert_eq!(store.get_user("alice").await.expect("get_user"), Some(alice.clone()));
    assert_eq!(store.get_user_by_id(alice_id).await.expect("get_user_by_id"), Some(alice));
    assert_eq!(store.get_user("root").await.expect("get_user"), Some(root.clone()));
    assert_eq!(store.get_user_by_id(root_id).await.expect("get_user_by_id"), Some(root));

    assert_eq!(store.get_user("nobody").await.expect("get_user"), None);
    assert_eq!(store.get_user("Alice").await.expect("get_user"), None, "names are case-sensitive");
    assert_eq!(store.get_user_by_id(i64::MAX).await.expect("get_user_by_id"), None);
    assert_eq!(store.get_user_by_id(-1).await.expect("get_user_by_id"), None);
}

pub async fn list_users_in_byte_order(store: Arc<dyn AuthStore>) {
    assert_eq!(store.list_users().await.expect("list_users"), Vec::new());
    for name in ["bob", "ab", "a-c", "alice", "a0"] {
        new_user(&*store, name).await;
    }
    new_org(&*store, "aaa").await;

    let users = store.list_users().await.expect("list_users");
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    // Byte order ('-' < '0' < letters), organizations left out.
    assert_eq!(names, ["a-c", "a0", "ab", "alice", "bob"]);
    for listed in &users {
        assert_eq!(listed, &user(&*store, &listed.name).await);
    }
}

pub async fn disable_and_password_changes(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    new_org(&*store, "acme").await;

    assert!(store.set_user_disabled("alice", true).await.expect("disable"));
    assert!(user(&*store, "alice").await.disabled);
    assert!(store.get_user_by_id(alice.id).await.expect("get_user_by_id").expect("exists").disabled);
    assert!(store.set_user_disabled("alice", true).await.expect("disable again"), "the user exists");
    assert!(store.set_user_disabled("alice", false).await.expect("enable"));
    assert!(!user(&*store, "alice").await.disabled);
    assert!(!store.set_user_disabled("nobody", true).await.expect("unknown user"));
    assert!(!store.set_user_disabled("acme", true).await.expect("an organization"));

    assert!(store.set_user_password("alice", Some("new phc")).await.expect("set password"));
    assert_eq!(user(&*store, "alice").await.password_hash.as_deref(), Some("new phc"));
    assert!(store.set_user_password("alice", None).await.expect("clear password"));
    assert_eq!(user(&*store, "alice").await.password_hash, None);
    assert!(!store.set_user_password("nobody", Some("x")).await.expect("unknown user"));
    assert!(!store.set_user_password("acme", Some("x")).await.expect("an organization"));

    // Nothing else changed.
    let stored = user(&*store, "alice").await;
    assert_eq!(stored, UserRecord { password_hash: None, ..alice });
}

pub async fn org_membership_add_change_remove_list(store: Arc<dyn AuthStore>) {
    new_org(&*store, "acme").await;
    new_org(&*store, "other").await;
    for name in ["bob", "alice", "carol"] {
        new_user(&*store, name).await;
    }
    let member = |user: &str, role| Membership { user: user.to_owned(), role };
    assert_eq!(store.list_org_members("acme").await.expect("list"), Vec::new());

    store.set_org_member("acme", "bob", OrgRole::Write).await.expect("add bob");
    store.set_org_member("acme", "alice", OrgRole::Read).await.expect("add alice");
    store.set_org_member("other", "carol", OrgRole::Admin).await.expect("add carol elsewhere");
    assert_eq!(
        store.list_org_members("acme").await.expect("list"),
        vec![member("alice", OrgRole::Read), member("bob", OrgRole::Write)],
        "in user name order"
    );

    // Setting again changes the role; the same role again is fine.
    store.set_org_member("acme", "alice", OrgRole::Admin).await.expect("promote alice");
    store.set_org_member("acme", "alice", OrgRole::Admin).await.expect("same role again");
    assert_eq!(
        store.list_org_members("acme").await.expect("list"),
        vec![member("alice", OrgRole::Admin), member("bob", OrgRole::Write)]
    );

    assert!(store.remove_org_member("acme", "bob").await.expect("remove bob"));
    assert!(!store.remove_org_member("acme", "bob").await.expect("remove bob again"));
    assert!(!store.remove_org_member("acme", "carol").await.expect("never a member"));
    assert_eq!(store.list_org_members("acme").await.expect("list"), vec![member("alice", OrgRole::Admin)]);
    assert_eq!(store.list_org_members("other").await.expect("list"), vec![member("carol", OrgRole::Admin)]);
    assert_eq!(store.list_org_members("nobody").await.expect("list"), Vec::new());
}

pub async fn org_membership_requires_org_and_user(store: Arc<dyn AuthStore>) {
    new_org(&*store, "acme").await;
    new_org(&*store, "other").await;
    new_user(&*store, "alice").await;

    let missing_org = expect_not_found(store.set_org_member("ghost", "alice", OrgRole::Read).await);
    assert!(missing_org.contains("ghost"), "{missing_org}");
    let missing_user = expect_not_found(store.set_org_member("acme", "ghost", OrgRole::Read).await);
    assert!(missing_user.contains("ghost"), "{missing_user}");
    let both = expect_not_found(store.set_org_member("ghost-org", "ghost-user", OrgRole::Read).await);
    assert!(both.contains("ghost-org"), "the organization is reported first: {both}");

    // Names of the wrong kind do not count.
    expect_not_found(store.set_org_member("alice", "alice", OrgRole::Read).await);
    expect_not_found(store.set_org_member("acme", "other", OrgRole::Read).await);

    expect_not_found(store.remove_org_member("ghost", "alice").await);
    expect_not_found(store.remove_org_member("acme", "ghost").await);
    assert_eq!(store.list_org_members("acme").await.expect("list"), Vec::new());
    assert_eq!(store.list_org_members("alice").await.expect("list"), Vec::new());
}

// --- visibility ------------------------------------------------------------------

pub async fn owners_and_public_flags(store: Arc<dyn AuthStore>) {
    let alice = store.create_user("alice", None, false, T0).await.expect("create user");
    let acme = store.create_org("acme", T0 + 1).await.expect("create org");

    let alice_owner =
        OwnerRecord { id: alice, name: "alice".into(), kind: OwnerKind::User, is_public: false, created_at: T0 };
    let acme_owner =
        OwnerRecord { id: acme, name: "acme".into(), kind: OwnerKind::Org, is_public: false, created_at: T0 + 1 };
    assert_eq!(owner(&*store, "alice").await, alice_owner);
    assert_eq!(owner(&*store, "acme").await, acme_owner);
    assert_eq!(store.get_owner("nobody").await.expect("get_owner"), None);

    assert!(store.set_owner_public("acme", true).await.expect("publish org"));
    assert_eq!(owner(&*store, "acme").await, OwnerRecord { is_public: true, ..acme_owner.clone() });
    assert!(store.set_owner_public("alice", true).await.expect("publish user"));
    assert!(store.set_owner_public("alice", false).await.expect("unpublish user"));
    assert_eq!(owner(&*store, "alice").await, alice_owner);
    assert!(!store.set_owner_public("nobody", true).await.expect("unknown owner"));
    assert!(owner(&*store, "acme").await.is_public, "other owners keep their flag");
}

pub async fn set_repository_public_creates_and_inherits(store: Arc<dyn AuthStore>) {
    new_user(&*store, "alice").await;
    let root = new_admin(&*store, "root").await;
    assert_eq!(readable(&*store, Some(&root)).await, Vec::<String>::new());

    // The repository is created by setting its visibility.
    set_public(&*store, "alice/app", Some(true)).await;
    assert_eq!(readable(&*store, Some(&root)).await, strings(&["alice/app"]));
    assert_eq!(facts(&*store, "alice/app", None).await.repository_public, Some(true));
    assert!(facts(&*store, "alice/app", None).await.repository_exists);
    assert!(!facts(&*store, "alice/nothing", None).await.repository_exists);
    assert_eq!(readable(&*store, None).await, strings(&["alice/app"]));

    set_public(&*store, "alice/app", Some(false)).await;
    assert_eq!(facts(&*store, "alice/app", None).await.repository_public, Some(false));
    assert_eq!(readable(&*store, None).await, Vec::<String>::new());

    // `None` inherits the owner's visibility.
    set_public(&*store, "alice/app", None).await;
    assert_eq!(facts(&*store, "alice/app", None).await.repository_public, None);
    assert_eq!(readable(&*store, None).await, Vec::<String>::new(), "alice is private");
    assert!(store.set_owner_public("alice", true).await.expect("publish alice"));
    assert_eq!(readable(&*store, None).await, strings(&["alice/app"]), "inherited from alice");

    // The repository's own flag overrides its owner's.
    set_public(&*store, "alice/app", Some(false)).await;
    assert_eq!(readable(&*store, None).await, Vec::<String>::new());

    // Still one repository.
    assert_eq!(readable(&*store, Some(&root)).await, strings(&["alice/app"]));
}

pub async fn access_facts_for_members_outsiders_and_anonymous(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let carol = new_user(&*store, "carol").await;
    new_org(&*store, "acme").await;
    new_org(&*store, "other").await;
    store.set_org_member("acme", "bob", OrgRole::Write).await.expect("add bob");
    store.set_org_member("other", "carol", OrgRole::Admin).await.expect("add carol");
    let (alice_owner, acme_owner) = (owner(&*store, "alice").await, owner(&*store, "acme").await);

    // Own namespace: the owner, no role; the repository does not exist yet.
    let own = facts(&*store, "alice/app", Some(&alice)).await;
    assert_eq!(
        own,
        AccessFacts { owner: Some(alice_owner.clone()), role: None, repository_exists: false, repository_public: None }
    );
    // A one-component name is its own owner.
    assert_eq!(facts(&*store, "alice", Some(&alice)).await.owner, Some(alice_owner));

    // The owner is the first component of a deep name.
    let member = facts(&*store, "acme/team/app", Some(&bob)).await;
    assert_eq!(
        member,
        AccessFacts {
            owner: Some(acme_owner.clone()),
            role: Some(OrgRole::Write),
            repository_exists: false,
            repository_public: None
        }
    );
    for outsider in [Some(&alice), Some(&carol), None] {
        let seen = facts(&*store, "acme/team/app", outsider).await;
        assert_eq!(
            seen,
            AccessFacts {
                owner: Some(acme_owner.clone()),
                role: None,
                repository_exists: false,
                repository_public: None
            }
        );
    }

    // The repository's and the owner's flags.
    set_public(&*store, "acme/team/app", Some(false)).await;
    assert!(store.set_owner_public("acme", true).await.expect("publish acme"));
    let member = facts(&*store, "acme/team/app", Some(&bob)).await;
    assert_eq!(member.repository_public, Some(false));
    assert_eq!(member.role, Some(OrgRole::Write));
    assert!(member.owner.expect("owner").is_public);
    assert_eq!(facts(&*store, "acme/other", None).await.repository_public, None, "per repository");

    // No owner, no facts, even when the repository exists.
    set_public(&*store, "ghost/app", Some(true)).await;
    assert_eq!(facts(&*store, "ghost/app", Some(&alice)).await, AccessFacts::default());
    assert_eq!(facts(&*store, "ghost/app", None).await, AccessFacts::default());
    // A name that merely starts with an owner's name is not theirs.
    assert_eq!(facts(&*store, "alice-x/app", Some(&alice)).await, AccessFacts::default());
    assert_eq!(facts(&*store, "alicex/app", Some(&alice)).await, AccessFacts::default());
}

pub async fn user_with_access_reads_facts_of_the_repository(store: Arc<dyn AuthStore>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    new_org(&*store, "acme").await;
    store.set_org_member("acme", "bob", OrgRole::Write).await.expect("add bob");
    set_public(&*store, "alice/app", Some(false)).await;
    set_public(&*store, "acme/team/app", None).await;

    // The user as `get_user` has it, with exactly what `access_facts` says
    // of them and the repository, for every kind of repository.
    let cases = ["alice/app", "alice/nothing", "acme/team/app", "acme/other", "bob/app", "ghost/app", "alice"];
    for user in [&alice, &bob] {
        for repository in cases {
            let found = store.get_user_with_access(&user.name, &repo(repository)).await.expect("get_user_with_access");
            let expected = (user.clone(), facts(&*store, repository, Some(user)).await);
            assert_eq!(found, Some(expected), "{} on {repository}", user.name);
        }
    }
    let (_, bobs) = store.get_user_with_access("bob", &repo("acme/team/app")).await.expect("read").expect("bob");
    assert_eq!((bobs.role, bobs.repository_exists), (Some(OrgRole::Write), true));
    let (_, ghost) = store.get_user_with_access("bob", &repo("ghost/app")).await.expect("read").expect("bob");
    assert_eq!(ghost, AccessFacts::default(), "no owner, no facts");
    assert_eq!(store.get_user_with_access("nobody", &repo("alice/app")).await.expect("read"), None);
    assert_eq!(store.get_user_with_access("acme", &repo("acme/app")).await.expect("read"), None, "an org is no user");

    // Nothing is remembered: a disabled user and a lost membership show at once.
    assert!(store.set_user_disabled("bob", true).await.expect("disable"));
    assert!(store.remove_org_member("acme", "bob").await.expect("remove"));
    let (user, facts) = store.get_user_with_access("bob", &repo("acme/team/app")).await.expect("read").expect("bob");
    assert!(user.disabled);
    assert_eq!(facts.role, None);
}

pub async fn readable_repositories_by_caller(store: Arc<dyn AuthStore>) {
    let root = new_admin(&*store, "root").await;
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let carol = new_user(&*store, "carol").await;
    new_org(&*store, "acme").await;
    new_org(&*store, "open").await;
    store.set_org_member("acme", "bob", OrgRole::Read).await.expect("add bob");
    assert!(store.set_owner_public("open", true).await.expect("publish open"));
    for (name, public) in [
        ("alice", None),
        ("alice/private", None),
        ("alice/shared", Some(true)),
        ("alice-x/app", None),
        ("acme/internal", None),
        ("acme/team/app", None),
        ("open/tool", None),
        ("open/secret", Some(false)),
        ("ghost/pub", Some(true)),
        ("ghost/priv", None),
    ] {
        set_public(&*store, name, public).await;
    }

    // Admins see everything, in byte order ('-' < '/').
    let everything = strings(&[
        "acme/internal",
        "acme/team/app",
        "alice",
        "alice-x/app",
        "alice/private",
        "alice/shared",
        "ghost/priv",
        "ghost/pub",
        "open/secret",
        "open/tool",
    ]);
    assert_eq!(readable(&*store, Some(&root)).await, everything);
    // Owners see their namespace (not a longer name sharing its prefix), plus public ones.
    assert_eq!(
        readable(&*store, Some(&alice)).await,
        strings(&["alice", "alice/private", "alice/shared", "ghost/pub", "open/tool"])
    );
    // Members see their organizations'.
    assert_eq!(
        readable(&*store, Some(&bob)).await,
        strings(&["acme/internal", "acme/team/app", "alice/shared", "ghost/pub", "open/tool"])
    );
    // Everyone else, signed in or not, sees public repositories only.
    let public = strings(&["alice/shared", "ghost/pub", "open/tool"]);
    assert_eq!(readable(&*store, Some(&carol)).await, public);
    assert_eq!(readable(&*store, None).await, public);

    // Leaving the organization takes its repositories away.
    assert!(store.remove_org_member("acme", "bob").await.expect("remove bob"));
    assert_eq!(readable(&*store, Some(&bob)).await, public);
}

pub async fn readable_repositories_pagination(store: Arc<dyn AuthStore>) {
    let root = new_admin(&*store, "root").await;
    let carol = new_user(&*store, "carol").await;
    for (name, public) in
        [("b/x", Some(true)), ("a/x", Some(true)), ("a", None), ("a-b/x", None), ("c/x", Some(true)), ("a0/x", None)]
    {
        set_public(&*store, name, public).await;
    }
    let page = |user: Option<&UserRecord>, after: Option<&str>, limit: u32| {
        let (store, user, after) = (Arc::clone(&store), user.cloned(), after.map(str::to_owned));
        async move { store.readable_repositories(user.as_ref(), after.as_deref(), limit).await.expect("readable") }
    };

    let all = strings(&["a", "a-b/x", "a/x", "a0/x", "b/x", "c/x"]);
    assert_eq!(page(Some(&root), None, 100).await, all);
    assert_eq!(page(Some(&root), Some("a"), 2).await, strings(&["a-b/x", "a/x"]));
    assert_eq!(page(Some(&root), Some("a/x"), 10).await, strings(&["a0/x", "b/x", "c/x"]));
    assert_eq!(page(Some(&root), Some("bb"), 10).await, strings(&["c/x"]));
    assert_eq!(page(Some(&root), Some("c/x"), 10).await, Vec::<String>::new());
    assert_eq!(page(Some(&root), None, 0).await, Vec::<String>::new());

    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let got = page(Some(&root), after.as_deref(), 4).await;
        assert!(got.len() <= 4);
        match got.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
        walked.extend(got);
    }
    assert_eq!(walked, all);

    // The limit counts visible repositories only.
    assert_eq!(page(Some(&carol), None, 2).await, strings(&["a/x", "b/x"]));
    assert_eq!(page(Some(&carol), Some("b/x"), 2).await, strings(&["c/x"]));
    assert_eq!(page(None, Some("a"), 1).await, strings(&["a/x"]));
    assert_eq!(page(None, Some("a/x"), 1).await, strings(&["b/x"]));
}
