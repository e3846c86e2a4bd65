//! Webhooks: events (push, delete, tag change) go to configured receivers,
//! signed with HMAC-SHA256, retried with backoff, and queued in the database
//! first, so a restart loses no delivery.
//!
//! - When something happens, [`Webhooks::emit`] writes one queue row per
//!   matching hook (owner filter, event filter).
//! - A [`Deliverer`] (one per replica) claims due rows, POSTs them, and
//!   records the outcome; claims lapse if a replica dies, so another one
//!   picks the delivery up. Receivers may see a delivery twice and can
//!   deduplicate on `X-Berth-Delivery`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use berth_config::mask_url;
use berth_meta::events::{Delivery, EventStore, NewDelivery};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::now_ms;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A manifest was pushed.
    Push,
    /// A manifest or a tag was deleted.
    Delete,
    /// A tag was created or moved.
    Tag,
    /// A push was refused for a quota or a size limit.
    Quota,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Delete => "delete",
            EventKind::Tag => "tag",
            EventKind::Quota => "quota",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "push" => Some(EventKind::Push),
            "delete" => Some(EventKind::Delete),
            "tag" => Some(EventKind::Tag),
            "quota" => Some(EventKind::Quota),
            _ => None,
        }
    }
}

/// One receiver, from `[[webhooks]]`.
#[derive(Clone)]
pub struct Hook {
    pub name: String,
    /// May be a credential (chat webhooks): shown only as [`mask_url`].
    pub url: String,
    pub secret: String,
    /// Only events in these owners' namespaces; empty: all.
    pub owners: Vec<String>,
    /// Only these events; empty: all.
    pub events: Vec<EventKind>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("name", &self.name).field("url", &mask_url(&self.url)).finish_non_exhaustive()
    }
}

impl Hook {
    fn wants(&self, kind: EventKind, owner: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&kind))
            && (self.owners.is_empty() || self.owners.iter().any(|o| o == owner))
    }
}

/// An event's facts.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub tags: Vec<String>,
    pub actor: Option<String>,
    /// What a refusal said (quota events).
    pub message: Option<String>,
}

/// The configured hooks and the queue.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn EventStore>,
    hooks: Arc<Vec<Hook>>,
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Webhooks {
    pub fn new(store: Arc<dyn EventStore>, hooks: Vec<Hook>) -> Self {
        Webhooks { store, hooks: Arc::new(hooks) }
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Queues `events` for every hook that wants them. Failing to queue is
    /// logged, not returned: the registry operation itself succeeded.
    pub async fn emit(&self, events: &[Event]) {
        if self.hooks.is_empty() || events.is_empty() {
            return;
        }
        let now = now_ms();
        let mut rows = Vec::new();
        for e in events {
            let owner = e.repository.split('/').next().unwrap_or_default();
            for hook in self.hooks.iter().filter(|h| h.wants(e.kind, owner)) {
                let id = new_id();
                let payload = json!({
                    "id": id,
                    "event": e.kind.as_str(),
                    "timestamp": rfc3339(now),
                    "repository": e.repository,
                    "owner": owner,
                    "tag": e.tag,
                    "tags": e.tags,
                    "digest": e.digest,
                    "media_type": e.media_type,
                    "size": e.size,
                    "actor": e.actor,
                    "message": e.message,
                });
                rows.push(NewDelivery {
                    id,
                    hook: hook.name.clone(),
                    event: e.kind.as_str().to_owned(),
                    payload: payload.to_string(),
                    created_at: now,
                });
            }
        }
        if let Err(e) = self.store.enqueue_deliveries(&rows).await {
            tracing::error!(error = %e, deliveries = rows.len(), "could not queue webhook deliveries");
        }
    }

    /// A deliverer for this replica.
    pub fn deliverer(&self) -> Deliverer {
        Deliverer::new(self.store.clone(), self.hooks.as_ref().clone())
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body), as sent in `X-Berth-Signature-256`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a request failed, with its causes (reqwest's own text names only the
/// kind) but never the URL, which reqwest embeds and which may be the
/// credential: this text is logged and stored with the delivery.
fn request_error(e: reqwest::Error, url: &str) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    scrub(text, url)
}

/// `text` with every part of `url` that may be secret replaced by `***`
/// (in case a cause quotes it): the whole URL, what follows its host, and
/// its user info.
fn scrub(mut text: String, url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let tail = url[after_scheme..].find(['/', '?', '#']).map_or("", |i| &url[after_scheme + i..]);
    let mut secret_parts = vec![url.to_owned(), tail.to_owned()];
    if let Ok(u) = reqwest::Url::parse(url) {
        let parsed = [u.path(), u.query().unwrap_or_default(), u.username(), u.password().unwrap_or_default()];
        secret_parts.extend(parsed.map(str::to_owned));
    }
    // Longest first, and nothing so short it would mangle ordinary words.
    secret_parts.retain(|p| p.len() >= 4);
    secret_parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for part in secret_parts {
        text = text.replace(&part, "***");
    }
    text
}

/// Attempts before a delivery is given up (spread over about five hours).
pub const MAX_ATTEMPTS: u32 = 15;
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a claimed delivery is hidden from other workers.
const CLAIM: Duration = Duration::from_secs(60);
const BATCH: u32 = 16;
/// Delivered and abandoned rows are kept this long, for inspection.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Wait before attempt `n + 1` after `n` failures: 2, 4, 8 ... seconds, at most an hour.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(12)).min(MAX_BACKOFF)
}

pub struct Deliverer {
    store: Arc<dyn EventStore>,
    hooks: HashMap<String, Hook>,
    client: reqwest::Client,
}

enum Outcome {
    Delivered,
    Failed(String),
}

impl Deliverer {
    fn new(store: Arc<dyn EventStore>, hooks: Vec<Hook>) -> Self {
        // reqwest uses rustls with the process-wide provider (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("berth-webhook/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Deliverer { store, hooks: hooks.into_iter().map(|h| (h.name.clone(), h)).collect(), client }
    }

    /// Sends what is due; returns how many deliveries were attempted.
    pub async fn deliver_due(&self) -> usize {
        let now = now_ms();
        let claimed = match self.store.claim_deliveries(now, now + CLAIM.as_millis() as i64, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook queue");
                return 0;
            }
        };
        let n = claimed.len();
        let sends = claimed.into_iter().map(|d| async move {
            let outcome = self.send(&d).await;
            self.record(&d, outcome).await;
        });
        futures_util::future::join_all(sends).await;
        n
    }

    async fn send(&self, d: &Delivery) -> Outcome {
        let Some(hook) = self.hooks.get(&d.hook) else {
            return Outcome::Failed(format!("hook {:?} is no longer configured", d.hook));
        };
        let request = self
            .client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-berth-event", &d.event)
            .header("x-berth-delivery", &d.id)
            .header("x-berth-signature-256", signature(&hook.secret, d.payload.as_bytes()))
            .body(d.payload.clone());
        match request.send().await {
            Ok(r) if r.status().is_success() => Outcome::Delivered,
            Ok(r) => Outcome::Failed(format!("receiver answered {}", r.status())),
            Err(e) => Outcome::Failed(format!("request failed: {}", request_error(e, &hook.url))),
        }
    }

    async fn record(&self, d: &Delivery, outcome: Outcome) {
        let m = berth_metrics::metrics();
        let now = now_ms();
        let result = match outcome {
            Outcome::Delivered => {
                m.webhook_deliveries.get_or_create(&berth_metrics::KindLabels { kind: "delivered" }).inc();
                self.store.delivery_succeeded(&d.id, now).await
            }
            Outcome::Failed(error) => {
                let failures = d.attempts + 1;
                let gone = !self.hooks.contains_key(&d.hook);
                let retry_at = (failures < MAX_ATTEMPTS && !gone).then(|| now + backoff(failures).as_millis() as i64);
                let kind = if retry_at.is_some() { "failed" } else { "abandoned" };
                m.webhook_deliveries.get_or_create(&berth_metrics::KindLabels { kind }).inc();
                let url = self.hooks.get(&d.hook).map_or_else(|| "-".to_owned(), |h| mask_url(&h.url));
                tracing::warn!(hook = %d.hook, %url, delivery = %d.id, attempt = failures, %error, "webhook delivery failed");
                self.store.delivery_failed(&d.id, &error, retry_at, now).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, delivery = %d.id, "cannot record a webhook delivery outcome");
        }
    }

    /// Delivers until `shutdown` resolves, polling the queue every second
    /// (at once again while there is a backlog).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_purge = now_ms();
        loop {
            let sent = self.deliver_due().await;
            if now_ms() - last_purge > 3_600_000 {
                last_purge = now_ms();
                let _ = self.store.purge_deliveries(last_purge - KEEP.as_millis() as i64).await;
            }
            let pause = if sent as u32 == BATCH { Duration::ZERO } else { Duration::from_secs(1) };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        let s = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(14), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn failures_never_quote_the_url() {
        // A closed port: nothing listens on port 9 of a loopback address.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = "http://user:pa55word@127.0.0.1:9/T0/s3cretpath?token=s3cretquery";
        let e = reqwest::Client::new().post(url).send().await.expect_err("nothing listens");
        let text = request_error(e, url);
        for secret in ["s3cretpath", "s3cretquery", "pa55word", "user:"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("error sending request"), "{text}");
        let quoted = scrub(format!("connect to {url} failed; path /T0/s3cretpath"), url);
        assert_eq!(quoted, "connect to *** failed; path ***");
        let hook = Hook { name: "h".into(), url: url.into(), secret: "k".into(), owners: vec![], events: vec![] };
        assert!(!format!("{hook:?}").contains("s3cret"));
    }

    #[test]
    fn hooks_filter_by_owner_and_event() {
        let h = Hook {
            name: "a".into(),
            url: "http://x".into(),
            secret: "s".into(),
            owners: vec!["acme".into()],
            events: vec![EventKind::Push],
        };
        assert!(h.wants(EventKind::Push, "acme"));
        assert!(!h.wants(EventKind::Delete, "acme"));
        assert!(!h.wants(EventKind::Push, "other"));
        let all = Hook { owners: vec![], events: vec![], ..h };
        assert!(all.wants(EventKind::Tag, "anyone"));
    }
}
