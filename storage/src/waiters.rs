//! Long-polls waiting for a commit that concerns them. Each waiter names the rooms it
//! watches. As positions become visible, one that concerns only its room's members (a
//! message, a receipt, typing: [`crate::Batch::concerns_only_room`]) wakes the waiters of
//! that room, and any other wakes them all. A message thus wakes its room's members'
//! long-polls, not every one on the server.
//!
//! A woken waiter keeps the wake until it next waits, so a commit between its last look
//! and its wait is never missed: register first, then look, then wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Waiters {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Every waiter, for commits that may concern anyone.
    all: HashMap<u64, Arc<Notify>>,
    /// The waiters watching each room.
    by_room: HashMap<Arc<str>, HashMap<u64, Arc<Notify>>>,
}

/// A registered long-poll; dropping it unregisters it.
pub struct Waiter {
    id: u64,
    rooms: Vec<Arc<str>>,
    notify: Arc<Notify>,
    waiters: Arc<Waiters>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Maps of handles, consistent after every step: a panic elsewhere cannot break them.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn register(self: &Arc<Self>, rooms: Vec<Arc<str>>) -> Waiter {
        let notify = Arc::new(Notify::new());
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.all.insert(id, Arc::clone(&notify));
        for room in &rooms {
            let watching = registry.by_room.entry(Arc::clone(room)).or_default();
            watching.insert(id, Arc::clone(&notify));
        }
        Waiter {
            id,
            rooms,
            notify,
            waiters: Arc::clone(self),
        }
    }

    /// Wakes the waiters of `rooms`, or every waiter if `everyone`.
    pub(crate) fn wake<'a>(&self, rooms: impl IntoIterator<Item = &'a Arc<str>>, everyone: bool) {
        let registry = self.lock();
        if everyone {
            registry.all.values().for_each(|n| n.notify_one());
            return;
        }
        for room in rooms {
            if let Some(watching) = registry.by_room.get(room) {
                watching.values().for_each(|n| n.notify_one());
            }
        }
    }

    #[cfg(test)]
    fn registered(&self) -> (usize, usize) {
        let registry = self.lock();
        (registry.all.len(), registry.by_room.len())
    }
}

impl Waiter {
    /// Waits for a wake (one that came since the last wait counts).
    pub async fn woken(&self) {
        self.notify.notified().await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut registry = self.waiters.lock();
        registry.all.remove(&self.id);
        for room in &self.rooms {
            if let Some(watching) = registry.by_room.get_mut(room) {
                watching.remove(&self.id);
                if watching.is_empty() {
                    registry.by_room.remove(room);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn woken(waiter: &Waiter) -> bool {
        let wait = tokio::time::timeout(Duration::from_millis(20), waiter.woken());
        wait.await.is_ok()
    }

    #[tokio::test]
    async fn a_room_wakes_its_waiters_and_everyone_wakes_all() {
        let waiters = Arc::new(Waiters::default());
        let room = |name: &str| -> Arc<str> { name.into() };
        let mine = waiters.register(vec![room("!a"), room("!b")]);
        let other = waiters.register(vec![room("!c")]);
        waiters.wake([&room("!b")], false);
        assert!(woken(&mine).await);
        assert!(!woken(&other).await, "another room's message");
        assert!(!woken(&mine).await, "a wake is used once");
        waiters.wake([], true);
        assert!(woken(&mine).await && woken(&other).await);
        // A wake before the wait is kept for it.
        waiters.wake([&room("!c")], false);
        assert!(woken(&other).await);
        drop((mine, other));
        assert_eq!(waiters.registered(), (0, 0), "unregistered when dropped");
    }
}
