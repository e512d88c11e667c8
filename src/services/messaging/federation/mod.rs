//! Rooms over federation: events other servers send us, joins through a resident server
//! (as the joining server and as the resident one), and invites both ways. Every received
//! event is checked as the spec orders it: format and reference hash, signatures (a bad
//! content hash redacts it), then the auth rules against its auth events and the room's
//! current state; it is stored only if all pass.

mod ephemeral;
mod invites;
mod membership;

pub use invites::InviteIn;

use kith_federation::pdu::{self, SUPPORTED_VERSIONS};
use kith_federation::{FederationClient, Pdu};
use kith_storage::catalog;
use ruma::api::federation::event::get_missing_events;
use ruma::api::federation::membership::{
    create_join_event, create_leave_event, prepare_join_event, prepare_leave_event,
};
use ruma::events::TimelineEventType;
use ruma::signatures::Verified;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId,
    RoomVersionId, ServerName, UserId,
};
use serde_json::{Value, json};

use super::draft::{Draft, EventSpec};
use super::{Messaging, Room, StoredPdu};
use crate::services::error::{Error, ErrorKind, Result, remote_error};
use crate::util::now_ms;

/// How long a remote user types without a renewal (Synapse renews every 40 s and forgets
/// after 60).
pub const REMOTE_TYPING: std::time::Duration = std::time::Duration::from_secs(60);

fn incompatible(version: &RoomVersionId) -> Error {
    let kind = ErrorKind::IncompatibleRoomVersion {
        version: version.to_string(),
    };
    Error::new(
        kind,
        format!("Room version {version} is not supported here"),
    )
}

fn object_of(value: &Value) -> Result<CanonicalJsonObject> {
    serde_json::from_value(value.clone()).map_err(|e| Error::bad_json(format!("Bad event: {e}")))
}

impl Messaging {
    pub(super) fn federation(&self) -> Result<&FederationClient> {
        self.federation
            .as_deref()
            .ok_or_else(|| Error::forbidden("Federation is disabled on this server"))
    }

    /// Parses and checks an event another server built: its ID from its reference hash,
    /// its signatures with its signers' keys. A wrong content hash keeps only the redacted
    /// event, as the spec says.
    pub async fn verify_received(
        &self,
        version: &RoomVersionId,
        json: CanonicalJsonObject,
    ) -> Result<Pdu> {
        let client = self.federation()?;
        let rules = pdu::rules(version).map_err(|_| incompatible(version))?;
        let pdu = Pdu::received(version, json).map_err(|e| Error::bad_json(e.to_string()))?;
        let at = u64::from(pdu.origin_server_ts.get());
        // The sender's server must have signed, and for a restricted join the server
        // of the member who authorised it.
        let authoriser = pdu
            .content_as::<Value>()
            .ok()
            .and_then(|c| {
                c.get("join_authorised_via_users_server")?
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|user| UserId::parse(user).ok());
        let mut servers = vec![pdu.origin().as_str()];
        servers.extend(authoriser.as_ref().map(|u| u.server_name().as_str()));
        let keys = client
            .remote_keys
            .signers_key_map(client, &pdu.json, &servers, at)
            .await;
        match pdu.verify(&keys, version) {
            Ok(Verified::All) => Ok(pdu),
            Ok(Verified::Signatures) => {
                let redacted = ruma::canonical_json::redact(pdu.json, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(e.to_string()))?;
                Pdu::from_json(pdu.event_id, redacted).map_err(|e| Error::bad_json(e.to_string()))
            }
            Err(e) => Err(Error::forbidden(format!("Bad event signature: {e}"))),
        }
    }

    /// One PDU of an inbound transaction, into a room this server is in.
    /// One PDU of an inbound transaction, into a room this server is in. Events it
    /// builds on that this server lacks are asked of `origin` first
    /// (`get_missing_events`), and taken in, oldest first, if they check out.
    pub async fn receive_pdu(&self, origin: &ServerName, json: &Value) -> Result<OwnedEventId> {
        let room_id = json
            .get("room_id")
            .and_then(|r| r.as_str())
            .and_then(|r| RoomId::parse(r).ok())
            .ok_or_else(|| Error::bad_json("Event without a valid room_id"))?;
        let Some(room) = self.room(&room_id)? else {
            return self
                .receive_outside_membership(origin, &room_id, json)
                .await;
        };
        self.require_acl_allows(&room_id, origin)?;
        let pdu = self
            .verify_received(&room.version, object_of(json)?)
            .await?;
        if self.stored_pdu(pdu.event_id.as_str())?.is_some() {
            return Ok(pdu.event_id);
        }
        let gap = pdu
            .prev_events
            .iter()
            .any(|id| self.stored_pdu(id.as_str()).ok().flatten().is_none());
        if gap {
            self.fill_gap(origin, &room_id, &room, &pdu).await;
        }
        let mut draft = self.draft(&room_id).await?;
        if !draft.has(&pdu.event_id)? {
            let event_id = pdu.event_id.clone();
            draft.accept(pdu, false)?;
            draft.commit(self.storage.batch()).await?;
            return Ok(event_id);
        }
        Ok(pdu.event_id)
    }

    /// Fetches the events between the room's head here and `pdu` from `origin`, and takes
    /// in those that check out, oldest first. Best effort: what cannot be had is skipped.
    async fn fill_gap(&self, origin: &ServerName, room_id: &RoomId, room: &Room, pdu: &Pdu) {
        const GAP_LIMIT: u32 = 20;
        let Ok(client) = self.federation() else {
            return;
        };
        let mut request = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            room.extremities.clone(),
            vec![pdu.event_id.clone()],
        );
        request.limit = GAP_LIMIT.into();
        let found = match client.send(origin, request).await {
            Ok(found) => found,
            Err(e) => {
                tracing::info!(%origin, %room_id, "cannot fill a gap: {e}");
                return;
            }
        };
        let mut events = Vec::new();
        for raw in found.events {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                continue;
            };
            if let Ok(event) = self.verify_received(&room.version, object).await
                && event.room_id.as_deref() == Some(room_id)
            {
                events.push(event);
            }
        }
        events.sort_by_key(|e| u64::from(e.depth));
        for event in events {
            let Ok(mut draft) = self.draft(room_id).await else {
                return;
            };
            if draft.has(&event.event_id).unwrap_or(true) {
                continue;
            }
            let event_id = event.event_id.clone();
            let taken = match draft.accept(event, false) {
                Ok(()) => draft.commit(self.storage.batch()).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                tracing::info!(%origin, %event_id, "left out a missing event: {}", e.message());
            }
        }
    }

    /// Every event the given ones' `auth_events` lead to, transitively.
    pub fn auth_chain(&self, events: &[StoredPdu]) -> Result<Vec<StoredPdu>> {
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for event in events {
            todo.extend(event.pdu().map_err(Error::internal)?.auth_events);
        }
        let mut chain = Vec::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(event) = self.stored_pdu(id.as_str())? {
                todo.extend(event.pdu().map_err(Error::internal)?.auth_events);
                chain.push(event);
            }
        }
        Ok(chain)
    }
}

/// Percent-encodes a path segment (room and event IDs hold `!`, `$`, `:` and more).
pub fn urlencode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
