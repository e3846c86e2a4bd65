//! Who may do what: the one place that turns account facts into rights.
//!
//! - Site admins may do everything everywhere.
//! - A user may do everything in their own namespace.
//! - Organization members act by role: `read` pulls, `write` also pushes
//!   and deletes, `admin` too.
//! - Anyone (even anonymous) may pull from a public repository: a
//!   repository's own visibility, else its owner's.
//! - Nobody but site admins may act on a namespace whose owner does not exist.
//! - An owner's own affairs (its storage usage) are for the user of that
//!   name, an organization's `admin` members, and site admins.
//! - A personal access token narrows its user's rights to its scopes
//!   (`read:package` pulls, `write:package` pulls, pushes and deletes) and
//!   to its repository patterns.

use berth_meta::auth::{AccessFacts, OrgRole, OwnerKind, OwnerRecord, TokenRecord, UserRecord};
use berth_oci::RepositoryName;

use crate::access::Actions;

pub const SCOPE_READ: &str = "read:package";
pub const SCOPE_WRITE: &str = "write:package";

/// Rights of `user` (or an anonymous caller) on a repository, given its facts.
pub fn user_rights(user: Option<&UserRecord>, facts: &AccessFacts) -> Actions {
    if let Some(u) = user {
        if u.disabled {
            return Actions::NONE;
        }
        if u.is_admin {
            return Actions::ALL;
        }
    }
    let Some(owner) = &facts.owner else { return Actions::NONE };
    // Visibility applies to existing repositories: a missing one looks
    // private (so its absence is not revealed), even in a public namespace.
    let public = facts.repository_exists && facts.repository_public.unwrap_or(owner.is_public);
    let base = if public { Actions::PULL } else { Actions::NONE };
    let Some(u) = user else { return base };
    let own = match owner.kind {
        OwnerKind::User if owner.id == u.id => Actions::ALL,
        OwnerKind::User => Actions::NONE,
        OwnerKind::Org => match facts.role {
            Some(OrgRole::Read) => Actions::PULL,
            Some(OrgRole::Write | OrgRole::Admin) => Actions::ALL,
            None => Actions::NONE,
        },
    };
    base.or(own)
}

/// Whether `user` may administer `owner` (see its storage usage): a site
/// admin any owner, a user themself, an organization's `admin` members
/// (`role` is the user's role in it). A disabled user none.
pub fn administers_owner(user: &UserRecord, owner: &OwnerRecord, role: Option<OrgRole>) -> bool {
    if user.disabled {
        return false;
    }
    if user.is_admin {
        return true;
    }
    match owner.kind {
        OwnerKind::User => owner.id == user.id,
        OwnerKind::Org => role == Some(OrgRole::Admin),
    }
}

/// What a token's scopes allow at most.
pub fn scope_actions(scopes: &[String]) -> Actions {
    scopes.iter().fold(Actions::NONE, |acc, s| match s.as_str() {
        SCOPE_WRITE => acc.or(Actions::READ_WRITE),
        SCOPE_READ => acc.or(Actions::PULL),
        _ => acc,
    })
}

/// Whether `repo` matches one of a token's repository globs (all when none).
/// `*` also matches `/`, so `acme/*` covers `acme/a/b`.
pub fn repository_allowed(patterns: &[String], repo: &RepositoryName) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    patterns.iter().any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches_with(repo.as_str(), opts)))
}

/// The most a token allows on `repo`, before its user's own rights.
pub fn token_limit(token: &TokenRecord, repo: &RepositoryName) -> Actions {
    if repository_allowed(&token.repositories, repo) { scope_actions(&token.scopes) } else { Actions::NONE }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Action;

    fn user(id: i64, admin: bool) -> UserRecord {
        UserRecord { id, name: format!("u{id}"), password_hash: None, is_admin: admin, disabled: false, created_at: 0 }
    }

    fn facts(kind: OwnerKind, id: i64, public: bool, role: Option<OrgRole>, repo_public: Option<bool>) -> AccessFacts {
        AccessFacts {
            owner: Some(OwnerRecord { id, name: "o".into(), kind, is_public: public, created_at: 0 }),
            role,
            repository_exists: true,
            repository_public: repo_public,
        }
    }

    #[test]
    fn rights_by_relation() {
        let alice = user(1, false);
        assert_eq!(user_rights(Some(&alice), &facts(OwnerKind::User, 1, false, None, None)), Actions::ALL);
        assert_eq!(user_rights(Some(&alice), &facts(OwnerKind::User, 2, false, None, None)), Actions::NONE);
        assert_eq!(user_rights(Some(&alice), &facts(OwnerKind::User, 2, true, None, None)), Actions::PULL);
        assert_eq!(user_rights(None, &facts(OwnerKind::User, 2, true, None, Some(false))), Actions::NONE);
        assert_eq!(user_rights(None, &facts(OwnerKind::User, 2, false, None, Some(true))), Actions::PULL);
        let org = |role| facts(OwnerKind::Org, 9, false, role, None);
        assert_eq!(user_rights(Some(&alice), &org(Some(OrgRole::Read))), Actions::PULL);
        assert_eq!(user_rights(Some(&alice), &org(Some(OrgRole::Write))), Actions::ALL);
        assert_eq!(user_rights(Some(&alice), &org(None)), Actions::NONE);
        assert_eq!(user_rights(Some(&user(5, true)), &AccessFacts::default()), Actions::ALL);
        assert_eq!(user_rights(Some(&alice), &AccessFacts::default()), Actions::NONE, "owner must exist");
        let missing = AccessFacts { repository_exists: false, ..facts(OwnerKind::User, 2, true, None, None) };
        assert_eq!(user_rights(None, &missing), Actions::NONE, "a missing repository is not public");
        let mut off = alice.clone();
        off.disabled = true;
        assert_eq!(user_rights(Some(&off), &facts(OwnerKind::User, 1, true, None, None)), Actions::NONE);
    }

    #[test]
    fn owners_are_administered_by_themselves_org_admins_and_site_admins() {
        let alice = user(1, false);
        let owner = |kind, id| OwnerRecord { id, name: "o".into(), kind, is_public: true, created_at: 0 };
        assert!(administers_owner(&alice, &owner(OwnerKind::User, 1), None));
        assert!(!administers_owner(&alice, &owner(OwnerKind::User, 2), None));
        assert!(administers_owner(&user(5, true), &owner(OwnerKind::User, 2), None));
        let org = owner(OwnerKind::Org, 9);
        assert!(administers_owner(&alice, &org, Some(OrgRole::Admin)));
        for role in [None, Some(OrgRole::Read), Some(OrgRole::Write)] {
            assert!(!administers_owner(&alice, &org, role), "{role:?}");
        }
        let off = UserRecord { disabled: true, ..alice };
        assert!(!administers_owner(&off, &owner(OwnerKind::User, 1), None));
    }

    #[test]
    fn tokens_narrow() {
        let repo = RepositoryName::parse("honeydue/api").unwrap();
        let t = |scopes: &[&str], repos: &[&str]| TokenRecord {
            id: 1,
            user_id: 1,
            name: String::new(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            created_at: 0,
        };
        assert_eq!(token_limit(&t(&[SCOPE_READ], &[]), &repo), Actions::PULL);
        assert!(token_limit(&t(&[SCOPE_WRITE], &["honeydue/*"]), &repo).contains(Action::Delete));
        assert_eq!(token_limit(&t(&[SCOPE_WRITE], &["other/*"]), &repo), Actions::NONE);
        assert_eq!(token_limit(&t(&["read:issue"], &[]), &repo), Actions::NONE);
    }
}
