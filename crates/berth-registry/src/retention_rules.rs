//! Where retention rules come from: the config file (`[[retention.rules]]`,
//! read-only while the server runs) and the database (added with `berth
//! retention add` or `POST /api/v1/admin/retention/rules`, removed by id).
//!
//! The effective policy is the config file's rules in file order, then the
//! stored ones by id; the first whose `repositories` matches a repository
//! governs it, as before. Every run reads it afresh from the database (the
//! server's schedule, `berth retention apply`, the API's preview), so a rule
//! added or removed while the server runs counts from the next run on, on
//! every replica, without a restart.
//!
//! A rule is validated before it is stored, with the config file's checks
//! (non-empty `repositories`, valid globs) and one more: it must limit what
//! it removes, with a `keep_last` of at least 1, a non-zero
//! `remove_older_than`, or some `remove_tags`. A rule with none of them
//! removes every tag but `latest` and its `keep_tags`, which is what a
//! forgotten flag looks like; whoever means it says `remove_tags = ["*"]`.
//! (Config rules keep their meaning: a file that loads today still loads.)
//!
//! A stored rule that no longer compiles (the table edited by hand) fails
//! the run instead of being skipped: skipping it could hand its
//! repositories to a later, broader rule.

use std::time::Duration;

use berth_meta::maintenance::{NewRetentionRule, RetentionRuleRecord};

use crate::retention::{RetentionPolicy, RetentionRule, RuleSource, check};
use crate::{Maintenance, RegistryError, Result, now_ms};

/// At most this many globs in `keep_tags`, and in `remove_tags`.
pub const MAX_GLOBS: usize = 64;
/// At most this many bytes per glob (repository names are shorter).
pub const MAX_GLOB_LEN: usize = 256;

/// A rule of the effective policy, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedRule {
    pub source: RuleSource,
    pub rule: RetentionRule,
}

/// Why a rule was not stored.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rule is refused; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Checks a rule before it is stored (see the module documentation).
pub fn validate(rule: &RetentionRule) -> std::result::Result<(), String> {
    check(rule, "retention rule")?;
    for (what, list) in [("keep_tags", &rule.keep_tags), ("remove_tags", &rule.remove_tags)] {
        if list.len() > MAX_GLOBS {
            return Err(format!("{what}: at most {MAX_GLOBS} globs"));
        }
    }
    let globs = std::iter::once(&rule.repositories).chain(&rule.keep_tags).chain(&rule.remove_tags);
    for glob in globs {
        if glob.len() > MAX_GLOB_LEN {
            return Err(format!("glob {glob:?} is longer than {MAX_GLOB_LEN} bytes"));
        }
        // Repository and tag names have no spaces: such a glob matches nothing.
        if glob.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("glob {glob:?} contains whitespace and would match nothing"));
        }
    }
    if rule.remove_older_than.is_some_and(|d| duration_ms(d).is_none()) {
        return Err("remove_older_than is too long".into());
    }
    let limited = rule.keep_last.is_some_and(|n| n > 0)
        || rule.remove_older_than.is_some_and(|d| !d.is_zero())
        || !rule.remove_tags.is_empty();
    if !limited {
        return Err("a rule must limit what it removes: give keep_last (at least 1), remove_older_than or \
                    remove_tags (remove_tags = [\"*\"] if it really is to remove every tag but latest and keep_tags)"
            .into());
    }
    Ok(())
}

fn duration_ms(d: Duration) -> Option<i64> {
    i64::try_from(d.as_millis()).ok()
}

/// A stored row as a rule of the policy.
fn from_record(r: RetentionRuleRecord) -> Result<SourcedRule> {
    let remove_older_than = r
        .remove_older_than
        .map(|ms| {
            u64::try_from(ms).map(Duration::from_millis).map_err(|_| {
                RegistryError::Internal(format!("stored retention rule {}: negative remove_older_than", r.id))
            })
        })
        .transpose()?;
    Ok(SourcedRule {
        source: RuleSource::Stored { id: r.id, created_at: r.created_at, created_by: r.created_by },
        rule: RetentionRule {
            repositories: r.repositories,
            keep_last: r.keep_last,
            keep_tags: r.keep_tags,
            remove_older_than,
            remove_tags: r.remove_tags,
        },
    })
}

impl Maintenance {
    /// Every rule, config file first, then stored by id: the order in which
    /// they are tried.
    pub async fn retention_rules(&self) -> Result<Vec<SourcedRule>> {
        let mut rules: Vec<SourcedRule> = self
            .config_rules()
            .entries()
            .map(|(source, rule)| SourcedRule { source: source.clone(), rule: rule.clone() })
            .collect();
        for record in self.store().list_retention_rules().await? {
            rules.push(from_record(record)?);
        }
        Ok(rules)
    }

    /// The effective policy, read now (see the module documentation).
    pub async fn retention_policy(&self) -> Result<RetentionPolicy> {
        let rules = self.retention_rules().await?.into_iter().map(|r| (r.source, r.rule)).collect();
        RetentionPolicy::with_sources(rules).map_err(RegistryError::Internal)
    }

    /// Validates and stores a rule; it comes after every rule there is.
    /// `created_by` is the user adding it, or `cli`.
    pub async fn add_retention_rule(
        &self,
        rule: RetentionRule,
        created_by: &str,
    ) -> std::result::Result<SourcedRule, RuleError> {
        validate(&rule).map_err(RuleError::Invalid)?;
        let new = NewRetentionRule {
            repositories: rule.repositories.clone(),
            keep_last: rule.keep_last,
            keep_tags: rule.keep_tags.clone(),
            remove_tags: rule.remove_tags.clone(),
            remove_older_than: rule.remove_older_than.and_then(duration_ms),
            created_at: now_ms(),
            created_by: created_by.to_owned(),
        };
        let id = self.store().add_retention_rule(&new).await.map_err(RegistryError::from)?;
        tracing::info!(target: "audit", event = "retention_rule_added", user = created_by, id, repositories = %rule.repositories);
        let source = RuleSource::Stored { id, created_at: new.created_at, created_by: new.created_by };
        Ok(SourcedRule { source, rule })
    }

    /// Removes the stored rule `id`; `false` if there is none (config rules
    /// have no id: they are removed from the file).
    pub async fn remove_retention_rule(&self, id: i64, removed_by: &str) -> Result<bool> {
        let removed = self.store().remove_retention_rule(id).await?;
        if removed {
            tracing::info!(target: "audit", event = "retention_rule_removed", user = removed_by, id);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repositories: &str) -> RetentionRule {
        RetentionRule { repositories: repositories.into(), ..RetentionRule::default() }
    }

    #[test]
    fn a_stored_rule_must_limit_what_it_removes() {
        let refused = validate(&rule("acme/*")).unwrap_err();
        assert!(refused.contains("must limit"), "{refused}");
        assert!(validate(&RetentionRule { keep_last: Some(0), ..rule("acme/*") }).is_err());
        assert!(validate(&RetentionRule { remove_older_than: Some(Duration::ZERO), ..rule("acme/*") }).is_err());
        assert!(validate(&RetentionRule { keep_last: Some(1), ..rule("acme/*") }).is_ok());
        assert!(validate(&RetentionRule { remove_older_than: Some(Duration::from_secs(1)), ..rule("a") }).is_ok());
        assert!(validate(&RetentionRule { remove_tags: vec!["*".into()], ..rule("acme/*") }).is_ok());
    }

    #[test]
    fn stored_rules_get_the_config_checks_and_sane_globs() {
        let limited = |r: RetentionRule| RetentionRule { keep_last: Some(3), ..r };
        assert!(validate(&limited(rule(""))).unwrap_err().contains("repositories must not be empty"));
        let bad = limited(RetentionRule { keep_tags: vec!["[".into()], ..rule("acme/*") });
        assert!(validate(&bad).unwrap_err().contains("keep_tags"));
        assert!(validate(&limited(rule(" acme/*"))).unwrap_err().contains("whitespace"));
        assert!(validate(&limited(rule(&"a".repeat(MAX_GLOB_LEN + 1)))).is_err());
        let many = limited(RetentionRule { remove_tags: vec!["x".into(); MAX_GLOBS + 1], ..rule("acme/*") });
        assert!(validate(&many).unwrap_err().contains("at most"));
        let forever = limited(RetentionRule { remove_older_than: Some(Duration::MAX), ..rule("acme/*") });
        assert!(validate(&forever).unwrap_err().contains("too long"));
    }
}
