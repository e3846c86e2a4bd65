//! Suite cases for [`EventStore`]: the webhook delivery queue.
//!
//! Each case takes a fresh, empty, migrated store; `meta_store_suite!` runs
//! them from its `events` list (a unit test checks that list is complete).

use std::collections::HashSet;
use std::sync::Arc;

use super::T0;
use crate::EventStore;
use crate::events::{NewDelivery, QueueCounts};

fn delivery(id: &str, at: i64) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        hook: "scanner".into(),
        event: "push".into(),
        payload: format!(r#"{{"id":"{id}"}}"#),
        created_at: at,
    }
}

pub async fn events_are_claimed_once_until_the_claim_lapses(store: Arc<dyn EventStore>) {
    store
        .enqueue_deliveries(&[delivery("a", T0), delivery("b", T0 + 1), delivery("later", T0 + 10_000)])
        .await
        .expect("enqueue");
    let first = store.claim_deliveries(T0 + 5, T0 + 60_005, 10).await.expect("claim");
    let ids: Vec<&str> = first.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"], "only due deliveries, oldest first");
    assert_eq!(first[0].payload, r#"{"id":"a"}"#);
    assert_eq!((first[0].hook.as_str(), first[0].event.as_str(), first[0].attempts), ("scanner", "push", 0));
    // Claimed rows are hidden from a second worker...
    assert!(store.claim_deliveries(T0 + 6, T0 + 60_006, 10).await.expect("claim").is_empty());
    // ... until the claim lapses (the first worker died).
    let again = store.claim_deliveries(T0 + 60_010, T0 + 120_010, 1).await.expect("claim");
    assert_eq!(again.len(), 1, "limit respected");
}

pub async fn events_record_success_failure_and_abandonment(store: Arc<dyn EventStore>) {
    store
        .enqueue_deliveries(&[delivery("ok", T0), delivery("flaky", T0), delivery("hopeless", T0)])
        .await
        .expect("enqueue");
    let claimed = store.claim_deliveries(T0, T0 + 60_000, 10).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    store.delivery_succeeded("ok", T0 + 1).await.expect("succeeded");
    store.delivery_failed("flaky", "receiver answered 503", Some(T0 + 2_000), T0 + 1).await.expect("failed");
    store.delivery_failed("hopeless", "gone", None, T0 + 1).await.expect("abandoned");
    assert_eq!(store.delivery_counts().await.expect("counts"), QueueCounts { pending: 1, dead: 1 });
    // The failed one comes back when due, with its attempt counted; nothing else does.
    assert!(store.claim_deliveries(T0 + 1_000, T0 + 61_000, 10).await.expect("claim").is_empty());
    let retry = store.claim_deliveries(T0 + 2_000, T0 + 62_000, 10).await.expect("claim");
    assert_eq!(retry.len(), 1);
    assert_eq!((retry[0].id.as_str(), retry[0].attempts), ("flaky", 1));
    // Purging forgets delivered and abandoned rows older than the cut-off only.
    assert_eq!(store.purge_deliveries(T0 + 2).await.expect("purge"), 2);
    assert_eq!(store.delivery_counts().await.expect("counts"), QueueCounts { pending: 1, dead: 0 });
}

pub async fn events_concurrent_workers_never_share_a_delivery(store: Arc<dyn EventStore>) {
    let rows: Vec<NewDelivery> = (0..40).map(|i| delivery(&format!("d{i:02}"), T0)).collect();
    store.enqueue_deliveries(&rows).await.expect("enqueue");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_deliveries(T0 + 1, T0 + 60_001, 3).await.expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for w in workers {
        for id in w.await.expect("worker") {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 40);
}
