//! Read receipts (`message.seen`) and typing notifications: a room's ephemeral events. Both
//! are kept in RocksDB at a stream position, so `/sync` wakes on them and delivers each
//! change once, like any other write.

use std::collections::BTreeMap;

use kith_storage::catalog;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::push::ReadScope;
use super::{Messaging, StoredPdu};
use crate::events::{self, DomainEvent};
use crate::services::error::Result;
use crate::util::now_ms;

/// The receipt type that only its owner sees.
pub const PRIVATE_READ: &str = "m.read.private";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: String,
    /// Where the receipted event sits, so a receipt never moves backwards.
    pub event_position: u64,
    pub ts: u64,
    pub position: u64,
}

/// Who is typing in a room, each until an expiry time (ms since the epoch).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Typing {
    pub users: BTreeMap<String, u64>,
    pub position: u64,
    /// Local users typing, with when other servers last heard so.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared: BTreeMap<String, u64>,
}

/// How often other servers hear again that a local user still types (they forget after
/// a minute, as Synapse does).
const TYPING_RESHARE_MS: u64 = 30_000;

impl Typing {
    /// Drops the expired entries; the users who stopped.
    fn prune(&mut self, now: u64) -> Vec<String> {
        let stopped: Vec<String> = self
            .users
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(user, _)| user.clone())
            .collect();
        for user in &stopped {
            self.users.remove(user);
        }
        stopped
    }
}

impl Messaging {
    /// Records `user_id`'s receipt of `event` (`thread` is `None` for an unthreaded one) and
    /// logs `message.seen`. A receipt for an event older than the one already receipted
    /// changes nothing (clients race their receipts); returns whether it was recorded.
    pub async fn set_receipt(
        &self,
        user_id: &str,
        kind: &str,
        thread: Option<&str>,
        event: &StoredPdu,
    ) -> Result<bool> {
        let room = event.room_id.as_str();
        // The room's lock, not the ephemeral one: the unread counts change with messages too.
        let _guard = self.room_locks.lock(room).await;
        let key = (room, user_id, kind, thread.unwrap_or(""));
        let current: Option<Receipt> = self
            .storage
            .get(&catalog::ROOMID_USERID_TYPE_THREAD_RECEIPT, &key)?;
        if current.is_some_and(|c| c.event_position >= event.position) {
            return Ok(false);
        }
        let mut batch = self.storage.batch();
        let mut destinations = Vec::new();
        let receipt = Receipt {
            event_id: event.event_id.to_string(),
            event_position: event.position,
            ts: now_ms(),
            position: batch.new_position()?,
        };
        batch.put(&catalog::ROOMID_USERID_TYPE_THREAD_RECEIPT, &key, &receipt)?;
        // Only the room's members hear of it (and their counts change).
        batch.concerns_only_room(room);
        // An unthreaded receipt reads everything up to it, `main` the main timeline, and
        // a thread's receipt that thread.
        let scope = match thread {
            None => ReadScope::All,
            Some("main") => ReadScope::Main,
            Some(root) => ReadScope::Thread(root),
        };
        self.recount_unread(&mut batch, (user_id, room), scope, event.position)?;
        if kind == "m.read" {
            let mut data = json!({ "ts": receipt.ts });
            if let Some(thread) = thread {
                data["thread_id"] = thread.into();
            }
            let read = json!({ user_id: { "event_ids": [receipt.event_id], "data": data } });
            let edu = json!({ "edu_type": "m.receipt", "content": { room: { "m.read": read } } });
            destinations = self.share_into(&mut batch, room, user_id, edu)?;
        }
        let seen = DomainEvent::MessageSeen {
            room_id: room.to_owned(),
            event_id: receipt.event_id.clone(),
            user_id: user_id.to_owned(),
            receipt_type: kind.to_owned(),
        };
        events::append(&mut batch, seen)?;
        self.storage.commit(batch).await?;
        self.wake(&destinations);
        Ok(true)
    }

    /// The `m.receipt` event for receipts changed in (`after`, `upto`] (all for `None`), as
    /// `viewer` may see them: others' private receipts never.
    pub fn receipt_event(
        &self,
        room_id: &str,
        viewer: &str,
        after: Option<u64>,
        upto: u64,
    ) -> Result<Option<Value>> {
        let rows: Vec<((String, String, String, String), Receipt)> = self
            .storage
            .scan_prefix(&catalog::ROOMID_USERID_TYPE_THREAD_RECEIPT, &(room_id,))?;
        let mut content = Map::new();
        for ((_, user, kind, thread), receipt) in rows {
            let fresh = receipt.position <= upto && after.is_none_or(|a| receipt.position > a);
            if !fresh || (kind == PRIVATE_READ && user != viewer) {
                continue;
            }
            let mut info = json!({ "ts": receipt.ts });
            if !thread.is_empty() {
                info["thread_id"] = thread.into();
            }
            let by_kind = content.entry(receipt.event_id).or_insert_with(|| json!({}));
            by_kind[kind.as_str()][user.as_str()] = info;
        }
        Ok((!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content })))
    }

    /// Starts (`until` = expiry, ms) or stops (`None`) `user_id` typing in the room.
    pub async fn set_typing(&self, room_id: &str, user_id: &str, until: Option<u64>) -> Result<()> {
        let _guard = self.ephemeral_locks.lock(room_id).await;
        let mut typing = self.typing(room_id)?;
        let now = now_ms();
        let mut batch = self.storage.batch();
        let mut destinations = self.share_stops(&mut batch, room_id, &mut typing, now)?;
        let mut changed = !destinations.is_empty();
        let started = match until {
            Some(until) => typing.users.insert(user_id.to_owned(), until).is_none(),
            None => typing.users.remove(user_id).is_some(),
        };
        changed |= started;
        // Other servers hear of each start and stop, and every half minute that it goes on.
        let stale = typing
            .shared
            .get(user_id)
            .is_none_or(|at| now.saturating_sub(*at) >= TYPING_RESHARE_MS);
        let local = user_id.ends_with(&format!(":{}", self.server_name()));
        if local && (started || (until.is_some() && stale)) {
            let edu = typing_edu(room_id, user_id, until.is_some());
            destinations.extend(self.share_into(&mut batch, room_id, user_id, edu)?);
            match until {
                Some(_) => typing.shared.insert(user_id.to_owned(), now),
                None => typing.shared.remove(user_id),
            };
        }
        self.store_typing(batch, room_id, typing, changed).await?;
        self.wake(&destinations);
        if let Some(until) = until {
            self.typing_timers.expire_at(room_id, until);
        }
        Ok(())
    }

    /// Drops expired typing entries and, for local users, tells other servers they
    /// stopped; returns those servers.
    fn share_stops(
        &self,
        batch: &mut kith_storage::Batch,
        room_id: &str,
        typing: &mut Typing,
        now: u64,
    ) -> Result<Vec<String>> {
        let mut destinations = Vec::new();
        for user in typing.prune(now) {
            if typing.shared.remove(&user).is_some() {
                let edu = typing_edu(room_id, &user, false);
                destinations.extend(self.share_into(batch, room_id, &user, edu)?);
            }
        }
        Ok(destinations)
    }

    /// Drops expired typing entries, telling syncing clients if any were; the room's next
    /// expiry, if someone still types, is timed again.
    async fn expire_typing(&self, room_id: &str) -> Result<()> {
        let _guard = self.ephemeral_locks.lock(room_id).await;
        let mut typing = self.typing(room_id)?;
        let before = typing.users.len();
        let mut batch = self.storage.batch();
        let destinations = self.share_stops(&mut batch, room_id, &mut typing, now_ms())?;
        if let Some(next) = typing.users.values().min() {
            self.typing_timers.expire_at(room_id, *next);
        }
        if typing.users.len() != before {
            self.store_typing(batch, room_id, typing, true).await?;
            self.wake(&destinations);
        }
        Ok(())
    }

    /// Expires typing as its time comes, until the process ends: one task for every room,
    /// however many typing notices arrive.
    pub async fn run_typing_timers(&self) {
        loop {
            for room in self.typing_timers.due().await {
                if let Err(e) = self.expire_typing(&room).await {
                    tracing::warn!(%room, error = ?e, "typing expiry failed");
                }
            }
        }
    }

    fn typing(&self, room_id: &str) -> Result<Typing> {
        Ok(self
            .storage
            .get(&catalog::ROOMID_TYPING, &room_id)?
            .unwrap_or_default())
    }

    /// Stores the typing state; a change others should see takes a new stream position (a
    /// longer expiry alone does not).
    async fn store_typing(
        &self,
        mut batch: kith_storage::Batch,
        room_id: &str,
        mut typing: Typing,
        changed: bool,
    ) -> Result<()> {
        if changed {
            typing.position = batch.new_position()?;
            batch.concerns_only_room(room_id);
        }
        batch.put(&catalog::ROOMID_TYPING, &room_id, &typing)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// The `m.typing` event if who is typing changed in (`after`, `upto`] (for `None`: if
    /// anyone is typing now).
    pub fn typing_event(
        &self,
        room_id: &str,
        after: Option<u64>,
        upto: u64,
    ) -> Result<Option<Value>> {
        let mut typing = self.typing(room_id)?;
        typing.prune(now_ms());
        let changed = match after {
            Some(after) => typing.position > after && typing.position <= upto,
            None => !typing.users.is_empty(),
        };
        let users: Vec<&String> = typing.users.keys().collect();
        Ok(changed.then(|| json!({ "type": "m.typing", "content": { "user_ids": users } })))
    }
}

fn typing_edu(room_id: &str, user_id: &str, typing: bool) -> Value {
    json!({ "edu_type": "m.typing", "content": {
        "room_id": room_id, "user_id": user_id, "typing": typing,
    }})
}
