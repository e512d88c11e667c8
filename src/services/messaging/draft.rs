//! A draft: events built one after another on a room's head, each checked against the
//! auth rules and the state the drafts before it leave, then written in one batch. Room
//! creation drafts its whole sequence this way, so a crash never leaves half a room.

use std::collections::HashMap;

use http::StatusCode;
use kith_federation::{NewEvent, Pdu, PduError, pdu};
use kith_storage::{Batch, catalog};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::{
    auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId};
use serde::Deserialize;
use tokio::sync::MutexGuard;

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
    _guard: Option<MutexGuard<'a, ()>>,
}

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
            _guard: None,
        })
    }

    /// A draft on an existing room, holding the room's lock until it is committed.
    pub async fn draft(&self, room_id: &RoomId) -> Result<Draft<'_>> {
        let guard = self.room_locks.lock(room_id.as_str()).await;
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = pdu::rules(&room.version).map_err(pdu_error)?;
        Ok(Draft {
            messaging: self,
            room_id: Some(room_id.to_owned()),
            room,
            rules,
            stored: true,
            state: HashMap::new(),
            events: HashMap::new(),
            built: Vec::new(),
            transactions: HashMap::new(),
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
    pub fn add(&mut self, mut spec: EventSpec) -> Result<Pdu> {
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
            prev_events: self.room.extremities.clone(),
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
        if self.room_id.is_none() {
            self.room_id = Some(pdu.derived_room_id().map_err(pdu_error)?);
        }
        check_state_independent_auth_rules(authz, &pdu, |id| self.fetch(id))
            .map_err(Error::forbidden)?;
        let fetch_state = |kind: &ruma::events::StateEventType, key: &str| {
            self.state_id(&kind.to_string(), key)
                .and_then(|id| self.fetch(&id))
        };
        check_state_dependent_auth_rules(authz, &pdu, fetch_state).map_err(Error::forbidden)?;

        if let Some(key) = &pdu.state_key {
            self.state
                .insert((pdu.kind.to_string(), key.clone()), pdu.event_id.clone());
        }
        self.room.extremities = vec![pdu.event_id.clone()];
        self.room.depth += 1;
        self.events.insert(pdu.event_id.clone(), pdu.clone());
        self.built.push(pdu.clone());
        Ok(pdu)
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

    /// Writes the drafted events, their state, memberships, the room's new head and their
    /// log entries, with whatever `batch` already holds, in one write.
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
            };
            batch.put(&catalog::EVENTID_PDU, &event_id, &record)?;
            batch.put(
                &catalog::ROOMID_POSITION_EVENTID,
                &(room, position),
                &event_id,
            )?;
            if let Some(key) = &pdu.state_key {
                let kind = pdu.kind.to_string();
                batch.put(
                    &catalog::ROOMID_TYPE_STATEKEY_EVENTID,
                    &(room, kind.as_str(), key.as_str()),
                    &event_id,
                )?;
                if pdu.kind == TimelineEventType::RoomMember {
                    let content: MembershipContent = pdu
                        .content_as()
                        .map_err(|e| Error::bad_json(e.to_string()))?;
                    let previous = match memberships.get(key.as_str()) {
                        Some(previous) => Some(previous.clone()),
                        None => self.messaging.membership(key, room)?,
                    };
                    let changed_at = previous
                        .filter(|p| p.membership == content.membership)
                        .map_or(position, |p| p.changed_at);
                    let membership = Membership {
                        membership: content.membership,
                        event_id: pdu.event_id.clone(),
                        position,
                        changed_at,
                        forgotten: false,
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
                }
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
            if let Some(target) = &pdu.redacts {
                self.redact(&mut batch, &mut unread, &members, target, &record)?;
            }
            stored.push(record);
        }
        batch.put(&catalog::ROOMID_ROOM, &room, &self.room)?;
        self.messaging.storage.commit(batch).await?;
        Ok(stored)
    }
}
