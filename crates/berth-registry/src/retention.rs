//! Retention rules: which tags to remove, repository by repository.
//!
//! The rules come from the config file and from the database, config rules
//! first ([`crate::retention_rules`] builds that effective policy). The
//! first rule whose `repositories` glob matches a repository governs it
//! (`*` crosses `/`). A tag is removed iff, under that rule, it is not
//! `latest`, does not match `keep_tags`, is not among the `keep_last` newest
//! (by the time a push last set it), matches `remove_tags` (if given), is
//! older than `remove_older_than` (if given), its manifest is not referenced
//! by an index in the repository, and no immutability rule protects it
//! (those are skipped and counted). Cosign-style tags
//! (`sha256-<hex>.sig`, `.att`, `.sbom`) are not ranked by `keep_last`: they
//! are kept while their subject `sha256:<hex>` is still tagged after the
//! run, and otherwise follow the other conditions.
//!
//! In a repository cached from an upstream registry ([`crate::proxy`]) a
//! tag's age is the time since it was last pulled: the later of its
//! repository's last pull and the tag's last fetch. So `remove_older_than`
//! on an upstream namespace means "not pulled for that long", and `latest`
//! is not kept specially there (the upstream still has it).
//!
//! Removing tags only removes tags; the manifests they leave untagged, and
//! then their blobs, are garbage collection's ([`crate::gc`]). Each removal
//! is conditional: a tag pushed again since it was read stays.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use berth_meta::maintenance::TagRecord;
use berth_oci::{Digest, RepositoryName};

use crate::immutability::ImmutableTags;
use crate::maintenance::{Lease, Maintenance, ensure_held};
use crate::{RegistryError, Result, now_ms};

/// One rule: what it keeps and what it may remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRule {
    /// Glob over repository names.
    pub repositories: String,
    /// Keep this many most recently pushed tags.
    pub keep_last: Option<u32>,
    /// Globs of tags always kept.
    pub keep_tags: Vec<String>,
    /// Only tags older than this may be removed.
    pub remove_older_than: Option<Duration>,
    /// Only tags matching one of these globs may be removed (empty: any).
    pub remove_tags: Vec<String>,
}

/// Where a rule of the policy comes from (see [`crate::retention_rules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// `[[retention.rules]]` of the config file, at this 1-based position;
    /// read-only while the server runs.
    Config { position: usize },
    /// Added with `berth retention add` or through the API, and stored.
    Stored { id: i64, created_at: i64, created_by: String },
}

impl std::fmt::Display for RuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleSource::Config { position } => write!(f, "config rule {position}"),
            RuleSource::Stored { id, .. } => write!(f, "stored rule {id}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    source: RuleSource,
    rule: RetentionRule,
    repositories: glob::Pattern,
    keep_tags: Vec<glob::Pattern>,
    remove_tags: Vec<glob::Pattern>,
}

/// Rules, validated, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    rules: Vec<Compiled>,
}

const MATCH: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: false, require_literal_leading_dot: false };

fn patterns(list: &[String], what: &str, label: &str) -> std::result::Result<Vec<glob::Pattern>, String> {
    list.iter().map(|p| glob::Pattern::new(p).map_err(|e| format!("{label}: {what} {p:?}: {e}"))).collect()
}

type Globs = (glob::Pattern, Vec<glob::Pattern>, Vec<glob::Pattern>);

/// The rule's globs, compiled; `label` names the rule in errors.
fn globs(rule: &RetentionRule, label: &str) -> std::result::Result<Globs, String> {
    if rule.repositories.is_empty() {
        return Err(format!("{label}: repositories must not be empty"));
    }
    let repositories = patterns(std::slice::from_ref(&rule.repositories), "repositories", label)?.remove(0);
    Ok((
        repositories,
        patterns(&rule.keep_tags, "keep_tags", label)?,
        patterns(&rule.remove_tags, "remove_tags", label)?,
    ))
}

fn compile(source: RuleSource, rule: RetentionRule) -> std::result::Result<Compiled, String> {
    let (repositories, keep_tags, remove_tags) = globs(&rule, &source.to_string())?;
    Ok(Compiled { source, rule, repositories, keep_tags, remove_tags })
}

/// Checks a rule as [`RetentionPolicy::new`] does; `label` names it in errors.
pub(crate) fn check(rule: &RetentionRule, label: &str) -> std::result::Result<(), String> {
    globs(rule, label).map(|_| ())
}

impl RetentionPolicy {
    /// The config file's rules, in file order.
    pub fn new(rules: Vec<RetentionRule>) -> std::result::Result<Self, String> {
        RetentionPolicy::with_sources(
            rules.into_iter().enumerate().map(|(i, rule)| (RuleSource::Config { position: i + 1 }, rule)).collect(),
        )
    }

    /// Rules from anywhere, tried in the order given.
    pub fn with_sources(rules: Vec<(RuleSource, RetentionRule)>) -> std::result::Result<Self, String> {
        let rules = rules
            .into_iter()
            .map(|(source, rule)| compile(source, rule))
            .collect::<std::result::Result<_, String>>()?;
        Ok(RetentionPolicy { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> impl Iterator<Item = &RetentionRule> {
        self.rules.iter().map(|c| &c.rule)
    }

    /// The rules with where each comes from, in the order they are tried.
    pub fn entries(&self) -> impl Iterator<Item = (&RuleSource, &RetentionRule)> {
        self.rules.iter().map(|c| (&c.source, &c.rule))
    }

    /// The rule governing `repo` and its position (0-based), if any.
    pub fn rule_for(&self, repo: &RepositoryName) -> Option<(usize, &RetentionRule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, c)| c.repositories.matches_with(repo.as_str(), MATCH))
            .map(|(i, c)| (i, &c.rule))
    }
}

/// A tag removed (or, in a dry run, to be removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedTag {
    pub tag: String,
    pub digest: Digest,
    pub updated_at: i64,
}

/// What a rule did to one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRetention {
    pub repository: RepositoryName,
    /// 0-based position of the governing rule in the policy.
    pub rule: usize,
    /// Where the governing rule comes from.
    pub source: RuleSource,
    pub removed: Vec<RemovedTag>,
    pub kept: u64,
    /// Tags the rule would remove but an immutability rule protects.
    pub immutable: Vec<String>,
    /// Planned removals skipped because the tag was pushed again meanwhile.
    pub changed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// Repositories with at least one tag under a rule.
    pub repositories: Vec<RepositoryRetention>,
    pub elapsed: Duration,
}

impl RetentionReport {
    pub fn removed(&self) -> u64 {
        self.repositories.iter().map(|r| r.removed.len() as u64).sum()
    }

    pub fn kept(&self) -> u64 {
        self.repositories.iter().map(|r| r.kept).sum()
    }

    pub fn immutable(&self) -> u64 {
        self.repositories.iter().map(|r| r.immutable.len() as u64).sum()
    }
}

/// `sha256:<hex>` for a cosign-style tag `sha256-<hex>.sig|.att|.sbom`.
fn cosign_subject(tag: &str) -> Option<Digest> {
    let (stem, suffix) = tag.rsplit_once('.')?;
    if !matches!(suffix, "sig" | "att" | "sbom") {
        return None;
    }
    let (algorithm, hex) = stem.split_once('-')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

/// What a repository's tag ages are measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ages {
    /// The last push that set each tag.
    Pushed,
    /// A cached repository: its last pull (ms; 0 if none was recorded).
    Pulled(i64),
}

/// The removal decisions for one repository's tags.
struct Decision<'a> {
    remove: Vec<&'a TagRecord>,
    kept: u64,
    immutable: Vec<String>,
}

fn decide<'a>(
    rule: &Compiled,
    repo: &RepositoryName,
    tags: &'a [TagRecord],
    now: i64,
    immutable: &ImmutableTags,
    ages: Ages,
) -> Decision<'a> {
    let r = &rule.rule;
    let governed = |t: &TagRecord| {
        let name = t.name.as_str();
        (name != "latest" || ages != Ages::Pushed)
            && !rule.keep_tags.iter().any(|p| p.matches_with(name, MATCH))
            && (rule.remove_tags.is_empty() || rule.remove_tags.iter().any(|p| p.matches_with(name, MATCH)))
    };
    let last_used = |t: &TagRecord| match ages {
        Ages::Pushed => t.updated_at,
        Ages::Pulled(pulled) => t.updated_at.max(pulled),
    };
    let old_enough = |t: &TagRecord| {
        r.remove_older_than
            .is_none_or(|age| last_used(t) < now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
    };
    // Newest first; ties by name for a stable answer.
    let mut ranked: Vec<&TagRecord> =
        tags.iter().filter(|t| governed(t) && cosign_subject(t.name.as_str()).is_none()).collect();
    ranked.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.name.as_str().cmp(b.name.as_str())));
    let keep = r.keep_last.map_or(0, |n| n as usize);
    let mut candidates: Vec<&TagRecord> = ranked.into_iter().skip(keep).collect();
    candidates.extend(tags.iter().filter(|t| governed(t) && cosign_subject(t.name.as_str()).is_some()));

    let mut remove: Vec<&TagRecord> = Vec::new();
    let mut protected = Vec::new();
    for t in candidates {
        if !old_enough(t) || t.in_index {
            continue;
        }
        if immutable.rule_for(repo, t.name.as_str()).is_some() {
            protected.push(t.name.to_string());
            continue;
        }
        remove.push(t);
    }
    // Signatures and attestations stay while their subject stays tagged;
    // keeping one keeps its own digest tagged, hence the loop.
    loop {
        let removing: HashSet<&str> = remove.iter().map(|t| t.name.as_str()).collect();
        let still_tagged: HashSet<&Digest> =
            tags.iter().filter(|t| !removing.contains(t.name.as_str())).map(|t| &t.digest).collect();
        let before = remove.len();
        remove.retain(|t| cosign_subject(t.name.as_str()).is_none_or(|s| !still_tagged.contains(&s)));
        if remove.len() == before {
            break;
        }
    }
    remove.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then_with(|| a.name.as_str().cmp(b.name.as_str())));
    let kept = (tags.len() - remove.len() - protected.len()) as u64;
    Decision { remove, kept, immutable: protected }
}

impl Maintenance {
    /// Applies `policy` to every repository (or, with `dry_run`, reports
    /// what it would remove). Hold the [`RETENTION_LEASE`] when a scheduler
    /// or another process may run it too.
    ///
    /// [`RETENTION_LEASE`]: crate::maintenance::RETENTION_LEASE
    pub async fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
        lease: Option<&Lease>,
    ) -> Result<RetentionReport> {
        let started = Instant::now();
        let mut report = RetentionReport { dry_run, ..RetentionReport::default() };
        let now = now_ms();
        let immutable = &self.registry().policy().immutable_tags;
        let mut after: Option<String> = None;
        while !policy.is_empty() {
            let page = self.meta().list_repositories(after.as_deref(), Some(500)).await?;
            for name in &page {
                ensure_held(lease)?;
                let repo = RepositoryName::parse(name)
                    .map_err(|e| RegistryError::Internal(format!("stored repository name {name:?}: {e}")))?;
                let Some((index, _)) = policy.rule_for(&repo) else { continue };
                let tags = self.store().repository_tags(&repo).await?;
                if tags.is_empty() {
                    continue;
                }
                let ages = if self.registry().is_cached_repository(&repo) {
                    Ages::Pulled(self.registry().last_pulled(&repo).await?.unwrap_or(0))
                } else {
                    Ages::Pushed
                };
                let decision = decide(&policy.rules[index], &repo, &tags, now, immutable, ages);
                let mut outcome = RepositoryRetention {
                    repository: repo.clone(),
                    rule: index,
                    source: policy.rules[index].source.clone(),
                    removed: Vec::new(),
                    kept: decision.kept,
                    immutable: decision.immutable,
                    changed: 0,
                };
                for t in decision.remove {
                    let removed = dry_run
                        || self.store().delete_tag_if_unchanged(&repo, &t.name, &t.digest, t.updated_at).await?;
                    if removed && !dry_run {
                        self.registry()
                            .emit(vec![crate::webhooks::Event {
                                kind: crate::webhooks::EventKind::Delete,
                                repository: repo.to_string(),
                                tag: Some(t.name.to_string()),
                                digest: Some(t.digest.to_string()),
                                media_type: None,
                                size: None,
                                tags: Vec::new(),
                                actor: Some("retention".into()),
                                message: None,
                            }])
                            .await;
                    }
                    if removed {
                        outcome.removed.push(RemovedTag {
                            tag: t.name.to_string(),
                            digest: t.digest.clone(),
                            updated_at: t.updated_at,
                        });
                    } else {
                        outcome.changed += 1;
                        outcome.kept += 1;
                    }
                }
                report.repositories.push(outcome);
            }
            if page.len() < 500 {
                break;
            }
            after = page.last().cloned();
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            dry_run,
            repositories = report.repositories.len(),
            removed = report.removed(),
            kept = report.kept(),
            immutable = report.immutable(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "retention run finished"
        );
        if !dry_run {
            let m = berth_metrics::metrics();
            m.retention_runs.inc();
            m.retention_deletions.inc_by(report.removed());
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use berth_oci::Tag;

    use super::*;

    /// A tag of one manifest, last pushed (or pulled) at `at`.
    fn t(name: &str, at: i64) -> TagRecord {
        TagRecord { name: Tag::parse(name).unwrap(), digest: Digest::sha256_of(b"m"), updated_at: at, in_index: false }
    }

    #[test]
    fn cosign_tags_name_their_subject() {
        let hex = "a".repeat(64);
        assert_eq!(
            cosign_subject(&format!("sha256-{hex}.sig")),
            Some(Digest::parse(&format!("sha256:{hex}")).unwrap())
        );
        assert!(cosign_subject(&format!("sha256-{hex}.att")).is_some());
        assert!(cosign_subject(&format!("sha256-{hex}.sbom")).is_some());
        assert_eq!(cosign_subject(&format!("sha256-{hex}.txt")), None);
        assert_eq!(cosign_subject("v1.sig"), None);
        assert_eq!(cosign_subject("sha256-abc.sig"), None);
    }

    #[test]
    fn first_matching_rule_governs_and_globs_cross_slashes() {
        let policy = RetentionPolicy::new(vec![
            RetentionRule { repositories: "acme/special".into(), keep_last: Some(1), ..Default::default() },
            RetentionRule { repositories: "acme/*".into(), keep_last: Some(5), ..Default::default() },
        ])
        .unwrap();
        let repo = |s: &str| RepositoryName::parse(s).unwrap();
        assert_eq!(policy.rule_for(&repo("acme/special")).map(|(i, _)| i), Some(0));
        assert_eq!(policy.rule_for(&repo("acme/deep/app")).map(|(i, _)| i), Some(1));
        assert_eq!(policy.rule_for(&repo("other/app")), None);
        assert!(RetentionPolicy::new(vec![RetentionRule::default()]).is_err());
        let bad = RetentionRule { repositories: "*".into(), keep_tags: vec!["[".into()], ..Default::default() };
        assert!(RetentionPolicy::new(vec![bad]).unwrap_err().contains("keep_tags"));
    }

    #[test]
    fn age_and_tag_filters_limit_removals() {
        let policy = RetentionPolicy::new(vec![RetentionRule {
            repositories: "*".into(),
            keep_tags: vec!["release-*".into()],
            remove_tags: vec!["pr-*".into(), "release-*".into()],
            remove_older_than: Some(Duration::from_millis(100)),
            ..Default::default()
        }])
        .unwrap();
        let tags = vec![t("pr-1", 0), t("pr-2", 950), t("main", 0), t("release-1", 0), t("latest", 0)];
        let repo = RepositoryName::parse("a/b").unwrap();
        let decision = decide(&policy.rules[0], &repo, &tags, 1_000, &ImmutableTags::default(), Ages::Pushed);
        let removed: Vec<&str> = decision.remove.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(removed, vec!["pr-1"]);
        assert_eq!(decision.kept, 4);
    }

    #[test]
    fn cached_tags_age_from_their_last_pull_and_latest_may_go() {
        let policy = RetentionPolicy::new(vec![RetentionRule {
            repositories: "hub/*".into(),
            remove_older_than: Some(Duration::from_millis(100)),
            ..Default::default()
        }])
        .unwrap();
        let tags = vec![t("latest", 0), t("3.20", 0), t("3.21", 950)];
        let repo = RepositoryName::parse("hub/library/alpine").unwrap();
        let removed = |ages| {
            let decision = decide(&policy.rules[0], &repo, &tags, 1_000, &ImmutableTags::default(), ages);
            decision.remove.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
        };
        // Not pulled since they were fetched: the old ones go, latest too.
        assert_eq!(removed(Ages::Pulled(0)), vec!["3.20", "latest"]);
        // Pulled recently: everything stays.
        assert_eq!(removed(Ages::Pulled(990)), Vec::<String>::new());
        // Pushed repositories keep latest.
        assert_eq!(removed(Ages::Pushed), vec!["3.20"]);
    }
}
