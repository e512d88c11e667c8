//! Push rules and the unread counts they drive. A user's rules live in their global account
//! data (`m.push_rules`, as Synapse keeps them, so clients see changes through `/sync`);
//! until they change one, the spec's defaults apply. Each new event is matched against every
//! joined member's rules when it is committed, and counted for those it notifies; a read
//! receipt recounts what is left after it. Sync then reads two numbers per room.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use kith_storage::{Batch, catalog};
use ruma::push::{Action, FlattenedJson, PushConditionRoomCtx, Ruleset};
use ruma::serde::Raw;
use ruma::{OwnedUserId, RoomId, UInt, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Messaging, StoredPdu};
use crate::services::error::{Error, Result};
use crate::services::pushers::{self, Notified};

/// The account data type holding a user's rules.
pub const PUSH_RULES: &str = "m.push_rules";

/// One notifying event not yet read: whether it highlights, and the thread it is in.
/// (Rows written before threads were counted apart are a bare `bool`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum NotificationRow {
    Threaded {
        highlight: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
    },
    Plain(bool),
}

impl NotificationRow {
    fn highlight(&self) -> bool {
        match self {
            NotificationRow::Threaded { highlight, .. } | NotificationRow::Plain(highlight) => {
                *highlight
            }
        }
    }

    fn thread(&self) -> Option<&str> {
        match self {
            NotificationRow::Threaded { thread, .. } => thread.as_deref(),
            NotificationRow::Plain(_) => None,
        }
    }
}

/// What a read receipt reads: everything (unthreaded), the main timeline, or one thread.
#[derive(Debug, Clone, Copy)]
pub enum ReadScope<'a> {
    All,
    Main,
    Thread(&'a str),
}

/// The actions of the first of `rules` that applies to the event (the sender's own events
/// are not looked at: their sender is no member to notify).
async fn first_match<'a>(
    rules: &'a Ruleset,
    event: &FlattenedJson,
    context: &PushConditionRoomCtx,
) -> &'a [Action] {
    for rule in rules {
        if rule.applies(event, context).await {
            return rule.actions();
        }
    }
    &[]
}

/// The thread an event is in: the root its `m.thread` relation names.
fn thread_of(event: &StoredPdu) -> Option<String> {
    let content = serde_json::to_value(event.json.get("content")?).ok()?;
    let relation = content.get("m.relates_to")?;
    (relation["rel_type"] == "m.thread")
        .then(|| relation["event_id"].as_str().map(str::to_owned))?
}

/// Notifying events after the user's read receipt.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct UnreadCounts {
    pub notifications: u64,
    pub highlights: u64,
}

impl Messaging {
    /// The user's push rules: their own, or the spec's defaults.
    pub fn push_rules(&self, user_id: &UserId) -> Result<Ruleset> {
        match self.account_data(user_id.as_str(), None, PUSH_RULES)? {
            Some(content) => {
                serde_json::from_value(content["global"].clone()).map_err(Error::internal)
            }
            None => Ok(Ruleset::server_default(user_id)),
        }
    }

    /// The `m.push_rules` account data content for a ruleset.
    pub fn push_rules_content(rules: &Ruleset) -> Value {
        json!({ "global": rules })
    }

    /// Changes the user's rules with `change`, which may refuse; one change per user at a time.
    pub async fn update_push_rules(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        let _guard = self.name_locks.lock(user_id.as_str()).await;
        let mut rules = self.push_rules(user_id)?;
        change(&mut rules)?;
        let content = Self::push_rules_content(&rules);
        self.set_account_data(user_id.as_str(), None, PUSH_RULES, content)
            .await
    }

    /// Counts `event` for each joined member (but its sender) whose rules say it notifies.
    /// Called under the room's lock, so the counters are not raced; `pending` holds the
    /// counts this batch has already written.
    pub(super) async fn count_notifications(
        &self,
        batch: &mut Batch,
        pending: &mut HashMap<String, UnreadCounts>,
        room_id: &RoomId,
        members: &[OwnedUserId],
        event: &StoredPdu,
    ) -> Result<()> {
        let sender = event.json.get("sender").and_then(|s| s.as_str());
        let client_event = event.client_event();
        let raw: Raw<Value> = Raw::new(&client_event).map_err(Error::internal)?;
        // Flattened once for every member's rules, not once per member.
        let flattened = FlattenedJson::from_raw(&raw);
        let member_count = UInt::new_saturating(members.len() as u64);
        for user_id in members.iter().filter(|m| Some(m.as_str()) != sender) {
            let member = user_id.as_str();
            let name = self.display_name(room_id, member)?;
            let context =
                PushConditionRoomCtx::new(room_id.to_owned(), member_count, user_id.clone(), name);
            let rules = self.push_rules(user_id)?;
            let actions = first_match(&rules, &flattened, &context).await;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            // Several events of one draft count on top of each other, not of what is stored.
            let counts = match pending.entry(member.to_owned()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(self.unread(member, room_id.as_str())?),
            };
            counts.notifications += 1;
            counts.highlights += u64::from(highlight);
            let key = (member, room_id.as_str());
            batch.put(&catalog::USERID_ROOMID_UNREAD, &key, counts)?;
            let row = (member, room_id.as_str(), event.position);
            let notification = NotificationRow::Threaded {
                highlight,
                thread: thread_of(event),
            };
            batch.put(
                &catalog::USERID_ROOMID_POSITION_NOTIFICATION,
                &row,
                &notification,
            )?;
            // Our users' phones are owed a push, and `/notifications` lists it.
            if user_id.server_name().as_str() == self.server_name() {
                let notified = Notified {
                    room_id: room_id.to_string(),
                    event_id: event.event_id.to_string(),
                    actions: serde_json::to_value(actions).map_err(Error::internal)?,
                    highlight,
                    ts: crate::util::now_ms(),
                };
                pushers::notify_into(&self.storage, batch, (member, event.position), notified)?;
            }
        }
        Ok(())
    }

    /// The room's name (or its canonical alias) and the sender's display name, for a push.
    pub fn push_names(&self, room_id: &RoomId, sender: &str) -> (Option<String>, Option<String>) {
        let text = |kind: &str, key: &str| {
            let content = self.state_content(room_id, kind).ok().flatten()?;
            content[key].as_str().map(str::to_owned)
        };
        let room = text("m.room.name", "name").or_else(|| text("m.room.canonical_alias", "alias"));
        let member = self
            .state_event_id(room_id, "m.room.member", sender)
            .ok()
            .flatten();
        let member = member.and_then(|id| self.stored_pdu(id.as_str()).ok().flatten());
        let name = member.and_then(|m| {
            let content = m.client_event()["content"].take();
            content["displayname"].as_str().map(str::to_owned)
        });
        (room, name)
    }

    /// Whether the user's notification for the event at `position` is still unread.
    pub fn unread_at(&self, user_id: &str, room_id: &str, position: u64) -> Result<bool> {
        let row = (user_id, room_id, position);
        Ok(self
            .storage
            .contains(&catalog::USERID_ROOMID_POSITION_NOTIFICATION, &row)?)
    }

    /// The user's unread notifying events in all their rooms (a phone's badge).
    pub fn total_unread(&self, user_id: &str) -> Result<u64> {
        let rows: Vec<((String, String), UnreadCounts)> = self
            .storage
            .scan_prefix(&catalog::USERID_ROOMID_UNREAD, &(user_id,))?;
        Ok(rows.iter().map(|(_, c)| c.notifications).sum())
    }

    /// Takes a (redacted) event out of the unread counts of the members it notified.
    pub(super) fn uncount_notification(
        &self,
        batch: &mut Batch,
        pending: &mut HashMap<String, UnreadCounts>,
        members: &[OwnedUserId],
        event: &StoredPdu,
    ) -> Result<()> {
        let room = event.room_id.as_str();
        for member in members.iter().map(|m| m.as_str()) {
            let row = (member, room, event.position);
            let found: Option<NotificationRow> = self
                .storage
                .get(&catalog::USERID_ROOMID_POSITION_NOTIFICATION, &row)?;
            let Some(highlight) = found.map(|n| n.highlight()) else {
                continue;
            };
            batch.delete(&catalog::USERID_ROOMID_POSITION_NOTIFICATION, &row)?;
            let counts = match pending.entry(member.to_owned()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(self.unread(member, room)?),
            };
            counts.notifications = counts.notifications.saturating_sub(1);
            counts.highlights = counts.highlights.saturating_sub(u64::from(highlight));
            batch.put(&catalog::USERID_ROOMID_UNREAD, &(member, room), counts)?;
        }
        Ok(())
    }

    /// The member's display name in the room (their user ID if they have none). Under the
    /// room's lock, so the member event may come from memory.
    fn display_name(&self, room_id: &RoomId, user_id: &str) -> Result<String> {
        let event = match self.state_event_id(room_id, "m.room.member", user_id)? {
            Some(id) => self.auth_event(room_id.as_str(), &id),
            None => None,
        };
        let name = event.and_then(|e| {
            let content = e.json.get("content")?.as_object()?;
            Some(content.get("displayname")?.as_str()?.to_owned())
        });
        Ok(name.unwrap_or_else(|| user_id.to_owned()))
    }

    pub fn unread(&self, user_id: &str, room_id: &str) -> Result<UnreadCounts> {
        Ok(self
            .storage
            .get(&catalog::USERID_ROOMID_UNREAD, &(user_id, room_id))?
            .unwrap_or_default())
    }

    /// After a read receipt at `read_upto` for `scope`: forgets what it read, and recounts
    /// what is left, in `batch`.
    pub(super) fn recount_unread(
        &self,
        batch: &mut Batch,
        (user_id, room_id): (&str, &str),
        scope: ReadScope<'_>,
        read_upto: u64,
    ) -> Result<()> {
        let rows: Vec<((String, String, u64), NotificationRow)> = self.storage.scan_prefix(
            &catalog::USERID_ROOMID_POSITION_NOTIFICATION,
            &(user_id, room_id),
        )?;
        let mut counts = UnreadCounts::default();
        for ((_, _, position), row) in rows {
            let in_scope = match scope {
                ReadScope::All => true,
                ReadScope::Main => row.thread().is_none(),
                ReadScope::Thread(root) => row.thread() == Some(root),
            };
            if in_scope && position <= read_upto {
                let key = (user_id, room_id, position);
                batch.delete(&catalog::USERID_ROOMID_POSITION_NOTIFICATION, &key)?;
            } else {
                counts.notifications += 1;
                counts.highlights += u64::from(row.highlight());
            }
        }
        batch.put(&catalog::USERID_ROOMID_UNREAD, &(user_id, room_id), &counts)?;
        Ok(())
    }

    /// The room's unread counts split as clients that count threads apart want them: the
    /// main timeline's, and each thread's (by its root).
    pub fn unread_by_thread(
        &self,
        user_id: &str,
        room_id: &str,
    ) -> Result<(UnreadCounts, BTreeMap<String, UnreadCounts>)> {
        let rows: Vec<((String, String, u64), NotificationRow)> = self.storage.scan_prefix(
            &catalog::USERID_ROOMID_POSITION_NOTIFICATION,
            &(user_id, room_id),
        )?;
        let mut main = UnreadCounts::default();
        let mut threads: BTreeMap<String, UnreadCounts> = BTreeMap::new();
        for (_, row) in rows {
            let counts = match row.thread() {
                Some(root) => threads.entry(root.to_owned()).or_default(),
                None => &mut main,
            };
            counts.notifications += 1;
            counts.highlights += u64::from(row.highlight());
        }
        Ok((main, threads))
    }
}
