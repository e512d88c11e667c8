//! One async mutex per key while anyone holds or waits for it, and none otherwise: per-key
//! exclusion where the keys come from outside (other servers' names, their media IDs), so
//! the map must not keep what nobody uses, and one slow key must not hold up another (as
//! a shared stripe would).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

type Lock = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Lock>>,
}

/// Held while the key's lock is (or is being waited for); dropping it lets the next in.
pub struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    lock: Option<Lock>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Lock>> {
        // Each operation leaves the map whole; a panic elsewhere cannot break it.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = Arc::clone(self.map().entry(key.to_owned()).or_default());
        // Made before waiting, so a waiter given up on still tidies the map.
        let mut guard = KeyedGuard {
            owner: self,
            key: key.to_owned(),
            lock: Some(Arc::clone(&lock)),
            held: None,
        };
        guard.held = Some(lock.lock_owned().await);
        guard
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.map();
        self.held.take();
        self.lock.take();
        // Only the map's own reference left: nobody holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_nothing_kept_after() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        let _b = locks.lock("b").await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(waiting.is_err(), "a second holder of a waits");
        assert_eq!(locks.len(), 2, "the waiter given up on left nothing extra");
        drop(a);
        assert_eq!(locks.len(), 1);
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(again.is_ok(), "a is free again");
        drop(again);
        drop(_b);
        assert_eq!(locks.len(), 0);
    }
}
