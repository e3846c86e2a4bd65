//! Rows of the pull-through cache's records ([`berth_meta::ProxyStore`]),
//! shared by both backends.

use berth_meta::Result;
use berth_meta::proxy::{CachedRepository, TagCheck};

use crate::convert::{parse_digest, parse_repository};

/// `digest, checked_at` of an `upstream_tags` row.
#[derive(sqlx::FromRow)]
pub struct TagCheckRow {
    pub digest: String,
    pub checked_at: i64,
}

impl TagCheckRow {
    pub fn into_check(self) -> Result<TagCheck> {
        Ok(TagCheck { digest: parse_digest(&self.digest)?, checked_at: self.checked_at })
    }
}

/// `repository, upstream, last_pulled_at` of an `upstream_repositories` row.
#[derive(sqlx::FromRow)]
pub struct CachedRepositoryRow {
    pub repository: String,
    pub upstream: String,
    pub last_pulled_at: i64,
}

impl CachedRepositoryRow {
    pub fn into_repository(self) -> Result<CachedRepository> {
        Ok(CachedRepository {
            repository: parse_repository(&self.repository)?,
            upstream: self.upstream,
            last_pulled_at: self.last_pulled_at,
        })
    }
}
