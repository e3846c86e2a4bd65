//! Rows of the usage tables and the recount's comparison, shared by both
//! backends (their SQL reads the same columns; see `0009_usage_quotas.sql`).

use std::collections::BTreeMap;

use berth_meta::{OwnerQuota, OwnerUsage, QuotaLimits, RepositoryUsage, Result, UsageDrift};

use crate::convert::{count, parse_repository, to_sql_int};

/// The columns of [`UsageRow`], from `owner_usage` or `owner_usage_actual`.
#[macro_export]
macro_rules! usage_columns {
    () => {
        "owner, bytes, repositories, manifests, tags"
    };
}

/// Replaces the stored usage with the recount of the `*_actual` views (the
/// same SQL in both dialects); run inside the recount's transaction.
pub const REBUILD_USAGE: &str = "DELETE FROM owner_blobs; \
    INSERT INTO owner_blobs (owner, digest, size, links) \
      SELECT owner, digest, size, links FROM owner_blobs_actual; \
    DELETE FROM owner_usage; \
    INSERT INTO owner_usage (owner, bytes, repositories, manifests, tags) \
      SELECT owner, bytes, repositories, manifests, tags FROM owner_usage_actual";

#[derive(sqlx::FromRow, Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    pub owner: String,
    pub bytes: i64,
    pub repositories: i64,
    pub manifests: i64,
    pub tags: i64,
}

impl From<UsageRow> for OwnerUsage {
    fn from(r: UsageRow) -> Self {
        OwnerUsage {
            owner: r.owner,
            bytes: count(r.bytes),
            repositories: count(r.repositories),
            manifests: count(r.manifests),
            tags: count(r.tags),
        }
    }
}

/// [`UsageRow`] plus the owner's own limits, if it has a `quotas` row.
#[derive(sqlx::FromRow)]
pub struct UsageQuotaRow {
    #[sqlx(flatten)]
    pub usage: UsageRow,
    pub has_quota: bool,
    pub quota_bytes: Option<i64>,
    pub quota_repositories: Option<i64>,
}

impl UsageQuotaRow {
    pub fn split(self) -> (OwnerUsage, Option<QuotaLimits>) {
        let own = self.has_quota.then(|| QuotaLimits {
            bytes: self.quota_bytes.map(count),
            repositories: self.quota_repositories.map(count),
        });
        (OwnerUsage::from(self.usage), own)
    }
}

#[derive(sqlx::FromRow)]
pub struct RepositoryUsageRow {
    pub repository: String,
    pub bytes: i64,
    pub manifests: i64,
    pub tags: i64,
}

impl RepositoryUsageRow {
    pub fn into_usage(self) -> Result<RepositoryUsage> {
        Ok(RepositoryUsage {
            repository: parse_repository(&self.repository)?,
            bytes: count(self.bytes),
            manifests: count(self.manifests),
            tags: count(self.tags),
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct QuotaRow {
    pub owner: String,
    pub bytes: Option<i64>,
    pub repositories: Option<i64>,
}

impl From<QuotaRow> for OwnerQuota {
    fn from(r: QuotaRow) -> Self {
        OwnerQuota {
            owner: r.owner,
            limits: QuotaLimits { bytes: r.bytes.map(count), repositories: r.repositories.map(count) },
        }
    }
}

/// Limits as SQL values (bytes, repositories).
pub fn limits_to_sql(limits: QuotaLimits) -> Result<(Option<i64>, Option<i64>)> {
    Ok((
        limits.bytes.map(|b| to_sql_int(b, "quota bytes")).transpose()?,
        limits.repositories.map(|r| to_sql_int(r, "quota repositories")).transpose()?,
    ))
}

/// Every figure that differs between the stored usage and the recount, by
/// owner then field. An owner missing on one side counts as all zeros.
pub fn drift(stored: Vec<UsageRow>, actual: Vec<UsageRow>) -> Vec<UsageDrift> {
    let mut owners: BTreeMap<String, (UsageRow, UsageRow)> = BTreeMap::new();
    for row in stored {
        let owner = row.owner.clone();
        owners.entry(owner).or_default().0 = row;
    }
    for row in actual {
        let owner = row.owner.clone();
        owners.entry(owner).or_default().1 = row;
    }
    let mut drifts = Vec::new();
    for (owner, (s, a)) in owners {
        for (field, stored, actual) in [
            ("bytes", s.bytes, a.bytes),
            ("repositories", s.repositories, a.repositories),
            ("manifests", s.manifests, a.manifests),
            ("tags", s.tags, a.tags),
        ] {
            if stored != actual {
                drifts.push(UsageDrift { owner: owner.clone(), field, stored, actual });
            }
        }
    }
    drifts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(owner: &str, bytes: i64, tags: i64) -> UsageRow {
        UsageRow { owner: owner.into(), bytes, repositories: 1, manifests: 0, tags }
    }

    #[test]
    fn drift_names_each_differing_field_and_missing_owners() {
        let stored = vec![row("a", 10, 1), row("b", 5, 0), UsageRow { owner: "z".into(), ..UsageRow::default() }];
        let actual = vec![row("a", 12, 1), row("c", 7, 2)];
        let d = drift(stored, actual);
        let got: Vec<(&str, &str, i64, i64)> =
            d.iter().map(|d| (d.owner.as_str(), d.field, d.stored, d.actual)).collect();
        assert_eq!(
            got,
            vec![
                ("a", "bytes", 10, 12),
                ("b", "bytes", 5, 0),
                ("b", "repositories", 1, 0),
                ("c", "bytes", 0, 7),
                ("c", "repositories", 0, 1),
                ("c", "tags", 0, 2),
            ]
        );
    }
}
