//! A draft: events built one after another on a room's head, each checked against the
//! auth rules and the state the drafts before it leave, then written in one batch. Room
//! creation drafts its whole sequence this way, so a crash never leaves half a room.

mod commit;
mod received;
mod redaction;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use kith_federation::KeyedGuard;
use kith_federation::{NewEvent, Outbox, Outgoing, Pdu, PduError, pdu};
use kith_storage::{Batch, catalog};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::{
    auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde::Deserialize;
use tokio::sync::MutexGuard;

use super::state::{MAX_HOPS, Snapshot, StateIds, add_own};
use super::{LocalTransaction, Membership, Messaging, Replaced, Room, StoredPdu, UnreadCounts};
use crate::events::{self, DomainEvent};
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::now_ms;

/// A new event's parts, before it is built on the room.
pub struct EventSpec {
    pub sender: OwnedUserId,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: serde_json::Value,
}

pub struct Draft<'a> {
    messaging: &'a Messaging,
    room_id: Option<OwnedRoomId>,
    room: Room,
    rules: RoomVersionRules,
    /// Whether the room is already stored (else only the draft's own state exists).
    stored: bool,
    state: HashMap<(String, String), OwnedEventId>,
    events: HashMap<OwnedEventId, Pdu>,
    built: Vec<Pdu>,
    transactions: HashMap<OwnedEventId, LocalTransaction>,
    /// The state after each built event, to store with it.
    snapshots: HashMap<OwnedEventId, Snapshot>,
    /// State keys the room no longer has (state resolution left them out).
    removed: HashSet<(String, String)>,
    /// Received events that passed against the state before them but not the current one.
    soft_failed: Vec<Pdu>,
    /// Built events that came from another server, which its origin sends on itself.
    received: HashSet<OwnedEventId>,
    /// A remote room's state and auth chain, as its resident server gave them on our join:
    /// stored and made current state, but not part of the timeline.
    imported: Vec<Pdu>,
    _guard: Option<KeyedGuard<'a>>,
}

/// The most `prev_events` an event names (the spec's limit).
const MAX_PREV_EVENTS: usize = 20;

/// The deepest a room's head is taken to be, leaving room for local events after it.
const MAX_DEPTH: u64 = (1 << 53) - (1 << 32);

fn pdu_error(e: PduError) -> Error {
    match e {
        PduError::UnsupportedVersion(v) => Error::new(
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {v} is not supported"),
        ),
        // ruma's words for the whole event over 65,535 bytes (a long ID is a 400 below).
        PduError::Format(m) | PduError::Signing(m) if m.contains("PDU is larger than") => {
            Error::new(ErrorKind::TooLarge, "Event is larger than 65536 bytes")
        }
        PduError::Format(m) => Error::bad_json(m),
        PduError::Signing(m) => Error::internal(m),
    }
}

#[derive(Deserialize)]
struct MembershipContent {
    membership: String,
    /// Anything, as another server may send; only a string is a reason.
    #[serde(default)]
    reason: Option<serde_json::Value>,
}

impl Messaging {
    /// A draft for a new room; its first event must be the `m.room.create`. Rooms of
    /// versions before 12 get a random ID on this server; v12 rooms are named by their
    /// create event.
    pub fn draft_new_room(&self, version: RoomVersionId) -> Result<Draft<'_>> {
        let rules = pdu::rules(&version).map_err(pdu_error)?;
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            let server = ruma::ServerName::parse(self.server_name()).map_err(Error::internal)?;
            Some(RoomId::new_v1(&server))
        };
        let room = Room {
            version,
            extremities: Vec::new(),
            depth: 0,
            direct: false,
        };
        Ok(Draft::new(self, room_id, room, rules, false, None))
    }

    /// A draft on an existing room, holding the room's lock until it is committed.
    pub async fn draft(&self, room_id: &RoomId) -> Result<Draft<'_>> {
        let guard = self.room_locks.lock(room_id.as_str()).await;
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        self.draft_locked(room_id, room, true, guard)
    }

    /// A draft on `room` as given (`stored`: whether its state is in the database).
    pub(super) async fn draft_on(
        &self,
        room_id: &RoomId,
        room: Room,
        stored: bool,
    ) -> Result<Draft<'_>> {
        let guard = self.room_locks.lock(room_id.as_str()).await;
        self.draft_locked(room_id, room, stored, guard)
    }

    fn draft_locked<'a>(
        &'a self,
        room_id: &RoomId,
        room: Room,
        stored: bool,
        guard: KeyedGuard<'a>,
    ) -> Result<Draft<'a>> {
        let rules = pdu::rules(&room.version).map_err(pdu_error)?;
        let room_id = Some(room_id.to_owned());
        Ok(Draft::new(self, room_id, room, rules, stored, Some(guard)))
    }
}

impl Draft<'_> {
    pub fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    /// Whether the room is a direct chat (see [`Room::direct`]).
    pub fn is_direct(&self) -> bool {
        self.room.direct
    }

    /// Marks the room a direct chat, from this commit on.
    pub fn mark_direct(&mut self) {
        self.room.direct = true;
    }

    fn state_id(&self, kind: &str, key: &str) -> Option<OwnedEventId> {
        if let Some(id) = self.state.get(&(kind.to_owned(), key.to_owned())) {
            return Some(id.clone());
        }
        let room_id = self.room_id.as_deref().filter(|_| self.stored)?;
        self.messaging
            .state_event_id(room_id, kind, key)
            .ok()
            .flatten()
    }

    fn fetch(&self, id: &EventId) -> Option<Arc<Pdu>> {
        if let Some(pdu) = self.events.get(id) {
            return Some(Arc::new(pdu.clone()));
        }
        let room = self.room_id.as_ref()?;
        self.messaging.auth_event(room.as_str(), id)
    }

    /// Builds the next event on the draft, signed, and checks it against the auth rules
    /// (403 `M_FORBIDDEN` with the rule's reason if it fails).
    pub fn add(&mut self, spec: EventSpec) -> Result<Pdu> {
        let pdu = self.build(spec)?;
        // Built on the room's head: the state before it is the current state.
        let snapshot = match self.room.extremities.as_slice() {
            [head] => match self.messaging.snapshot(head, &self.snapshots)? {
                Some(base) if base.hops + 1 < MAX_HOPS => Snapshot::after(head, base.hops, &pdu),
                _ => self.whole_after(&pdu)?,
            },
            _ => self.whole_after(&pdu)?,
        };
        self.snapshots.insert(pdu.event_id.clone(), snapshot);
        self.place(pdu.clone(), true);
        Ok(pdu)
    }

    /// The current state with `pdu`'s own entry, whole.
    fn whole_after(&self, pdu: &Pdu) -> Result<Snapshot> {
        let mut state = self.state_map()?;
        add_own(&mut state, pdu);
        Ok(Snapshot::whole(&state))
    }

    /// The room's current state as this draft leaves it.
    fn state_map(&self) -> Result<StateIds> {
        let mut state = StateIds::new();
        if self.stored
            && let Some(room_id) = &self.room_id
        {
            state.extend(self.messaging.state_ids(room_id)?);
        }
        state.extend(self.state.iter().map(|(k, v)| (k.clone(), v.clone())));
        for key in &self.removed {
            state.remove(key);
        }
        Ok(state)
    }

    /// The next event, built and checked as [`Draft::add`] does, but not added.
    pub fn build(&self, mut spec: EventSpec) -> Result<Pdu> {
        // A redaction names its target in `content.redacts`; before v11 that goes top-level.
        let mut redacts = None;
        if spec.kind == TimelineEventType::RoomRedaction
            && !self.rules.redaction.content_field_redacts
        {
            let target = spec
                .content
                .as_object_mut()
                .and_then(|c| c.remove("redacts"));
            redacts = target
                .as_ref()
                .and_then(|t| t.as_str())
                .and_then(|t| OwnedEventId::try_from(t).ok());
        }
        if spec.kind == TimelineEventType::RoomRedaction {
            self.check_redaction(&spec, redacts.as_deref())?;
        }
        let raw = serde_json::value::to_raw_value(&spec.content).map_err(Error::internal)?;
        let authz = &self.rules.authorization;
        let auth_types = auth_types_for_event(
            &spec.kind,
            &spec.sender,
            spec.state_key.as_deref(),
            &raw,
            authz,
        )
        .map_err(Error::bad_json)?;
        let auth_events: Vec<OwnedEventId> = auth_types
            .iter()
            .filter_map(|(kind, key)| self.state_id(&kind.to_string(), key))
            .collect();
        let new = NewEvent {
            room_id: self.room_id.clone(),
            sender: spec.sender,
            kind: spec.kind,
            state_key: spec.state_key,
            content: spec.content,
            prev_events: self.prev_events(),
            auth_events,
            depth: self.room.depth + 1,
            origin_server_ts: now_ms(),
            redacts,
        };
        let pdu = self
            .messaging
            .keys
            .build_pdu(&self.room.version, new)
            .map_err(pdu_error)?;
        check_state_independent_auth_rules(authz, &pdu, |id| self.fetch(id))
            .map_err(Error::forbidden)?;
        let fetch_state = |kind: &ruma::events::StateEventType, key: &str| {
            self.state_id(&kind.to_string(), key)
                .and_then(|id| self.fetch(&id))
        };
        check_state_dependent_auth_rules(authz, &pdu, fetch_state).map_err(Error::forbidden)?;
        Ok(pdu)
    }

    /// What the next local event names as `prev_events`: the room's newest events.
    fn prev_events(&self) -> Vec<OwnedEventId> {
        let extremities = &self.room.extremities;
        extremities[extremities.len().saturating_sub(MAX_PREV_EVENTS)..].to_vec()
    }

    /// Places a new event at the head of the draft: it replaces the events it names as
    /// `prev_events` among the room's newest.
    /// With `own_state`, the event's own entry becomes current state (a received event's
    /// effect on it is for [`Draft::accept`] to work out).
    fn place(&mut self, pdu: Pdu, own_state: bool) {
        if self.room_id.is_none() {
            self.room_id = pdu.derived_room_id().ok();
        }
        if let Some(key) = pdu.state_key.as_ref().filter(|_| own_state) {
            self.state
                .insert((pdu.kind.to_string(), key.clone()), pdu.event_id.clone());
        }
        self.room
            .extremities
            .retain(|id| !pdu.prev_events.contains(id));
        self.room.extremities.push(pdu.event_id.clone());
        // A remote event's depth is its sender's claim: capped, so ours still fit in the
        // largest integer canonical JSON allows.
        let depth = u64::from(pdu.depth).min(MAX_DEPTH);
        self.room.depth = self.room.depth.max(depth);
        self.events.insert(pdu.event_id.clone(), pdu.clone());
        self.built.push(pdu);
    }

    /// Replaces a drafted event's signatures with those of a copy another server signed
    /// too (an invite its invitee's server countersigned).
    pub fn set_signatures(&mut self, event_id: &EventId, signed: &ruma::CanonicalJsonObject) {
        let Some(signatures) = signed.get("signatures") else {
            return;
        };
        for pdu in self.built.iter_mut().filter(|p| p.event_id == event_id) {
            pdu.json.insert("signatures".into(), signatures.clone());
        }
    }

    pub fn version(&self) -> &RoomVersionId {
        &self.room.version
    }

    /// Whether the event is already in the draft or stored.
    pub fn has(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.events.contains_key(event_id)
            || self.messaging.stored_pdu(event_id.as_str())?.is_some())
    }

    /// Records that a drafted event was sent by a device under a transaction ID.
    pub fn set_transaction(&mut self, event_id: &EventId, transaction: LocalTransaction) {
        self.transactions.insert(event_id.to_owned(), transaction);
    }
}

impl<'a> Draft<'a> {
    fn new(
        messaging: &'a Messaging,
        room_id: Option<OwnedRoomId>,
        room: Room,
        rules: RoomVersionRules,
        stored: bool,
        guard: Option<KeyedGuard<'a>>,
    ) -> Draft<'a> {
        Draft {
            messaging,
            room_id,
            room,
            rules,
            stored,
            state: HashMap::new(),
            events: HashMap::new(),
            built: Vec::new(),
            transactions: HashMap::new(),
            snapshots: HashMap::new(),
            removed: HashSet::new(),
            soft_failed: Vec::new(),
            received: HashSet::new(),
            imported: Vec::new(),
            _guard: guard,
        }
    }
}
