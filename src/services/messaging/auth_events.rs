//! Auth events, parsed and kept in memory. Every new event is checked against its room's
//! create event, power levels, join rules and its sender's membership, and counted for
//! each member with their display name; these rarely change, and reading and parsing them
//! from the database for each message was a fifth of what a message cost. A stored event
//! changes only by redaction or backfill, which forget it here. Only drafts use this,
//! under their room's lock, which redactions and backfill hold too, and only events of
//! that room are kept, so no stale copy can be put back after it is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kith_federation::Pdu;
use ruma::{EventId, OwnedEventId};

use super::Messaging;

/// How many events are kept; when full, all are forgotten and the cache starts again
/// (simple, and a room's few auth events are back after its next event).
const KEPT: usize = 4096;

#[derive(Default)]
pub struct AuthEvents {
    events: Mutex<HashMap<OwnedEventId, Arc<Pdu>>>,
}

impl AuthEvents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedEventId, Arc<Pdu>>> {
        // Every step leaves the map whole; a panic elsewhere cannot corrupt it.
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The event, from memory or else from `load`, which says whether to keep it.
    fn get_or_load(
        &self,
        id: &EventId,
        load: impl FnOnce() -> Option<(Pdu, bool)>,
    ) -> Option<Arc<Pdu>> {
        if let Some(pdu) = self.lock().get(id) {
            return Some(Arc::clone(pdu));
        }
        let (pdu, keep) = load()?;
        let pdu = Arc::new(pdu);
        if !keep {
            return Some(pdu);
        }
        let mut events = self.lock();
        if events.len() >= KEPT {
            events.clear();
        }
        events.insert(id.to_owned(), Arc::clone(&pdu));
        Some(pdu)
    }

    /// Forgets an event whose stored form changes (redacted, or replaced by backfill).
    pub fn forget(&self, id: &EventId) {
        self.lock().remove(id);
    }
}

impl Messaging {
    /// A stored event, parsed, from memory when it can be. Only for a draft on `room`,
    /// holding its lock: events of other rooms are read but not kept (see above).
    pub(super) fn auth_event(&self, room: &str, id: &EventId) -> Option<Arc<Pdu>> {
        self.auth_events.get_or_load(id, || {
            let stored = self.stored_pdu(id.as_str()).ok().flatten()?;
            let keep = stored.room_id == room;
            Some((stored.pdu().ok()?, keep))
        })
    }
}
