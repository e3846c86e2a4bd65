//! What a bearer JWT may do right now: exactly its `access` claim,
//! intersected with the live rights of the user and personal access token
//! behind it.
//!
//! The live side is re-read from the database at most every
//! [`LIVE_CHECK_TTL`] per (user, token, repository), so disabling a user,
//! revoking the token a JWT was issued for, or removing a membership takes
//! effect within that time, while a client pulling many layers with one JWT
//! costs one lookup, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_meta::auth::{AccessFacts, TokenRecord, UserRecord};
use berth_oci::RepositoryName;

use crate::upstreams::{UpstreamAccess, upstream_rights};
use crate::{Actions, AuthError, AuthService, Claims, Result, policy, token_usable};

/// How long a live check of a bearer token's identity and rights is reused.
pub const LIVE_CHECK_TTL: Duration = Duration::from_secs(3);
const MAX_ENTRIES: usize = 10_000;

type Key = (String, Option<i64>, String);
/// A live check's outcome: the rights, or why the identity is gone.
type Outcome = std::result::Result<Actions, String>;
/// Who a bearer token's identity is now: its user and token, or why it is gone.
type Identity = std::result::Result<(Option<UserRecord>, Option<TokenRecord>), String>;

/// Recent live checks: (subject, token id, repository) → rights, or the
/// identity being gone.
#[derive(Default)]
pub(crate) struct LiveChecks {
    entries: Mutex<HashMap<Key, (Instant, Outcome)>>,
}

impl LiveChecks {
    fn get(&self, key: &Key) -> Option<Outcome> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).filter(|(t, _)| t.elapsed() < LIVE_CHECK_TTL).map(|(_, r)| r.clone())
    }

    fn put(&self, key: Key, value: Outcome) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (t, _)| t.elapsed() < LIVE_CHECK_TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// The actions a bearer token's `access` claim grants on `repo`.
pub fn granted_by_claims(claims: &Claims, repo: &RepositoryName) -> Actions {
    claims
        .access
        .iter()
        .filter(|a| a.kind == "repository" && a.name == repo.as_str())
        .fold(Actions::NONE, |acc, a| acc.or(Actions::parse_list(&a.actions.join(","))))
}

/// Whether the claims grant the catalog (`registry:catalog:*`).
pub fn grants_catalog(claims: &Claims) -> bool {
    claims.access.iter().any(|a| a.kind == "registry" && a.name == "catalog")
}

impl AuthService {
    /// The live rights of the identity behind `claims` on `repo`, from a
    /// check at most [`LIVE_CHECK_TTL`] old. [`AuthError::InvalidToken`] when
    /// the user is disabled or gone, or the token it was issued for is
    /// revoked or expired.
    pub(crate) async fn bearer_rights(&self, claims: &Claims, repo: &RepositoryName) -> Result<Actions> {
        let key = (claims.sub.clone(), claims.pat, repo.as_str().to_owned());
        if let Some(hit) = self.live.get(&key) {
            return hit.map_err(AuthError::InvalidToken);
        }
        let outcome = match self.bearer_identity(claims).await? {
            Ok((user, token)) => Ok(self.rights_of(user.as_ref(), token.as_ref(), repo, None).await?),
            Err(gone) => Err(gone),
        };
        self.live.put(key, outcome.clone());
        outcome.map_err(AuthError::InvalidToken)
    }

    /// The user and token behind a bearer token as they are now; `Err` with
    /// the reason if either no longer allows use.
    pub(crate) async fn bearer_identity(&self, claims: &Claims) -> Result<Identity> {
        if claims.sub.is_empty() {
            return Ok(Ok((None, None)));
        }
        let Some(user) = self.store.get_user(&claims.sub).await?.filter(|u| !u.disabled) else {
            return Ok(Err("the token's user is disabled or gone".into()));
        };
        let token = match claims.pat {
            None => None,
            Some(id) => match self.store.get_token(id).await? {
                Some(t) if t.user_id == user.id && token_usable(&t, crate::login_now_ms()) => Some(t),
                _ => return Ok(Err("the access token this token was issued for is revoked or expired".into())),
            },
        };
        Ok(Ok((Some(user), token)))
    }

    /// Rights of a (possibly anonymous) user, narrowed by a token. In an
    /// upstream's namespace they follow its access level ([`crate::upstreams`]).
    /// `known`: the user's facts on `repo` if read already (with the credentials).
    pub(crate) async fn rights_of(
        &self,
        user: Option<&UserRecord>,
        token: Option<&TokenRecord>,
        repo: &RepositoryName,
        known: Option<&AccessFacts>,
    ) -> Result<Actions> {
        let read;
        let facts = match known {
            Some(facts) => facts,
            None => {
                read = self.store.access_facts(repo, user.map(|u| u.id)).await?;
                &read
            }
        };
        let mut rights = match self.upstreams.by_prefix(repo) {
            // The owner is the upstream's namespace: its organization's members are the upstream's.
            Some(ns) => upstream_rights(user, ns.access, facts.role.is_some()),
            None => match self.upstreams.mirror_root().filter(|_| facts.owner.is_none()) {
                Some(ns) => {
                    let member = match (ns.access, user, RepositoryName::parse(&ns.name)) {
                        (UpstreamAccess::Members, Some(u), Ok(org)) => {
                            self.store.access_facts(&org, Some(u.id)).await?.role.is_some()
                        }
                        _ => false,
                    };
                    upstream_rights(user, ns.access, member)
                }
                None => policy::user_rights(user, facts),
            },
        };
        if let Some(t) = token {
            rights = rights.and(policy::token_limit(t, repo));
        }
        Ok(rights)
    }
}
