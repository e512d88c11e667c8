//! A bounded cache of answers about other servers (where they are, what software they
//! run). Its keys come from requests anyone can send, so it must not grow without end:
//! at most `capacity` entries, each until its expiry; when full, expired entries go
//! first, then the one that expires soonest.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub(crate) struct Bounded<V> {
    entries: Mutex<HashMap<String, (V, Instant)>>,
    capacity: usize,
}

impl<V: Clone> Bounded<V> {
    pub(crate) fn new(capacity: usize) -> Bounded<V> {
        Bounded {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (V, Instant)>> {
        // Each operation leaves the map whole; a panic elsewhere cannot break it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value for `key`, unless it expired.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let entries = self.lock();
        let (value, until) = entries.get(key)?;
        (*until > Instant::now()).then(|| value.clone())
    }

    pub(crate) fn insert(&self, key: String, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (value, now + ttl));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_dropping_the_expired_then_the_soonest() {
        let cache = Bounded::new(3);
        cache.insert("gone".into(), 0, Duration::ZERO);
        cache.insert("a".into(), 1, Duration::from_secs(10));
        cache.insert("b".into(), 2, Duration::from_secs(30));
        assert_eq!(cache.get("gone"), None, "expired");
        cache.insert("c".into(), 3, Duration::from_secs(20));
        assert_eq!(cache.len(), 3, "the expired one made room");
        cache.insert("d".into(), 4, Duration::from_secs(40));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a"), None, "the soonest to expire went");
        assert_eq!(
            (cache.get("b"), cache.get("c"), cache.get("d")),
            (Some(2), Some(3), Some(4))
        );
        for i in 0..1000 {
            cache.insert(format!("flood{i}"), i, Duration::from_secs(60));
        }
        assert_eq!(cache.len(), 3);
    }
}
