//! Purging a room from the database, the last step of a server admin's room deletion:
//! every row of the room, in every table, in one write.
//!
//! What stays is each local user's last membership (a leave or ban): its event, as an
//! outlier, and the row, forgotten. A device that missed the leave still gets it from its
//! next sync, once, and nothing else of the room is readable any more. The federation
//! queue keeps what it holds for other servers (the leaves among it), and reports stay,
//! the admins' record of why.

use std::collections::HashSet;

use kith_storage::{Batch, catalog};
use ruma::{OwnedEventId, RoomId, UserId};
use serde::Deserialize;

use super::Messaging;
use super::aliases::Alias;
use crate::services::error::{Error, ErrorKind, Result};
use crate::services::{account_data, pushers};

/// The part of a stored event a purge looks at to find the room's.
#[derive(Deserialize)]
struct InRoom {
    room_id: String,
}

impl Messaging {
    /// Purges a room; refused while users of this server are joined to it, unless
    /// `force`. Returns how many events went.
    pub async fn purge_room(&self, room_id: &RoomId, force: bool) -> Result<usize> {
        let room = room_id.as_str();
        let _guard = self.room_locks.lock(room).await;
        let local = |user: &UserId| user.server_name().as_str() == self.server_name();
        let members = self.members(room_id)?;
        if !force && (members.iter()).any(|(user, m)| local(user) && m.membership == "join") {
            return Err(Error::new(
                ErrorKind::StillInRoom,
                "Users are still joined to this room",
            ));
        }
        let events = self.events_of_room(room).await?;
        let mut batch = self.storage.batch();
        let local_users: Vec<&str> = (members.iter())
            .filter(|(user, _)| local(user))
            .map(|(user, _)| user.as_str())
            .collect();
        pushers::forget_room_into(&self.storage, &mut batch, room, &local_users)?;
        let mut kept = HashSet::new();
        for (user, mut membership) in members.iter().cloned() {
            let user_key = (user.as_str(), room);
            batch.delete(&catalog::ROOMID_USERID_MEMBERSHIP, &(room, user.as_str()))?;
            if !local(&user) {
                batch.delete(&catalog::USERID_ROOMID_MEMBERSHIP, &user_key)?;
                continue;
            }
            self.forget_room_for_into(&mut batch, &user, room)?;
            let last = self.stored_pdu(membership.event_id.as_str())?;
            match last {
                Some(mut last) if matches!(membership.membership.as_str(), "leave" | "ban") => {
                    last.outlier = true;
                    batch.put(&catalog::EVENTID_PDU, &last.event_id.as_str(), &last)?;
                    kept.insert(last.event_id);
                    membership.forgotten = true;
                    batch.put(&catalog::USERID_ROOMID_MEMBERSHIP, &user_key, &membership)?;
                }
                _ => batch.delete(&catalog::USERID_ROOMID_MEMBERSHIP, &user_key)?,
            }
        }
        for id in &events {
            if !kept.contains(id) {
                batch.delete(&catalog::EVENTID_PDU, &id.as_str())?;
            }
            batch.delete(&catalog::EVENTID_STATE, &id.as_str())?;
            let relations = &catalog::EVENTID_RELTYPE_POSITION_RELATION;
            batch.delete_prefix(relations, &(id.as_str(),))?;
        }
        for table in [
            &catalog::ROOMID_POSITION_EVENTID,
            &catalog::ROOMID_TYPE_STATEKEY_EVENTID,
            &catalog::ROOMID_WORD_POSITION_HIT,
            &catalog::ROOMID_ROOTID_THREADPOSITION,
            &catalog::ROOMID_USERID_TYPE_THREAD_RECEIPT,
        ] {
            batch.delete_prefix(table, &(room,))?;
        }
        for table in [
            &catalog::ROOMID_ROOM,
            &catalog::ROOMID_PUBLISHED,
            &catalog::ROOMID_TYPING,
        ] {
            batch.delete(table, &room)?;
        }
        for (alias, Alias { room_id, .. }) in self.local_aliases()? {
            if room_id == room {
                batch.delete(&catalog::ALIAS_ROOMID, &alias.as_str())?;
            }
        }
        self.storage.commit(batch).await?;
        // What memory holds of the room.
        self.forget_bump(room);
        for id in &events {
            self.auth_events.forget(id);
        }
        Ok(events.len())
    }

    /// Every event kept of the room. Those outside the timeline (a remote room's state as
    /// joined, auth chains) are found only by looking at every event, which reads the whole
    /// table: off the async workers.
    async fn events_of_room(&self, room: &str) -> Result<Vec<OwnedEventId>> {
        let (storage, room) = (self.storage.clone(), room.to_owned());
        let looking = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            storage.visit_prefix(&catalog::EVENTID_PDU, &(), |id: String, e: InRoom| {
                if e.room_id == room {
                    events.extend(OwnedEventId::try_from(id).ok());
                }
            })?;
            Ok::<_, Error>(events)
        });
        looking.await.map_err(Error::internal)?
    }

    /// What a local user keeps about a room besides their membership: the room's account
    /// data, unread counts and notifications, send transaction IDs, and the room as the
    /// direct chat with someone.
    fn forget_room_for_into(&self, batch: &mut Batch, user: &UserId, room: &str) -> Result<()> {
        let user = user.as_str();
        account_data::forget_room_into(batch, user, room)?;
        let notifications = &catalog::USERID_ROOMID_POSITION_NOTIFICATION;
        batch.delete_prefix(notifications, &(user, room))?;
        batch.delete(&catalog::USERID_ROOMID_UNREAD, &(user, room))?;
        // Scopes are `send/<room>/…` and `redact/<room>/…`.
        let sends: Vec<((String, String, String), serde::de::IgnoredAny)> = self
            .storage
            .scan_prefix(&catalog::USERID_DEVICEID_TXNID_EVENTID, &(user,))?;
        for ((_, device, scope), _) in sends {
            let of_room = scope.split('/').nth(1) == Some(room);
            if of_room {
                let key = (user, device.as_str(), scope.as_str());
                batch.delete(&catalog::USERID_DEVICEID_TXNID_EVENTID, &key)?;
            }
        }
        self.contacts.forget_dm_room_into(batch, user, room)?;
        Ok(())
    }
}
