//! Backoff after failed logins, per user name and per client address.
//!
//! The first `limit` failures within the window cost nothing; after that,
//! each further failure doubles the wait (1 s, 2 s, 4 s ...) up to `max`.
//! While a key is locked, logins for it are refused with 429 before any
//! password is checked, which also bounds argon2 work an attacker can cause.
//! State is per process (each replica keeps its own).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

pub struct FailureLimiter {
    limit: u32,
    max: Duration,
    /// Failures older than this are forgotten.
    window: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

const MAX_ENTRIES: usize = 100_000;

impl FailureLimiter {
    pub fn new(limit: u32, max: Duration) -> Self {
        FailureLimiter { limit, max, window: Duration::from_secs(900), entries: Mutex::new(HashMap::new()) }
    }

    fn keys(user: Option<&str>, ip: Option<IpAddr>) -> Vec<Key> {
        let mut keys = Vec::with_capacity(2);
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            keys.push(Key::User(u.to_ascii_lowercase()));
        }
        if let Some(ip) = ip {
            keys.push(Key::Ip(ip));
        }
        keys
    }

    /// How long the caller must wait before trying again, if locked out.
    pub fn check(&self, user: Option<&str>, ip: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(user, ip)
            .iter()
            .filter_map(|k| entries.get(k)?.locked_until.filter(|t| *t > now).map(|t| t - now))
            .max()
    }

    pub fn record_failure(&self, user: Option<&str>, ip: Option<IpAddr>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let window = self.window;
            entries.retain(|_, e| now.duration_since(e.last) < window);
        }
        for key in Self::keys(user, ip) {
            let e = entries.entry(key).or_insert(Entry { failures: 0, locked_until: None, last: now });
            if now.duration_since(e.last) >= self.window {
                *e = Entry { failures: 0, locked_until: None, last: now };
            }
            e.failures += 1;
            e.last = now;
            if e.failures > self.limit {
                let exp = (e.failures - self.limit - 1).min(20);
                let wait = Duration::from_secs(1u64 << exp).min(self.max);
                e.locked_until = Some(now + wait);
            }
        }
    }

    /// A successful login clears the user's record (not the address's:
    /// one good password must not unlock an address trying many users).
    pub fn record_success(&self, user: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&Key::User(user.to_ascii_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_limit_and_doubles() {
        let l = FailureLimiter::new(2, Duration::from_secs(300));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.check(Some("bob"), Some(ip)).is_none());
        l.record_failure(Some("bob"), Some(ip));
        l.record_failure(Some("bob"), Some(ip));
        assert!(l.check(Some("bob"), None).is_none(), "limit not yet exceeded");
        l.record_failure(Some("bob"), Some(ip));
        let wait = l.check(Some("bob"), None).unwrap();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(l.check(None, Some(ip)).is_some(), "the address is locked too");
        assert!(l.check(Some("alice"), Some("10.0.0.2".parse().unwrap())).is_none());
        l.record_failure(Some("bob"), None);
        assert!(l.check(Some("bob"), None).unwrap() > Duration::from_secs(1));
        l.record_success("bob");
        assert!(l.check(Some("bob"), None).is_none());
    }
}
