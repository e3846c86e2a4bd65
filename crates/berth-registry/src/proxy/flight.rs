//! Single flight: concurrent requests for the same key share one run of
//! the work. The work runs in a task of its own, so the callers may go away
//! without cancelling it, and its entry is removed when it finishes, so a
//! later request starts afresh rather than reading an old answer.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type Running<T> = (u64, Shared<BoxFuture<'static, Option<T>>>);

pub(crate) struct Flights<K, T> {
    running: Arc<Mutex<HashMap<K, Running<T>>>>,
    next_id: AtomicU64,
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Flights { running: Arc::default(), next_id: AtomicU64::new(0) }
    }
}

impl<K, T> Flights<K, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// The outcome of `work` for `key`: of the run already under way, or of
    /// a new one (`work` is then spawned; otherwise dropped unused). `None`
    /// if the work panicked.
    pub(crate) async fn run<F>(&self, key: K, work: F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let shared = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match running.get(&key) {
                Some((_, shared)) => shared.clone(),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let map = self.running.clone();
                    let done_key = key.clone();
                    let task = tokio::spawn(async move {
                        let out = work.await;
                        let mut running = map.lock().unwrap_or_else(|p| p.into_inner());
                        if running.get(&done_key).is_some_and(|(i, _)| *i == id) {
                            running.remove(&done_key);
                        }
                        out
                    });
                    let map = self.running.clone();
                    let panic_key = key.clone();
                    let shared = async move {
                        match task.await {
                            Ok(out) => Some(out),
                            Err(_) => {
                                // The task died before removing its entry.
                                let mut running = map.lock().unwrap_or_else(|p| p.into_inner());
                                if running.get(&panic_key).is_some_and(|(i, _)| *i == id) {
                                    running.remove(&panic_key);
                                }
                                None
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    running.insert(key, (id, shared.clone()));
                    shared
                }
            }
        };
        shared.await
    }

    /// Runs under way (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_run_and_later_ones_start_afresh() {
        let flights: Arc<Flights<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            runs.fetch_add(1, Ordering::SeqCst) + 1
        };
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move { flights.run("k", work(runs)).await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), Some(1));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "the finished run is forgotten");
        assert_eq!(flights.run("k", work(runs.clone())).await, Some(2));
    }

    #[tokio::test]
    async fn the_work_survives_its_callers() {
        let flights: Arc<Flights<u8, ()>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let caller = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(1, async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        let _ = tx.send(());
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        caller.abort();
        rx.await.expect("the work ran to its end");
    }

    #[tokio::test]
    async fn a_panic_is_none_and_forgotten() {
        let flights: Flights<u8, u8> = Flights::default();
        assert_eq!(flights.run(1, async { panic!("boom") }).await, None);
        assert_eq!(flights.len(), 0);
        assert_eq!(flights.run(1, async { 7 }).await, Some(7));
    }
}
