//! The webhook delivery queue: one row per event per hook, durable in the
//! database so a restart loses nothing. The service layer decides what to
//! send where (`berth_registry::webhooks`); this trait only queues.

use async_trait::async_trait;

use crate::Result;

/// A delivery to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Random id, also sent to the receiver (for deduplication on its side).
    pub id: String,
    /// The configured hook's name: its URL and secret are looked up at send
    /// time, so neither is copied into the queue (a URL may be a credential).
    pub hook: String,
    /// `push`, `delete` or `tag`.
    pub event: String,
    /// The JSON body, as it will be sent.
    pub payload: String,
    pub created_at: i64,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub hook: String,
    pub event: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: i64,
}

/// Queue depth, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub pending: u64,
    pub dead: u64,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<()>;

    /// Claims up to `limit` deliveries due at `now`, hiding them from other
    /// workers until `claim_until`. A worker that dies lets the claim lapse.
    async fn claim_deliveries(&self, now: i64, claim_until: i64, limit: u32) -> Result<Vec<Delivery>>;

    async fn delivery_succeeded(&self, id: &str, now: i64) -> Result<()>;

    /// Records a failed attempt: try again at `retry_at`, or give up when `None`.
    async fn delivery_failed(&self, id: &str, error: &str, retry_at: Option<i64>, now: i64) -> Result<()>;

    /// Forgets deliveries delivered or abandoned before `before`; returns how many.
    async fn purge_deliveries(&self, before: i64) -> Result<u64>;

    async fn delivery_counts(&self) -> Result<QueueCounts>;
}
