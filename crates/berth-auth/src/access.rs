//! Actions on repositories, sets of them, and the scopes of the token flow
//! (`repository:<name>:<actions>`).

use std::fmt;

use berth_oci::RepositoryName;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const ALL: Actions = Actions(7);
    /// What `write:package` grants.
    pub const READ_WRITE: Actions = Actions(7);

    pub fn of(actions: &[Action]) -> Actions {
        Actions(actions.iter().fold(0, |acc, a| acc | a.bit()))
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn covers(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn and(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn or(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Pull, Action::Push, Action::Delete].into_iter().filter(move |a| self.contains(*a))
    }

    /// Parses `pull,push` style lists; `*` means everything; unknown words are ignored.
    pub fn parse_list(s: &str) -> Actions {
        s.split(',').map(str::trim).fold(Actions::NONE, |acc, a| {
            acc.or(match a {
                "pull" => Actions::PULL,
                "push" => Actions::of(&[Action::Push]),
                "delete" => Actions::of(&[Action::Delete]),
                "*" => Actions::ALL,
                _ => Actions::NONE,
            })
        })
    }

    pub fn names(self) -> Vec<String> {
        self.iter().map(|a| a.as_str().to_owned()).collect()
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actions({})", self.names().join(","))
    }
}

/// One `scope` of a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository {
        name: RepositoryName,
        actions: Actions,
    },
    /// `registry:catalog:*`
    Catalog,
}

impl Scope {
    /// Parses `repository:<name>:<actions>` (also `repository(plugin):...`)
    /// or `registry:catalog:*`. Several scopes may share one parameter,
    /// separated by spaces. Malformed entries are skipped: a client asking
    /// for something invalid simply gets nothing for it.
    pub fn parse_all(param: &str) -> Vec<Scope> {
        param.split_whitespace().filter_map(Scope::parse).collect()
    }

    fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split('(').next().unwrap_or(kind);
        match kind {
            "repository" => Some(Scope::Repository {
                name: RepositoryName::parse(name).ok()?,
                actions: Actions::parse_list(actions),
            }),
            "registry" if name == "catalog" => Some(Scope::Catalog),
            _ => None,
        }
    }
}

/// The scope string for a challenge: `repository:<name>:<a,b>`.
pub fn scope_string(name: &RepositoryName, actions: Actions) -> String {
    format!("repository:{name}:{}", actions.names().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        let s = Scope::parse_all("repository:acme/app:pull,push repository(plugin):x:* registry:catalog:* junk bad:x");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            Scope::Repository {
                name: RepositoryName::parse("acme/app").unwrap(),
                actions: Actions::of(&[Action::Pull, Action::Push])
            }
        );
        assert_eq!(s[1], Scope::Repository { name: RepositoryName::parse("x").unwrap(), actions: Actions::ALL });
        assert_eq!(s[2], Scope::Catalog);
        assert!(Scope::parse_all("repository:UPPER:pull").is_empty());
        assert!(Scope::parse_all("repository:a/../b:pull").is_empty());
    }

    #[test]
    fn action_sets() {
        let rw = Actions::parse_list("pull,push");
        assert!(rw.contains(Action::Push) && !rw.contains(Action::Delete));
        assert!(Actions::ALL.covers(rw));
        assert_eq!(rw.and(Actions::PULL), Actions::PULL);
        assert_eq!(scope_string(&RepositoryName::parse("a/b").unwrap(), rw), "repository:a/b:pull,push");
    }
}
