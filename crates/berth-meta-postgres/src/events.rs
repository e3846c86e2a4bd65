//! The webhook delivery queue (`berth_meta::EventStore`). Claims use
//! `FOR UPDATE SKIP LOCKED`, so replicas draining the queue together never
//! pick the same row.

use berth_meta::events::{Delivery, NewDelivery, QueueCounts};
use sqlx::{PgPool, Row};

use crate::error::StoreResult;

pub(crate) async fn enqueue(pool: &PgPool, deliveries: &[NewDelivery]) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    for d in deliveries {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, hook, event, payload, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $5)",
        )
        .bind(&d.id)
        .bind(&d.hook)
        .bind(&d.event)
        .bind(&d.payload)
        .bind(d.created_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn claim(pool: &PgPool, now: i64, claim_until: i64, limit: u32) -> StoreResult<Vec<Delivery>> {
    let rows = sqlx::query(
        "UPDATE webhook_deliveries SET claimed_until = $1 WHERE id IN ( \
           SELECT id FROM webhook_deliveries \
           WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) \
           ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING id, hook, event, payload, attempts, created_at",
    )
    .bind(claim_until)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(Delivery {
                id: r.try_get(0)?,
                hook: r.try_get(1)?,
                event: r.try_get(2)?,
                payload: r.try_get(3)?,
                attempts: r.try_get::<i32, _>(4)?.try_into().unwrap_or(0),
                created_at: r.try_get(5)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // RETURNING has no order: oldest first, for fairness.
    claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(claimed)
}

pub(crate) async fn succeeded(pool: &PgPool, id: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET delivered_at = $1, attempts = attempts + 1, claimed_until = NULL WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn failed(pool: &PgPool, id: &str, error: &str, retry_at: Option<i64>, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $1, claimed_until = NULL, \
           next_attempt_at = COALESCE($2, next_attempt_at), \
           dead_at = CASE WHEN $2::BIGINT IS NULL THEN $3 END \
         WHERE id = $4",
    )
    .bind(error)
    .bind(retry_at)
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn purge(pool: &PgPool, before: i64) -> StoreResult<u64> {
    let r = sqlx::query("DELETE FROM webhook_deliveries WHERE delivered_at < $1 OR dead_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

pub(crate) async fn counts(pool: &PgPool) -> StoreResult<QueueCounts> {
    let row = sqlx::query(
        "SELECT COUNT(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL), \
                COUNT(*) FILTER (WHERE dead_at IS NOT NULL) FROM webhook_deliveries",
    )
    .fetch_one(pool)
    .await?;
    Ok(QueueCounts { pending: row.try_get::<i64, _>(0)?.max(0) as u64, dead: row.try_get::<i64, _>(1)?.max(0) as u64 })
}

#[async_trait::async_trait]
impl berth_meta::events::EventStore for crate::PostgresMetaStore {
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> berth_meta::Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        crate::retry::retrying("enqueue_deliveries", || enqueue(&self.pool, deliveries)).await
    }

    async fn claim_deliveries(&self, now: i64, claim_until: i64, limit: u32) -> berth_meta::Result<Vec<Delivery>> {
        crate::retry::retrying("claim_deliveries", || claim(&self.pool, now, claim_until, limit)).await
    }

    async fn delivery_succeeded(&self, id: &str, now: i64) -> berth_meta::Result<()> {
        crate::retry::retrying("delivery_succeeded", || succeeded(&self.pool, id, now)).await
    }

    async fn delivery_failed(&self, id: &str, error: &str, retry_at: Option<i64>, now: i64) -> berth_meta::Result<()> {
        crate::retry::retrying("delivery_failed", || failed(&self.pool, id, error, retry_at, now)).await
    }

    async fn purge_deliveries(&self, before: i64) -> berth_meta::Result<u64> {
        crate::retry::retrying("purge_deliveries", || purge(&self.pool, before)).await
    }

    async fn delivery_counts(&self) -> berth_meta::Result<QueueCounts> {
        crate::retry::retrying("delivery_counts", || counts(&self.pool)).await
    }
}
