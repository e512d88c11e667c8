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
    /// Made or joined as a direct chat: the friendship policy watches who writes into it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

/// An event as kept: the signed PDU and where it sits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPdu {
    pub event_id: OwnedEventId,
    pub room_id: String,
    pub position: u64,
    pub json: CanonicalJsonObject,
    /// The sending device's transaction ID, echoed only to that device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<LocalTransaction>,
    /// The redaction that stripped this event, as clients see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<Value>,
    /// Known but not in the timeline (yet): a remote room's state as we joined it, an
    /// invite into a room we are not in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlier: bool,
    /// For a state event: the one it replaced, kept when it was committed so that serving
    /// it reads nothing more (clients tell a rename from a join by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Replaced>,
}

/// The state event a state event replaced, as clients see it in `unsigned`
/// (`replaces_state`, `prev_content`, `prev_sender`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replaced {
    pub event_id: OwnedEventId,
    pub sender: String,
    pub content: Value,
}

impl Replaced {
    /// What `pdu` leaves behind when the next state event at its (type, key) replaces it.
    pub fn by(pdu: &Pdu) -> Replaced {
        let content = pdu.json.get("content").cloned().map(Value::from);
        Replaced {
            event_id: pdu.event_id.clone(),
            sender: pdu.sender.to_string(),
            content: content.unwrap_or_else(|| json!({})),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalTransaction {
    pub device_id: String,
    pub txn_id: String,
}

impl StoredPdu {
    pub fn pdu(&self) -> Result<Pdu, PduError> {
        Pdu::from_json(self.event_id.clone(), self.json.clone())
    }

    /// The event as `/sync` shows it to `device_id` of its reader: no `room_id`, and the
    /// transaction ID only for the device that sent it.
    pub fn sync_event(&self, user_id: &str, device_id: &str) -> Value {
        let mut event = self.client_event();
        if let Some(event) = event.as_object_mut() {
            event.remove("room_id");
        }
        let own = self.transaction.as_ref().filter(|t| {
            t.device_id == device_id
                && self.json.get("sender").and_then(|s| s.as_str()) == Some(user_id)
        });
        if let Some(txn) = own {
            event["unsigned"]["transaction_id"] = txn.txn_id.clone().into();
        }
        event
    }

    /// `content.membership`, for member events.
    pub fn membership(&self) -> &str {
        self.json
            .get("content")
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("membership"))
            .and_then(|m| m.as_str())
            .unwrap_or_default()
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
        // Since v11 a redaction names its target in `content`; clients still read it top-level.
        let in_content = event["content"].get("redacts").cloned();
        let redaction = event["type"] == "m.room.redaction" && event.get("redacts").is_none();
        if let Some(target) = in_content.filter(|_| redaction) {
            event["redacts"] = target;
        }
        let unsigned = &mut event["unsigned"];
        if let Some(because) = &self.redacted_because {
            unsigned["redacted_by"] = because["event_id"].clone();
            unsigned["redacted_because"] = because.clone();
        }
        if let Some(replaced) = &self.replaced {
            unsigned["replaces_state"] = replaced.event_id.as_str().into();
            unsigned["prev_content"] = replaced.content.clone();
            unsigned["prev_sender"] = replaced.sender.as_str().into();
        }
        // As Synapse: how long ago it was sent, by this server's clock.
        if let Some(sent) = self
            .json
            .get("origin_server_ts")
            .and_then(|t| t.as_integer())
        {
            let sent = u64::try_from(i64::from(sent)).unwrap_or_default();
            unsigned["age"] = crate::util::now_ms().saturating_sub(sent).into();
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
    /// Where `membership` last took its current value (a new display name is a member
    /// event too, but no change of membership).
    #[serde(default)]
    pub changed_at: u64,
    /// Left and forgotten: no longer shown to the user anywhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgotten: bool,
    /// For an invite from another server: the stripped room state it came with, as the
    /// invited user sees it before joining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invite_state: Vec<Value>,
    /// An invite kept from the user until they accept the friend request it came as
    /// (a direct chat from a server without friend requests, under `dm_only`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// For a knock on a room this server is not in: the server that took it, through
    /// which it is withdrawn and from which its refusal comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}
