//! The global stream position and the commit notifier.
//!
//! Positions are handed out before a batch commits, so concurrent writers may commit out of
//! order. Readers only ever see the *visible* position: the highest one below which every
//! handed-out position has finished (committed or abandoned). A reader at 5 therefore never
//! skips a 4 that commits a moment later.
//!
//! Positions are reserved on disk in blocks, so a restart continues above every position
//! ever handed out without a write per allocation.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// How many positions one on-disk reservation covers.
const RESERVATION_BLOCK: u64 = 1024;

pub(crate) struct Stream {
    state: Mutex<State>,
    visible: watch::Sender<u64>,
}

struct State {
    next: u64,
    reserved_upto: u64,
    in_flight: BTreeSet<u64>,
}

/// A handed-out position; dropping it (after commit or on abandon) lets readers pass it.
pub(crate) struct PositionGuard {
    pub(crate) position: u64,
    stream: Arc<Stream>,
}

impl Stream {
    /// `reserved_upto` is the last persisted reservation: every earlier position may be taken.
    pub(crate) fn new(reserved_upto: u64) -> Self {
        let next = reserved_upto.max(1);
        Stream {
            state: Mutex::new(State {
                next,
                reserved_upto,
                in_flight: BTreeSet::new(),
            }),
            visible: watch::channel(next - 1).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few integers that every step leaves consistent; a panic elsewhere
        // while holding the lock cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands out the next position. `reserve` persists a new reservation end when the current
    /// block is used up; it runs under the lock so reservations never go backwards.
    pub(crate) fn allocate(
        self: &Arc<Self>,
        reserve: impl FnOnce(u64) -> crate::Result<()>,
    ) -> crate::Result<PositionGuard> {
        let mut state = self.lock();
        if state.next >= state.reserved_upto {
            let upto = state.next + RESERVATION_BLOCK;
            reserve(upto)?;
            state.reserved_upto = upto;
        }
        let position = state.next;
        state.next += 1;
        state.in_flight.insert(position);
        Ok(PositionGuard {
            position,
            stream: Arc::clone(self),
        })
    }

    fn finish(&self, position: u64) {
        let mut state = self.lock();
        state.in_flight.remove(&position);
        let visible = match state.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => state.next - 1,
        };
        self.visible.send_if_modified(|current| {
            let advanced = visible > *current;
            if advanced {
                *current = visible;
            }
            advanced
        });
    }

    pub(crate) fn visible(&self) -> u64 {
        *self.visible.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }
}

impl Drop for PositionGuard {
    fn drop(&mut self) {
        self.stream.finish(self.position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_wait_for_earlier_positions() {
        let stream = Arc::new(Stream::new(0));
        let a = stream.allocate(|_| Ok(())).unwrap();
        let b = stream.allocate(|_| Ok(())).unwrap();
        assert_eq!((a.position, b.position), (1, 2));
        drop(b);
        assert_eq!(stream.visible(), 0, "2 committed but 1 is still in flight");
        drop(a);
        assert_eq!(stream.visible(), 2);
    }

    #[test]
    fn reserves_in_blocks_and_restarts_above_them() {
        let stream = Arc::new(Stream::new(0));
        let mut reserved = Vec::new();
        for _ in 0..RESERVATION_BLOCK + 2 {
            let guard = stream.allocate(|upto| {
                reserved.push(upto);
                Ok(())
            });
            drop(guard.unwrap());
        }
        assert_eq!(
            reserved,
            vec![1 + RESERVATION_BLOCK, 1 + 2 * RESERVATION_BLOCK]
        );
        let restarted = Stream::new(*reserved.last().unwrap());
        assert!(restarted.visible() > RESERVATION_BLOCK + 2);
    }
}
