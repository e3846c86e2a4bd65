//! [`EventStore`]: the webhook delivery queue. Claims use
//! `FOR UPDATE SKIP LOCKED`, so replicas draining the queue together never
//! pick the same row.

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::events::{Delivery, EventStore, NewDelivery, QueueCounts};
use berth_meta_sql::convert::count;

use crate::PostgresMetaStore;
use crate::retry::retrying;

#[async_trait]
impl EventStore for PostgresMetaStore {
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        retrying("enqueue_deliveries", || async {
            let mut tx = self.pool.begin().await?;
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
        })
        .await
    }

    async fn claim_deliveries(&self, now: i64, claim_until: i64, limit: u32) -> Result<Vec<Delivery>> {
        let rows: Vec<(String, String, String, String, i32, i64)> = retrying("claim_deliveries", || async {
            Ok(sqlx::query_as(
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
            .fetch_all(&self.pool)
            .await?)
        })
        .await?;
        let mut claimed: Vec<Delivery> = rows
            .into_iter()
            .map(|(id, hook, event, payload, attempts, created_at)| Delivery {
                id,
                hook,
                event,
                payload,
                attempts: attempts.try_into().unwrap_or(0),
                created_at,
            })
            .collect();
        // RETURNING has no order: oldest first, for fairness.
        claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(claimed)
    }

    async fn delivery_succeeded(&self, id: &str, now: i64) -> Result<()> {
        retrying("delivery_succeeded", || async {
            sqlx::query(
                "UPDATE webhook_deliveries SET delivered_at = $1, attempts = attempts + 1, claimed_until = NULL \
                 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn delivery_failed(&self, id: &str, error: &str, retry_at: Option<i64>, now: i64) -> Result<()> {
        retrying("delivery_failed", || async {
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
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn purge_deliveries(&self, before: i64) -> Result<u64> {
        retrying("purge_deliveries", || async {
            let r = sqlx::query("DELETE FROM webhook_deliveries WHERE delivered_at < $1 OR dead_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(r.rows_affected())
        })
        .await
    }

    async fn delivery_counts(&self) -> Result<QueueCounts> {
        let (pending, dead): (i64, i64) = self
            .read(async |pool| {
                Ok(sqlx::query_as(
                    "SELECT COUNT(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL), \
                            COUNT(*) FILTER (WHERE dead_at IS NOT NULL) FROM webhook_deliveries",
                )
                .fetch_one(pool)
                .await?)
            })
            .await?;
        Ok(QueueCounts { pending: count(pending), dead: count(dead) })
    }
}
