//! Suite cases for the web pages' read models ([`crate::BrowseStore`]) and
//! web sessions ([`crate::SessionStore`]). Each case takes a fresh, empty,
//! migrated store as both its traits; `meta_store_suite!` runs them from
//! its `browse` list (a unit test checks that list is complete).

use std::sync::Arc;

use super::{OCI_INDEX, T0, blob, link, manifest, put, referrer, repo, tags};
use crate::browse::{PackageQuery, VersionOrder, Viewer};
use crate::sessions::NewWebSession;
use crate::{AuthStore, MetaStore, NewManifest, auth::OrgRole};

fn names<T>(items: &[T], name: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(name).collect()
}

async fn package_names(store: &dyn MetaStore, viewer: Viewer, owner: Option<&str>) -> Vec<String> {
    let query = PackageQuery { owner, contains: None, offset: 0, limit: 100 };
    let page = store.packages(viewer, &query).await.expect("packages");
    assert_eq!(page.total as usize, page.items.len());
    names(&page.items, |p| p.repository.to_string())
}

pub async fn packages_list_what_the_viewer_may_read(store: Arc<dyn MetaStore>, auth: Arc<dyn AuthStore>) {
    let alice = auth.create_user("alice", None, false, T0).await.expect("alice");
    let bob = auth.create_user("bob", None, false, T0).await.expect("bob");
    auth.create_org("acme", T0).await.expect("acme");
    auth.set_org_member("acme", "alice", OrgRole::Read).await.expect("member");
    for (i, name) in ["alice/app", "alice/pub", "acme/web", "bob/tool"].iter().enumerate() {
        put(&*store, name, &NewManifest { tags: tags(&["v1"]), ..manifest(&format!("m{i}")) }).await;
    }
    auth.set_repository_public(&repo("alice/pub"), Some(true), T0).await.expect("public repo");
    // A repository with blobs only is no package.
    link(&*store, "alice/blobs-only", &blob("x")).await;

    let as_alice = Viewer { user_id: Some(alice), is_admin: false };
    let as_bob = Viewer { user_id: Some(bob), is_admin: false };
    assert_eq!(package_names(&*store, Viewer::ANONYMOUS, None).await, ["alice/pub"]);
    assert_eq!(package_names(&*store, as_alice, None).await, ["acme/web", "alice/app", "alice/pub"]);
    assert_eq!(package_names(&*store, as_bob, None).await, ["alice/pub", "bob/tool"]);
    assert_eq!(package_names(&*store, Viewer::EVERYTHING, None).await.len(), 4);
    assert_eq!(package_names(&*store, as_alice, Some("alice")).await, ["alice/app", "alice/pub"]);
    assert_eq!(package_names(&*store, as_bob, Some("alice")).await, ["alice/pub"]);
    // An owner whose name prefixes another's sees only its own.
    put(&*store, "alicex/app", &manifest("prefix")).await;
    assert_eq!(package_names(&*store, Viewer::EVERYTHING, Some("alice")).await, ["alice/app", "alice/pub"]);

    // Filter (after the owner part, wildcards literal) and pagination.
    let query = PackageQuery { owner: Some("alice"), contains: Some("pu"), offset: 0, limit: 10 };
    let page = store.packages(Viewer::EVERYTHING, &query).await.expect("filter");
    assert_eq!(names(&page.items, |p| p.repository.to_string()), ["alice/pub"]);
    let query = PackageQuery { owner: Some("alice"), contains: Some("%"), offset: 0, limit: 10 };
    assert_eq!(store.packages(Viewer::EVERYTHING, &query).await.expect("literal %").total, 0);
    let query = PackageQuery { owner: None, contains: None, offset: 1, limit: 2 };
    let page = store.packages(Viewer::EVERYTHING, &query).await.expect("page");
    assert_eq!(
        (page.total, names(&page.items, |p| p.repository.to_string())),
        (5, vec!["alice/app".into(), "alice/pub".into()])
    );
}

pub async fn package_rows_count_tags_size_and_last_push(store: Arc<dyn MetaStore>, _auth: Arc<dyn AuthStore>) {
    let (config, layer) = (blob("config"), blob("layer bytes"));
    link(&*store, "acme/app", &config).await;
    link(&*store, "acme/app", &layer).await;
    let image = NewManifest { blobs: vec![config.clone(), layer.clone()], tags: tags(&["a", "b"]), ..manifest("img") };
    put(&*store, "acme/app", &image).await;
    put(&*store, "acme/app", &NewManifest { tags: tags(&["newest"]), created_at: T0 + 50, ..manifest("later") }).await;
    let page =
        store.packages(Viewer::EVERYTHING, &PackageQuery { limit: 10, ..Default::default() }).await.expect("packages");
    let row = &page.items[0];
    assert_eq!(row.tag_count, 3);
    assert_eq!(row.newest_tag.as_deref(), Some("newest"));
    assert_eq!(row.last_push, T0 + 50);
    assert_eq!(row.size, config.size + layer.size);
    assert!(!row.is_public);
}

pub async fn versions_are_tags_and_top_level_untagged_manifests(store: Arc<dyn MetaStore>, _auth: Arc<dyn AuthStore>) {
    let layer = blob("layer");
    link(&*store, "acme/app", &layer).await;
    let amd64 = NewManifest { blobs: vec![layer.clone()], ..manifest("amd64") };
    let arm64 = manifest("arm64");
    put(&*store, "acme/app", &amd64).await;
    put(&*store, "acme/app", &arm64).await;
    let index = NewManifest {
        media_type: OCI_INDEX.to_owned(),
        manifests: vec![amd64.digest.clone(), arm64.digest.clone()],
        tags: tags(&["v1"]),
        pushed_by: Some("alice".into()),
        created_at: T0 + 10,
        ..manifest("index")
    };
    put(&*store, "acme/app", &index).await;
    put(&*store, "acme/app", &NewManifest { created_at: T0 + 5, ..manifest("loose") }).await;
    put(&*store, "acme/app", &referrer("sig", &index.digest, "application/x-sig", None)).await;

    let repository = repo("acme/app");
    let page = store.versions(&repository, VersionOrder::NewestFirst, 0, 50).await.expect("versions");
    assert_eq!(page.total, 2, "{page:?}");
    let v1 = &page.items[0];
    assert_eq!((v1.version.as_str(), &v1.digest), ("v1", &index.digest));
    assert_eq!(v1.pushed_by.as_deref(), Some("alice"));
    assert_eq!(
        v1.size,
        index.content.len() as u64 + amd64.content.len() as u64 + arm64.content.len() as u64 + layer.size
    );
    assert_eq!(v1.index_content, index.content);
    assert!(page.items[1].index_content.is_empty());
    let oldest = store.versions(&repository, VersionOrder::OldestFirst, 1, 1).await.expect("oldest");
    assert_eq!((oldest.total, oldest.items[0].version.as_str()), (2, "v1"));
    assert!(store.versions(&repo("acme/none"), VersionOrder::NewestFirst, 0, 5).await.expect("none").items.is_empty());

    let one = store.version(&repository, "v1").await.expect("version").expect("v1 exists");
    assert_eq!(&one, v1);
    let loose = &page.items[1];
    assert_eq!(store.version(&repository, &loose.digest.to_string()).await.expect("untagged").as_ref(), Some(loose));
    assert_eq!(store.version(&repository, "nope").await.expect("unknown"), None);
    assert_eq!(store.tags_of(&repository, &index.digest, 10).await.expect("tags_of"), ["v1"]);
    let sizes = store
        .manifest_sizes(&repository, &[amd64.digest.clone(), arm64.digest.clone(), blob("absent").digest])
        .await
        .expect("manifest sizes");
    let mut want = vec![
        (amd64.digest.clone(), amd64.content.len() as u64 + layer.size),
        (arm64.digest.clone(), arm64.content.len() as u64),
    ];
    want.sort();
    assert_eq!(names(&sizes, |s| format!("{}={}", s.digest, s.size)), names(&want, |(d, s)| format!("{d}={s}")));
}

pub async fn versions_page_through_many_tags(store: Arc<dyn MetaStore>, _auth: Arc<dyn AuthStore>) {
    for i in 0..120 {
        let m = NewManifest { tags: tags(&[&format!("t{i:03}")]), created_at: T0 + i, ..manifest(&format!("m{i}")) };
        put(&*store, "acme/many", &m).await;
    }
    let page = store.versions(&repo("acme/many"), VersionOrder::NewestFirst, 100, 50).await.expect("last page");
    assert_eq!(page.total, 120);
    assert_eq!(page.items.len(), 20);
    assert_eq!(page.items[0].version, "t019");
}

pub async fn recent_pushes_respect_visibility(store: Arc<dyn MetaStore>, auth: Arc<dyn AuthStore>) {
    let alice = auth.create_user("alice", None, false, T0).await.expect("alice");
    auth.create_user("bob", None, false, T0).await.expect("bob");
    auth.set_owner_public("bob", true).await.expect("public bob");
    put(&*store, "alice/secret", &NewManifest { tags: tags(&["s"]), created_at: T0 + 2, ..manifest("s") }).await;
    put(&*store, "bob/open", &NewManifest { tags: tags(&["o"]), created_at: T0 + 1, ..manifest("o") }).await;
    let anonymous = store.recent_pushes(Viewer::ANONYMOUS, 10).await.expect("recent");
    assert_eq!(names(&anonymous, |p| format!("{}:{}", p.repository, p.tag)), ["bob/open:o"]);
    let mine = store.recent_pushes(Viewer { user_id: Some(alice), is_admin: false }, 10).await.expect("recent");
    assert_eq!(names(&mine, |p| format!("{}:{}", p.repository, p.tag)), ["alice/secret:s", "bob/open:o"]);
}

pub async fn web_sessions_round_trip_and_expire(_store: Arc<dyn MetaStore>, auth: Arc<dyn AuthStore>) {
    let alice = auth.create_user("alice", Some("$argon2id$stub"), false, T0).await.expect("alice");
    let session = NewWebSession {
        id_hash: vec![7; 32],
        user_id: alice,
        csrf_token: "csrf".into(),
        password_stamp: "stamp".into(),
        created_at: T0,
        expires_at: T0 + 1000,
    };
    auth.create_web_session(&session).await.expect("create");
    let found = auth.web_session(&[7; 32], T0 + 1).await.expect("lookup").expect("present");
    assert_eq!(
        (found.user.name.as_str(), found.csrf_token.as_str(), found.password_stamp.as_str()),
        ("alice", "csrf", "stamp")
    );
    assert_eq!(found.user.password_hash.as_deref(), Some("$argon2id$stub"));
    assert!(auth.web_session(&[7; 32], T0 + 1000).await.expect("expired").is_none());
    assert!(auth.web_session(&[8; 32], T0).await.expect("unknown").is_none());

    auth.create_web_session(&NewWebSession { id_hash: vec![9; 32], expires_at: T0 + 10, ..session.clone() })
        .await
        .expect("second");
    assert_eq!(auth.delete_expired_web_sessions(T0 + 500).await.expect("sweep"), 1);
    assert!(auth.delete_web_session(&[7; 32]).await.expect("delete"));
    assert!(!auth.delete_web_session(&[7; 32]).await.expect("delete again"));
}

pub async fn orgs_are_listed_and_site_admin_is_granted(_store: Arc<dyn MetaStore>, auth: Arc<dyn AuthStore>) {
    auth.create_user("alice", None, false, T0).await.expect("alice");
    auth.create_org("zeta", T0).await.expect("zeta");
    auth.create_org("acme", T0).await.expect("acme");
    let orgs = auth.list_orgs().await.expect("orgs");
    assert_eq!(names(&orgs, |o| o.name.clone()), ["acme", "zeta"]);
    assert!(auth.set_user_admin("alice", true).await.expect("grant"));
    assert!(auth.get_user("alice").await.expect("get").expect("alice").is_admin);
    assert!(auth.set_user_admin("alice", false).await.expect("withdraw"));
    assert!(!auth.get_user("alice").await.expect("get").expect("alice").is_admin);
    assert!(!auth.set_user_admin("acme", true).await.expect("an org is no user"));
    assert!(!auth.set_user_admin("nobody", true).await.expect("unknown"));
}
