//! Immutable tags: globs over `<repository>:<tag>` from `[tags] immutable`.

use berth_oci::RepositoryName;

#[derive(Debug, Clone, Default)]
pub struct ImmutableTags {
    rules: Vec<(String, glob::Pattern)>,
}

impl ImmutableTags {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let rules = patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                glob::Pattern::new(p).map(|g| (p.to_owned(), g)).map_err(|e| format!("tags.immutable {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ImmutableTags { rules })
    }

    /// The first rule protecting `repo:tag`, if any.
    pub fn rule_for(&self, repo: &RepositoryName, tag: &str) -> Option<String> {
        if self.rules.is_empty() {
            return None;
        }
        let subject = format!("{repo}:{tag}");
        // `*` also crosses `/`, so "*:v*" covers every repository depth.
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.rules.iter().find(|(_, g)| g.matches_with(&subject, opts)).map(|(p, _)| p.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_repository_and_tag() {
        let rules = ImmutableTags::new(&["*:v*", "acme/*:*"]).unwrap();
        let r = |s: &str| RepositoryName::parse(s).unwrap();
        assert_eq!(rules.rule_for(&r("a/b/c"), "v1.0").as_deref(), Some("*:v*"));
        assert_eq!(rules.rule_for(&r("acme/app"), "latest").as_deref(), Some("acme/*:*"));
        assert_eq!(rules.rule_for(&r("other/app"), "latest"), None);
        assert!(ImmutableTags::new(&["[unclosed"]).is_err());
    }
}
