//! Bearer tokens: cached per (realm, service, scope) until shortly before
//! they expire, and fetched at most once at a time per key (single flight:
//! callers that arrive during a fetch wait for it and share its outcome,
//! success or failure).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::error::UpstreamError;

/// `expires_in` when the realm leaves it out (Docker's token spec).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest lifetime honoured, whatever the realm says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A token is not used in its last quarter of life, nor its last 10 s.
const MAX_MARGIN: Duration = Duration::from_secs(10);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 1024;

/// What a token is for. `scope` is the challenge's scope, which may list
/// several scopes separated by spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

#[derive(Clone)]
pub struct Token {
    pub value: String,
    /// When the token stops being used (before its real expiry).
    pub use_until: Instant,
}

impl Token {
    fn usable(&self) -> bool {
        Instant::now() < self.use_until
    }
}

/// How long a token obtained at `fetched_at` with `expires_in` is used.
pub fn use_until(fetched_at: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = match expires_in {
        Some(s) if s > 0 => Duration::from_secs(s).min(MAX_TOKEN_LIFETIME),
        _ => DEFAULT_TOKEN_LIFETIME,
    };
    let margin = (lifetime / 4).min(MAX_MARGIN);
    fetched_at + lifetime - margin
}

/// A token endpoint's answer. Docker's spec says `token`; OAuth2-style
/// realms say `access_token`; some send both (equal).
#[derive(Deserialize)]
pub struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and its lifetime in seconds; `None` if the answer has no
    /// usable token (empty, or not a valid header value).
    pub fn into_parts(self) -> Option<(String, Option<u64>)> {
        let token = self.token.filter(|t| !t.is_empty()).or(self.access_token.filter(|t| !t.is_empty()))?;
        let header_safe = token.bytes().all(|b| b.is_ascii_graphic());
        header_safe.then_some((token, self.expires_in))
    }
}

#[derive(Default)]
struct Slot {
    token: Option<Token>,
    /// The last fetch's failure, and when it ended: shared with the callers
    /// that were waiting for that fetch.
    failure: Option<(Instant, UpstreamError)>,
}

#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= SWEEP_AT && !slots.contains_key(key) {
            // Drop idle entries whose token is gone or expired.
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock().map(|s| s.token.as_ref().is_some_and(Token::usable)).unwrap_or(true)
            });
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// A usable cached token, without waiting for a fetch in flight.
    pub fn peek(&self, key: &TokenKey) -> Option<String> {
        let slot = self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(key)?.clone();
        let s = slot.try_lock().ok()?;
        s.token.as_ref().filter(|t| t.usable()).map(|t| t.value.clone())
    }

    /// A usable token for `key`: the cached one unless it is `rejected` (the
    /// upstream just refused it), else one from `fetch`, run by one caller
    /// at a time; callers that waited on a failed fetch get its error.
    pub async fn get<F, Fut>(&self, key: &TokenKey, rejected: Option<&str>, fetch: F) -> Result<String, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Token, UpstreamError>>,
    {
        let slot = self.slot(key);
        let waited_from = Instant::now();
        let mut s = slot.lock().await;
        if let Some(t) = s.token.as_ref().filter(|t| t.usable() && Some(t.value.as_str()) != rejected) {
            return Ok(t.value.clone());
        }
        if let Some((at, e)) = &s.failure
            && *at >= waited_from
        {
            return Err(e.clone());
        }
        s.token = None;
        match fetch().await {
            Ok(t) => {
                let value = t.value.clone();
                s.token = Some(t);
                s.failure = None;
                Ok(value)
            }
            Err(e) => {
                s.failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::Origin;

    fn key(scope: &str) -> TokenKey {
        TokenKey { realm: "https://a/token".into(), service: Some("s".into()), scope: Some(scope.into()) }
    }

    fn token(v: &str, secs: u64) -> Token {
        Token { value: v.into(), use_until: use_until(Instant::now(), Some(secs)) }
    }

    #[test]
    fn lifetimes() {
        let t0 = Instant::now();
        assert_eq!(use_until(t0, None), t0 + Duration::from_secs(50));
        assert_eq!(use_until(t0, Some(0)), t0 + Duration::from_secs(50));
        assert_eq!(use_until(t0, Some(300)), t0 + Duration::from_secs(290));
        assert_eq!(use_until(t0, Some(4)), t0 + Duration::from_secs(3));
        assert_eq!(use_until(t0, Some(10_000_000)), t0 + Duration::from_secs(3590));
    }

    #[test]
    fn token_responses() {
        let parse = |s: &str| serde_json::from_str::<TokenResponse>(s).unwrap().into_parts();
        assert_eq!(parse(r#"{"token":"abc","expires_in":300}"#), Some(("abc".into(), Some(300))));
        assert_eq!(parse(r#"{"access_token":"xyz"}"#), Some(("xyz".into(), None)));
        assert_eq!(parse(r#"{"token":"","access_token":"xyz"}"#), Some(("xyz".into(), None)));
        assert_eq!(parse(r#"{"token":"a\nb"}"#), None);
        assert_eq!(parse(r#"{"expires_in":3}"#), None);
    }

    #[tokio::test]
    async fn single_flight_shares_success_and_failure() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&key("a"), None, || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(token("t1", 60))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.peek(&key("a")).as_deref(), Some("t1"));
        assert_eq!(cache.peek(&key("b")), None);

        // A rejected token is replaced.
        let got = cache.get(&key("a"), Some("t1"), || async { Ok(token("t2", 60)) }).await.unwrap();
        assert_eq!(got, "t2");

        // Failures are shared with the callers that waited for them.
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&key("c"), None, || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(UpstreamError::Unavailable {
                            upstream: Origin::new("t", "http://x"),
                            what: "token".into(),
                            status: Some(503),
                            detail: String::new(),
                        })
                    })
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_tokens_are_refetched() {
        let cache = TokenCache::default();
        let short = Token { value: "old".into(), use_until: Instant::now() };
        cache.get(&key("a"), None, || async { Ok(short) }).await.unwrap();
        assert_eq!(cache.peek(&key("a")), None);
        let got = cache.get(&key("a"), None, || async { Ok(token("new", 60)) }).await.unwrap();
        assert_eq!(got, "new");
    }
}
