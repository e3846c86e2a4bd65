//! Postgres backend of [`berth_meta::MetaStore`].
//!
//! Several registry replicas may share one database, so unlike SQLite (one
//! in-process writer) writes here really do run concurrently. Every write
//! runs at READ COMMITTED and is made safe where it happens:
//!
//! - idempotent inserts use `ON CONFLICT`, which waits for a concurrent
//!   inserter of the same key and then sees its row;
//! - compare-and-set updates (upload offsets) and claiming deletes (upload
//!   completion) put the condition in their `WHERE`, which Postgres
//!   re-checks against the row a concurrent writer left behind;
//! - where a read decides a write (immutable tags, reference checks,
//!   manifest deletion) the rows read are locked or the write re-checks the
//!   read; each function's docs say which.
//!
//! Deadlocks and serialization failures, should they still happen, are
//! retried a few times (see `retry`).
//!
//! Each aggregate has its own module of small functions taking a pool or a
//! transaction; the trait impls at the bottom of this file only route calls.

mod auth;
mod blobs;
mod browse;
mod directory;
mod error;
mod events;
mod holders;
mod maintenance;
mod manifests;
mod packages;
mod repositories;
mod retry;
mod sessions;
mod settings;
mod tags;
mod uploads;

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_meta::auth::{
    AccessFacts, Membership, NewToken, OrgRole, OwnerKind, OwnerRecord, TokenCandidate, TokenRecord, UserRecord,
};
use berth_meta::maintenance::{
    BlobUsage, GcBlob, LeaseOutcome, LeaseRecord, NewRetentionRule, RepositoryGraph, RetentionRuleRecord, TagRecord,
};
use berth_meta::{
    AuthStore, MaintenanceStore, ManifestRecord, ManifestRef, MetaStore, NewManifest, PackageVersionRecord, Referrer,
    Result, StoreStats, TagGuard, UploadProgress, UploadSession,
};
use berth_oci::{Digest, RepositoryName, Tag};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{StoreResult, db_err};
use crate::retry::retrying;
pub use crate::settings::PostgresSettings;

pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The embedded schema migrations (`migrations/postgres` at the repository root).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The Postgres metadata store. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresMetaStore {
    pool: PgPool,
    /// For the dedicated migration connection. Holds the password, hence
    /// the hand-written `Debug`.
    migration_options: PgConnectOptions,
    /// How long opening the migration connection may take.
    acquire_timeout: Duration,
}

impl fmt::Debug for PostgresMetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresMetaStore").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl PostgresMetaStore {
    /// Opens the pool, waiting up to `acquire_timeout` for a first
    /// connection (a server that is still starting up is retried). Does not
    /// migrate: call [`PostgresMetaStore::migrate`] at start-up or from
    /// `berth migrate`.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self> {
        let options = settings.connect_options()?;
        let migration_options = settings.migration_options()?;
        let pool = settings.pool_options().connect_with(options).await.map_err(db_err)?;
        Ok(PostgresMetaStore { pool, migration_options, acquire_timeout: settings.acquire_timeout })
    }

    /// Applies pending migrations.
    ///
    /// sqlx's Postgres migrator holds `pg_advisory_lock` (keyed on the
    /// database name) from before it reads `_sqlx_migrations` until it has
    /// applied everything, so of several replicas starting together exactly
    /// one applies each migration and the others wait, then find it done.
    /// When the schema is already current that is a handful of short
    /// queries under the lock.
    ///
    /// It runs on a connection of its own (a private one-connection pool)
    /// rather than a shared pooled one: if a migration fails, sqlx returns
    /// without `pg_advisory_unlock`, and a session lock left on a shared
    /// connection would stall every later migration (of any replica) until
    /// that connection closed. Closing the private pool releases the lock
    /// whatever happened.
    pub async fn migrate(&self) -> Result<()> {
        let started = Instant::now();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(self.migration_options.clone())
            .await
            .map_err(db_err)?;
        let result = MIGRATOR.run(&pool).await.map_err(error::migrate_err);
        pool.close().await;
        tracing::debug!(elapsed = ?started.elapsed(), ok = result.is_ok(), "postgres migrations checked");
        result
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Links `digest` into `repo` if `condition` holds.
    async fn link(&self, repo: &RepositoryName, digest: &Digest, condition: blobs::LinkCondition<'_>) -> Result<bool> {
        retrying("link_blob", move || async move {
            let mut tx = self.begin().await?;
            if !blobs::link(&mut tx, repo, digest, now_ms(), condition).await? {
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Starts a write transaction. READ COMMITTED is the server default,
    /// but the locking above relies on its per-statement snapshots, so it is
    /// stated rather than left to `default_transaction_isolation`.
    async fn begin(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?)
    }
}

/// Milliseconds since the Unix epoch, for rows whose API call carries no time.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait]
impl MetaStore for PostgresMetaStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests), \
                    (SELECT COUNT(*) FROM blobs), (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs), \
                    (SELECT COUNT(*) FROM uploads)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        let n = |i: usize| -> Result<u64> { Ok(sqlx::Row::try_get::<i64, _>(&row, i).map_err(db_err)?.max(0) as u64) };
        Ok(StoreStats { repositories: n(0)?, manifests: n(1)?, blobs: n(2)?, blob_bytes: n(3)?, uploads: n(4)? })
    }

    async fn list_repositories(&self, after: Option<&str>, limit: Option<u32>) -> Result<Vec<String>> {
        repositories::list(&self.pool, after, limit).await
    }

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        repositories::exists(&self.pool, repo).await
    }

    async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        blobs::size_in(&self.pool, repo, digest).await
    }

    async fn global_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        blobs::global_size(&self.pool, digest).await
    }

    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<RepositoryName>> {
        blobs::repositories_of(&self.pool, digest, limit).await
    }

    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<Option<String>> {
        retrying("reserve_blob", move || blobs::reserve(&self.pool, digest, size, now_ms())).await
    }

    async fn link_reserved_blob(&self, repo: &RepositoryName, digest: &Digest, reservation: &str) -> Result<bool> {
        self.link(repo, digest, blobs::LinkCondition::Reserved(reservation)).await
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.link(repo, digest, blobs::LinkCondition::Linked).await
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
        retrying("unlink_blob", move || async move {
            let mut tx = self.begin().await?;
            let unlinked = blobs::unlink(&mut tx, repo, digest, guard).await?;
            tx.commit().await?;
            Ok(unlinked)
        })
        .await
    }

    async fn create_upload(&self, upload: &UploadSession) -> Result<()> {
        retrying("create_upload", move || uploads::create(&self.pool, upload)).await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>> {
        uploads::get(&self.pool, id).await
    }

    async fn update_upload(&self, id: &str, expected_offset: u64, progress: &UploadProgress) -> Result<bool> {
        retrying("update_upload", move || uploads::update(&self.pool, id, expected_offset, progress)).await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        retrying("delete_upload", move || uploads::delete(&self.pool, id)).await
    }

    async fn complete_upload(&self, id: &str, digest: &Digest, reservation: &str) -> Result<()> {
        retrying("complete_upload", move || async move {
            let mut tx = self.begin().await?;
            uploads::complete(&mut tx, id, digest, reservation, now_ms()).await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn stale_uploads(&self, before: i64, limit: u32) -> Result<Vec<UploadSession>> {
        uploads::stale(&self.pool, before, limit).await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef<'_>,
        with_content: bool,
    ) -> Result<Option<ManifestRecord>> {
        manifests::get(&self.pool, repo, reference, with_content).await
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        manifest: &NewManifest,
        check_references: bool,
        guard: TagGuard<'_>,
    ) -> Result<()> {
        retrying("put_manifest", move || async move {
            let mut tx = self.begin().await?;
            manifests::put(&mut tx, repo, manifest, check_references, guard).await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest, guard: TagGuard<'_>) -> Result<bool> {
        retrying("delete_manifest", move || async move {
            let mut tx = self.begin().await?;
            let deleted = manifests::delete(&mut tx, repo, digest, guard).await?;
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag, guard: TagGuard<'_>) -> Result<bool> {
        retrying("delete_tag", move || tags::delete(&self.pool, repo, tag, guard)).await
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Vec<String>>> {
        tags::list(&self.pool, repo, after, limit).await
    }

    async fn package_versions(
        &self,
        owner: &str,
        repository: Option<&RepositoryName>,
    ) -> Result<Vec<PackageVersionRecord>> {
        packages::versions(&self.pool, owner, repository).await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        manifests::referrers(&self.pool, repo, subject, artifact_type).await
    }
}

#[async_trait]
impl MaintenanceStore for PostgresMetaStore {
    async fn acquire_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<LeaseOutcome> {
        retrying("acquire_lease", move || maintenance::acquire_lease(&self.pool, name, holder, now, ttl_ms)).await
    }

    async fn renew_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        retrying("renew_lease", move || maintenance::renew_lease(&self.pool, name, holder, now, ttl_ms)).await
    }

    async fn release_lease(&self, name: &str, holder: &str, finished_at: Option<i64>) -> Result<bool> {
        retrying("release_lease", move || maintenance::release_lease(&self.pool, name, holder, finished_at)).await
    }

    async fn get_lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        maintenance::get_lease(&self.pool, name).await
    }

    async fn repository_graph(&self, repo: &RepositoryName) -> Result<RepositoryGraph> {
        maintenance::repository_graph(&self.pool, repo).await
    }

    async fn unlinked_blobs(&self, cutoff: i64, after: Option<&Digest>, limit: u32) -> Result<Vec<GcBlob>> {
        maintenance::unlinked_blobs(&self.pool, cutoff, after, limit).await
    }

    async fn deleting_blobs(&self, marked_before: i64, limit: u32) -> Result<Vec<GcBlob>> {
        maintenance::deleting_blobs(&self.pool, marked_before, limit).await
    }

    async fn blob_usage(&self, digests: &[Digest]) -> Result<Vec<BlobUsage>> {
        maintenance::blob_usage(&self.pool, digests).await
    }

    async fn known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        maintenance::known_blobs(&self.pool, digests).await
    }

    async fn gc_delete_manifest(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        retrying("gc_delete_manifest", move || async move {
            let mut tx = self.begin().await?;
            let deleted = maintenance::delete_manifest(&mut tx, repo, digest, cutoff).await?;
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }

    async fn gc_unlink_blob(&self, repo: &RepositoryName, digest: &Digest, cutoff: i64) -> Result<bool> {
        retrying("gc_unlink_blob", move || async move {
            let mut tx = self.begin().await?;
            let unlinked = maintenance::unlink_blob(&mut tx, repo, digest, cutoff).await?;
            tx.commit().await?;
            Ok(unlinked)
        })
        .await
    }

    async fn gc_mark_blob(&self, digest: &Digest, cutoff: i64) -> Result<Option<u64>> {
        retrying("gc_mark_blob", move || async move {
            let mut tx = self.begin().await?;
            let marked = maintenance::mark_blob(&mut tx, digest, cutoff).await?;
            tx.commit().await?;
            Ok(marked)
        })
        .await
    }

    async fn gc_mark_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool> {
        retrying("gc_mark_orphan", move || maintenance::mark_orphan(&self.pool, digest, size, now)).await
    }

    async fn gc_forget_blob(&self, digest: &Digest) -> Result<bool> {
        retrying("gc_forget_blob", move || maintenance::forget_blob(&self.pool, digest)).await
    }

    async fn repository_tags(&self, repo: &RepositoryName) -> Result<Vec<TagRecord>> {
        maintenance::repository_tags(&self.pool, repo).await
    }

    async fn delete_tag_if_unchanged(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool> {
        retrying("delete_tag_if_unchanged", move || {
            maintenance::delete_tag_if_unchanged(&self.pool, repo, tag, digest, updated_at)
        })
        .await
    }

    async fn list_retention_rules(&self) -> Result<Vec<RetentionRuleRecord>> {
        maintenance::list_retention_rules(&self.pool).await
    }

    async fn add_retention_rule(&self, rule: &NewRetentionRule) -> Result<i64> {
        retrying("add_retention_rule", move || maintenance::add_retention_rule(&self.pool, rule)).await
    }

    async fn remove_retention_rule(&self, id: i64) -> Result<bool> {
        retrying("remove_retention_rule", move || maintenance::remove_retention_rule(&self.pool, id)).await
    }

    async fn expire_upload(&self, id: &str, before: i64) -> Result<bool> {
        retrying("expire_upload", move || maintenance::expire_upload(&self.pool, id, before)).await
    }
}

#[async_trait]
impl AuthStore for PostgresMetaStore {
    async fn create_user(&self, name: &str, password_hash: Option<&str>, is_admin: bool, now: i64) -> Result<i64> {
        retrying("create_user", move || {
            auth::create_owner(&self.pool, name, OwnerKind::User, Some((password_hash, is_admin)), now)
        })
        .await
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        auth::user_by_name(&self.pool, name).await
    }

    async fn get_user_by_id(&self, id: i64) -> Result<Option<UserRecord>> {
        auth::user_by_id(&self.pool, id).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        auth::list_users(&self.pool).await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        retrying("set_user_disabled", move || auth::set_disabled(&self.pool, name, disabled)).await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        retrying("set_user_password", move || auth::set_password(&self.pool, name, password_hash)).await
    }

    async fn create_org(&self, name: &str, now: i64) -> Result<i64> {
        retrying("create_org", move || auth::create_owner(&self.pool, name, OwnerKind::Org, None, now)).await
    }

    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> Result<()> {
        retrying("set_org_member", move || auth::set_member(&self.pool, org, user, Some(role))).await.map(|_| ())
    }

    async fn remove_org_member(&self, org: &str, user: &str) -> Result<bool> {
        retrying("remove_org_member", move || auth::set_member(&self.pool, org, user, None)).await
    }

    async fn list_org_members(&self, org: &str) -> Result<Vec<Membership>> {
        auth::members(&self.pool, org).await
    }

    async fn get_owner(&self, name: &str) -> Result<Option<OwnerRecord>> {
        auth::owner(&self.pool, name).await
    }

    async fn set_owner_public(&self, name: &str, public: bool) -> Result<bool> {
        retrying("set_owner_public", move || auth::set_owner_public(&self.pool, name, public)).await
    }

    async fn set_repository_public(&self, repo: &RepositoryName, public: Option<bool>, now: i64) -> Result<()> {
        retrying("set_repository_public", move || auth::set_repository_public(&self.pool, repo, public, now)).await
    }

    async fn access_facts(&self, repo: &RepositoryName, user: Option<i64>) -> Result<AccessFacts> {
        auth::access_facts(&self.pool, repo, user).await
    }

    async fn readable_repositories(
        &self,
        user: Option<&UserRecord>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        auth::readable_repositories(&self.pool, user, after, limit).await
    }

    async fn create_token(&self, token: &NewToken) -> Result<i64> {
        retrying("create_token", move || auth::create_token(&self.pool, token)).await
    }

    async fn tokens_by_lookup_key(&self, lookup_key: &[u8]) -> Result<Vec<TokenCandidate>> {
        auth::tokens_by_lookup_key(&self.pool, lookup_key).await
    }

    async fn get_token(&self, id: i64) -> Result<Option<TokenRecord>> {
        auth::token(&self.pool, id).await
    }

    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        auth::list_tokens(&self.pool, user).await
    }

    async fn revoke_token(&self, id: i64, now: i64) -> Result<bool> {
        retrying("revoke_token", move || auth::revoke_token(&self.pool, id, now)).await
    }

    async fn touch_token(&self, id: i64, now: i64) -> Result<()> {
        retrying("touch_token", move || auth::touch_token(&self.pool, id, now)).await
    }
}
