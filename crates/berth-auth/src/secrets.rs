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

/// The stored form of a token secret.
///
/// A fast hash is enough here, unlike for passwords: the secret carries 256
/// random bits, so no dictionary or brute-force attack on a leaked hash is
/// feasible, and a slow hash would only cost every request CPU time. The
/// hash is keyed with a fixed domain label, so a token hash can never be
/// confused with any other SHA-256 the registry computes (e.g. a digest).
pub fn token_hash(secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"berth personal access token v1\0");
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Remembers recent successful password checks so that clients sending
/// Basic credentials on every request do not pay for argon2 each time.
/// Keyed by the user, the stored hash (a changed password misses) and a
/// hash of the presented password; it never holds a password.
pub struct VerifiedCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

const CACHE_LIMIT: usize = 4096;

impl VerifiedCache {
    pub fn new(ttl: Duration) -> Self {
        VerifiedCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn key(user_id: i64, stored_hash: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(user_id.to_le_bytes());
        h.update(stored_hash.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether this password was verified for this hash recently (no argon2).
    pub fn recently_verified(&self, user_id: i64, stored_hash: &str, password: &str) -> bool {
        let key = Self::key(user_id, stored_hash, password);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&key).is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Verifies `password`, consulting and filling the cache.
    pub fn verify(&self, user_id: i64, stored_hash: &str, password: &str) -> bool {
        if self.recently_verified(user_id, stored_hash, password) {
            return true;
        }
        if !verify_password(password, stored_hash) {
            return false;
        }
        let (key, now) = (Self::key(user_id, stored_hash, password), Instant::now());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_LIMIT {
            let ttl = self.ttl;
            entries.retain(|_, t| now.duration_since(*t) < ttl);
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
        }
        entries.insert(key, now);
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
        assert!(cache.verify(1, &h, "correct horse"));
        assert!(cache.verify(1, &h, "correct horse"), "cached");
        assert!(!cache.verify(1, &h, "wrong"));
        assert!(!cache.verify(1, "other-hash", "correct horse"), "a changed hash misses the cache");
    }

    #[test]
    fn tokens() {
        let t = new_token_secret().unwrap();
        assert!(looks_like_token(&t), "{t}");
        assert_ne!(t, new_token_secret().unwrap());
        assert_eq!(token_hash(&t), token_hash(&t));
        assert!(hashes_equal(&token_hash(&t), &token_hash(&t)));
        assert!(!hashes_equal(&token_hash(&t), &token_hash("other")));
        assert!(!looks_like_token("hunter2"));
    }
}
