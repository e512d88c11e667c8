//! Purging a room from the database, the last step of a server admin's room deletion:
//! every row of the room's, in one write.
//!
//! What stays is each local user's last membership (a leave or ban): its event, as an
//! outlier, and the row, forgotten. A device that missed the leave still gets it from its
//! next sync, once, and nothing else of the room is readable any more. Also kept: what the
//! federation queue holds for other servers (the leaves among it), reports (the admins'
//! record of why), the event log, the users' own key backups, and what a sliding-sync
//! connection's older generation says it sent.

use std::collections::HashSet;

use kith_storage::{Batch, catalog};
use ruma::{OwnedEventId, RoomId, UserId};
use serde::Deserialize;

use super::aliases::Alias;
use super::{Messaging, StoredPdu, relations};
use crate::services::error::{Error, ErrorKind, Result};
use crate::services::{account_data, pushers};

/// Where a relation is indexed: (related-to event ID, rel_type, position).
type RelationKey = (String, String, u64);

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
        batch.delete_prefix(&catalog::ROOMID_USERID_MEMBERSHIP, &(room,))?;
        for (user, mut membership) in members.iter().cloned() {
            let user_key = (user.as_str(), room);
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
        for (id, relation) in &events {
            if !kept.contains(id) {
                batch.delete(&catalog::EVENTID_PDU, &id.as_str())?;
            }
            batch.delete(&catalog::EVENTID_STATE, &id.as_str())?;
            if let Some((parent, rel_type, position)) = relation {
                let key = (parent.as_str(), rel_type.as_str(), *position);
                batch.delete(&catalog::EVENTID_RELTYPE_POSITION_RELATION, &key)?;
            }
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
        for (id, _) in &events {
            self.auth_events.forget(id);
        }
        Ok(events.len())
    }

    /// Every event kept of the room, with the key its relation is indexed under (under
    /// the event it relates to, which may be another room's or none we have). Those
    /// outside the timeline (a remote room's state as joined, auth chains) are found only
    /// by looking at every event, which reads the whole table: off the async workers.
    async fn events_of_room(&self, room: &str) -> Result<Vec<(OwnedEventId, Option<RelationKey>)>> {
        let (storage, room) = (self.storage.clone(), room.to_owned());
        let looking = tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            storage.visit_prefix(&catalog::EVENTID_PDU, &(), |id: String, e: InRoom| {
                if e.room_id == room {
                    ids.extend(OwnedEventId::try_from(id).ok());
                }
            })?;
            let mut events = Vec::with_capacity(ids.len());
            for id in ids {
                let event: Option<StoredPdu> = storage.get(&catalog::EVENTID_PDU, &id.as_str())?;
                events.push((id, event.as_ref().and_then(relations::relation_key)));
            }
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
        // Scopes are `send/<room>/…` and `redact/<room>/…` (room IDs may hold a `/`).
        let of_room = |scope: &str| {
            let rest = (scope.strip_prefix("send/")).or_else(|| scope.strip_prefix("redact/"));
            rest.and_then(|rest| rest.strip_prefix(room))
                .is_some_and(|rest| rest.starts_with('/'))
        };
        let sends: Vec<((String, String, String), serde::de::IgnoredAny)> = self
            .storage
            .scan_prefix(&catalog::USERID_DEVICEID_TXNID_EVENTID, &(user,))?;
        for ((_, device, scope), _) in sends {
            if of_room(&scope) {
                let key = (user, device.as_str(), scope.as_str());
                batch.delete(&catalog::USERID_DEVICEID_TXNID_EVENTID, &key)?;
            }
        }
        self.contacts.forget_dm_room_into(batch, user, room)?;
        Ok(())
    }
}
