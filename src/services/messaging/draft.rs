//! A draft: events built one after another on a room's head, each checked against the
//! auth rules and the state the drafts before it leave, then written in one batch. Room
//! creation drafts its whole sequence this way, so a crash never leaves half a room.

use std::collections::{BTreeSet, HashMap, HashSet};

use http::StatusCode;
use kith_federation::{NewEvent, Outgoing, Pdu, PduError, Queue, pdu};
use kith_storage::{Batch, catalog};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::{
    auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId};
use serde::Deserialize;
use tokio::sync::MutexGuard;

use super::state::{Snapshot, StateIds, add_own};
use super::{LocalTransaction, Membership, Messaging, Room, StoredPdu, UnreadCounts};
use crate::events::{self, DomainEvent};
use crate::gateway::{Error, Result};
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
    _guard: Option<MutexGuard<'a, ()>>,
}

/// The most `prev_events` an event names (the spec's limit).
const MAX_PREV_EVENTS: usize = 20;

/// The deepest a room's head is taken to be, leaving room for local events after it.
const MAX_DEPTH: u64 = (1 << 53) - (1 << 32);

fn pdu_error(e: PduError) -> Error {
    match e {
        PduError::UnsupportedVersion(v) => Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {v} is not supported"),
        ),
        // ruma's words for the whole event over 65,535 bytes (a long ID is a 400 below).
        PduError::Format(m) | PduError::Signing(m) if m.contains("PDU is larger than") => {
            Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                "Event is larger than 65536 bytes",
            )
        }
        PduError::Format(m) => Error::bad_json(m),
        PduError::Signing(m) => Error::internal(m),
    }
}

#[derive(Deserialize)]
struct MembershipContent {
    membership: String,
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
        Ok(Draft {
            messaging: self,
            room_id,
            room: Room {
                version,
                extremities: Vec::new(),
                depth: 0,
                direct: false,
            },
            rules,
            stored: false,
            state: HashMap::new(),
            events: HashMap::new(),
            built: Vec::new(),
            transactions: HashMap::new(),
            snapshots: HashMap::new(),
            removed: HashSet::new(),
            soft_failed: Vec::new(),
            received: HashSet::new(),
            imported: Vec::new(),
            _guard: None,
        })
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
        guard: MutexGuard<'a, ()>,
    ) -> Result<Draft<'a>> {
        let rules = pdu::rules(&room.version).map_err(pdu_error)?;
        Ok(Draft {
            messaging: self,
            room_id: Some(room_id.to_owned()),
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
            _guard: Some(guard),
        })
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

    fn fetch(&self, id: &EventId) -> Option<Pdu> {
        if let Some(pdu) = self.events.get(id) {
            return Some(pdu.clone());
        }
        self.messaging
            .stored_pdu(id.as_str())
            .ok()
            .flatten()
            .and_then(|s| s.pdu().ok())
    }

    /// Builds the next event on the draft, signed, and checks it against the auth rules
    /// (403 `M_FORBIDDEN` with the rule's reason if it fails).
    pub fn add(&mut self, spec: EventSpec) -> Result<Pdu> {
        let pdu = self.build(spec)?;
        // Built on the room's head: the state before it is the current state.
        let snapshot = match self.room.extremities.as_slice() {
            [head] => match self.messaging.snapshot(head, &self.snapshots)? {
                Some(base) if base.hops + 1 < super::state::MAX_HOPS => {
                    Snapshot::after(head, base.hops, &pdu)
                }
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

    /// The state before a received event: after its one `prev_event`, or resolved from
    /// those after each; `None` if this server does not know them all.
    fn state_before(&self, pdu: &Pdu) -> Result<Option<StateIds>> {
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            match self.messaging.state_after(prev, &self.snapshots)? {
                Some(state) => states.push(state),
                None => return Ok(None),
            }
        }
        match states.len() {
            0 => Ok(None),
            1 => Ok(states.pop()),
            _ => Ok(self.resolve(&states)),
        }
    }

    /// The resolution of `states`; `None` (with a log line) where it cannot be made, say
    /// for an auth event this server lacks: the caller then goes by the current state.
    fn resolve(&self, states: &[StateIds]) -> Option<StateIds> {
        let fetch = |id: &EventId| self.fetch(id);
        match self.messaging.resolve_states(&self.rules, states, &fetch) {
            Ok(resolved) => Some(resolved),
            Err(e) => {
                tracing::warn!(room = ?self.room_id, "state resolution failed: {}", e.message());
                None
            }
        }
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

    /// Takes in an event another server built (its signatures already checked): it must
    /// pass the auth rules against the auth events it names and against the room's current
    /// state (403 `M_FORBIDDEN` otherwise). `forward`: whether this server must send it on
    /// to the room's other servers, as the resident server does with a join it accepted.
    pub fn accept(&mut self, pdu: Pdu, forward: bool) -> Result<()> {
        let authz = &self.rules.authorization;
        check_state_independent_auth_rules(authz, &pdu, |id| self.fetch(id))
            .map_err(Error::forbidden)?;
        // From v12 the create event is implied by the room ID rather than named.
        let create = self.state_id("m.room.create", "");
        let named: HashMap<(String, String), Pdu> = pdu
            .auth_events
            .iter()
            .chain(create.iter())
            .filter_map(|id| self.fetch(id))
            .filter_map(|e| Some(((e.kind.to_string(), e.state_key.clone()?), e)))
            .collect();
        let by_auth_events = |kind: &ruma::events::StateEventType, key: &str| {
            named.get(&(kind.to_string(), key.to_owned())).cloned()
        };
        check_state_dependent_auth_rules(authz, &pdu, by_auth_events).map_err(Error::forbidden)?;
        // Against the state before it (where its history forks from ours, resolved).
        let old_heads = self.room.extremities.clone();
        let known_before = self.state_before(&pdu)?;
        let before = match &known_before {
            Some(before) => before.clone(),
            None => self.state_map()?,
        };
        let by_state_before = |kind: &ruma::events::StateEventType, key: &str| {
            before
                .get(&(kind.to_string(), key.to_owned()))
                .and_then(|id| self.fetch(id))
        };
        check_state_dependent_auth_rules(authz, &pdu, by_state_before).map_err(Error::forbidden)?;
        // And against the current state: an event the room has moved past (its sender
        // banned since, say) is soft-failed: kept, so others may build on it, but not shown
        // and not made a head, and it changes no state.
        let by_current_state = |kind: &ruma::events::StateEventType, key: &str| {
            self.state_id(&kind.to_string(), key)
                .and_then(|id| self.fetch(&id))
        };
        if check_state_dependent_auth_rules(authz, &pdu, by_current_state).is_err() {
            tracing::info!(event_id = %pdu.event_id, "soft-failed an event");
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            self.soft_failed.push(pdu);
            return Ok(());
        }
        if !forward {
            self.received.insert(pdu.event_id.clone());
        }
        let event_id = pdu.event_id.clone();
        // Only a state this server knows is kept as the event's (a guess would later pass
        // for fact); its children then go by the current state, as it did.
        if let Some(before) = &known_before {
            let single = match pdu.prev_events.as_slice() {
                [prev] => self.messaging.snapshot(prev, &self.snapshots)?,
                _ => None,
            };
            let snapshot = match (pdu.prev_events.as_slice(), single) {
                ([prev], Some(base)) if base.hops + 1 < super::state::MAX_HOPS => {
                    Snapshot::after(prev, base.hops, &pdu)
                }
                _ => {
                    let mut after = before.clone();
                    add_own(&mut after, &pdu);
                    Snapshot::whole(&after)
                }
            };
            self.snapshots.insert(event_id.clone(), snapshot);
        }
        let linear = old_heads.len() == 1 && pdu.prev_events == old_heads;
        self.place(pdu, false);
        let own = || {
            let mut own = StateIds::new();
            if let Some(pdu) = self.events.get(&event_id) {
                add_own(&mut own, pdu);
            }
            own
        };
        // Built on our one head: the state moves by the event's own entry.
        if linear {
            let own = own();
            self.state.extend(own);
            return Ok(());
        }
        // Otherwise the room's state is the resolution of its heads' states (the same on
        // every server with the same heads); heads whose state this server never learnt,
        // or a resolution that cannot be made, leave the event's own entry to win.
        let heads = self.room.extremities.clone();
        let mut states = Vec::new();
        for head in &heads {
            if let Some(state) = self.messaging.state_after(head, &self.snapshots)? {
                states.push(state);
            }
        }
        let current = match states.len() == heads.len() {
            true if states.len() == 1 => states.pop(),
            true => self.resolve(&states),
            false => None,
        };
        match current {
            Some(current) => {
                let now = self.state_map()?;
                for key in now.keys().filter(|k| !current.contains_key(*k)) {
                    self.removed.insert(key.clone());
                }
                for (key, id) in current {
                    if now.get(&key) != Some(&id) {
                        self.removed.remove(&key);
                        self.state.insert(key, id);
                    }
                }
            }
            None => {
                let own = own();
                self.state.extend(own);
            }
        }
        Ok(())
    }

    /// A remote room's state and auth chain, from the server we joined it through: it
    /// becomes the draft's state, stored without entering the timeline.
    pub fn import_state(&mut self, events: Vec<Pdu>, state: &[OwnedEventId]) {
        for pdu in events {
            if let Some(key) = pdu
                .state_key
                .clone()
                .filter(|_| state.contains(&pdu.event_id))
            {
                self.state
                    .insert((pdu.kind.to_string(), key), pdu.event_id.clone());
            }
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            self.imported.push(pdu);
        }
    }

    /// Records that a drafted event was sent by a device under a transaction ID.
    pub fn set_transaction(&mut self, event_id: &EventId, transaction: LocalTransaction) {
        self.transactions.insert(event_id.to_owned(), transaction);
    }

    /// The auth rules let anyone who may send a redaction send one; which events it may
    /// strip is the server's check: one's own, or anyone's with the `redact` power level.
    /// Checked here, under the room's lock, whichever endpoint the redaction came through.
    fn check_redaction(&self, spec: &EventSpec, top_level: Option<&EventId>) -> Result<()> {
        let in_content = spec.content.get("redacts").and_then(|r| r.as_str());
        let target = top_level.map(EventId::as_str).or(in_content);
        let (Some(target), Some(room_id)) = (target, self.room_id.as_deref()) else {
            return Ok(());
        };
        let Some(event) = self.messaging.stored_pdu(target)? else {
            return Ok(());
        };
        let theirs =
            event.json.get("sender").and_then(|s| s.as_str()) != Some(spec.sender.as_str());
        if event.room_id == room_id.as_str()
            && theirs
            && !self
                .messaging
                .may_redact_others(room_id, spec.sender.as_str())?
        {
            return Err(Error::forbidden(
                "You need the room's redact power level to redact others' events",
            ));
        }
        Ok(())
    }

    /// Whether a redaction strips its target here: a local one was checked when it was
    /// drafted; one from another server only strips its own sender's events, or anyone's
    /// if its sender has the `redact` power level (else it is kept, and does nothing).
    fn may_apply_redaction(&self, redaction: &Pdu, target: &EventId) -> Result<bool> {
        if !self.received.contains(&redaction.event_id) {
            return Ok(true);
        }
        let Some(event) = self.messaging.stored_pdu(target.as_str())? else {
            return Ok(true);
        };
        let own =
            event.json.get("sender").and_then(|s| s.as_str()) == Some(redaction.sender.as_str());
        match (own, self.room_id.as_deref()) {
            (true, _) => Ok(true),
            (false, Some(room_id)) => self
                .messaging
                .may_redact_others(room_id, redaction.sender.as_str()),
            (false, None) => Ok(false),
        }
    }

    /// Strips the event a redaction names (in this room) to what its room version keeps,
    /// remembering the redaction for clients, and takes it out of unread counts. The
    /// hashes and signatures stay, so the event still verifies as the redacted form of a
    /// signed PDU.
    fn redact(
        &self,
        batch: &mut Batch,
        unread: &mut HashMap<String, UnreadCounts>,
        members: &[String],
        target: &EventId,
        redaction: &StoredPdu,
    ) -> Result<()> {
        let Some(mut event) = self.messaging.stored_pdu(target.as_str())? else {
            return Ok(());
        };
        if event.room_id != redaction.room_id {
            return Ok(());
        }
        event.json = ruma::canonical_json::redact(event.json, &self.rules.redaction, None)
            .map_err(Error::internal)?;
        event.redacted_because = Some(redaction.client_event());
        batch.put(&catalog::EVENTID_PDU, &target.as_str(), &event)?;
        self.messaging
            .uncount_notification(batch, unread, members, &event)
    }

    /// Writes the drafted events, their state, memberships, the room's new head, their
    /// log entries and the copies queued for the room's other servers, with whatever
    /// `batch` already holds, in one write.
    pub async fn commit(self, mut batch: Batch) -> Result<Vec<StoredPdu>> {
        let room_id = self
            .room_id
            .clone()
            .ok_or_else(|| Error::internal("draft without a room"))?;
        let room = room_id.as_str();
        let mut memberships: HashMap<String, Membership> = HashMap::new();
        // Who is notified: the members joined before these events (a new room has none).
        let members = match self.stored {
            true => self.messaging.joined_members(room)?,
            false => Vec::new(),
        };
        for pdu in &self.imported {
            // An event already kept (this room's invite, say) stays as it is stored.
            if let Some(known) = self.messaging.stored_pdu(pdu.event_id.as_str())? {
                if known.room_id == room && self.is_current(pdu) {
                    self.write_state(&mut batch, &mut memberships, pdu, known.position)?;
                }
                continue;
            }
            let position = batch.new_position()?;
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position,
                json: pdu.json.clone(),
                transaction: None,
                redacted_because: None,
                outlier: true,
            };
            batch.put(&catalog::EVENTID_PDU, &pdu.event_id.as_str(), &record)?;
            if self.is_current(pdu) {
                self.write_state(&mut batch, &mut memberships, pdu, position)?;
            }
        }
        for pdu in &self.soft_failed {
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position: batch.new_position()?,
                json: pdu.json.clone(),
                transaction: None,
                redacted_because: None,
                outlier: true,
            };
            batch.put(&catalog::EVENTID_PDU, &pdu.event_id.as_str(), &record)?;
        }
        let mut unread = HashMap::new();
        let mut stored = Vec::new();
        for pdu in &self.built {
            let position = batch.new_position()?;
            let event_id = pdu.event_id.as_str();
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position,
                json: pdu.json.clone(),
                transaction: self.transactions.get(&pdu.event_id).cloned(),
                redacted_because: None,
                outlier: false,
            };
            batch.put(&catalog::EVENTID_PDU, &event_id, &record)?;
            batch.put(
                &catalog::ROOMID_POSITION_EVENTID,
                &(room, position),
                &event_id,
            )?;
            // Its own entry, unless state resolution chose another.
            if self.is_current(pdu) {
                self.write_state(&mut batch, &mut memberships, pdu, position)?;
            }
            if let Some(snapshot) = self.snapshots.get(&pdu.event_id) {
                batch.put(&catalog::EVENTID_STATE, &event_id, snapshot)?;
            }
            if matches!(
                pdu.kind,
                TimelineEventType::RoomMessage | TimelineEventType::RoomEncrypted
            ) {
                let sent = DomainEvent::MessageSent {
                    room_id: room.to_owned(),
                    event_id: event_id.to_owned(),
                    sender: pdu.sender.to_string(),
                };
                events::append(&mut batch, sent)?;
            }
            self.messaging
                .count_notifications(&mut batch, &mut unread, &room_id, &members, &record)
                .await?;
            if let Some(target) = &pdu.redacts
                && self.may_apply_redaction(pdu, target)?
            {
                self.redact(&mut batch, &mut unread, &members, target, &record)?;
            }
            stored.push(record);
        }
        // State resolution may have made older events current again.
        let written: HashSet<&OwnedEventId> = self
            .built
            .iter()
            .chain(&self.imported)
            .map(|p| &p.event_id)
            .collect();
        for id in self.state.values().filter(|id| !written.contains(id)) {
            if let Some(stored) = self.messaging.stored_pdu(id.as_str())?
                && let Ok(pdu) = stored.pdu()
            {
                // A new position, so syncing clients see the membership change.
                let position = batch.new_position()?;
                self.write_state(&mut batch, &mut memberships, &pdu, position)?;
            }
        }
        for (kind, key) in &self.removed {
            let row = (room, kind.as_str(), key.as_str());
            batch.delete(&catalog::ROOMID_TYPE_STATEKEY_EVENTID, &row)?;
            if kind == "m.room.member" {
                batch.delete(&catalog::USERID_ROOMID_MEMBERSHIP, &(key.as_str(), room))?;
                batch.delete(&catalog::ROOMID_USERID_MEMBERSHIP, &(room, key.as_str()))?;
            }
        }
        let destinations = self.queue_for_servers(&mut batch, &members, &memberships)?;
        batch.put(&catalog::ROOMID_ROOM, &room, &self.room)?;
        self.messaging.storage.commit(batch).await?;
        self.messaging.wake(&destinations);
        Ok(stored)
    }

    /// Whether the event is the draft's current state for its type and key.
    fn is_current(&self, pdu: &Pdu) -> bool {
        pdu.state_key.as_ref().is_some_and(|key| {
            self.state.get(&(pdu.kind.to_string(), key.clone())) == Some(&pdu.event_id)
        })
    }

    /// Makes a state event current: its state row and, for a member event, the member's
    /// membership in both directions.
    fn write_state(
        &self,
        batch: &mut Batch,
        memberships: &mut HashMap<String, Membership>,
        pdu: &Pdu,
        position: u64,
    ) -> Result<()> {
        let Some(key) = &pdu.state_key else {
            return Ok(());
        };
        let room = self
            .room_id
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or_default();
        let kind = pdu.kind.to_string();
        batch.put(
            &catalog::ROOMID_TYPE_STATEKEY_EVENTID,
            &(room, kind.as_str(), key.as_str()),
            &pdu.event_id.as_str(),
        )?;
        if pdu.kind != TimelineEventType::RoomMember {
            return Ok(());
        }
        let content: MembershipContent = pdu
            .content_as()
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let previous = match memberships.get(key.as_str()) {
            Some(previous) => Some(previous.clone()),
            None => self.messaging.membership(key, room)?,
        };
        // Another server's members are found in the user directory as their member events
        // name them.
        let own = format!(":{}", self.messaging.server_name());
        if content.membership == "join" && !key.ends_with(&own) {
            let content = pdu.content_as::<serde_json::Value>().unwrap_or_default();
            crate::services::profile::directory::index_remote(
                &self.messaging.storage,
                batch,
                key,
                &content,
            )?;
        }
        // A held invite stays held when the same invite comes again in a transaction.
        let held = previous
            .as_ref()
            .is_some_and(|p| p.held && p.event_id == pdu.event_id);
        let changed_at = previous
            .filter(|p| p.membership == content.membership)
            .map_or(position, |p| p.changed_at);
        let membership = Membership {
            membership: content.membership,
            event_id: pdu.event_id.clone(),
            position,
            changed_at,
            forgotten: false,
            invite_state: Vec::new(),
            held,
        };
        memberships.insert(key.clone(), membership.clone());
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(key.as_str(), room),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room, key.as_str()),
            &membership,
        )?;
        Ok(())
    }

    /// Queues this server's new events for every other server in the room: those of the
    /// members joined before or by the draft, and of members it removes (so they learn).
    /// No event goes back to its sender's server. Returns the destinations.
    fn queue_for_servers(
        &self,
        batch: &mut Batch,
        members: &[String],
        memberships: &HashMap<String, Membership>,
    ) -> Result<Vec<String>> {
        let own = self.messaging.server_name();
        let server_of = |user: &str| user.split_once(':').map(|(_, s)| s.to_owned());
        let mut servers: BTreeSet<String> = members.iter().filter_map(|u| server_of(u)).collect();
        for (user, membership) in memberships {
            if matches!(membership.membership.as_str(), "join" | "leave" | "ban") {
                servers.extend(server_of(user));
            }
        }
        servers.remove(own);
        let mut destinations = BTreeSet::new();
        for pdu in self
            .built
            .iter()
            .filter(|p| !self.received.contains(&p.event_id))
        {
            for server in servers.iter().filter(|s| *s != pdu.origin().as_str()) {
                Queue::push_into(batch, server, &Outgoing::Pdu(pdu.json.clone()))?;
                destinations.insert(server.clone());
            }
        }
        Ok(destinations.into_iter().collect())
    }
}
