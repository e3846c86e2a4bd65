//! The row types of `berth-meta-sql`, read from rusqlite rows by column
//! name, as sqlx's `FromRow` reads them for the other queries.

use berth_meta_sql::rows::{FactsRow, ManifestRow, TokenRow, TokenUserRow, UploadRow, UserFactsRow, UserRow};
use berth_meta_sql::scrub::BlobEntryRow;
use rusqlite::Row;
use rusqlite::types::FromSql;

/// A row type a point read returns.
pub(crate) trait PointRow: Sized {
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self>;

    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Self::read_named(&Named::new(row))
    }
}

/// A row whose columns are found by name. The names are fetched once per
/// row: rusqlite's `get("name")` asks SQLite for every column's name and
/// compares them without case on each call, which on a row of 27 columns
/// was a third of a token login's CPU.
pub(crate) struct Named<'r, 's> {
    row: &'r Row<'s>,
    names: Vec<&'r str>,
}

impl<'r, 's> Named<'r, 's> {
    fn new(row: &'r Row<'s>) -> Self {
        Named { row, names: row.as_ref().column_names() }
    }

    fn get<T: FromSql>(&self, name: &str) -> rusqlite::Result<T> {
        match self.names.iter().position(|n| *n == name) {
            Some(index) => self.row.get(index),
            None => Err(rusqlite::Error::InvalidColumnName(name.to_owned())),
        }
    }
}

impl PointRow for ManifestRow {
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
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
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
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
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
        Ok(BlobEntryRow { size: row.get("size")?, damaged_at: row.get("damaged_at")?, damage: row.get("damage")? })
    }
}

impl PointRow for UserRow {
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
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
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
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
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
        Ok(UserFactsRow { user: UserRow::read_named(row)?, facts: FactsRow::read_named(row)? })
    }
}

impl PointRow for TokenRow {
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
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
    fn read_named(row: &Named<'_, '_>) -> rusqlite::Result<Self> {
        Ok(TokenUserRow {
            token: TokenRow::read_named(row)?,
            user_name: row.get("user_name")?,
            password_hash: row.get("password_hash")?,
            is_admin: row.get("is_admin")?,
            disabled: row.get("disabled")?,
            user_created_at: row.get("user_created_at")?,
            secret_hash: row.get("secret_hash")?,
            facts: FactsRow::read_named(row)?,
        })
    }
}
