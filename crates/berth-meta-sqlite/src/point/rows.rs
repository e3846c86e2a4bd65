//! The row types of `berth-meta-sql`, read from rusqlite rows by column
//! name, as sqlx's `FromRow` reads them for the other queries.

use berth_meta_sql::rows::{FactsRow, ManifestRow, TokenRow, TokenUserRow, UploadRow, UserFactsRow, UserRow};
use berth_meta_sql::scrub::BlobEntryRow;
use rusqlite::Row;

/// A row type a point read returns.
pub(crate) trait PointRow: Sized {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self>;
}

impl PointRow for ManifestRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(ManifestRow {
            digest: row.get("digest")?,
            media_type: row.get("media_type")?,
            size: row.get("size")?,
            content: row.get("content")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl PointRow for UploadRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(UploadRow {
            id: row.get("id")?,
            repository: row.get("repository")?,
            algorithm: row.get("algorithm")?,
            committed_size: row.get("committed_size")?,
            hash_state: row.get("hash_state")?,
            backend_state: row.get("backend_state")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl PointRow for BlobEntryRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(BlobEntryRow { size: row.get("size")?, damaged_at: row.get("damaged_at")?, damage: row.get("damage")? })
    }
}

impl PointRow for UserRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(UserRow {
            id: row.get("id")?,
            name: row.get("name")?,
            password_hash: row.get("password_hash")?,
            is_admin: row.get("is_admin")?,
            disabled: row.get("disabled")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl PointRow for FactsRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(FactsRow {
            facts_owner_id: row.get("facts_owner_id")?,
            facts_owner_name: row.get("facts_owner_name")?,
            facts_owner_kind: row.get("facts_owner_kind")?,
            facts_owner_public: row.get("facts_owner_public")?,
            facts_owner_created_at: row.get("facts_owner_created_at")?,
            facts_role: row.get("facts_role")?,
            facts_repository_public: row.get("facts_repository_public")?,
            facts_repository_exists: row.get("facts_repository_exists")?,
        })
    }
}

impl PointRow for UserFactsRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(UserFactsRow { user: UserRow::read(row)?, facts: FactsRow::read(row)? })
    }
}

impl PointRow for TokenRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(TokenRow {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            name: row.get("name")?,
            scopes: row.get("scopes")?,
            repositories: row.get("repositories")?,
            expires_at: row.get("expires_at")?,
            last_used_at: row.get("last_used_at")?,
            revoked_at: row.get("revoked_at")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl PointRow for TokenUserRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(TokenUserRow {
            token: TokenRow::read(row)?,
            user_name: row.get("user_name")?,
            password_hash: row.get("password_hash")?,
            is_admin: row.get("is_admin")?,
            disabled: row.get("disabled")?,
            user_created_at: row.get("user_created_at")?,
            secret_hash: row.get("secret_hash")?,
            facts: FactsRow::read(row)?,
        })
    }
}
