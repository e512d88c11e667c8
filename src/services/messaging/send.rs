//! Sending an event as a user's device: once per transaction ID, and in a direct chat only
//! while the friendship policy allows it.

use kith_storage::catalog;
use ruma::events::TimelineEventType;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedServerName, RoomId, TransactionId, UserId};
use serde_json::json;

use super::draft::EventSpec;
use super::{LocalTransaction, Messaging};
use crate::config::DmPolicy;
use crate::services::error::{Error, Result};

/// Who sends, from which device, under which transaction ID; `scope` is the request path
/// the ID is scoped to (as Synapse scopes them).
pub struct Transaction<'a> {
    pub device_id: &'a DeviceId,
    pub txn_id: &'a TransactionId,
    pub scope: &'a str,
}

impl Messaging {
    /// Sends `spec` (its sender's) into `room_id`; with a transaction, once: a replay
    /// returns the first event's ID and creates nothing. In a direct chat, under the contacts
    /// policy, the two
    /// members must still be friends, unless the other is on a server without friend
    /// requests (as for invites, chatting with them is the sender's own consent); asking
    /// that server is done before the room's lock is taken, so no request to another
    /// server ever holds up the room.
    pub async fn send(
        &self,
        room_id: &RoomId,
        transaction: Option<Transaction<'_>>,
        spec: EventSpec,
    ) -> Result<OwnedEventId> {
        let sender = spec.sender.clone();
        let key = transaction
            .as_ref()
            .map(|t| (sender.as_str(), t.device_id.as_str(), t.scope));
        // One may still take back (redact) what one said after a friendship ended.
        let policed = self.contacts.dm_policy() != DmPolicy::Off
            && spec.kind != TimelineEventType::RoomRedaction;
        let direct = policed && self.room(room_id)?.is_some_and(|r| r.direct);
        let without_contacts = match direct {
            true => self.peer_without_contacts(room_id, &sender).await?,
            false => None,
        };
        let mut draft = self
            .draft(room_id)
            .await
            .map_err(|_| Error::forbidden("You are not in this room"))?;
        // Checked under the room's lock: a concurrent replay waits, then finds the first answer.
        if let Some(key) = key
            && let Some(event_id) = self.transaction(key)?
        {
            return Ok(event_id);
        }
        // After the replay check: a client retrying what was sent is not sending more.
        (self.send_limiter)
            .take(sender.as_str())
            .map_err(Error::limit_exceeded)?;
        if policed && draft.is_direct() {
            let members = self.joined_members(room_id)?;
            let other = members.iter().find(|m| m.as_str() != sender.as_str());
            let exempt =
                other.is_some_and(|o| without_contacts.as_deref() == Some(o.server_name()));
            if !exempt {
                self.contacts.check_send(sender.as_str(), &members)?;
            }
        }
        let pdu = draft.add(spec)?;
        let mut batch = self.storage.batch();
        if let (Some(transaction), Some(key)) = (transaction, key) {
            let local = LocalTransaction {
                device_id: transaction.device_id.to_string(),
                txn_id: transaction.txn_id.to_string(),
            };
            draft.set_transaction(&pdu.event_id, local);
            batch.put(&catalog::USERID_DEVICEID_TXNID_EVENTID, &key, &pdu.event_id)?;
        }
        draft.commit(batch).await?;
        Ok(pdu.event_id)
    }

    /// Redacts an event of the room (who may redact what is checked where every redaction
    /// is built, the draft); once per transaction, like sending.
    pub async fn redact(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
        transaction: Transaction<'_>,
    ) -> Result<OwnedEventId> {
        self.require_joined(sender, room_id)?;
        let in_room = self
            .stored_pdu(event_id.as_str())?
            .is_some_and(|e| e.room_id == room_id.as_str());
        if !in_room {
            return Err(Error::not_found("Event not found"));
        }
        let mut content = json!({ "redacts": event_id });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let spec = EventSpec {
            sender: sender.to_owned(),
            kind: TimelineEventType::RoomRedaction,
            state_key: None,
            content,
        };
        self.send(room_id, Some(transaction), spec).await
    }

    /// The server of a direct chat's other member, if it is another server that does not
    /// speak friend requests (asked of it, so outside any lock). Read without the room's
    /// lock: if the room or its members change meanwhile, the other member's server is not
    /// this one and the policy applies in full.
    async fn peer_without_contacts(
        &self,
        room_id: &RoomId,
        sender: &UserId,
    ) -> Result<Option<OwnedServerName>> {
        let members = self.joined_members(room_id)?;
        let other = members.iter().find(|m| m.as_str() != sender.as_str());
        let Some(server) = other
            .map(|o| o.server_name())
            .filter(|s| s.as_str() != self.server_name())
        else {
            return Ok(None);
        };
        Ok((!self.contacts.speaks_contacts(server).await).then(|| server.to_owned()))
    }
}
