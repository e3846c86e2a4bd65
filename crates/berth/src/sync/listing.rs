//! Which repositories to copy, and what they are called here.
//!
//! The source is asked through `/v2/_catalog` first (Gitea and most
//! registries serve it). Where that is refused (401, 403 or 404), Gitea's
//! package API lists each owner's container packages: the owners named by
//! the `--repository` globs when each starts with a literal owner
//! (`admin/*`), otherwise the signed-in user and its organizations. Globs
//! that name one repository exactly need no listing at all.

use std::collections::{BTreeMap, BTreeSet};

use berth_oci::RepositoryName;
use berth_upstream::{UpstreamClient, UpstreamError};

use super::copy::retry;

/// A repository at the source and the name it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub source: RepositoryName,
    pub target: RepositoryName,
}

/// The `--repository` globs (`*` crosses `/`); none means every repository.
pub struct Filter {
    globs: Vec<(String, glob::Pattern)>,
}

fn is_literal(s: &str) -> bool {
    !s.contains(['*', '?', '['])
}

impl Filter {
    pub fn new(globs: &[String]) -> Result<Filter, String> {
        let globs = globs
            .iter()
            .map(|g| glob::Pattern::new(g).map(|p| (g.clone(), p)).map_err(|e| format!("--repository {g:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Filter { globs })
    }

    pub fn matches(&self, repo: &RepositoryName) -> bool {
        self.globs.is_empty() || self.globs.iter().any(|(_, g)| g.matches(repo.as_str()))
    }

    /// Every glob names one repository exactly: those, with no listing.
    fn exact(&self) -> Option<Vec<RepositoryName>> {
        if self.globs.is_empty() || !self.globs.iter().all(|(g, _)| is_literal(g)) {
            return None;
        }
        self.globs.iter().map(|(g, _)| RepositoryName::parse(g).ok()).collect()
    }

    /// The owners the globs are limited to, when every glob starts with a
    /// literal owner (`admin/*`, `acme/team/*`); `None` otherwise.
    fn owners(&self) -> Option<BTreeSet<String>> {
        if self.globs.is_empty() {
            return None;
        }
        self.globs
            .iter()
            .map(|(g, _)| g.split_once('/').map(|(o, _)| o).filter(|o| !o.is_empty() && is_literal(o)))
            .map(|o| o.map(str::to_owned))
            .collect()
    }
}

/// How the repositories were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// Every `--repository` named one exactly.
    Named,
    Catalog,
    /// Gitea's package API, for these owners.
    GiteaPackages(Vec<String>),
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listed::Named => f.write_str("named on the command line"),
            Listed::Catalog => f.write_str("listed by /v2/_catalog"),
            Listed::GiteaPackages(owners) => write!(f, "listed by Gitea's package API for {}", owners.join(", ")),
        }
    }
}

/// The repositories to copy, and how they were found.
pub async fn list(client: &UpstreamClient, filter: &Filter) -> Result<(Vec<RepositoryName>, Listed), String> {
    if let Some(exact) = filter.exact() {
        return Ok((exact, Listed::Named));
    }
    let catalog = match retry(|| client.catalog()).await {
        Ok(all) => {
            let chosen = all.into_iter().filter(|r| filter.matches(r)).collect();
            return Ok((chosen, Listed::Catalog));
        }
        Err(e) if refused(&e) => e,
        Err(e) => return Err(format!("listing the source's repositories: {e}")),
    };
    tracing::info!(error = %catalog, "the source refused /v2/_catalog; listing through Gitea's package API");
    let owners = match filter.owners() {
        Some(owners) => owners,
        None => gitea_owners(client).await.map_err(|e| {
            format!(
                "the source refused /v2/_catalog ({catalog}), and Gitea's API did not name the owners to list ({e}); \
                 name them with --repository OWNER/*"
            )
        })?,
    };
    let mut chosen = BTreeSet::new();
    for owner in &owners {
        let repos = retry(|| client.gitea_container_repositories(owner))
            .await
            .map_err(|e| format!("the source refused /v2/_catalog ({catalog}); Gitea's package API: {e}"))?;
        chosen.extend(repos.into_iter().filter(|r| filter.matches(r)));
    }
    Ok((chosen.into_iter().collect(), Listed::GiteaPackages(owners.into_iter().collect())))
}

/// The answers that mean "not for you" rather than "try again".
fn refused(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Unauthorized { .. } | UpstreamError::Denied { .. } | UpstreamError::NotFound { .. })
}

/// The signed-in user and its organizations.
async fn gitea_owners(client: &UpstreamClient) -> Result<BTreeSet<String>, UpstreamError> {
    let mut owners = BTreeSet::new();
    owners.insert(retry(|| client.gitea_user()).await?);
    owners.extend(retry(|| client.gitea_orgs()).await?);
    Ok(owners)
}

/// Each repository with its name here: with `to`, the owner (first
/// component) replaced, or put in front of a one-component name (`alpine`
/// from a plain registry becomes `OWNER/alpine`). Two sources that would
/// land on one name are refused.
pub fn rename(repos: Vec<RepositoryName>, to: Option<&str>) -> Result<Vec<Pair>, String> {
    let mut seen: BTreeMap<RepositoryName, RepositoryName> = BTreeMap::new();
    let mut out = Vec::with_capacity(repos.len());
    for source in repos {
        let target = match to {
            None => source.clone(),
            Some(owner) => {
                let rest = match source.as_str().split_once('/') {
                    Some((_, rest)) => rest,
                    None => source.as_str(),
                };
                RepositoryName::parse(&format!("{owner}/{rest}"))
                    .map_err(|e| format!("--to {owner:?}: {source} would become an invalid name: {e}"))?
            }
        };
        if let Some(other) = seen.insert(target.clone(), source.clone()) {
            return Err(format!("--to: both {other} and {source} would be copied to {target}"));
        }
        out.push(Pair { source, target });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    fn filter(globs: &[&str]) -> Filter {
        Filter::new(&globs.iter().map(|g| g.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn globs_cross_slashes_and_name_owners() {
        let f = filter(&["admin/*"]);
        assert!(f.matches(&name("admin/app")) && f.matches(&name("admin/team/app")));
        assert!(!f.matches(&name("acme/app")));
        assert_eq!(f.owners(), Some(BTreeSet::from(["admin".to_owned()])));
        assert_eq!(f.exact(), None);
        assert_eq!(filter(&["admin/*", "*/tools"]).owners(), None);
        assert_eq!(filter(&["a*/x"]).owners(), None);
        assert_eq!(filter(&[]).owners(), None);
        assert!(filter(&[]).matches(&name("any/thing")));
        assert_eq!(filter(&["acme/app", "acme/b/c"]).exact(), Some(vec![name("acme/app"), name("acme/b/c")]));
        assert!(Filter::new(&["[".to_owned()]).is_err());
    }

    #[test]
    fn to_replaces_the_owner_and_refuses_collisions() {
        let pairs = rename(vec![name("admin/app"), name("admin/team/tool")], Some("acme")).unwrap();
        let targets: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
        assert_eq!(targets, ["acme/app", "acme/team/tool"]);
        assert_eq!(rename(vec![name("alpine")], Some("hub")).unwrap()[0].target, name("hub/alpine"));
        assert_eq!(rename(vec![name("admin/app")], None).unwrap()[0].target, name("admin/app"));
        let e = rename(vec![name("admin/app"), name("bob/app")], Some("acme")).unwrap_err();
        assert!(e.contains("acme/app"), "{e}");
        assert!(rename(vec![name("admin/app")], Some("Bad Owner")).is_err());
    }
}
