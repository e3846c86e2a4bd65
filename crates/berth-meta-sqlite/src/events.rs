//! [`EventStore`]: the webhook delivery queue.

use async_trait::async_trait;
use berth_meta::Result;
use berth_meta::events::{Delivery, EventStore, NewDelivery, QueueCounts};
use berth_meta_sql::convert::count;

use crate::SqliteMetaStore;

#[async_trait]
impl EventStore for SqliteMetaStore {
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.write(async |tx| {
            for d in deliveries {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, hook, event, payload, attempts, next_attempt_at, created_at) \
                     VALUES (?, ?, ?, ?, 0, ?, ?)",
                )
                .bind(&d.id)
                .bind(&d.hook)
                .bind(&d.event)
                .bind(&d.payload)
                .bind(d.created_at)
                .bind(d.created_at)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_deliveries(&self, now: i64, claim_until: i64, limit: u32) -> Result<Vec<Delivery>> {
        let rows: Vec<(String, String, String, String, i64, i64)> = self
            .write(async |tx| {
                Ok(sqlx::query_as(
                    "UPDATE webhook_deliveries SET claimed_until = ?1 WHERE id IN ( \
                       SELECT id FROM webhook_deliveries \
                       WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= ?2 \
                         AND (claimed_until IS NULL OR claimed_until < ?2) \
                       ORDER BY next_attempt_at LIMIT ?3) \
                     RETURNING id, hook, event, payload, attempts, created_at",
                )
                .bind(claim_until)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
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
                attempts: attempts.try_into().unwrap_or(u32::MAX),
                created_at,
            })
            .collect();
        // RETURNING has no order: oldest first, for fairness.
        claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(claimed)
    }

    async fn delivery_succeeded(&self, id: &str, now: i64) -> Result<()> {
        self.write(async |tx| {
            sqlx::query(
                "UPDATE webhook_deliveries SET delivered_at = ?, attempts = attempts + 1, claimed_until = NULL \
                 WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn delivery_failed(&self, id: &str, error: &str, retry_at: Option<i64>, now: i64) -> Result<()> {
        self.write(async |tx| {
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?, claimed_until = NULL, \
                   next_attempt_at = COALESCE(?, next_attempt_at), dead_at = CASE WHEN ? IS NULL THEN ? END \
                 WHERE id = ?",
            )
            .bind(error)
            .bind(retry_at)
            .bind(retry_at)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn purge_deliveries(&self, before: i64) -> Result<u64> {
        self.write(async |tx| {
            Ok(sqlx::query("DELETE FROM webhook_deliveries WHERE delivered_at < ?1 OR dead_at < ?1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        })
        .await
    }

    async fn delivery_counts(&self) -> Result<QueueCounts> {
        let (pending, dead): (i64, i64) = self
            .read(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT COALESCE(SUM(CASE WHEN delivered_at IS NULL AND dead_at IS NULL THEN 1 ELSE 0 END), 0), \
                            COALESCE(SUM(CASE WHEN dead_at IS NOT NULL THEN 1 ELSE 0 END), 0) \
                     FROM webhook_deliveries",
                )
                .fetch_one(&mut *conn)
                .await?)
            })
            .await?;
        Ok(QueueCounts { pending: count(pending), dead: count(dead) })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use berth_meta::events::EventStore;

    use crate::{MIGRATOR, SqliteMetaStore, SqliteSettings};

    /// Migration 7 drops the copied webhook URL (often a credential) and
    /// forgets recorded errors that embedded it; queued deliveries stay.
    #[tokio::test]
    async fn migration_7_removes_webhook_urls_from_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteMetaStore::connect(&SqliteSettings::for_path(dir.path().join("b.db"))).await.expect("connect");
        let before = sqlx::migrate::Migrator {
            migrations: Cow::Owned(MIGRATOR.iter().filter(|m| m.version < 7).cloned().collect()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&store.writer).await.expect("migrations 1 to 6");
        sqlx::raw_sql(
            "INSERT INTO webhook_deliveries (id, hook, url, event, payload, next_attempt_at, last_error, created_at) \
             VALUES ('a', 'chat', 'https://hooks.example.com/T0/s3cret', 'push', '{}', 0, \
                     'request failed: error sending request for url (https://hooks.example.com/T0/s3cret)', 0), \
                    ('b', 'chat', 'https://hooks.example.com/T0/s3cret', 'push', '{}', 0, 'receiver answered 500', 0);",
        )
        .execute(&store.writer)
        .await
        .expect("old deliveries");

        store.migrate().await.expect("migration 7");
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('webhook_deliveries')")
            .fetch_all(&store.writer)
            .await
            .expect("columns");
        assert!(!columns.iter().any(|c| c == "url"), "{columns:?}");
        let errors: Vec<Option<String>> = sqlx::query_scalar("SELECT last_error FROM webhook_deliveries ORDER BY id")
            .fetch_all(&store.writer)
            .await
            .expect("errors");
        assert_eq!(errors, vec![None, Some("receiver answered 500".to_owned())]);
        let claimed = store.claim_deliveries(1, 60_001, 10).await.expect("claim");
        assert_eq!(claimed.iter().map(|d| d.hook.as_str()).collect::<Vec<_>>(), vec!["chat", "chat"]);
    }
}
