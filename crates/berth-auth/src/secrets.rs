//! Password hashing (argon2id) and personal access token secrets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix that makes Berth tokens recognisable (and greppable by secret scanners).
pub const TOKEN_PREFIX: &str = "bpat_";

/// Hashes a password for storage (argon2id, random salt, default cost).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks a password against a stored hash; constant-time inside argon2.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new token secret: 256 random bits, URL-safe, with a recognisable prefix.
pub fn new_token_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether a presented secret has the shape of a Berth token (cheap pre-check
/// before a database lookup).
pub fn looks_like_token(secret: &str) -> bool {
    secret.len() == TOKEN_PREFIX.len() + 43 && secret.starts_with(TOKEN_PREFIX)
}

/// The stored verifier of a token secret: an argon2id PHC string with a
/// random salt, made exactly like a password hash.
///
/// The secret's 256 random bits would make a fast hash safe against
/// brute force, but the project rule is argon2 for every stored secret, and
/// the same parameters as passwords (argon2 defaults: m=19 MiB, t=2, p=1)
/// let tokens share the password path's verified-cache, its bound on
/// concurrent argon2 work and its cost model. The cost is paid once per
/// token per cache lifetime, not per request (see `AuthService`).
pub fn hash_token(secret: &str) -> Result<String, String> {
    hash_password(secret)
}

/// Length in bytes of a token's lookup key.
pub const TOKEN_LOOKUP_KEY_LEN: usize = 8;

/// The non-secret key a token's row is found by: the first 8 bytes of a
/// SHA-256 of the secret, keyed with a fixed domain label so it can never be
/// confused with any other SHA-256 the registry computes (e.g. a digest).
///
/// Why a truncated hash rather than the token's public id inside the secret
/// (`bpat_<id>_<random>`): the secret format, its length and
/// [`looks_like_token`] stay as they are (secret scanners and clients that
/// recognise `bpat_` + 43 characters keep working), a token's secret can be
/// made before its row exists (no insert-then-update), and the secret does
/// not disclose how many tokens the registry has issued. 64 bits verify
/// nothing: they leave 192 bits of the secret unknown, and only the argon2
/// hash can check a secret. Keys are not unique: a new token shares its key
/// with one of N existing tokens with probability N / 2^64 (negligible), and
/// the caller verifies every row that carries the key, so a collision costs
/// one more argon2 check, never a wrong login.
pub fn token_lookup_key(secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"berth personal access token lookup v2\0");
    h.update(secret.as_bytes());
    h.finalize()[..TOKEN_LOOKUP_KEY_LEN].to_vec()
}

/// Constant-time equality of two byte strings.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whose secret a [`VerifiedCache`] entry vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A user's password (by user id).
    Password(i64),
    /// A personal access token (by token id).
    Token(i64),
}

/// Remembers recent successful argon2 checks (passwords and token secrets)
/// so that clients sending Basic credentials on every request do not pay
/// for argon2 each time. Keyed by the subject (a user or a token), the
/// stored hash (a changed password, or another token row, misses: every
/// hash has its own random salt) and a hash of the presented secret; it
/// never holds a secret. It only answers "does this secret match this
/// hash": whether the account or token may still be used (disabled,
/// revoked, expired) is the caller's to check on every request.
pub struct VerifiedCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
    /// Per-process random key for [`VerifiedCache::recent_login`] entries,
    /// which have no stored hash (and so no per-user salt) in them.
    salt: [u8; 16],
}

const CACHE_LIMIT: usize = 4096;
/// How much sooner a login entry expires than the check it repeats: the
/// time a request may take between the two lookups.
const LOGIN_MARGIN: Duration = Duration::from_secs(1);

impl VerifiedCache {
    pub fn new(ttl: Duration) -> Self {
        let mut salt = [0u8; 16];
        // Without randomness the entries are still keyed by the secret; only
        // their resistance to a memory dump is lost.
        let _ = getrandom::fill(&mut salt);
        VerifiedCache { ttl, entries: Mutex::new(HashMap::new()), salt }
    }

    fn login_key(&self, name: &str, secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(b"n");
        h.update(name.to_ascii_lowercase().as_bytes());
        h.update([0]);
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    /// Whether `name` logged in with `secret` recently: lets a repeat login
    /// skip the limiter's queue (it still reloads the account and checks
    /// [`VerifiedCache::recently_verified`] against its current hash). An
    /// entry lasts as long as the verification it repeats (see
    /// [`VerifiedCache::remember_login`]) less [`LOGIN_MARGIN`], so a repeat
    /// finds that verification still cached unless the password changed.
    pub fn recent_login(&self, name: &str, secret: &str) -> bool {
        let key = self.login_key(name, secret);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&key).is_some_and(|t| t.elapsed() < self.ttl.saturating_sub(LOGIN_MARGIN))
    }

    /// Records a successful login of `name` with `secret`, dated by the
    /// argon2 check it rests on (`verified_at`), not by now: were every
    /// login to renew it, under steady traffic it would outlive that check,
    /// and when the check expired every concurrent request would be a
    /// "repeat" needing argon2 at once (32 connections overflowing the
    /// per-user queue into 429s).
    pub fn remember_login(&self, name: &str, secret: &str, verified_at: Instant) {
        let key = self.login_key(name, secret);
        self.insert_at(key, verified_at);
    }

    fn insert(&self, key: [u8; 32]) {
        self.insert_at(key, Instant::now());
    }

    fn insert_at(&self, key: [u8; 32], at: Instant) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_LIMIT {
            let ttl = self.ttl;
            entries.retain(|_, t| now.duration_since(*t) < ttl);
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
        }
        entries.insert(key, at);
    }

    pub(crate) fn key(subject: Subject, stored_hash: &str, secret: &str) -> [u8; 32] {
        let (kind, id) = match subject {
            Subject::Password(id) => (b'p', id),
            Subject::Token(id) => (b't', id),
        };
        let mut h = Sha256::new();
        h.update([kind]);
        h.update(id.to_le_bytes());
        h.update(stored_hash.as_bytes());
        h.update([0]);
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    /// Whether this secret was verified for this hash recently (no argon2).
    pub fn recently_verified(&self, subject: Subject, stored_hash: &str, secret: &str) -> bool {
        self.verified_at(subject, stored_hash, secret).is_some()
    }

    /// When this secret was last verified for this hash, if within the TTL.
    pub fn verified_at(&self, subject: Subject, stored_hash: &str, secret: &str) -> Option<Instant> {
        let key = Self::key(subject, stored_hash, secret);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&key).copied().filter(|t| t.elapsed() < self.ttl)
    }

    /// Verifies `secret` against the argon2 `stored_hash`, consulting and
    /// filling the cache.
    pub fn verify(&self, subject: Subject, stored_hash: &str, secret: &str) -> bool {
        if self.recently_verified(subject, stored_hash, secret) {
            return true;
        }
        if !verify_password(secret, stored_hash) {
            return false;
        }
        self.insert(Self::key(subject, stored_hash, secret));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
        let cache = VerifiedCache::new(Duration::from_secs(60));
        let alice = Subject::Password(1);
        assert!(cache.verify(alice, &h, "correct horse"));
        assert!(cache.recently_verified(alice, &h, "correct horse"), "cached");
        assert!(cache.verify(alice, &h, "correct horse"));
        assert!(!cache.verify(alice, &h, "wrong"));
        assert!(!cache.verify(alice, "other-hash", "correct horse"), "a changed hash misses the cache");
        assert!(!cache.recently_verified(Subject::Token(1), &h, "correct horse"), "token 1 is not user 1");

        assert!(!cache.recent_login("alice", "correct horse"));
        let at = cache.verified_at(alice, &h, "correct horse").expect("verified just now");
        cache.remember_login("Alice", "correct horse", at);
        assert!(cache.recent_login("alice", "correct horse"));
        assert!(!cache.recent_login("alice", "wrong"));
        assert!(!cache.recent_login("bob", "correct horse"));
        assert!(!VerifiedCache::new(Duration::from_secs(60)).recent_login("alice", "correct horse"), "per process");
    }

    #[test]
    fn tokens() {
        let t = new_token_secret().unwrap();
        assert!(looks_like_token(&t), "{t}");
        assert_ne!(t, new_token_secret().unwrap());
        assert!(!looks_like_token("hunter2"));
        assert!(!looks_like_token(&t[1..]));
        assert!(!looks_like_token(&format!("{t}x")));

        // The lookup key: short, stable, different per secret.
        let key = token_lookup_key(&t);
        assert_eq!(key.len(), TOKEN_LOOKUP_KEY_LEN);
        assert_eq!(key, token_lookup_key(&t));
        assert_ne!(key, token_lookup_key(&new_token_secret().unwrap()));
        assert!(hashes_equal(&key, &token_lookup_key(&t)));
        assert!(!hashes_equal(&key, &token_lookup_key("other")));
    }

    #[test]
    fn token_verifier_is_an_argon2id_phc_string() {
        let t = new_token_secret().unwrap();
        let h = hash_token(&t).unwrap();
        let phc = PasswordHash::new(&h).expect("a PHC string");
        assert_eq!(phc.algorithm.as_str(), "argon2id");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "same parameters as passwords: {h}");
        assert!(phc.salt.is_some() && phc.hash.is_some());
        assert_ne!(h, hash_token(&t).unwrap(), "random salt");
        assert!(!h.contains(&t[TOKEN_PREFIX.len()..]), "the secret is not in the hash");

        assert!(verify_password(&t, &h));
        assert!(!verify_password(&new_token_secret().unwrap(), &h));
        assert!(!verify_password(&t[..t.len() - 1], &h));

        let cache = VerifiedCache::new(Duration::from_secs(60));
        assert!(!cache.verify(Subject::Token(7), &h, "bpat_wrong"));
        assert!(cache.verify(Subject::Token(7), &h, &t));
        assert!(cache.recently_verified(Subject::Token(7), &h, &t));
        assert!(!cache.recently_verified(Subject::Token(8), &h, &t), "another token id misses");
        assert!(!cache.recently_verified(Subject::Token(7), &hash_token(&t).unwrap(), &t), "another row misses");
        assert!(!cache.recently_verified(Subject::Password(7), &h, &t));
    }

    #[test]
    fn cache_entries_expire() {
        let h = hash_password("pw").unwrap();
        let cache = VerifiedCache::new(Duration::from_millis(1));
        assert!(cache.verify(Subject::Password(1), &h, "pw"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!cache.recently_verified(Subject::Password(1), &h, "pw"));
    }

    #[test]
    fn a_login_entry_expires_before_the_check_it_repeats() {
        let cache = VerifiedCache::new(Duration::from_millis(1500));
        let h = hash_password("pw").unwrap();
        let alice = Subject::Password(1);
        assert!(cache.verify(alice, &h, "pw"));
        let at = cache.verified_at(alice, &h, "pw").expect("verified");
        cache.remember_login("alice", "pw", at);
        assert!(cache.recent_login("alice", "pw"));
        // Renewing with the same check's date does not extend it.
        std::thread::sleep(Duration::from_millis(300));
        cache.remember_login("alice", "pw", at);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!cache.recent_login("alice", "pw"), "expired LOGIN_MARGIN before the check");
        assert!(cache.recently_verified(alice, &h, "pw"), "while the check itself is still cached");
    }
}
