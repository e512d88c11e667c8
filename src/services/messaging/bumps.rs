//! Each room's `bump_stamp`: the stream position of its last event that should move it up
//! a room list (a message, not a state change or a receipt), as sliding sync orders rooms.
//! Kept in memory, noted as events commit; a room not yet noted since the start is looked
//! up in its timeline once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::{Messaging, StoredPdu};
use crate::services::error::Result;

/// The event types that bump a room (Synapse's defaults).
const BUMP_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// How far back a room's timeline is searched for its last bump (older: unknown).
const LOOKBACK: usize = 50;

#[derive(Default)]
pub(super) struct Bumps {
    /// Room → position of its last bump event; `None`: none in the last [`LOOKBACK`].
    rooms: Mutex<HashMap<String, Option<u64>>>,
}

impl Bumps {
    fn note(&self, room: &str, stamp: Option<u64>) -> Option<u64> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = rooms.entry(room.to_owned()).or_insert(stamp);
        // Whichever came last wins: a lookup racing a commit never goes back.
        *entry = (*entry).max(stamp);
        *entry
    }

    fn forget(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        rooms.remove(room);
    }

    fn get(&self, room: &str) -> Option<Option<u64>> {
        let rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        rooms.get(room).copied()
    }
}

fn bumps(event: &StoredPdu) -> bool {
    let kind = event.json.get("type").and_then(|t| t.as_str());
    kind.is_some_and(|k| BUMP_TYPES.contains(&k))
}

impl Messaging {
    /// The room's `bump_stamp`, `None` if no bump event is recent enough to know.
    pub fn bump_stamp(&self, room_id: &str) -> Result<Option<u64>> {
        if let Some(known) = self.bumps.get(room_id) {
            return Ok(known);
        }
        let recent = self.timeline_before(room_id, u64::MAX, LOOKBACK)?;
        let last = recent.iter().find(|(_, e)| bumps(e)).map(|(p, _)| *p);
        Ok(self.bumps.note(room_id, last))
    }

    /// Forgets a purged room.
    pub(super) fn forget_bump(&self, room_id: &str) {
        self.bumps.forget(room_id);
    }

    /// Notes timeline events about to be committed (before readers can see them).
    pub(super) fn note_bumps(&self, room_id: &str, events: &[StoredPdu]) {
        let last = events.iter().filter(|e| bumps(e)).map(|e| e.position).max();
        if last.is_some() {
            self.bumps.note(room_id, last);
        }
    }
}
