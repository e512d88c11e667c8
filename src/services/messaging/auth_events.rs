//! Auth events, parsed and kept in memory. Every new event is checked against its room's
//! create event, power levels, join rules and its sender's membership, and counted for
//! each member with their display name; these rarely change, and reading and parsing them
//! from the database for each message was a fifth of what a message cost. A stored event
//! never changes except by redaction, which forgets it here. Only drafts use this, under
//! their room's lock, which redactions hold too, so no stale copy can be put back after
//! it is forgotten.

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

    /// The event, from memory or else from `load` (then kept).
    pub fn get_or_load(
        &self,
        id: &EventId,
        load: impl FnOnce() -> Option<Pdu>,
    ) -> Option<Arc<Pdu>> {
        if let Some(pdu) = self.lock().get(id) {
            return Some(Arc::clone(pdu));
        }
        let pdu = Arc::new(load()?);
        let mut events = self.lock();
        if events.len() >= KEPT {
            events.clear();
        }
        events.insert(id.to_owned(), Arc::clone(&pdu));
        Some(pdu)
    }

    /// Forgets an event whose stored form changes (it is being redacted).
    pub fn forget(&self, id: &EventId) {
        self.lock().remove(id);
    }
}

impl Messaging {
    /// A stored event, parsed, from memory when it can be. For drafts only (see above).
    pub(super) fn auth_event(&self, id: &EventId) -> Option<Arc<Pdu>> {
        self.auth_events.get_or_load(id, || {
            self.stored_pdu(id.as_str())
                .ok()
                .flatten()
                .and_then(|s| s.pdu().ok())
        })
    }
}
