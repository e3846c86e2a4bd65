//! Row structs shared by both backends and their conversions into
//! `berth-meta` records. Rows are decoded by column name, so each backend's
//! SELECT lists the columns (or aliases) named here; the `*_columns!`
//! macros spell the common lists as literals for `concat!`.

use berth_meta::auth::{AccessFacts, OrgRole, OwnerKind, OwnerRecord, TokenCandidate, TokenRecord, UserRecord};
use berth_meta::protection::Holder;
use berth_meta::{ManifestRecord, MetaError, PackageVersionRecord, Referrer, Result, UploadProgress, UploadSession};
use berth_oci::Algorithm;

use crate::convert::{from_sql_int, parse_digest, parse_repository};

/// The columns of [`UploadRow`], from `uploads`.
#[macro_export]
macro_rules! upload_columns {
    () => {
        "id, repository, algorithm, committed_size, hash_state, backend_state, created_at, updated_at"
    };
}

/// The columns of [`UserRow`], from `users u JOIN owners o`.
#[macro_export]
macro_rules! user_columns {
    () => {
        "o.id, o.name, u.password_hash, u.is_admin, u.disabled, o.created_at"
    };
}

/// The columns of [`TokenRow`], from `access_tokens t`.
#[macro_export]
macro_rules! token_columns {
    () => {
        "t.id, t.user_id, t.name, t.scopes, t.repositories, t.expires_at, t.last_used_at, t.revoked_at, t.created_at"
    };
}

/// The columns of [`TokenUserRow`], from `access_tokens t JOIN owners o
/// JOIN users u` (the token's user) `LEFT JOIN owners ro` (the owner of the
/// repository named by parameter `$repo`, see [`facts_columns!`]).
#[macro_export]
macro_rules! token_user_columns {
    ($repo:literal) => {
        concat!(
            $crate::token_columns!(),
            ", o.name AS user_name, u.password_hash, u.is_admin, u.disabled, o.created_at AS user_created_at, \
             t.secret_hash, ",
            $crate::facts_columns!("t.user_id", $repo)
        )
    };
}

/// The columns of [`FactsRow`]: the access facts of user `$user` (an SQL
/// expression) on the repository named by parameter `$repo`, whose owner
/// is joined as `ro` (`LEFT JOIN owners ro ON ro.name = <owner parameter>`).
/// Both dialects spell them alike but for the parameters' placeholders.
#[macro_export]
macro_rules! facts_columns {
    ($user:literal, $repo:literal) => {
        concat!(
            "ro.id AS facts_owner_id, ro.name AS facts_owner_name, ro.kind AS facts_owner_kind, \
             ro.is_public AS facts_owner_public, ro.created_at AS facts_owner_created_at, \
             (SELECT m.role FROM org_members m WHERE m.org_id = ro.id AND m.user_id = ",
            $user,
            ") AS facts_role, (SELECT r.is_public FROM repositories r WHERE r.name = ",
            $repo,
            ") AS facts_repository_public, EXISTS (SELECT 1 FROM repositories r WHERE r.name = ",
            $repo,
            ") AS facts_repository_exists"
        )
    };
}

#[derive(sqlx::FromRow)]
pub struct UploadRow {
    pub id: String,
    pub repository: String,
    pub algorithm: String,
    pub committed_size: i64,
    pub hash_state: Vec<u8>,
    pub backend_state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UploadRow {
    pub fn into_session(self) -> Result<UploadSession> {
        let algorithm = Algorithm::parse(&self.algorithm)
            .map_err(|e| MetaError::Backend(format!("upload {} has an invalid algorithm: {e}", self.id)))?;
        Ok(UploadSession {
            repository: parse_repository(&self.repository)?,
            algorithm,
            progress: UploadProgress {
                offset: from_sql_int(self.committed_size, "upload offset")?,
                hash_state: self.hash_state,
                backend_state: self.backend_state,
                updated_at: self.updated_at,
            },
            created_at: self.created_at,
            id: self.id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    /// NULL unless the caller asked for the bytes.
    pub content: Option<Vec<u8>>,
    pub created_at: i64,
}

impl ManifestRow {
    pub fn into_record(self) -> Result<ManifestRecord> {
        Ok(ManifestRecord {
            digest: parse_digest(&self.digest)?,
            media_type: self.media_type,
            size: from_sql_int(self.size, "manifest size")?,
            content: self.content.unwrap_or_default(),
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

impl ReferrerRow {
    pub fn into_referrer(self) -> Result<Referrer> {
        Ok(Referrer {
            digest: parse_digest(&self.digest)?,
            media_type: self.media_type,
            size: from_sql_int(self.size, "manifest size")?,
            artifact_type: self.artifact_type,
            annotations: self.annotations,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: r.id,
            name: r.name,
            password_hash: r.password_hash,
            is_admin: r.is_admin,
            disabled: r.disabled,
            created_at: r.created_at,
        }
    }
}

/// A user with its access facts on one repository ([`facts_columns!`]).
#[derive(sqlx::FromRow)]
pub struct UserFactsRow {
    #[sqlx(flatten)]
    pub user: UserRow,
    #[sqlx(flatten)]
    pub facts: FactsRow,
}

impl From<UserFactsRow> for (UserRecord, AccessFacts) {
    fn from(r: UserFactsRow) -> Self {
        (r.user.into(), r.facts.into())
    }
}

#[derive(sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    /// Comma-separated.
    pub scopes: String,
    /// Newline-separated.
    pub repositories: String,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

impl From<TokenRow> for TokenRecord {
    fn from(r: TokenRow) -> Self {
        let list = |s: &str, sep: char| -> Vec<String> {
            s.split(sep).map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
        };
        TokenRecord {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            scopes: list(&r.scopes, ','),
            repositories: list(&r.repositories, '\n'),
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            created_at: r.created_at,
        }
    }
}

/// A token and the user it belongs to (whose id is the token's `user_id`).
#[derive(sqlx::FromRow)]
pub struct TokenUserRow {
    #[sqlx(flatten)]
    pub token: TokenRow,
    pub user_name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub user_created_at: i64,
    /// The token's argon2id PHC string.
    pub secret_hash: String,
    /// The user's access facts on the repository named in the lookup.
    #[sqlx(flatten)]
    pub facts: FactsRow,
}

impl TokenUserRow {
    /// The candidate, with the access facts if a repository was named.
    pub fn into_candidate(self, with_facts: bool) -> TokenCandidate {
        let user = UserRecord {
            id: self.token.user_id,
            name: self.user_name,
            password_hash: self.password_hash,
            is_admin: self.is_admin,
            disabled: self.disabled,
            created_at: self.user_created_at,
        };
        let access = with_facts.then(|| self.facts.into());
        TokenCandidate { token: self.token.into(), user, secret_hash: self.secret_hash, access }
    }
}

/// [`facts_columns!`]: access facts as extra columns of another row (the
/// owner's are NULL when it does not exist).
#[derive(sqlx::FromRow)]
pub struct FactsRow {
    pub facts_owner_id: Option<i64>,
    pub facts_owner_name: Option<String>,
    pub facts_owner_kind: Option<String>,
    pub facts_owner_public: Option<bool>,
    pub facts_owner_created_at: Option<i64>,
    pub facts_role: Option<String>,
    pub facts_repository_public: Option<bool>,
    pub facts_repository_exists: bool,
}

impl From<FactsRow> for AccessFacts {
    /// Exactly what `access_facts` returns: without an owner, nothing at all.
    fn from(r: FactsRow) -> Self {
        let (Some(id), Some(name), Some(kind), Some(is_public), Some(created_at)) =
            (r.facts_owner_id, r.facts_owner_name, r.facts_owner_kind, r.facts_owner_public, r.facts_owner_created_at)
        else {
            return AccessFacts::default();
        };
        AccessRow {
            owner: OwnerRow { id, name, kind, is_public, created_at },
            role: r.facts_role,
            repository_public: r.facts_repository_public,
            repository_exists: r.facts_repository_exists,
        }
        .into()
    }
}

#[derive(sqlx::FromRow)]
pub struct OwnerRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub is_public: bool,
    pub created_at: i64,
}

impl From<OwnerRow> for OwnerRecord {
    fn from(r: OwnerRow) -> Self {
        OwnerRecord {
            id: r.id,
            name: r.name,
            kind: if r.kind == "org" { OwnerKind::Org } else { OwnerKind::User },
            is_public: r.is_public,
            created_at: r.created_at,
        }
    }
}

/// An owner with the facts about one user and one repository.
#[derive(sqlx::FromRow)]
pub struct AccessRow {
    #[sqlx(flatten)]
    pub owner: OwnerRow,
    pub role: Option<String>,
    pub repository_public: Option<bool>,
    pub repository_exists: bool,
}

impl From<AccessRow> for AccessFacts {
    fn from(row: AccessRow) -> Self {
        AccessFacts {
            owner: Some(row.owner.into()),
            // An unknown role stored by hand grants nothing.
            role: row.role.as_deref().and_then(OrgRole::parse),
            repository_public: row.repository_public,
            repository_exists: row.repository_exists,
        }
    }
}

pub fn parse_role(role: &str) -> Result<OrgRole> {
    OrgRole::parse(role).ok_or_else(|| MetaError::Backend(format!("bad role {role:?}")))
}

/// One row of a holders query: `(repository id, manifest, tag, direct)`,
/// the manifest NULL when a linked blob has no holder at all.
pub type HolderRow = (i64, Option<String>, Option<String>, Option<bool>);

/// The repository id and the holders in `rows`; `None` if there are no rows
/// (the blob or manifest is not in the repository).
pub fn holders_from(rows: Vec<HolderRow>) -> Option<(i64, Vec<Holder>)> {
    let &(repository_id, ..) = rows.first()?;
    let holders = rows
        .into_iter()
        .filter_map(|(_, manifest, tag, direct)| {
            manifest.map(|manifest| Holder { manifest, tag, direct: direct.unwrap_or(false) })
        })
        .collect();
    Some((repository_id, holders))
}

/// A package version: a tag, or an untagged manifest (`version` = digest).
#[derive(sqlx::FromRow)]
pub struct PackageVersionRow {
    pub repository: String,
    pub version: String,
    pub digest: String,
    pub created_at: i64,
    pub pushed_by: Option<String>,
}

impl PackageVersionRow {
    pub fn into_record(self) -> Result<PackageVersionRecord> {
        Ok(PackageVersionRecord {
            repository: parse_repository(&self.repository)?,
            version: self.version,
            digest: parse_digest(&self.digest)?,
            created_at: self.created_at,
            pushed_by: self.pushed_by,
        })
    }
}
