//! The global stream position and the commit notifier.
//!
//! Positions are handed out before a batch commits, so concurrent writers may commit out of
//! order. Readers only ever see the *visible* position: the highest one below which every
//! handed-out position has finished (committed or abandoned). A reader at 5 therefore never
//! skips a 4 that commits a moment later.
//!
//! Positions are reserved on disk in blocks, so a restart continues above every position
//! ever handed out without a write per allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// How many positions one on-disk reservation covers.
const RESERVATION_BLOCK: u64 = 1024;
/// How many recent positions' rooms are remembered for waking long-polls.
const ROOMS_KEPT: usize = 4096;

pub(crate) struct Stream {
    state: Mutex<State>,
    visible: watch::Sender<u64>,
}

struct State {
    next: u64,
    reserved_upto: u64,
    in_flight: BTreeSet<u64>,
    /// Recent positions that concern only one room's members (the rest concern anyone).
    rooms: BTreeMap<u64, Arc<str>>,
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
                rooms: BTreeMap::new(),
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

    /// Records that committed `positions` concern only `room` (before they become visible,
    /// so no reader sees them unscoped).
    pub(crate) fn record_room(&self, positions: &[PositionGuard], room: Arc<str>) {
        let mut state = self.lock();
        for guard in positions {
            state.rooms.insert(guard.position, Arc::clone(&room));
        }
        while state.rooms.len() > ROOMS_KEPT {
            state.rooms.pop_first();
        }
    }

    /// Whether each position in (`after`, `upto`] is remembered as concerning one room
    /// that `watched` does not want. Forgotten or unscoped positions concern everyone.
    pub(crate) fn only_other_rooms(
        &self,
        after: u64,
        upto: u64,
        watched: impl Fn(&str) -> bool,
    ) -> bool {
        if upto <= after {
            return true;
        }
        if upto - after > ROOMS_KEPT as u64 {
            return false;
        }
        let state = self.lock();
        let mut scoped = 0;
        for (_, room) in state.rooms.range(after + 1..=upto) {
            if watched(room) {
                return false;
            }
            scoped += 1;
        }
        scoped == upto - after
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
    fn long_polls_skip_only_positions_of_other_rooms() {
        let stream = Arc::new(Stream::new(0));
        let take = || stream.allocate(|_| Ok(())).unwrap();
        let (a, b, c) = (take(), take(), take());
        stream.record_room(&[a, b], "!other".into());
        drop(c);
        let mine = |room: &str| room == "!mine";
        assert!(stream.only_other_rooms(0, 2, mine));
        assert!(!stream.only_other_rooms(0, 3, mine), "3 concerns anyone");
        let d = take();
        stream.record_room(&[d], "!mine".into());
        assert!(!stream.only_other_rooms(3, 4, mine));
        assert!(stream.only_other_rooms(3, 4, |_| false));
        assert!(stream.only_other_rooms(4, 4, mine), "nothing new");
        assert!(!stream.only_other_rooms(0, ROOMS_KEPT as u64 + 1, |_| false));
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
