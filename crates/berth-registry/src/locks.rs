//! Per-key async locks (one per upload session), so two requests on the same
//! upload in this process run one after the other. Across processes the
//! metadata store's optimistic offset check catches the same conflict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

pub(crate) struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_owned()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyedGuard { locks: self, key: key.to_owned(), guard: Some(guard) }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map itself still holds the mutex: nobody waits, forget it.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_removed_after_use() {
        let locks = KeyedLocks::default();
        {
            let _a = locks.lock("a").await;
            assert_eq!(locks.map.lock().unwrap().len(), 1);
        }
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
