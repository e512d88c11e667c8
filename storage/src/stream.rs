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

use crate::waiters::Waiters;

/// How many positions one on-disk reservation covers.
const RESERVATION_BLOCK: u64 = 1024;
/// How many recent positions' rooms are remembered for waking long-polls.
const ROOMS_KEPT: usize = 4096;

pub(crate) struct Stream {
    state: Mutex<State>,
    visible: watch::Sender<u64>,
    /// Long-polls, woken by the positions that concern them as they become visible.
    pub(crate) waiters: Arc<Waiters>,
}

struct State {
    next: u64,
    reserved_upto: u64,
    in_flight: BTreeSet<u64>,
    /// Recent positions that changed one room, and whether they concern only its members
    /// (a message) or anyone (a state change may concern the invited, say).
    rooms: BTreeMap<u64, (Arc<str>, bool)>,
    /// The highest position forgotten from `rooms`: what it says holds only above it.
    forgotten: u64,
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
                forgotten: next - 1,
            }),
            visible: watch::channel(next - 1).0,
            waiters: Default::default(),
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
        let before = *self.visible.borrow();
        if visible <= before {
            return;
        }
        // What the newly visible positions concern: their rooms' members, or anyone (a
        // position that names no room, or one no longer remembered).
        let mut rooms = Vec::new();
        let mut everyone = before < state.forgotten;
        for (_, (room, only)) in state.rooms.range(before + 1..=visible) {
            everyone |= !only;
            rooms.push(Arc::clone(room));
        }
        everyone |= rooms.len() as u64 != visible - before;
        self.visible.send_replace(visible);
        drop(state);
        self.waiters.wake(&rooms, everyone);
    }

    /// Records that committed `positions` changed `room`, and whether they concern `only`
    /// its members (before they become visible, so no reader sees them unscoped).
    pub(crate) fn record_room(&self, positions: &[PositionGuard], room: Arc<str>, only: bool) {
        let mut state = self.lock();
        for guard in positions {
            state
                .rooms
                .insert(guard.position, (Arc::clone(&room), only));
        }
        while state.rooms.len() > ROOMS_KEPT {
            if let Some((position, _)) = state.rooms.pop_first() {
                state.forgotten = state.forgotten.max(position);
            }
        }
    }

    /// The rooms changed in (`after`, `upto`], if every position there is still remembered
    /// (positions that name no room changed none). `None`: too long ago to tell.
    pub(crate) fn rooms_changed(&self, after: u64, upto: u64) -> Option<BTreeSet<Arc<str>>> {
        let state = self.lock();
        if after < state.forgotten {
            return None;
        }
        if upto <= after {
            return Some(BTreeSet::new());
        }
        let range = state.rooms.range(after + 1..=upto);
        Some(range.map(|(_, (room, _))| Arc::clone(room)).collect())
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
        for (_, (room, only)) in state.rooms.range(after + 1..=upto) {
            if !only || watched(room) {
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
        stream.record_room(&[a, b], "!other".into(), true);
        drop(c);
        let mine = |room: &str| room == "!mine";
        assert!(stream.only_other_rooms(0, 2, mine));
        assert!(!stream.only_other_rooms(0, 3, mine), "3 concerns anyone");
        let d = take();
        stream.record_room(&[d], "!mine".into(), true);
        assert!(!stream.only_other_rooms(3, 4, mine));
        assert!(stream.only_other_rooms(3, 4, |_| false));
        assert!(stream.only_other_rooms(4, 4, mine), "nothing new");
        assert!(!stream.only_other_rooms(0, ROOMS_KEPT as u64 + 1, |_| false));
    }

    #[test]
    fn remembers_which_rooms_changed_until_it_forgets() {
        let stream = Arc::new(Stream::new(0));
        let take = || stream.allocate(|_| Ok(())).unwrap();
        let (a, b, c) = (take(), take(), take());
        stream.record_room(&[a], "!message".into(), true);
        stream.record_room(&[b], "!state".into(), false);
        drop(c);
        let names = |set: Option<BTreeSet<Arc<str>>>| {
            set.map(|s| s.iter().map(|r| r.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            names(stream.rooms_changed(0, 3)),
            Some(vec!["!message".into(), "!state".into()])
        );
        assert_eq!(
            names(stream.rooms_changed(1, 3)),
            Some(vec!["!state".into()])
        );
        assert!(
            !stream.only_other_rooms(1, 2, |_| false),
            "a state change concerns anyone"
        );
        assert_eq!(names(stream.rooms_changed(3, 3)), Some(vec![]));
        for _ in 0..=ROOMS_KEPT {
            let guard = take();
            stream.record_room(&[guard], "!busy".into(), true);
        }
        assert_eq!(stream.rooms_changed(0, stream.visible()), None, "forgotten");
        let recent = stream.visible() - 1;
        assert_eq!(
            names(stream.rooms_changed(recent, recent + 1)),
            Some(vec!["!busy".into()])
        );
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
