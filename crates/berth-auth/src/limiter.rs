//! Bounds on password logins, applied before any argon2 work is spent.
//!
//! - **Attempts, not failures, are counted**, before the hash is computed,
//!   so a burst of concurrent guesses cannot all pass the check before the
//!   first failure is recorded. A successful login gives its attempt back.
//! - **At most [`IN_FLIGHT`] checks run at once per client address and per
//!   user** (a few more may wait briefly); beyond that the caller is told to
//!   retry ([`Refusal::Busy`]).
//! - **Locks spare the innocent.** From an address where a user logged in
//!   successfully within [`TRUST_WINDOW`], only that (user, address) pair's
//!   count applies: neither another user's failures from the same address
//!   (one bad script behind a shared address) nor guesses at this user from
//!   elsewhere lock them out there. Elsewhere, the address's and the user's
//!   counts apply. A user's own lock is capped at [`USER_LOCK_MAX`]: it only
//!   slows guessing, it cannot shut the user out for long.
//! - Personal access tokens never come here: 256 random bits cannot be
//!   guessed, and a failed token costs one indexed lookup and no argon2.
//!
//! IPv6 addresses are grouped by /64 (one host usually holds a whole /64).
//! State is per process: replicas each keep their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Checks in flight at once per address, per user, per (user, address).
pub const IN_FLIGHT: usize = 2;
/// Callers that may wait for one of those slots; more are refused at once.
const MAX_WAITING: u32 = 16;
/// How long a successful login makes its address trusted for that user.
pub const TRUST_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest lock on a user (from addresses they have not used).
pub const USER_LOCK_MAX: Duration = Duration::from_secs(60);
/// Attempts older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(900);
/// Bound on remembered keys; the stalest are dropped beyond it.
const MAX_ENTRIES: usize = 100_000;

/// Why a login is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many recent attempts: locked for this long.
    Locked(Duration),
    /// Too many checks already running or waiting for this address or user.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
    Pair(String, IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    attempts: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// A key's concurrency gate: a few slots and a count of waiters.
struct Gate {
    slots: Arc<Semaphore>,
    waiting: u32,
}

#[derive(Default)]
struct State {
    counters: HashMap<Key, Counter>,
    gates: HashMap<Key, Gate>,
    /// (user, address) → last successful login there.
    trusted: HashMap<(String, IpAddr), Instant>,
}

pub struct LoginLimiter {
    limit: u32,
    max: Duration,
    state: Mutex<State>,
}

/// The keys one login is counted under.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    user: Option<String>,
    address: Option<IpAddr>,
    trusted: bool,
}

impl LoginKeys {
    fn lock_keys(&self) -> Vec<Key> {
        match (&self.user, self.address) {
            (Some(u), Some(a)) if self.trusted => vec![Key::Pair(u.clone(), a)],
            (user, address) => {
                address.map(Key::Address).into_iter().chain(user.clone().map(Key::User)).collect::<Vec<_>>()
            }
        }
    }

    /// Whether this login comes from an address the user recently logged in from.
    pub fn trusted(&self) -> bool {
        self.trusted
    }
}

/// Slots held while a login's password is checked; released on drop.
pub struct Admission {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// The address key: IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::from(seg)
            }
        },
        v4 => v4,
    }
}

impl LoginLimiter {
    pub fn new(limit: u32, max: Duration) -> Self {
        LoginLimiter { limit, max, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys for a login by `user` (case-insensitive) from `ip`.
    pub fn keys(&self, user: Option<&str>, ip: Option<IpAddr>) -> LoginKeys {
        let user = user.filter(|u| !u.is_empty()).map(str::to_ascii_lowercase);
        let address = ip.map(address_key);
        let trusted = match (&user, address) {
            (Some(u), Some(a)) => self.lock().trusted.get(&(u.clone(), a)).is_some_and(|t| t.elapsed() < TRUST_WINDOW),
            _ => false,
        };
        LoginKeys { user, address, trusted }
    }

    /// How long the login must wait, if one of its keys is locked.
    pub fn locked(&self, keys: &LoginKeys) -> Option<Duration> {
        let now = Instant::now();
        let state = self.lock();
        keys.lock_keys()
            .iter()
            .filter_map(|k| state.counters.get(k)?.locked_until.filter(|t| *t > now).map(|t| t - now))
            .max()
    }

    /// Takes a check slot for each of the login's address, user and pair
    /// (waiting briefly behind at most a few others), or refuses at once.
    pub async fn admit(&self, keys: &LoginKeys) -> Result<Admission, Refusal> {
        let mut gate_keys: Vec<Key> = Vec::with_capacity(2);
        match (&keys.user, keys.address) {
            // A trusted pair is not held up by others' load on its address or name.
            (Some(u), Some(a)) if keys.trusted => gate_keys.push(Key::Pair(u.clone(), a)),
            (user, address) => {
                gate_keys.extend(address.map(Key::Address));
                gate_keys.extend(user.clone().map(Key::User));
            }
        }
        let mut permits = Vec::with_capacity(gate_keys.len());
        for key in gate_keys {
            let slots = {
                let mut state = self.lock();
                let gate = state
                    .gates
                    .entry(key.clone())
                    .or_insert_with(|| Gate { slots: Arc::new(Semaphore::new(IN_FLIGHT)), waiting: 0 });
                match gate.slots.clone().try_acquire_owned() {
                    Ok(p) => {
                        permits.push(p);
                        continue;
                    }
                    Err(_) if gate.waiting >= MAX_WAITING => return Err(Refusal::Busy),
                    Err(_) => {
                        gate.waiting += 1;
                        gate.slots.clone()
                    }
                }
            };
            let acquired = tokio::time::timeout(Duration::from_secs(5), slots.acquire_owned()).await;
            if let Some(gate) = self.lock().gates.get_mut(&key) {
                gate.waiting = gate.waiting.saturating_sub(1);
            }
            match acquired {
                Ok(Ok(p)) => permits.push(p),
                _ => return Err(Refusal::Busy),
            }
        }
        self.forget_idle_gates();
        Ok(Admission { _permits: permits })
    }

    /// Drops gates nobody holds or waits for (keeps the map small).
    fn forget_idle_gates(&self) {
        let mut state = self.lock();
        if state.gates.len() > 1024 {
            state.gates.retain(|_, g| g.waiting > 0 || g.slots.available_permits() < IN_FLIGHT);
        }
    }

    /// Counts an attempt about to be checked; locks a key that passes the limit.
    pub fn count_attempt(&self, keys: &LoginKeys) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.counters.len() >= MAX_ENTRIES {
            state.counters.retain(|_, c| now.duration_since(c.last) < WINDOW);
        }
        for key in keys.lock_keys() {
            let cap = if matches!(key, Key::User(_)) { self.max.min(USER_LOCK_MAX) } else { self.max };
            let c = state.counters.entry(key).or_insert(Counter { attempts: 0, locked_until: None, last: now });
            if now.duration_since(c.last) >= WINDOW {
                *c = Counter { attempts: 0, locked_until: None, last: now };
            }
            c.attempts += 1;
            c.last = now;
            if c.attempts > self.limit {
                let exp = (c.attempts - self.limit - 1).min(20);
                c.locked_until = Some(now + Duration::from_secs(1u64 << exp).min(cap));
            }
        }
    }

    /// A successful login: its attempt is given back, the user's and the
    /// pair's records are cleared (not the address's: one good password must
    /// not unlock an address trying many users), and the address becomes
    /// trusted for this user.
    pub fn succeeded(&self, keys: &LoginKeys, counted: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(u) = &keys.user {
            state.counters.remove(&Key::User(u.clone()));
            if let Some(a) = keys.address {
                state.counters.remove(&Key::Pair(u.clone(), a));
                if state.trusted.len() >= MAX_ENTRIES {
                    state.trusted.retain(|_, t| now.duration_since(*t) < TRUST_WINDOW);
                    if state.trusted.len() >= MAX_ENTRIES {
                        state.trusted.clear();
                    }
                }
                state.trusted.insert((u.clone(), a), now);
            }
        }
        if let (Some(a), true, false) = (keys.address, counted, keys.trusted)
            && let Some(c) = state.counters.get_mut(&Key::Address(a))
        {
            c.attempts = c.attempts.saturating_sub(1);
            if c.attempts <= self.limit {
                c.locked_until = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn fail(l: &LoginLimiter, user: &str, addr: &str) {
        let k = l.keys(Some(user), ip(addr));
        l.count_attempt(&k);
    }

    #[test]
    fn attempts_lock_after_the_limit_and_double() {
        let l = LoginLimiter::new(2, Duration::from_secs(300));
        let k = l.keys(Some("bob"), ip("10.0.0.1"));
        assert!(l.locked(&k).is_none());
        l.count_attempt(&k);
        l.count_attempt(&k);
        assert!(l.locked(&k).is_none(), "limit not yet passed");
        l.count_attempt(&k);
        let wait = l.locked(&k).unwrap();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(l.locked(&l.keys(None, ip("10.0.0.1"))).is_some(), "the address is locked too");
        assert!(l.locked(&l.keys(Some("bob"), ip("10.0.0.2"))).is_some(), "the user is locked elsewhere");
        assert!(l.locked(&l.keys(Some("alice"), ip("10.0.0.2"))).is_none());
        l.count_attempt(&l.keys(Some("bob"), None));
        assert!(l.locked(&l.keys(Some("bob"), None)).unwrap() > Duration::from_secs(1));
    }

    #[test]
    fn a_trusted_address_is_spared_other_users_and_other_addresses() {
        let l = LoginLimiter::new(1, Duration::from_secs(300));
        let alice_home = l.keys(Some("alice"), ip("10.0.0.5"));
        l.succeeded(&alice_home, false);
        // A bad script for another user from the same (shared) address,
        // and guesses at alice from elsewhere.
        for _ in 0..5 {
            fail(&l, "ci-bot", "10.0.0.5");
            fail(&l, "alice", "192.0.2.9");
        }
        assert!(l.locked(&l.keys(Some("ci-bot"), ip("10.0.0.5"))).is_some());
        assert!(l.locked(&l.keys(Some("alice"), ip("192.0.2.7"))).is_some(), "alice elsewhere is slowed");
        let again = l.keys(Some("alice"), ip("10.0.0.5"));
        assert!(again.trusted());
        assert!(l.locked(&again).is_none(), "alice at home is not locked out");
        // Guessing from the trusted address itself still locks that pair.
        l.count_attempt(&again);
        l.count_attempt(&again);
        assert!(l.locked(&again).is_some());
    }

    #[test]
    fn user_locks_are_capped() {
        let l = LoginLimiter::new(1, Duration::from_secs(3600));
        for i in 0..30 {
            fail(&l, "carol", &format!("10.1.{}.{}", i / 200, i % 200));
        }
        let wait = l.locked(&l.keys(Some("carol"), ip("10.9.9.9"))).unwrap();
        assert!(wait <= USER_LOCK_MAX, "{wait:?}");
    }

    #[test]
    fn success_gives_the_attempt_back_and_clears_the_user() {
        let l = LoginLimiter::new(1, Duration::from_secs(300));
        let k = l.keys(Some("dave"), ip("10.0.0.1"));
        l.count_attempt(&k);
        l.count_attempt(&k);
        assert!(l.locked(&k).is_some());
        l.succeeded(&k, true);
        assert!(l.locked(&l.keys(Some("dave"), ip("10.0.0.7"))).is_none(), "user record cleared");
        assert!(l.locked(&l.keys(Some("erin"), ip("10.0.0.1"))).is_none(), "address back at the limit");
    }

    #[test]
    fn ipv6_addresses_group_by_64() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = address_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(address_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn concurrent_checks_per_key_are_bounded() {
        let l = LoginLimiter::new(100, Duration::from_secs(300));
        let k = l.keys(Some("x"), ip("10.0.0.1"));
        let mut held = Vec::new();
        for _ in 0..IN_FLIGHT {
            held.push(l.admit(&k).await.expect("a slot"));
        }
        // Waiters queue up to MAX_WAITING, the rest are refused at once.
        let l = Arc::new(l);
        let mut waiters = Vec::new();
        for _ in 0..MAX_WAITING {
            let (l, k) = (l.clone(), k.clone());
            waiters.push(tokio::spawn(async move { l.admit(&k).await.is_ok() }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(l.admit(&k).await.err(), Some(Refusal::Busy));
        drop(held);
        for w in waiters {
            assert!(w.await.unwrap(), "waiters get a slot once one is free");
        }
    }
}
