//! Rights on the namespaces of upstream registries (the pull-through cache).
//!
//! A repository is an upstream's when its first component is the upstream's
//! name (`hub/library/alpine`), or, for the one upstream served at the root
//! (`mirror_root`), when its owner does not exist locally
//! (`library/alpine`): local owners always win. Such a repository's rights
//! come from the upstream's `access` level, never from the owner rules:
//!
//! - `public`: anyone may pull, anonymous callers included;
//! - `users`: any signed-in caller may pull;
//! - `members`: members (any role) of the organization named like the
//!   upstream may pull.
//!
//! Nobody may push into an upstream's namespace, site admins included (the
//! content comes from the upstream); site admins may pull and delete, to
//! evict cached content. A personal access token still narrows all of this
//! to its scopes and repository patterns, and a bearer JWT to its claim.

use berth_meta::auth::UserRecord;
use berth_oci::RepositoryName;

use crate::access::{Action, Actions};

/// Who may read an upstream's content through Berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAccess {
    Public,
    Users,
    Members,
}

/// One upstream's namespace and who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamNamespace {
    /// The namespace, also the organization `members` refers to.
    pub name: String,
    pub access: UpstreamAccess,
    /// Also serves names whose owner does not exist locally.
    pub mirror_root: bool,
}

/// The configured upstreams' namespaces.
#[derive(Debug, Clone, Default)]
pub struct UpstreamNamespaces {
    list: Vec<UpstreamNamespace>,
}

impl UpstreamNamespaces {
    pub fn new(list: Vec<UpstreamNamespace>) -> Self {
        UpstreamNamespaces { list }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The upstream whose name is `repo`'s first component.
    pub fn by_prefix(&self, repo: &RepositoryName) -> Option<&UpstreamNamespace> {
        self.list.iter().find(|u| u.name == repo.owner())
    }

    /// The upstream served at the root, if any.
    pub fn mirror_root(&self) -> Option<&UpstreamNamespace> {
        self.list.iter().find(|u| u.mirror_root)
    }
}

/// Rights of `user` (or an anonymous caller) on an upstream's repository;
/// `member` says whether the user belongs to the upstream's organization.
pub fn upstream_rights(user: Option<&UserRecord>, access: UpstreamAccess, member: bool) -> Actions {
    if user.is_some_and(|u| u.disabled) {
        return Actions::NONE;
    }
    if user.is_some_and(|u| u.is_admin) {
        return Actions::of(&[Action::Pull, Action::Delete]);
    }
    let reads = match access {
        UpstreamAccess::Public => true,
        UpstreamAccess::Users => user.is_some(),
        UpstreamAccess::Members => user.is_some() && member,
    };
    if reads { Actions::PULL } else { Actions::NONE }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(admin: bool, disabled: bool) -> UserRecord {
        UserRecord { id: 1, name: "u".into(), password_hash: None, is_admin: admin, disabled, created_at: 0 }
    }

    #[test]
    fn access_levels() {
        use UpstreamAccess::*;
        let (alice, root, off) = (user(false, false), user(true, false), user(false, true));
        assert_eq!(upstream_rights(None, Public, false), Actions::PULL);
        assert_eq!(upstream_rights(None, Users, false), Actions::NONE);
        assert_eq!(upstream_rights(Some(&alice), Users, false), Actions::PULL);
        assert_eq!(upstream_rights(Some(&alice), Members, false), Actions::NONE);
        assert_eq!(upstream_rights(Some(&alice), Members, true), Actions::PULL);
        assert_eq!(upstream_rights(None, Members, true), Actions::NONE);
        assert_eq!(upstream_rights(Some(&off), Public, true), Actions::NONE);
        let admin = upstream_rights(Some(&root), Members, false);
        assert!(admin.contains(Action::Pull) && admin.contains(Action::Delete) && !admin.contains(Action::Push));
    }

    #[test]
    fn namespaces_by_prefix_and_root() {
        let ns = UpstreamNamespaces::new(vec![
            UpstreamNamespace { name: "hub".into(), access: UpstreamAccess::Public, mirror_root: true },
            UpstreamNamespace { name: "ghcr".into(), access: UpstreamAccess::Users, mirror_root: false },
        ]);
        let repo = |s: &str| RepositoryName::parse(s).unwrap();
        assert_eq!(ns.by_prefix(&repo("hub/library/alpine")).map(|u| u.name.as_str()), Some("hub"));
        assert_eq!(ns.by_prefix(&repo("ghcr/x")).map(|u| u.name.as_str()), Some("ghcr"));
        assert_eq!(ns.by_prefix(&repo("hubby/x")), None);
        assert_eq!(ns.mirror_root().map(|u| u.name.as_str()), Some("hub"));
        assert!(UpstreamNamespaces::default().mirror_root().is_none());
    }
}
