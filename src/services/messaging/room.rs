//! What is stored per room and per event.

use kith_federation::{Pdu, PduError};
use ruma::canonical_json::CanonicalJsonObject;
use ruma::{OwnedEventId, RoomVersionId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A room's head: what the next local event builds on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Room {
    pub version: RoomVersionId,
    /// The newest events, which the next event names as `prev_events`.
    pub extremities: Vec<OwnedEventId>,
    /// The depth of the newest event.
    pub depth: u64,
}

/// An event as kept: the signed PDU and where it sits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPdu {
    pub event_id: OwnedEventId,
    pub room_id: String,
    pub position: u64,
    pub json: CanonicalJsonObject,
}

impl StoredPdu {
    pub fn pdu(&self) -> Result<Pdu, PduError> {
        Pdu::from_json(self.event_id.clone(), self.json.clone())
    }

    /// The event in the client-server format.
    pub fn client_event(&self) -> Value {
        let mut event =
            json!({ "event_id": self.event_id, "room_id": self.room_id, "unsigned": {} });
        for key in [
            "type",
            "sender",
            "content",
            "origin_server_ts",
            "state_key",
            "redacts",
        ] {
            if let Some(value) = self.json.get(key) {
                event[key] = value.clone().into();
            }
        }
        event
    }
}

/// A user's membership in a room, as of its latest member event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    pub membership: String,
    pub event_id: OwnedEventId,
    pub position: u64,
}
