//! Work in flight per key, and a bounded wait for a key's to be done: a device's sends, so
//! that its own `/sync` carries an event it sent only once the send has been answered
//! (matrix-js-sdk loses a thread reply whose copy comes down `/sync` first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<String, usize>>,
    done: Notify,
}

/// Held while one piece of work for a key is in flight.
pub struct InFlightGuard {
    owner: Arc<InFlight>,
    key: String,
}

impl InFlight {
    /// Marks one piece of work for `key` in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>, key: String) -> InFlightGuard {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(key.clone()).or_default() += 1;
        InFlightGuard {
            owner: Arc::clone(self),
            key,
        }
    }

    fn busy(&self, key: &str) -> bool {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.contains_key(key)
    }

    /// Waits until nothing is in flight for `key`, for at most `max`.
    pub async fn settled(&self, key: &str, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let done = self.done.notified();
            if !self.busy(key) {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut counts = (self.owner.counts.lock()).unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
        drop(counts);
        self.owner.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_the_work_is_done_or_at_its_bound() {
        let in_flight = Arc::new(InFlight::default());
        let guard = in_flight.start("a".into());
        let started = tokio::time::Instant::now();
        in_flight.settled("b", Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "another key waits for nothing"
        );
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move { in_flight.settled("a", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the wait ended while the work was in flight"
        );
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the wait ends once the work is done")
            .unwrap();
        let _stuck = in_flight.start("c".into());
        let started = tokio::time::Instant::now();
        in_flight.settled("c", Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
