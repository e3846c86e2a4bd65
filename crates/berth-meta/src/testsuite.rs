//! The backend-neutral conformance suite for [`MetaStore`] implementations.
//!
//! Each case is a public async function taking a fresh, empty, migrated
//! store. A backend runs them all from one of its test files:
//!
//! ```text
//! async fn fresh_store() -> berth_meta::testsuite::Fixture { /* ... */ }
//!
//! berth_meta::meta_store_suite!(sqlite, fresh_store());
//! ```
//!
//! which generates one `#[tokio::test]` per case, named `sqlite::<case>`, so
//! a failure names its backend. The calling crate needs `tokio` (features
//! `macros`, `rt-multi-thread`) among its dev-dependencies.
//!
//! The cases of this file take the [`MetaStore`]; those of [`auth`] and
//! [`tokens`] take the same store as an [`AuthStore`], those of
//! [`maintenance`] as a [`MaintenanceStore`] too, and those of
//! [`protection`] (deletes refused for content a manifest or an immutable
//! tag still needs) the [`MetaStore`] again. Every backend implements all of them.

pub mod auth;
pub mod browse;
pub mod events;
pub mod maintenance;
pub mod protection;
pub mod proxy;
pub mod scrub;
pub mod tokens;
pub mod usage;

use std::any::Any;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use berth_oci::{Algorithm, Digest, RepositoryName, Tag};

use crate::{
    AuthStore, BlobRef, EventStore, MaintenanceStore, ManifestRef, MetaError, MetaStore, NewManifest, RefProblem,
    Referrer, Result, UploadProgress, UploadSession, no_guard,
};

/// A store under test, plus whatever must outlive it (a temporary
/// directory, a throw-away database).
pub struct Fixture {
    // Declared first so the store is dropped before what it depends on.
    store: Arc<dyn MetaStore>,
    /// The same store, as its other traits.
    auth: Arc<dyn AuthStore>,
    maintenance: Arc<dyn MaintenanceStore>,
    events: Arc<dyn EventStore>,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    pub fn new<S: MetaStore + AuthStore + MaintenanceStore + EventStore>(store: S) -> Self {
        let store = Arc::new(store);
        Fixture {
            store: store.clone(),
            auth: store.clone(),
            maintenance: store.clone(),
            events: store,
            _keep_alive: None,
        }
    }

    /// `keep_alive` is dropped after the store, at the end of the case.
    pub fn with_keep_alive<S: MetaStore + AuthStore + MaintenanceStore + EventStore>(
        store: S,
        keep_alive: impl Any + Send + Sync,
    ) -> Self {
        Fixture { _keep_alive: Some(Box::new(keep_alive)), ..Fixture::new(store) }
    }

    pub fn store(&self) -> Arc<dyn MetaStore> {
        Arc::clone(&self.store)
    }

    pub fn auth(&self) -> Arc<dyn AuthStore> {
        Arc::clone(&self.auth)
    }

    pub fn events(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.events)
    }

    pub fn maintenance(&self) -> Arc<dyn MaintenanceStore> {
        Arc::clone(&self.maintenance)
    }
}

/// Generates one `#[tokio::test]` per suite case (those of this module and
/// of [`auth`](crate::testsuite::auth)) inside `mod $prefix`; `$constructor`
/// is evaluated afresh for each case and must be a future yielding a
/// [`Fixture`](crate::testsuite::Fixture) over an empty store.
#[macro_export]
macro_rules! meta_store_suite {
    ($prefix:ident, $constructor:expr $(,)?) => {
        $crate::meta_store_suite!(@cases $prefix, $constructor, [
            ping_reports_backend,
            link_blob_creates_repository,
            blob_visibility_is_per_repository,
            unlink_blob_removes_only_the_link,
            upload_session_lifecycle,
            update_upload_checks_offset,
            concurrent_upload_updates_one_wins,
            complete_upload_links_blob_and_ends_session,
            complete_missing_upload_fails_without_side_effects,
            stale_uploads_lists_old_sessions_oldest_first,
            put_manifest_with_linked_references,
            put_manifest_refuses_missing_blob,
            put_manifest_refuses_wrong_blob_size,
            put_index_refuses_missing_child,
            put_manifest_unchecked_accepts_sparse,
            put_manifest_again_is_idempotent,
            put_manifest_with_repeated_layer,
            failed_put_manifest_writes_nothing,
            tags_move_to_new_manifest,
            immutable_tag_keeps_its_digest,
            immutable_tag_cannot_be_deleted,
            delete_manifest_refused_by_immutable_tag,
            delete_manifest_removes_its_tags,
            delete_manifest_removes_it_from_referrers,
            delete_tag_keeps_manifest,
            get_manifest_by_tag_and_digest,
            list_tags_byte_order_and_pagination,
            list_tags_unknown_and_empty_repository,
            list_repositories_pagination,
            referrers_filtered_by_artifact_type,
            same_digest_in_two_repositories_is_independent,
            concurrent_pushes_to_one_tag_end_consistent,
            concurrent_pushes_to_immutable_tag_one_wins,
            concurrent_pushes_of_one_manifest_all_succeed,
            package_versions_are_tags_and_untagged_manifests,
            stats_count_what_is_stored,
        ], auth [
            users_and_orgs_share_one_namespace,
            concurrent_creates_of_one_name_one_wins,
            get_user_by_name_and_id,
            list_users_in_byte_order,
            disable_and_password_changes,
            org_membership_add_change_remove_list,
            org_membership_requires_org_and_user,
            owners_and_public_flags,
            set_repository_public_creates_and_inherits,
            access_facts_for_members_outsiders_and_anonymous,
            user_with_access_reads_facts_of_the_repository,
            readable_repositories_by_caller,
            readable_repositories_pagination,
        ], tokens [
            tokens_create_lookup_and_list,
            revoke_token_only_once,
            touch_token_records_last_use,
            token_lookup_keys_may_collide,
            token_lookup_reads_access_facts_of_the_repository,
            token_lookup_with_facts_sees_every_change_at_once,
            colliding_tokens_each_bring_their_own_users_facts,
        ], maintenance [
            lease_is_exclusive_until_released_or_expired,
            reserve_and_link_refuse_a_deleting_blob,
            a_recreated_blob_refuses_the_old_reservation,
            mounts_need_an_existing_link,
            mark_blob_rechecks_links_and_grace_period,
            orphan_and_deleting_rows_round_trip,
            gc_delete_manifest_rechecks_every_condition,
            gc_unlink_blob_rechecks_references_and_grace_period,
            repository_graph_lists_manifests_references_and_links,
            unlinked_blobs_paginate_in_digest_order,
            retention_tags_and_conditional_delete,
            stored_retention_rules_round_trip,
            expire_upload_only_when_idle,
            link_racing_mark_never_both_win,
            push_racing_unlink_never_both_win,
            index_push_racing_manifest_delete_never_both_win,
            tag_push_racing_manifest_delete_keeps_the_tag,
        ], events [
            events_are_claimed_once_until_the_claim_lapses,
            events_record_success_failure_and_abandonment,
            events_concurrent_workers_never_share_a_delivery,
        ], protection [
            blob_delete_refused_while_a_manifest_references_it,
            blob_delete_refused_where_a_protected_tag_reaches_it,
            child_delete_refused_where_a_protected_index_reaches_it,
            unprotected_indexes_do_not_keep_their_children,
            protection_is_per_repository,
            push_racing_blob_delete_never_both_win,
            protected_index_push_racing_child_delete_never_both_win,
        ], browse [
            packages_list_what_the_viewer_may_read,
            package_rows_count_tags_size_and_last_push,
            versions_are_tags_and_top_level_untagged_manifests,
            versions_page_through_many_tags,
            recent_pushes_respect_visibility,
            web_sessions_round_trip_and_expire,
            orgs_are_listed_and_site_admin_is_granted,
        ], usage [
            usage_counts_each_blob_once_per_owner,
            bytes_quota_refuses_a_link_and_writes_nothing,
            manifest_push_past_the_quota_is_refused,
            defaults_apply_and_owners_override_them,
            racing_links_cannot_pass_the_quota_together,
            usage_matches_a_recount_after_a_random_mix,
        ], scrub [
            scrub_lists_linked_blobs_and_manifests,
            damage_hides_a_blob_until_a_fresh_upload_links_it,
            reach_follows_indexes_to_their_tags,
        ], proxy [
            tag_checks_round_trip_and_count_as_pulls,
            last_pull_never_goes_back,
            owners_exist_by_name,
            references_cover_layers_and_children,
        ]);
    };
    (@cases $prefix:ident, $constructor:expr, [$($case:ident),* $(,)?], auth [$($auth_case:ident),* $(,)?],
     tokens [$($tokens_case:ident),* $(,)?],
     maintenance [$($maintenance_case:ident),* $(,)?], events [$($events_case:ident),* $(,)?],
     protection [$($protection_case:ident),* $(,)?], browse [$($browse_case:ident),* $(,)?],
     usage [$($usage_case:ident),* $(,)?], scrub [$($scrub_case:ident),* $(,)?],
     proxy [$($proxy_case:ident),* $(,)?]) => {
        mod $prefix {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::$case(fixture.store()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $auth_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::auth::$auth_case(fixture.auth()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $tokens_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::tokens::$tokens_case(fixture.auth()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $maintenance_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::maintenance::$maintenance_case(fixture.store(), fixture.maintenance()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $events_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::events::$events_case(fixture.events()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $protection_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::protection::$protection_case(fixture.store()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $browse_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::browse::$browse_case(fixture.store(), fixture.auth()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $usage_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::usage::$usage_case(fixture.store(), fixture.maintenance()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scrub_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::scrub::$scrub_case(fixture.store()).await;
                }
            )*

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $proxy_case() {
                    let fixture: $crate::testsuite::Fixture = $constructor.await;
                    $crate::testsuite::proxy::$proxy_case(fixture.store(), fixture.auth()).await;
                }
            )*
        }
    };
}

// --- fixtures ----------------------------------------------------------------

const T0: i64 = 1_700_000_000_000;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature";
const SBOM: &str = "application/vnd.example.sbom";

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("valid repository name")
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).expect("valid tag")
}

fn tags(names: &[&str]) -> Vec<Tag> {
    names.iter().map(|n| tag(n)).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A blob whose bytes are `seed`.
fn blob(seed: &str) -> BlobRef {
    BlobRef { digest: Digest::sha256_of(seed.as_bytes()), size: seed.len() as u64 }
}

/// An image manifest with no references; distinct seeds give distinct digests.
fn manifest(seed: &str) -> NewManifest {
    let content = format!(r#"{{"schemaVersion":2,"seed":"{seed}"}}"#).into_bytes();
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: OCI_MANIFEST.to_owned(),
        content,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: Vec::new(),
        manifests: Vec::new(),
        tags: Vec::new(),
        pushed_by: None,
        created_at: T0,
    }
}

/// An artifact referring to `subject`.
fn referrer(seed: &str, subject: &Digest, artifact_type: &str, annotations: Option<&str>) -> NewManifest {
    NewManifest {
        artifact_type: Some(artifact_type.to_owned()),
        subject: Some(subject.clone()),
        annotations: annotations.map(str::to_owned),
        ..manifest(seed)
    }
}

fn upload(id: &str, repository: &str, updated_at: i64) -> UploadSession {
    UploadSession {
        id: id.to_owned(),
        repository: repo(repository),
        algorithm: Algorithm::Sha256,
        progress: UploadProgress { updated_at, ..UploadProgress::default() },
        created_at: updated_at,
    }
}

/// Protects tags starting with `v` under the rule `v*`.
fn protect_releases(_: &RepositoryName, tag: &str) -> Option<String> {
    tag.starts_with('v').then(|| "v*".to_owned())
}

fn expect_references<T: Debug>(result: Result<T>) -> RefProblem {
    match result {
        Err(MetaError::References(problem)) => problem,
        other => panic!("expected a References error, got {other:?}"),
    }
}

/// Returns `(tag, rule)` of an ImmutableTag error.
fn expect_immutable<T: Debug>(result: Result<T>) -> (String, String) {
    match result {
        Err(MetaError::ImmutableTag { tag, rule }) => (tag, rule),
        other => panic!("expected an ImmutableTag error, got {other:?}"),
    }
}

async fn put(store: &dyn MetaStore, repository: &str, manifest: &NewManifest) {
    store.put_manifest(&repo(repository), manifest, false, &no_guard).await.expect("put_manifest");
}

/// Reserves the blob (as an upload does before committing its bytes), then links it.
async fn link(store: &dyn MetaStore, repository: &str, blob: &BlobRef) {
    let token = reserve(store, blob).await;
    let linked = store.link_reserved_blob(&repo(repository), &blob.digest, &token).await.expect("link_reserved_blob");
    assert!(linked, "the reservation was lost");
}

/// Reserves the blob (as an upload does before committing its bytes); returns the token.
async fn reserve(store: &dyn MetaStore, blob: &BlobRef) -> String {
    store.reserve_blob(&blob.digest, blob.size).await.expect("reserve_blob").expect("blob is being deleted")
}

async fn digest_of_tag(store: &dyn MetaStore, repository: &str, name: &str) -> Option<Digest> {
    let t = tag(name);
    let record = store.get_manifest(&repo(repository), &ManifestRef::Tag(&t), false).await.expect("get_manifest");
    record.map(|r| r.digest)
}

async fn has_manifest(store: &dyn MetaStore, repository: &str, digest: &Digest) -> bool {
    let found = store.get_manifest(&repo(repository), &ManifestRef::Digest(digest), false).await;
    found.expect("get_manifest").is_some()
}

async fn tag_list(store: &dyn MetaStore, repository: &str) -> Option<Vec<String>> {
    store.list_tags(&repo(repository), None, None).await.expect("list_tags")
}

// --- repositories and blobs --------------------------------------------------

pub async fn ping_reports_backend(store: Arc<dyn MetaStore>) {
    store.ping().await.expect("ping");
    assert!(!store.backend().is_empty());
}

pub async fn link_blob_creates_repository(store: Arc<dyn MetaStore>) {
    let (r, layer) = (repo("acme/app"), blob("layer"));
    assert!(!store.repository_exists(&r).await.expect("exists"));
    assert_eq!(store.list_repositories(None, None).await.expect("list"), Vec::<String>::new());

    link(&*store, "acme/app", &layer).await;
    assert!(store.repository_exists(&r).await.expect("exists"));
    assert_eq!(store.blob_size(&r, &layer.digest).await.expect("size"), Some(layer.size));

    // Idempotent: a second link changes nothing.
    link(&*store, "acme/app", &layer).await;
    assert_eq!(store.blob_size(&r, &layer.digest).await.expect("size"), Some(layer.size));
    assert_eq!(store.list_repositories(None, None).await.expect("list"), strings(&["acme/app"]));
}

pub async fn blob_visibility_is_per_repository(store: Arc<dyn MetaStore>) {
    let (a, b) = (repo("team/a"), repo("team/b"));
    let (shared, other) = (blob("shared"), blob("other"));
    link(&*store, "team/a", &shared).await;
    link(&*store, "team/b", &other).await;

    assert_eq!(store.blob_size(&a, &shared.digest).await.expect("size"), Some(shared.size));
    assert_eq!(store.blob_size(&b, &shared.digest).await.expect("size"), None, "not linked to b");
    assert_eq!(store.blob_size(&repo("nobody"), &shared.digest).await.expect("size"), None);
    assert_eq!(store.global_blob_size(&shared.digest).await.expect("global"), Some(shared.size));
    assert_eq!(store.global_blob_size(&blob("unknown").digest).await.expect("global"), None);
}

pub async fn unlink_blob_removes_only_the_link(store: Arc<dyn MetaStore>) {
    let (a, b, layer) = (repo("a"), repo("b"), blob("layer"));
    link(&*store, "a", &layer).await;
    link(&*store, "b", &layer).await;

    assert!(store.unlink_blob(&a, &layer.digest, &no_guard).await.expect("unlink"));
    assert!(!store.unlink_blob(&a, &layer.digest, &no_guard).await.expect("unlink again"));
    assert!(!store.unlink_blob(&repo("nobody"), &layer.digest, &no_guard).await.expect("unlink unknown repo"));
    assert_eq!(store.blob_size(&a, &layer.digest).await.expect("size"), None);
    assert_eq!(store.blob_size(&b, &layer.digest).await.expect("size"), Some(layer.size));
    assert_eq!(store.global_blob_size(&layer.digest).await.expect("global"), Some(layer.size));
    assert!(store.repository_exists(&a).await.expect("exists"), "the repository stays");

    // Linked nowhere: no longer mountable.
    assert!(store.unlink_blob(&b, &layer.digest, &no_guard).await.expect("unlink b"));
    assert_eq!(store.global_blob_size(&layer.digest).await.expect("global"), None);

    // Relinking works and keeps the size.
    link(&*store, "a", &layer).await;
    assert_eq!(store.blob_size(&a, &layer.digest).await.expect("size"), Some(layer.size));
}

// --- upload sessions ---------------------------------------------------------

pub async fn upload_session_lifecycle(store: Arc<dyn MetaStore>) {
    let session = upload("0f0e5b8c-upload", "acme/app", T0);
    store.create_upload(&session).await.expect("create");
    assert_eq!(store.get_upload(&session.id).await.expect("get"), Some(session.clone()));
    assert!(!store.repository_exists(&repo("acme/app")).await.expect("exists"), "sessions create no repository");

    let progress = UploadProgress {
        offset: 5,
        hash_state: vec![1, 2, 3],
        backend_state: r#"{"part":1}"#.into(),
        updated_at: T0 + 1,
    };
    assert!(store.update_upload(&session.id, 0, &progress).await.expect("update"));
    let stored = store.get_upload(&session.id).await.expect("get").expect("session exists");
    assert_eq!(stored.progress, progress);
    assert_eq!((stored.created_at, &stored.repository), (T0, &session.repository));

    assert!(store.delete_upload(&session.id).await.expect("delete"));
    assert_eq!(store.get_upload(&session.id).await.expect("get"), None);
    assert!(!store.delete_upload(&session.id).await.expect("delete again"));
    assert!(!store.update_upload(&session.id, 5, &progress).await.expect("update deleted"));
    assert_eq!(store.get_upload("never-created").await.expect("get"), None);
}

pub async fn update_upload_checks_offset(store: Arc<dyn MetaStore>) {
    let session = UploadSession { algorithm: Algorithm::Sha512, ..upload("cas", "acme/app", T0) };
    store.create_upload(&session).await.expect("create");
    let first = UploadProgress { offset: 10, hash_state: vec![7; 8], backend_state: "one".into(), updated_at: T0 + 1 };
    assert!(store.update_upload("cas", 0, &first).await.expect("update"));

    // A request that still believes the offset is 0 loses.
    let stale = UploadProgress { offset: 4, hash_state: vec![9], backend_state: "stale".into(), updated_at: T0 + 2 };
    assert!(!store.update_upload("cas", 0, &stale).await.expect("stale update"));
    let stored = store.get_upload("cas").await.expect("get").expect("exists");
    assert_eq!(stored.progress, first);
    assert_eq!(stored.algorithm, Algorithm::Sha512);

    let second = UploadProgress { offset: 25, updated_at: T0 + 3, ..first.clone() };
    assert!(store.update_upload("cas", 10, &second).await.expect("update"));
    assert_eq!(store.get_upload("cas").await.expect("get").expect("exists").progress, second);
}

pub async fn concurrent_upload_updates_one_wins(store: Arc<dyn MetaStore>) {
    store.create_upload(&upload("race", "acme/app", T0)).await.expect("create");
    let tasks: Vec<_> = (1..=8u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let progress = UploadProgress { offset: i * 100, updated_at: T0 + 1, ..UploadProgress::default() };
                store.update_upload("race", 0, &progress).await.map(|won| won.then_some(i))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("task").expect("update"));
    }
    assert_eq!(winners.len(), 1, "exactly one compare-and-set wins: {winners:?}");
    let stored = store.get_upload("race").await.expect("get").expect("exists");
    assert_eq!(stored.progress.offset, winners[0] * 100);
}

pub async fn complete_upload_links_blob_and_ends_session(store: Arc<dyn MetaStore>) {
    let (r, layer) = (repo("fresh/repo"), blob("uploaded bytes"));
    store.create_upload(&upload("done", "fresh/repo", T0)).await.expect("create");
    // Not reserved: nothing may be linked, and the session survives.
    assert!(matches!(store.complete_upload("done", &layer.digest, "no token").await, Err(MetaError::Unavailable(_))));
    assert!(store.get_upload("done").await.expect("get").is_some());
    assert!(!store.repository_exists(&r).await.expect("exists"));
    let token = reserve(&*store, &layer).await;
    store.complete_upload("done", &layer.digest, &token).await.expect("complete");

    assert!(store.repository_exists(&r).await.expect("exists"));
    assert_eq!(store.blob_size(&r, &layer.digest).await.expect("size"), Some(layer.size));
    assert_eq!(store.global_blob_size(&layer.digest).await.expect("global"), Some(layer.size));
    assert_eq!(store.get_upload("done").await.expect("get"), None);

    // Completing into a repository that already links the blob is fine too.
    store.create_upload(&upload("again", "fresh/repo", T0)).await.expect("create");
    let again = reserve(&*store, &layer).await;
    assert_eq!(again, token, "the same row, the same token");
    store.complete_upload("again", &layer.digest, &again).await.expect("complete again");
    assert_eq!(store.get_upload("again").await.expect("get"), None);
}

pub async fn complete_missing_upload_fails_without_side_effects(store: Arc<dyn MetaStore>) {
    let layer = blob("orphan");
    let token = reserve(&*store, &layer).await;
    let result = store.complete_upload("no-such-upload", &layer.digest, &token).await;
    assert!(
        matches!(result, Err(MetaError::UploadUnknown)),
        "completing an unknown session must fail with UploadUnknown"
    );
    assert_eq!(store.list_repositories(None, None).await.expect("list"), Vec::<String>::new());
    assert_eq!(store.global_blob_size(&layer.digest).await.expect("global"), None);

    // A session completed once cannot be completed twice; the first result stays.
    store.create_upload(&upload("once", "acme/app", T0)).await.expect("create");
    store.complete_upload("once", &layer.digest, &token).await.expect("complete");
    let other = blob("second attempt");
    let other_token = reserve(&*store, &other).await;
    assert!(store.complete_upload("once", &other.digest, &other_token).await.is_err());
    assert_eq!(store.global_blob_size(&other.digest).await.expect("global"), None);
    assert_eq!(store.blob_size(&repo("acme/app"), &layer.digest).await.expect("size"), Some(layer.size));
}

pub async fn stale_uploads_lists_old_sessions_oldest_first(store: Arc<dyn MetaStore>) {
    let (old, older, fresh) = (upload("old", "a", 200), upload("older", "b", 100), upload("fresh", "a", 300));
    for session in [&old, &older, &fresh] {
        store.create_upload(session).await.expect("create");
    }
    assert_eq!(store.stale_uploads(250, 10).await.expect("stale"), vec![older.clone(), old.clone()]);
    assert_eq!(store.stale_uploads(250, 1).await.expect("stale"), vec![older.clone()]);
    assert_eq!(store.stale_uploads(100, 10).await.expect("stale"), Vec::new(), "strictly before");

    // Progress refreshes the session.
    let progress = UploadProgress { offset: 1, updated_at: 400, ..UploadProgress::default() };
    assert!(store.update_upload("older", 0, &progress).await.expect("update"));
    assert_eq!(store.stale_uploads(250, 10).await.expect("stale"), vec![old]);
}

// --- manifests ----------------------------------------------------------------

pub async fn put_manifest_with_linked_references(store: Arc<dyn MetaStore>) {
    let (config, layer) = (blob("config"), blob("layer"));
    link(&*store, "acme/app", &config).await;
    link(&*store, "acme/app", &layer).await;
    let m = NewManifest { blobs: vec![config, layer], tags: tags(&["latest"]), ..manifest("app") };
    store.put_manifest(&repo("acme/app"), &m, true, &no_guard).await.expect("put");

    let record = store
        .get_manifest(&repo("acme/app"), &ManifestRef::Digest(&m.digest), true)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.digest, m.digest);
    assert_eq!(record.media_type, OCI_MANIFEST);
    assert_eq!(record.size, m.content.len() as u64);
    assert_eq!(record.content, m.content);
    assert_eq!(record.created_at, T0);
    assert_eq!(digest_of_tag(&*store, "acme/app", "latest").await, Some(m.digest));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["latest"])));
}

pub async fn put_manifest_refuses_missing_blob(store: Arc<dyn MetaStore>) {
    let (config, layer) = (blob("config"), blob("layer"));
    link(&*store, "acme/app", &config).await;
    // Linked elsewhere does not count.
    link(&*store, "other/repo", &layer).await;
    let m = NewManifest { blobs: vec![config, layer.clone()], tags: tags(&["latest"]), ..manifest("app") };

    let problem = expect_references(store.put_manifest(&repo("acme/app"), &m, true, &no_guard).await);
    assert_eq!(problem, RefProblem { missing: vec![layer.digest], wrong_size: Vec::new() });
    assert!(!has_manifest(&*store, "acme/app", &m.digest).await);
    assert_eq!(tag_list(&*store, "acme/app").await, Some(Vec::new()));
}

pub async fn put_manifest_refuses_wrong_blob_size(store: Arc<dyn MetaStore>) {
    let (config, layer) = (blob("config"), blob("layer"));
    link(&*store, "acme/app", &config).await;
    link(&*store, "acme/app", &layer).await;
    let lying = BlobRef { size: layer.size + 1, ..layer.clone() };
    let m = NewManifest { blobs: vec![config, lying], ..manifest("app") };

    let problem = expect_references(store.put_manifest(&repo("acme/app"), &m, true, &no_guard).await);
    assert_eq!(problem, RefProblem { missing: Vec::new(), wrong_size: vec![layer.digest] });
    assert!(!has_manifest(&*store, "acme/app", &m.digest).await);
}

pub async fn put_index_refuses_missing_child(store: Arc<dyn MetaStore>) {
    let (amd64, arm64) = (manifest("amd64"), manifest("arm64"));
    put(&*store, "acme/app", &amd64).await;
    let index = NewManifest {
        media_type: OCI_INDEX.to_owned(),
        manifests: vec![amd64.digest.clone(), arm64.digest.clone()],
        tags: tags(&["latest"]),
        ..manifest("index")
    };

    let problem = expect_references(store.put_manifest(&repo("acme/app"), &index, true, &no_guard).await);
    assert_eq!(problem, RefProblem { missing: vec![arm64.digest.clone()], wrong_size: Vec::new() });
    assert_eq!(digest_of_tag(&*store, "acme/app", "latest").await, None);

    // A child in another repository does not count either.
    put(&*store, "other/repo", &arm64).await;
    expect_references(store.put_manifest(&repo("acme/app"), &index, true, &no_guard).await);

    put(&*store, "acme/app", &arm64).await;
    store.put_manifest(&repo("acme/app"), &index, true, &no_guard).await.expect("put index");
    let record = store.get_manifest(&repo("acme/app"), &ManifestRef::Digest(&index.digest), false).await;
    assert_eq!(record.expect("get").expect("stored").media_type, OCI_INDEX);
}

pub async fn put_manifest_unchecked_accepts_sparse(store: Arc<dyn MetaStore>) {
    // Sparse index/manifest: references may be absent when checks are off.
    let m = NewManifest {
        blobs: vec![blob("absent config"), blob("absent layer")],
        manifests: vec![manifest("absent child").digest],
        tags: tags(&["sparse"]),
        ..manifest("sparse")
    };
    store.put_manifest(&repo("mirror/app"), &m, false, &no_guard).await.expect("put unchecked");
    assert!(store.repository_exists(&repo("mirror/app")).await.expect("exists"));
    assert_eq!(digest_of_tag(&*store, "mirror/app", "sparse").await, Some(m.digest));
}

pub async fn put_manifest_again_is_idempotent(store: Arc<dyn MetaStore>) {
    let first = NewManifest { tags: tags(&["a"]), ..manifest("app") };
    put(&*store, "acme/app", &first).await;
    put(&*store, "acme/app", &first).await;

    // Same digest later with other tags: the manifest keeps its first
    // creation time, the new tags are applied.
    let again = NewManifest { tags: tags(&["b"]), created_at: T0 + 5_000, ..first.clone() };
    put(&*store, "acme/app", &again).await;
    let record = store.get_manifest(&repo("acme/app"), &ManifestRef::Digest(&first.digest), true).await.expect("get");
    let record = record.expect("stored");
    assert_eq!((record.created_at, &record.content), (T0, &first.content));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["a", "b"])));
}

pub async fn put_manifest_with_repeated_layer(store: Arc<dyn MetaStore>) {
    let (config, layer) = (blob("config"), blob("empty layer"));
    link(&*store, "acme/app", &config).await;
    link(&*store, "acme/app", &layer).await;
    let m = NewManifest { blobs: vec![config, layer.clone(), layer.clone(), layer], ..manifest("dup") };
    store.put_manifest(&repo("acme/app"), &m, true, &no_guard).await.expect("checked put");
    store.put_manifest(&repo("acme/app"), &m, false, &no_guard).await.expect("unchecked put");

    let unchecked = NewManifest { blobs: vec![blob("x"), blob("x")], ..manifest("dup unchecked") };
    store.put_manifest(&repo("acme/app"), &unchecked, false, &no_guard).await.expect("sparse put");
}

pub async fn failed_put_manifest_writes_nothing(store: Arc<dyn MetaStore>) {
    // Refused references roll back the implicit repository creation.
    let m = NewManifest { blobs: vec![blob("missing")], tags: tags(&["latest"]), ..manifest("app") };
    expect_references(store.put_manifest(&repo("brand/new"), &m, true, &no_guard).await);
    assert!(!store.repository_exists(&repo("brand/new")).await.expect("exists"));
    assert_eq!(store.list_repositories(None, None).await.expect("list"), Vec::<String>::new());

    // One refused tag refuses the whole push: no other tag moves.
    let v1 = NewManifest { tags: tags(&["v1", "latest"]), ..manifest("v1") };
    store.put_manifest(&repo("acme/app"), &v1, false, &protect_releases).await.expect("put v1");
    let next = NewManifest { tags: tags(&["latest", "edge", "v1"]), ..manifest("next") };
    expect_immutable(store.put_manifest(&repo("acme/app"), &next, false, &protect_releases).await);
    assert!(!has_manifest(&*store, "acme/app", &next.digest).await);
    assert_eq!(digest_of_tag(&*store, "acme/app", "latest").await, Some(v1.digest));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["latest", "v1"])));
}

// --- tags ---------------------------------------------------------------------

pub async fn tags_move_to_new_manifest(store: Arc<dyn MetaStore>) {
    let (m1, m2) = (manifest("one"), manifest("two"));
    put(&*store, "acme/app", &NewManifest { tags: tags(&["latest"]), ..m1.clone() }).await;
    put(&*store, "acme/app", &NewManifest { tags: tags(&["latest"]), ..m2.clone() }).await;

    assert_eq!(digest_of_tag(&*store, "acme/app", "latest").await, Some(m2.digest));
    assert!(has_manifest(&*store, "acme/app", &m1.digest).await, "the old manifest stays");
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["latest"])));
}

pub async fn immutable_tag_keeps_its_digest(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let m1 = NewManifest { tags: tags(&["v1"]), ..manifest("one") };
    store.put_manifest(&r, &m1, false, &protect_releases).await.expect("creating an immutable tag");
    store.put_manifest(&r, &m1, false, &protect_releases).await.expect("same digest again");

    let m2 = NewManifest { tags: tags(&["v1"]), ..manifest("two") };
    let (name, rule) = expect_immutable(store.put_manifest(&r, &m2, false, &protect_releases).await);
    assert_eq!((name.as_str(), rule.as_str()), ("v1", "v*"));
    assert_eq!(digest_of_tag(&*store, "acme/app", "v1").await, Some(m1.digest.clone()));
    assert!(!has_manifest(&*store, "acme/app", &m2.digest).await, "the refused push stored nothing");

    // Unprotected tags still move, and the guard is per call.
    let m2_latest = NewManifest { tags: tags(&["latest"]), ..m2.clone() };
    store.put_manifest(&r, &m2_latest, false, &protect_releases).await.expect("unprotected tag");
    store.put_manifest(&r, &m2, false, &no_guard).await.expect("no rule, no refusal");
    assert_eq!(digest_of_tag(&*store, "acme/app", "v1").await, Some(m2.digest));
}

pub async fn immutable_tag_cannot_be_deleted(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    put(&*store, "acme/app", &NewManifest { tags: tags(&["v1"]), ..manifest("one") }).await;

    let (name, rule) = expect_immutable(store.delete_tag(&r, &tag("v1"), &protect_releases).await);
    assert_eq!((name.as_str(), rule.as_str()), ("v1", "v*"));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["v1"])));

    // Nothing to protect when the tag does not exist.
    assert!(!store.delete_tag(&r, &tag("v9"), &protect_releases).await.expect("absent protected tag"));
    assert!(store.delete_tag(&r, &tag("v1"), &no_guard).await.expect("unprotected delete"));
}

pub async fn delete_manifest_refused_by_immutable_tag(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let m = NewManifest { tags: tags(&["latest", "v1"]), ..manifest("one") };
    put(&*store, "acme/app", &m).await;

    let (name, rule) = expect_immutable(store.delete_manifest(&r, &m.digest, &protect_releases).await);
    assert_eq!((name.as_str(), rule.as_str()), ("v1", "v*"));
    assert!(has_manifest(&*store, "acme/app", &m.digest).await);
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["latest", "v1"])));

    assert!(store.delete_manifest(&r, &m.digest, &no_guard).await.expect("delete"));
    assert!(!has_manifest(&*store, "acme/app", &m.digest).await);
}

pub async fn delete_manifest_removes_its_tags(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let (m1, m2) = (manifest("one"), manifest("two"));
    put(&*store, "acme/app", &NewManifest { tags: tags(&["a", "b"]), ..m1.clone() }).await;
    put(&*store, "acme/app", &NewManifest { tags: tags(&["c"]), ..m2.clone() }).await;

    assert!(store.delete_manifest(&r, &m1.digest, &protect_releases).await.expect("delete"));
    assert!(!has_manifest(&*store, "acme/app", &m1.digest).await);
    assert_eq!(digest_of_tag(&*store, "acme/app", "a").await, None);
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["c"])));
    assert!(!store.delete_manifest(&r, &m1.digest, &no_guard).await.expect("delete again"));
    assert!(!store.delete_manifest(&repo("nobody"), &m2.digest, &no_guard).await.expect("unknown repo"));

    assert!(store.delete_manifest(&r, &m2.digest, &no_guard).await.expect("delete last"));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(Vec::new()));

    // The digest can be pushed again afterwards.
    put(&*store, "acme/app", &NewManifest { tags: tags(&["a"]), ..m1.clone() }).await;
    assert_eq!(digest_of_tag(&*store, "acme/app", "a").await, Some(m1.digest));
}

pub async fn delete_manifest_removes_it_from_referrers(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let subject = manifest("image");
    put(&*store, "acme/app", &subject).await;
    let signature = referrer("sig", &subject.digest, SIGNATURE, None);
    let sbom = referrer("sbom", &subject.digest, SBOM, None);
    put(&*store, "acme/app", &signature).await;
    put(&*store, "acme/app", &sbom).await;

    assert!(store.delete_manifest(&r, &signature.digest, &no_guard).await.expect("delete"));
    let listed = store.referrers(&r, &subject.digest, None).await.expect("referrers");
    assert_eq!(listed.iter().map(|x| &x.digest).collect::<Vec<_>>(), vec![&sbom.digest]);

    // Pushed again, it is listed again.
    put(&*store, "acme/app", &signature).await;
    assert_eq!(store.referrers(&r, &subject.digest, None).await.expect("referrers").len(), 2);
}

pub async fn delete_tag_keeps_manifest(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let m = NewManifest { tags: tags(&["a", "b"]), ..manifest("one") };
    put(&*store, "acme/app", &m).await;

    assert!(store.delete_tag(&r, &tag("a"), &no_guard).await.expect("delete"));
    assert!(!store.delete_tag(&r, &tag("a"), &no_guard).await.expect("delete again"));
    assert!(!store.delete_tag(&repo("nobody"), &tag("b"), &no_guard).await.expect("unknown repo"));
    assert!(has_manifest(&*store, "acme/app", &m.digest).await);
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["b"])));
}

pub async fn get_manifest_by_tag_and_digest(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let m = NewManifest { tags: tags(&["latest"]), created_at: T0 + 42, ..manifest("one") };
    put(&*store, "acme/app", &m).await;
    let latest = tag("latest");

    for reference in [ManifestRef::Tag(&latest), ManifestRef::Digest(&m.digest)] {
        let full = store.get_manifest(&r, &reference, true).await.expect("get").expect("found");
        assert_eq!(full.content, m.content, "{reference:?}");
        let bare = store.get_manifest(&r, &reference, false).await.expect("get").expect("found");
        assert_eq!(bare.content, Vec::<u8>::new(), "content only on request: {reference:?}");
        assert_eq!(bare.digest, m.digest);
        assert_eq!(bare.media_type, OCI_MANIFEST);
        assert_eq!(bare.size, m.content.len() as u64);
        assert_eq!(bare.created_at, T0 + 42);
    }

    let missing = manifest("missing").digest;
    let other_tag = tag("other");
    assert_eq!(store.get_manifest(&r, &ManifestRef::Tag(&other_tag), true).await.expect("get"), None);
    assert_eq!(store.get_manifest(&r, &ManifestRef::Digest(&missing), true).await.expect("get"), None);
    let nobody = repo("nobody");
    assert_eq!(store.get_manifest(&nobody, &ManifestRef::Tag(&latest), true).await.expect("get"), None);
    assert_eq!(store.get_manifest(&nobody, &ManifestRef::Digest(&m.digest), true).await.expect("get"), None);
}

pub async fn list_tags_byte_order_and_pagination(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    let names = ["b", "a", "C", "_x", "a1", "Z", "a-1", "a.1"];
    put(&*store, "acme/app", &NewManifest { tags: tags(&names), ..manifest("one") }).await;

    // Byte order: uppercase < '_' < lowercase; '-' < '.' < digits.
    let all = strings(&["C", "Z", "_x", "a", "a-1", "a.1", "a1", "b"]);
    assert_eq!(store.list_tags(&r, None, None).await.expect("list"), Some(all.clone()));
    assert_eq!(store.list_tags(&r, Some("a"), None).await.expect("list"), Some(strings(&["a-1", "a.1", "a1", "b"])));
    assert_eq!(store.list_tags(&r, Some("a0"), None).await.expect("list"), Some(strings(&["a1", "b"])));
    assert_eq!(store.list_tags(&r, Some("b"), None).await.expect("list"), Some(Vec::new()));
    assert_eq!(store.list_tags(&r, None, Some(2)).await.expect("list"), Some(strings(&["C", "Z"])));
    assert_eq!(store.list_tags(&r, Some("Z"), Some(2)).await.expect("list"), Some(strings(&["_x", "a"])));
    assert_eq!(store.list_tags(&r, None, Some(0)).await.expect("list"), Some(Vec::new()));

    // Walking pages with `after` = last entry visits every tag once.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_tags(&r, after.as_deref(), Some(3)).await.expect("list").expect("repository exists");
        assert!(page.len() <= 3);
        match page.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
        walked.extend(page);
    }
    assert_eq!(walked, all);
}

pub async fn list_tags_unknown_and_empty_repository(store: Arc<dyn MetaStore>) {
    assert_eq!(tag_list(&*store, "nobody").await, None);
    assert_eq!(store.list_tags(&repo("nobody"), None, Some(0)).await.expect("list"), None);

    link(&*store, "blobs/only", &blob("layer")).await;
    assert_eq!(tag_list(&*store, "blobs/only").await, Some(Vec::new()));
    assert_eq!(store.list_tags(&repo("blobs/only"), Some("a"), Some(5)).await.expect("list"), Some(Vec::new()));

    put(&*store, "acme/app", &NewManifest { tags: tags(&["only"]), ..manifest("one") }).await;
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["only"])));
    assert!(store.delete_tag(&repo("acme/app"), &tag("only"), &no_guard).await.expect("delete"));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(Vec::new()));
}

pub async fn list_repositories_pagination(store: Arc<dyn MetaStore>) {
    for name in ["b", "a/x", "a", "a-b", "c", "a0"] {
        link(&*store, name, &blob("layer")).await;
    }
    // '-' < '/' < '0' in byte order.
    let all = strings(&["a", "a-b", "a/x", "a0", "b", "c"]);
    assert_eq!(store.list_repositories(None, None).await.expect("list"), all);
    assert_eq!(store.list_repositories(Some("a"), Some(2)).await.expect("list"), strings(&["a-b", "a/x"]));
    assert_eq!(store.list_repositories(Some("a/x"), None).await.expect("list"), strings(&["a0", "b", "c"]));
    assert_eq!(store.list_repositories(Some("bb"), None).await.expect("list"), strings(&["c"]));
    assert_eq!(store.list_repositories(Some("c"), Some(10)).await.expect("list"), Vec::<String>::new());
    assert_eq!(store.list_repositories(None, Some(0)).await.expect("list"), Vec::<String>::new());

    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_repositories(after.as_deref(), Some(4)).await.expect("list");
        match page.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
        walked.extend(page);
    }
    assert_eq!(walked, all);
}

pub async fn referrers_filtered_by_artifact_type(store: Arc<dyn MetaStore>) {
    let r = repo("acme/app");
    // The subject was never pushed: referrers may arrive first.
    let subject = manifest("not pushed").digest;
    let annotations = r#"{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}"#;
    let sig1 = referrer("sig-1", &subject, SIGNATURE, Some(annotations));
    let sig2 = referrer("sig-2", &subject, SIGNATURE, None);
    let sbom = referrer("sbom", &subject, SBOM, None);
    let unrelated = referrer("unrelated", &manifest("other subject").digest, SIGNATURE, None);
    for m in [&sig1, &sig2, &sbom, &unrelated] {
        put(&*store, "acme/app", m).await;
    }

    let expected = |ms: &[&NewManifest]| {
        let mut out: Vec<Referrer> = ms
            .iter()
            .map(|m| Referrer {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                size: m.content.len() as u64,
                artifact_type: m.artifact_type.clone(),
                annotations: m.annotations.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
        out
    };
    assert_eq!(store.referrers(&r, &subject, None).await.expect("all"), expected(&[&sig1, &sig2, &sbom]));
    assert_eq!(store.referrers(&r, &subject, Some(SIGNATURE)).await.expect("signatures"), expected(&[&sig1, &sig2]));
    assert_eq!(store.referrers(&r, &subject, Some(SBOM)).await.expect("sboms"), expected(&[&sbom]));
    assert_eq!(store.referrers(&r, &subject, Some("application/none")).await.expect("none"), Vec::new());
    assert_eq!(store.referrers(&repo("other"), &subject, None).await.expect("other repo"), Vec::new());
    let lonely = manifest("no referrers").digest;
    assert_eq!(store.referrers(&r, &lonely, None).await.expect("no referrers"), Vec::new());
}

pub async fn same_digest_in_two_repositories_is_independent(store: Arc<dyn MetaStore>) {
    let (a, b) = (repo("team/a"), repo("team/b"));
    let (layer, m) = (blob("layer"), manifest("shared"));
    for name in ["team/a", "team/b"] {
        link(&*store, name, &layer).await;
    }
    put(&*store, "team/a", &NewManifest { tags: tags(&["latest"]), ..m.clone() }).await;
    put(&*store, "team/b", &NewManifest { tags: tags(&["stable"]), ..m.clone() }).await;
    put(&*store, "team/b", &referrer("sig", &m.digest, SIGNATURE, None)).await;

    assert_eq!(tag_list(&*store, "team/a").await, Some(strings(&["latest"])));
    assert_eq!(store.referrers(&a, &m.digest, None).await.expect("referrers a"), Vec::new());
    assert_eq!(store.referrers(&b, &m.digest, None).await.expect("referrers b").len(), 1);

    assert!(store.delete_manifest(&a, &m.digest, &no_guard).await.expect("delete in a"));
    assert!(!has_manifest(&*store, "team/a", &m.digest).await);
    assert!(has_manifest(&*store, "team/b", &m.digest).await);
    assert_eq!(digest_of_tag(&*store, "team/b", "stable").await, Some(m.digest.clone()));

    assert!(store.unlink_blob(&a, &layer.digest, &no_guard).await.expect("unlink in a"));
    assert_eq!(store.blob_size(&b, &layer.digest).await.expect("size b"), Some(layer.size));
}

// --- concurrency ---------------------------------------------------------------

const CONCURRENT_PUSHES: usize = 16;
/// Rounds of the immutable-tag race.
const RACE_ROUNDS: usize = 5;

/// Pushes `make(i)` for every `i` at once; returns each push's result.
async fn push_concurrently(
    store: &Arc<dyn MetaStore>,
    repository: &str,
    guard_releases: bool,
    make: impl Fn(usize) -> NewManifest,
) -> Vec<(NewManifest, Result<()>)> {
    let tasks: Vec<_> = (0..CONCURRENT_PUSHES)
        .map(|i| {
            let (store, r, m) = (Arc::clone(store), repo(repository), make(i));
            tokio::spawn(async move {
                let result = if guard_releases {
                    store.put_manifest(&r, &m, false, &protect_releases).await
                } else {
                    store.put_manifest(&r, &m, false, &no_guard).await
                };
                (m, result)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("push task panicked"));
    }
    results
}

pub async fn concurrent_pushes_to_one_tag_end_consistent(store: Arc<dyn MetaStore>) {
    let results = push_concurrently(&store, "acme/app", false, |i| NewManifest {
        tags: tags(&["latest", &format!("build-{i}")]),
        ..manifest(&format!("build {i}"))
    })
    .await;
    let mut pushed = HashSet::new();
    for (m, result) in &results {
        result.as_ref().expect("every push succeeds");
        pushed.insert(m.digest.clone());
        let own_tag = m.tags.last().expect("own tag");
        assert_eq!(digest_of_tag(&*store, "acme/app", own_tag.as_str()).await, Some(m.digest.clone()));
        assert!(has_manifest(&*store, "acme/app", &m.digest).await);
    }
    let latest = digest_of_tag(&*store, "acme/app", "latest").await.expect("latest exists");
    assert!(pushed.contains(&latest), "latest points at one of the pushed manifests");
    let listed = tag_list(&*store, "acme/app").await.expect("repository exists");
    assert_eq!(listed.len(), CONCURRENT_PUSHES + 1);
}

pub async fn concurrent_pushes_to_immutable_tag_one_wins(store: Arc<dyn MetaStore>) {
    // The repository exists beforehand: were the first push to create it,
    // the others could queue behind that insert and never really race for
    // the tag.
    link(&*store, "acme/app", &blob("layer")).await;
    // A racy check-then-write loses only some races, so race several times,
    // each round for a tag of its own.
    for round in 0..RACE_ROUNDS {
        let name = format!("v{round}");
        let results = push_concurrently(&store, "acme/app", true, |i| NewManifest {
            tags: tags(&[&name]),
            ..manifest(&format!("release candidate {round}.{i}"))
        })
        .await;
        let winners: Vec<&NewManifest> = results.iter().filter(|(_, r)| r.is_ok()).map(|(m, _)| m).collect();
        assert_eq!(winners.len(), 1, "exactly one push may create the immutable tag {name}");
        for (m, result) in &results {
            if let Err(err) = result {
                assert!(matches!(err, MetaError::ImmutableTag { .. }), "unexpected error: {err:?}");
                assert!(!has_manifest(&*store, "acme/app", &m.digest).await, "a refused push stores nothing");
            }
        }
        assert_eq!(digest_of_tag(&*store, "acme/app", &name).await, Some(winners[0].digest.clone()));
    }
}

pub async fn concurrent_pushes_of_one_manifest_all_succeed(store: Arc<dyn MetaStore>) {
    let layer = blob("layer");
    link(&*store, "acme/app", &layer).await;
    let m = NewManifest { blobs: vec![layer], tags: tags(&["latest"]), ..manifest("same") };
    let tasks: Vec<_> = (0..CONCURRENT_PUSHES)
        .map(|_| {
            let (store, m) = (Arc::clone(&store), m.clone());
            tokio::spawn(async move { store.put_manifest(&repo("acme/app"), &m, true, &no_guard).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("push task panicked").expect("every push succeeds");
    }
    assert_eq!(digest_of_tag(&*store, "acme/app", "latest").await, Some(m.digest));
    assert_eq!(tag_list(&*store, "acme/app").await, Some(strings(&["latest"])));
}

pub async fn package_versions_are_tags_and_untagged_manifests(store: Arc<dyn MetaStore>) {
    let (amd64, arm64) = (manifest("amd64"), manifest("arm64"));
    put(&*store, "acme/app", &amd64).await;
    put(&*store, "acme/app", &arm64).await;
    let index = NewManifest {
        media_type: OCI_INDEX.to_owned(),
        manifests: vec![amd64.digest.clone(), arm64.digest.clone()],
        tags: tags(&["v1", "latest"]),
        pushed_by: Some("alice".into()),
        created_at: T0 + 10,
        ..manifest("index")
    };
    put(&*store, "acme/app", &index).await;
    let loose = NewManifest { created_at: T0 + 5, ..manifest("untagged") };
    put(&*store, "acme/app", &loose).await;
    put(&*store, "acme/other/deep", &NewManifest { tags: tags(&["x"]), created_at: T0 + 1, ..manifest("deep") }).await;
    put(&*store, "acme-not/app", &NewManifest { tags: tags(&["y"]), ..manifest("outside") }).await;
    put(&*store, "acmex/app", &NewManifest { tags: tags(&["z"]), ..manifest("outside too") }).await;

    let all = store.package_versions("acme", None).await.expect("versions");
    let seen: Vec<(String, String)> = all.iter().map(|v| (v.repository.to_string(), v.version.clone())).collect();
    // Newest first; the index's children are part of it, not versions of their own.
    assert_eq!(
        seen,
        vec![
            ("acme/app".to_owned(), "latest".to_owned()),
            ("acme/app".to_owned(), "v1".to_owned()),
            ("acme/app".to_owned(), loose.digest.to_string()),
            ("acme/other/deep".to_owned(), "x".to_owned()),
        ]
    );
    assert_eq!(all[0].digest, index.digest);
    assert_eq!(all[0].pushed_by.as_deref(), Some("alice"));
    assert_eq!(all[0].created_at, T0 + 10);
    let one = store.package_versions("acme", Some(&repo("acme/other/deep"))).await.expect("versions");
    assert_eq!(one.len(), 1);
    assert!(store.package_versions("nobody", None).await.expect("versions").is_empty());
}

pub async fn stats_count_what_is_stored(store: Arc<dyn MetaStore>) {
    assert_eq!(store.stats().await.expect("stats"), crate::StoreStats::default());
    let (config, layer) = (blob("config"), blob("layer"));
    link(&*store, "acme/app", &config).await;
    link(&*store, "acme/app", &layer).await;
    link(&*store, "other/app", &layer).await;
    put(&*store, "acme/app", &NewManifest { blobs: vec![config.clone(), layer.clone()], ..manifest("app") }).await;
    store.create_upload(&upload("u1", "acme/app", T0)).await.expect("create upload");
    let s = store.stats().await.expect("stats");
    assert_eq!((s.repositories, s.manifests, s.blobs, s.uploads), (2, 1, 2, 1));
    assert_eq!(s.blob_bytes, config.size + layer.size);
}
