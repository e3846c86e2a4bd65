//! Logins: credentials in, a [`Principal`] out.
//!
//! Password logins go through the [`LoginLimiter`](crate::limiter) before
//! any argon2 work, then through one bounded queue of argon2 checks shared
//! by every login ([`HashingPool`]). Token logins skip the limiter (see
//! `limiter`'s docs) but share the queue.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_meta::auth::TokenCandidate;
use berth_oci::RepositoryName;
use tokio::sync::Semaphore;

use crate::limiter::{Admission, LoginKeys, Refusal};
use crate::secrets::{self, Subject, VerifiedCache};
use crate::{AuthError, AuthService, Credentials, KnownAccess, Principal, Result, jwt, token_usable};

/// A valid argon2id hash (default cost) of a password nobody has, verified
/// when the user does not exist so unknown and known names take equal time.
pub(crate) const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$30XBP3ya3tldfhUXfBwKDw$WUXdxewXtt1osJ+vneIH+2G3EpLSb8mRYs6v04lSylM";

/// How often a token's `last_used_at` is written at most.
const TOUCH_INTERVAL_MS: i64 = 60_000;

pub(crate) fn now_ms() -> i64 {
    (jwt::now_secs() as i64) * 1000
}

/// The argon2 checks of the whole process: a few at once (each takes a core
/// and ~19 MiB), a bounded number waiting; beyond that, callers are told to
/// retry rather than queued without end.
pub(crate) struct HashingPool {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl HashingPool {
    pub(crate) fn new() -> Self {
        // Half the cores: logins must not starve the registry's own work.
        let slots = (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).clamp(1, 4);
        HashingPool { slots: Arc::new(Semaphore::new(slots)), waiting: AtomicUsize::new(0), max_waiting: 16 * slots }
    }

    /// Runs `check` on a blocking thread once a slot is free.
    async fn run(&self, check: impl FnOnce() -> bool + Send + 'static) -> Result<bool> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    berth_metrics::metrics().auth_failure("busy");
                    return Err(AuthError::Busy);
                }
                let acquired = self.slots.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                acquired.map_err(|e| AuthError::Internal(e.to_string()))?
            }
        };
        // The slot goes with the check: a request dropped at its deadline
        // must not free it while argon2 still runs.
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            check()
        })
        .await
        .map_err(|e| AuthError::Internal(format!("argon2 check failed: {e}")))
    }
}

/// A user name as it may appear in a log line: a name as presented may be a
/// secret (a token or password typed into the user field), so only one that
/// could be an account name, and does not start like a token, is logged.
pub fn loggable_user(name: &str) -> &str {
    if name.is_empty() {
        "-"
    } else if !name.starts_with(secrets::TOKEN_PREFIX) && crate::admin::validate_owner_name(name).is_ok() {
        name
    } else {
        "<invalid>"
    }
}

/// A client address for audit lines.
pub(crate) fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "-".to_owned(), |i| i.to_string())
}

impl AuthService {
    /// Turns credentials into a principal. Password logins are bounded per
    /// user and per client address (see [`crate::limiter`]).
    pub async fn authenticate(&self, creds: Credentials<'_>, ip: Option<IpAddr>) -> Result<Principal> {
        self.authenticate_for(creds, ip, None).await
    }

    /// [`Self::authenticate`] for a request on `repo`: the lookup of a
    /// personal access token, or of a password's user, also reads the user's
    /// access facts on `repo` (the principal carries them), so that
    /// authenticating and authorizing the request cost one query, not two.
    pub async fn authenticate_for(
        &self,
        creds: Credentials<'_>,
        ip: Option<IpAddr>,
        repo: Option<&RepositoryName>,
    ) -> Result<Principal> {
        match creds {
            Credentials::None => Ok(Principal::Anonymous),
            Credentials::Bearer(t) if t.matches('.').count() == 2 => {
                self.keys.verify(t).map(|c| Principal::Bearer(Box::new(c))).map_err(|e| {
                    berth_metrics::metrics().auth_failure("bearer");
                    tracing::info!(target: "audit", event = "auth_failure", kind = "bearer", ip = %ip_text(ip), reason = %e);
                    AuthError::InvalidToken(e)
                })
            }
            Credentials::Bearer(t) => self.login_token(t, None, ip, repo).await,
            // Gitea also accepts the token as the user name.
            Credentials::Basic { user, secret }
                if secrets::looks_like_token(user) && !secrets::looks_like_token(secret) =>
            {
                self.login_token(user, None, ip, repo).await
            }
            Credentials::Basic { user, secret } if secrets::looks_like_token(secret) => {
                self.login_token(secret, Some(user), ip, repo).await
            }
            Credentials::Basic { user, secret } if self.settings.allow_password => {
                self.login_password(user, secret, ip, repo).await
            }
            Credentials::Basic { user, .. } => {
                berth_metrics::metrics().auth_failure("password");
                tracing::info!(target: "audit", event = "auth_failure", kind = "password", reason = "passwords are not accepted", user = loggable_user(user), ip = %ip_text(ip));
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// A token login: one indexed query by the secret's lookup key (which
    /// also reads the access facts on `repo`, if named), then
    /// for each row carrying that key (several only if keys collide) that
    /// is usable right now, an argon2 check of the secret against the row's
    /// verifier. Revocation, expiry and a disabled user are read from the
    /// row on every request, before and independently of the verified-cache,
    /// so they take effect at once; the cache only spares argon2 when this
    /// secret matched this row within the last minute.
    ///
    /// An unknown token costs no argon2 check: timing can at most reveal
    /// whether some row carries the presented secret's lookup key, which an
    /// attacker could only exploit by guessing 64 random bits, and even then
    /// 192 bits of the secret remain. So token logins need no lockout, and
    /// never suffer one: a bad script's failures cannot lock a token out.
    async fn login_token(
        &self,
        secret: &str,
        user: Option<&str>,
        ip: Option<IpAddr>,
        repo: Option<&RepositoryName>,
    ) -> Result<Principal> {
        let key = secrets::token_lookup_key(secret);
        let now = now_ms();
        for candidate in self.store.tokens_by_lookup_key(&key, repo).await? {
            let TokenCandidate { token, user, secret_hash, access } = candidate;
            if !token_usable(&token, now) || user.disabled {
                continue;
            }
            if !self.verify_hash(Subject::Token(token.id), secret_hash, secret).await? {
                continue;
            }
            if token.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL_MS) {
                // Best effort: failing to record use must not fail the request.
                if let Err(e) = self.store.touch_token(token.id, now).await {
                    tracing::warn!(error = %e, "could not record token use");
                }
            }
            let access = access.zip(repo).map(|(facts, repo)| Box::new(KnownAccess { repo: repo.clone(), facts }));
            return Ok(Principal::User { user: Box::new(user), token: Some(Box::new(token)), access });
        }
        berth_metrics::metrics().auth_failure("token");
        tracing::info!(target: "audit", event = "auth_failure", kind = "token", user = user.map_or("-", loggable_user), ip = %ip_text(ip));
        Err(AuthError::InvalidCredentials)
    }

    /// A password login, bounded before argon2 is spent: a locked address or
    /// user is refused at once; a repeat of a recent success is answered from
    /// the cache; anything else takes a slot for its address and user (or is
    /// refused), is counted, and waits its turn in the shared argon2 queue. Unknown names
    /// take exactly the same path (the decoy hash), so timing and refusals
    /// do not tell which names exist.
    ///
    /// Identical logins arriving together (a client opening many
    /// connections at once) wait for the first one's verdict instead of
    /// each taking a slot: after a success they are repeats, answered from
    /// the cache; after a failure each is an attempt of its own.
    pub(crate) async fn login_password(
        &self,
        name: &str,
        password: &str,
        ip: Option<IpAddr>,
        repo: Option<&RepositoryName>,
    ) -> Result<Principal> {
        if self.verified.recent_login(name, password) {
            return self.login_password_once(name, password, ip, repo, false).await;
        }
        let key = VerifiedCache::key(Subject::Password(i64::MIN), name, password);
        let flight = self.in_flight.join(key);
        let mut led = None;
        let _ = flight
            .cell
            .get_or_try_init(|| async {
                let outcome = self.login_password_once(name, password, ip, repo, false).await;
                let verdict = outcome.as_ref().map(|_| true).map_err(|_| ());
                led = Some(outcome);
                verdict
            })
            .await;
        // Followers of a check that succeeded present credentials proven
        // right a moment ago: repeats, whatever the login cache says.
        let vouched = flight.cell.get() == Some(&true);
        self.in_flight.leave(key, &flight);
        match led {
            Some(outcome) => outcome,
            None => self.login_password_once(name, password, ip, repo, vouched).await,
        }
    }

    async fn login_password_once(
        &self,
        name: &str,
        password: &str,
        ip: Option<IpAddr>,
        repo: Option<&RepositoryName>,
        vouched: bool,
    ) -> Result<Principal> {
        let keys = self.limiter.keys(Some(name), ip);
        self.refuse_if_locked(&keys, name, ip)?;
        // Anything but a repeat of a recent success waits for its slot before
        // even reading the account, so a flood costs neither argon2 nor
        // database work beyond a few slots.
        let repeat = vouched || self.verified.recent_login(name, password);
        let mut admission = None;
        if !repeat {
            admission = Some(self.admit(&keys, name, ip).await?);
        }
        let (user, access) = match repo {
            Some(repo) => match self.store.get_user_with_access(name, repo).await? {
                Some((user, facts)) => (Some(user), Some(Box::new(KnownAccess { repo: repo.clone(), facts }))),
                None => (None, None),
            },
            None => (self.store.get_user(name).await?, None),
        };
        let user = user.filter(|u| !u.disabled);
        let (subject, hash) = match &user {
            Some(u) => (Subject::Password(u.id), u.password_hash.clone()),
            None => (Subject::Password(-1), None),
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DECOY_HASH.to_owned());
        let cached = if known { self.verified.verified_at(subject, &hash, password) } else { None };
        let verified_at = if let Some(at) = cached {
            self.limiter.succeeded(&keys, false);
            Some(at)
        } else {
            if admission.is_none() {
                // A repeat whose password has changed since: a fresh attempt.
                admission = Some(self.admit(&keys, name, ip).await?);
            }
            self.limiter.count_attempt(&keys);
            let matched = self.verify_hash(subject, hash.clone(), password).await? && known;
            if matched {
                self.limiter.succeeded(&keys, true);
            }
            // The check just run is in the cache (its date is the login's).
            matched.then(|| self.verified.verified_at(subject, &hash, password).unwrap_or_else(Instant::now))
        };
        drop(admission);
        match (user, verified_at) {
            (Some(user), Some(at)) => {
                self.verified.remember_login(name, password, at);
                Ok(Principal::User { user: Box::new(user), token: None, access })
            }
            _ => {
                berth_metrics::metrics().auth_failure("password");
                tracing::info!(target: "audit", event = "auth_failure", kind = "password", user = loggable_user(name), ip = %ip_text(ip));
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// A slot for this login's address and user; the lock is checked again
    /// after waiting (it may have started meanwhile).
    async fn admit(&self, keys: &LoginKeys, name: &str, ip: Option<IpAddr>) -> Result<Admission> {
        let admission = self.limiter.admit(keys).await.map_err(|r| self.refused(r, name, ip))?;
        self.refuse_if_locked(keys, name, ip)?;
        Ok(admission)
    }

    fn refuse_if_locked(&self, keys: &LoginKeys, name: &str, ip: Option<IpAddr>) -> Result<()> {
        match self.limiter.locked(keys) {
            Some(wait) => Err(self.refused(Refusal::Locked(wait), name, ip)),
            None => Ok(()),
        }
    }

    fn refused(&self, r: Refusal, name: &str, ip: Option<IpAddr>) -> AuthError {
        berth_metrics::metrics().auth_failure("throttled");
        tracing::info!(target: "audit", event = "auth_throttled", user = loggable_user(name), ip = %ip_text(ip), reason = ?r);
        match r {
            Refusal::Locked(wait) => AuthError::TooManyAttempts(wait),
            Refusal::Busy => AuthError::Busy,
        }
    }

    /// Checks a password or token secret against its argon2 hash: a recent
    /// success is answered from the cache inline; otherwise in the shared
    /// queue. A caller that waited re-checks the cache, so a burst of
    /// identical logins costs one check.
    ///
    /// Concurrent checks of the same secret against the same hash share one
    /// argon2 run (single flight): a client opening 32 connections with a
    /// token whose cache entry just expired costs one check and one queue
    /// slot, not 32 (which would overflow the queue into 429s).
    async fn verify_hash(&self, subject: Subject, hash: String, secret: &str) -> Result<bool> {
        if self.verified.recently_verified(subject, &hash, secret) {
            return Ok(true);
        }
        let key = VerifiedCache::key(subject, &hash, secret);
        let flight = self.in_flight.join(key);
        let outcome = flight
            .cell
            .get_or_try_init(|| {
                let (cache, secret) = (self.verified.clone(), secret.to_owned());
                self.hashing.run(move || cache.verify(subject, &hash, &secret))
            })
            .await
            .copied();
        self.in_flight.leave(key, &flight);
        outcome
    }
}

/// Checks in progress, by [`VerifiedCache::key`] (a hash: no secret is kept).
#[derive(Default)]
pub(crate) struct InFlight {
    checks: std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Flight>>>,
}

pub(crate) struct Flight {
    cell: tokio::sync::OnceCell<bool>,
}

impl InFlight {
    /// The check under way for `key`, or a new one.
    fn join(&self, key: [u8; 32]) -> Arc<Flight> {
        let mut checks = self.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        checks.entry(key).or_insert_with(|| Arc::new(Flight { cell: tokio::sync::OnceCell::new() })).clone()
    }

    /// Forgets `flight` once its check is over (its result is cached, or it
    /// failed and the next caller starts afresh).
    fn leave(&self, key: [u8; 32], flight: &Arc<Flight>) {
        let mut checks = self.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if checks.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight))
            && (flight.cell.initialized() || Arc::strong_count(flight) <= 2)
        {
            checks.remove(&key);
        }
    }
}

/// The cache of recent argon2 successes the service keeps.
pub(crate) fn verified_cache() -> Arc<VerifiedCache> {
    Arc::new(VerifiedCache::new(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_account_names_are_logged() {
        assert_eq!(loggable_user("alice"), "alice");
        assert_eq!(loggable_user("ci-bot.2"), "ci-bot.2");
        assert_eq!(loggable_user(""), "-");
        let token = secrets::new_token_secret().unwrap();
        for secret in [token.as_str(), "bpat_short", "Hunter2!", "alice:pw", "a/b", "eyJhbGciOi.x.y", "p@ss word"] {
            assert_eq!(loggable_user(secret), "<invalid>", "{secret}");
        }
    }
}
