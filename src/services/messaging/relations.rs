//! Relations between events (`m.relates_to`): reactions, edits, thread replies and
//! references, indexed under the event they relate to as they are stored, and served two
//! ways: paged (`/relations`, `/threads`) and bundled into the related-to event's
//! `unsigned.m.relations` wherever it is served (the latest edit, a thread's summary,
//! references; reaction counts stay the client's, as in Synapse). Only relations from the
//! same room, and only events the reader may see, count.

use std::collections::HashSet;

use kith_storage::{Batch, catalog};
use ruma::api::Direction;
use ruma::{EventId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::visibility::Visibility;
use super::{Messaging, StoredPdu};
use crate::services::error::{Error, Result};

pub const THREAD: &str = "m.thread";
const REPLACE: &str = "m.replace";
const REFERENCE: &str = "m.reference";

/// How deep `recurse` follows relations of relations (Synapse's depth).
const MAX_DEPTH: usize = 3;

/// One event relating to another, as indexed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relation {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub origin_server_ts: u64,
}

/// `(rel_type, related-to event ID)` of an event's `m.relates_to`, for a non-state event
/// (a reply's `m.in_reply_to` is no relation type).
fn relates_to(event: &StoredPdu) -> Option<(String, String)> {
    if event.json.contains_key("state_key") {
        return None;
    }
    let content = serde_json::to_value(event.json.get("content")?).ok()?;
    let relation = content.get("m.relates_to")?;
    let rel_type = relation.get("rel_type")?.as_str()?;
    let parent = relation.get("event_id")?.as_str()?;
    Some((rel_type.to_owned(), parent.to_owned()))
}

fn field<'a>(event: &'a StoredPdu, key: &str) -> &'a str {
    event.json.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// Indexes a newly stored event under the event it relates to, in `batch`; a thread
/// reply also moves its thread to the top of the room's threads.
pub fn index_into(batch: &mut Batch, event: &StoredPdu) -> Result<()> {
    let Some((rel_type, parent)) = relates_to(event) else {
        return Ok(());
    };
    let ts = event
        .json
        .get("origin_server_ts")
        .and_then(|t| t.as_integer());
    let relation = Relation {
        event_id: event.event_id.to_string(),
        room_id: event.room_id.clone(),
        sender: field(event, "sender").to_owned(),
        kind: field(event, "type").to_owned(),
        origin_server_ts: ts
            .and_then(|t| u64::try_from(i64::from(t)).ok())
            .unwrap_or(0),
    };
    let key = (parent.as_str(), rel_type.as_str(), event.position);
    batch.put(&catalog::EVENTID_RELTYPE_POSITION_RELATION, &key, &relation)?;
    if rel_type == THREAD {
        let room = event.room_id.as_str();
        let row = (room, parent.as_str());
        batch.put(
            &catalog::ROOMID_ROOTID_THREADPOSITION,
            &row,
            &event.position,
        )?;
    }
    Ok(())
}

/// Takes a redacted event (as it was before) out of the index, in `batch`: a redacted
/// edit or reply no longer counts.
pub fn unindex_into(batch: &mut Batch, event: &StoredPdu) -> Result<()> {
    if let Some((rel_type, parent)) = relates_to(event) {
        let key = (parent.as_str(), rel_type.as_str(), event.position);
        batch.delete(&catalog::EVENTID_RELTYPE_POSITION_RELATION, &key)?;
    }
    Ok(())
}

/// The key an event's relation is indexed under, if it has one (for a purge).
pub(super) fn relation_key(event: &StoredPdu) -> Option<(String, String, u64)> {
    relates_to(event).map(|(rel_type, parent)| (parent, rel_type, event.position))
}

/// A page of `/relations`.
pub struct RelationsPage {
    pub events: Vec<StoredPdu>,
    pub next: Option<u64>,
}

/// What `/relations` asks for.
pub struct RelationsQuery<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub dir: Direction,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub limit: usize,
    pub recurse: bool,
}

/// Which threads `/threads` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadsInclude {
    All,
    /// Those the reader wrote the root of or a reply in.
    Participated,
}

/// Bundles relations into events served to one reader in one room, reading the room's
/// history visibility once.
pub struct Bundler<'a> {
    messaging: &'a Messaging,
    reader: &'a str,
    visibility: Visibility,
}

impl Messaging {
    /// The indexed relations to `parent` (of `rel_type`, or all), in stream order, from
    /// this room only.
    fn relations_to(
        &self,
        room: &str,
        parent: &str,
        rel_type: Option<&str>,
    ) -> Result<Vec<(String, u64, Relation)>> {
        let table = &catalog::EVENTID_RELTYPE_POSITION_RELATION;
        let rows: Vec<((String, String, u64), Relation)> = match rel_type {
            Some(rel_type) => self.storage.scan_prefix(table, &(parent, rel_type))?,
            None => self.storage.scan_prefix(table, &(parent,))?,
        };
        let mut found: Vec<_> = rows
            .into_iter()
            .filter(|(_, r)| r.room_id == room)
            .map(|((_, rel_type, position), r)| (rel_type, position, r))
            .collect();
        found.sort_by_key(|(_, position, _)| *position);
        Ok(found)
    }

    /// A bundler for events of `room_id` served to `reader`.
    pub fn bundler<'a>(&'a self, reader: &'a UserId, room_id: &RoomId) -> Result<Bundler<'a>> {
        Ok(Bundler {
            messaging: self,
            reader: reader.as_str(),
            visibility: self.visibility(room_id)?,
        })
    }

    /// `/relations`: the events relating to `event_id` that `reader` may see, paged by
    /// stream position (newest first going backwards); with `recurse`, relations of those
    /// too, up to three deep.
    pub fn relations(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        query: &RelationsQuery<'_>,
    ) -> Result<RelationsPage> {
        // The related-to event must be one the reader may see.
        self.room_event(reader, room_id, event_id)?;
        let room = room_id.as_str();
        let depth = if query.recurse { MAX_DEPTH } else { 1 };
        let mut found = Vec::new();
        let mut level = vec![event_id.to_string()];
        let mut seen = HashSet::new();
        for _ in 0..depth {
            let mut next = Vec::new();
            for parent in &level {
                for (rel_type, position, relation) in self.relations_to(room, parent, None)? {
                    if !seen.insert(relation.event_id.clone()) {
                        continue;
                    }
                    next.push(relation.event_id.clone());
                    let wanted = query.rel_type.is_none_or(|t| t == rel_type)
                        && query.event_type.is_none_or(|t| t == relation.kind);
                    if wanted {
                        found.push((position, relation.event_id));
                    }
                }
            }
            level = next;
        }
        found.sort_by_key(|(position, _)| *position);
        if query.dir == Direction::Backward {
            found.reverse();
        }
        let in_range = |position: u64| match query.dir {
            Direction::Backward => {
                query.from.is_none_or(|f| position <= f) && query.to.is_none_or(|t| position > t)
            }
            Direction::Forward => {
                query.from.is_none_or(|f| position > f) && query.to.is_none_or(|t| position <= t)
            }
        };
        let visibility = self.visibility(room_id)?;
        let mut events = Vec::new();
        let mut more = false;
        for (_, id) in found.into_iter().filter(|(p, _)| in_range(*p)) {
            let Some(event) = self.stored_pdu(&id)? else {
                continue;
            };
            if !self.may_see(&visibility, reader.as_str(), &event)? {
                continue;
            }
            if events.len() == query.limit {
                more = true;
                break;
            }
            events.push(event);
        }
        let next = match (more, events.last(), query.dir) {
            (false, ..) | (_, None, _) => None,
            (true, Some(last), Direction::Backward) => Some(last.position.saturating_sub(1)),
            (true, Some(last), Direction::Forward) => Some(last.position),
        };
        Ok(RelationsPage { events, next })
    }

    /// `/threads`: the roots of the room's threads `reader` may see, the most recently
    /// active first, from `from` (a position: threads last active before it).
    pub fn threads(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        include: ThreadsInclude,
        from: Option<u64>,
        limit: usize,
    ) -> Result<RelationsPage> {
        self.require_reader(reader, room_id)?;
        let rows: Vec<((String, String), u64)> = self
            .storage
            .scan_prefix(&catalog::ROOMID_ROOTID_THREADPOSITION, &(room_id.as_str(),))?;
        let mut threads: Vec<(u64, String)> = rows
            .into_iter()
            .map(|((_, root), position)| (position, root))
            .filter(|(position, _)| from.is_none_or(|f| *position < f))
            .collect();
        threads.sort_by(|a, b| b.cmp(a));
        let visibility = self.visibility(room_id)?;
        let mut events = Vec::new();
        let mut next = None;
        for (position, root) in threads {
            let Some(event) = self.stored_pdu(&root)? else {
                continue;
            };
            if event.room_id != room_id.as_str()
                || !self.may_see(&visibility, reader.as_str(), &event)?
            {
                continue;
            }
            if include == ThreadsInclude::Participated
                && !self.participated(reader.as_str(), &event)?
            {
                continue;
            }
            if events.len() == limit {
                break;
            }
            next = Some(position);
            events.push(event);
        }
        // Another page only if a full one was served.
        let next = next.filter(|_| events.len() == limit);
        Ok(RelationsPage { events, next })
    }

    /// Whether `user` wrote a thread's root or a reply in it.
    fn participated(&self, user: &str, root: &StoredPdu) -> Result<bool> {
        if field(root, "sender") == user {
            return Ok(true);
        }
        let replies = self.relations_to(&root.room_id, root.event_id.as_str(), Some(THREAD))?;
        Ok(replies.iter().any(|(_, _, r)| r.sender == user))
    }
}

impl Bundler<'_> {
    /// Adds `unsigned.m.relations` to `served` (the client form of `event`) if anything
    /// relates to it: the latest valid edit (`m.replace`, by the original's sender, of a
    /// non-state event), the thread summary (`m.thread`: count, latest event,
    /// `current_user_participated`) and references (`m.reference`).
    pub fn attach(&self, event: &StoredPdu, served: &mut Value) -> Result<()> {
        let messaging = self.messaging;
        let parent = event.event_id.as_str();
        // Most events have no relations: one seek says so.
        let any: Vec<((String, String, u64), Relation)> = messaging.storage.scan_prefix_after(
            &catalog::EVENTID_RELTYPE_POSITION_RELATION,
            &(parent,),
            &(parent,),
            1,
        )?;
        if any.is_empty() {
            return Ok(());
        }
        // Each type read on its own: reactions, however many, are never read.
        let room = event.room_id.as_str();
        let mut bundled = serde_json::Map::new();
        if let Some(edit) = self.latest_edit(event)? {
            bundled.insert(REPLACE.into(), edit.client_event());
        }
        let replies = messaging.relations_to(room, parent, Some(THREAD))?;
        // The newest reply the reader may see; the count is of every reply (they share
        // the thread's visibility).
        let mut latest = None;
        for (_, _, reply) in replies.iter().rev() {
            if let Some(reply) = self.visible(&reply.event_id)? {
                latest = Some(reply);
                break;
            }
        }
        if let Some(latest) = latest {
            let sender = field(event, "sender");
            let participated =
                sender == self.reader || replies.iter().any(|(_, _, r)| r.sender == self.reader);
            let mut latest_event = latest.client_event();
            // The latest reply is shown as edited too, as clients show it.
            if let Some(edit) = self.latest_edit(&latest)? {
                latest_event["unsigned"]["m.relations"] = json!({ REPLACE: edit.client_event() });
            }
            bundled.insert(
                THREAD.into(),
                json!({
                    "latest_event": latest_event,
                    "count": replies.len(),
                    "current_user_participated": participated,
                }),
            );
        }
        let mut chunk = Vec::new();
        for (_, _, reference) in messaging.relations_to(room, parent, Some(REFERENCE))? {
            if self.visible(&reference.event_id)?.is_some() {
                chunk.push(json!({ "event_id": reference.event_id }));
            }
        }
        if !chunk.is_empty() {
            bundled.insert(REFERENCE.into(), json!({ "chunk": chunk }));
        }
        if !bundled.is_empty() {
            served["unsigned"]["m.relations"] = Value::Object(bundled);
        }
        Ok(())
    }

    /// The latest valid edit of `event` the reader may see: by the event's own sender, of
    /// the same type, of an event that is neither state nor itself an edit (by
    /// `origin_server_ts`, then event ID).
    fn latest_edit(&self, event: &StoredPdu) -> Result<Option<StoredPdu>> {
        let is_edit = relates_to(event).is_some_and(|(rel_type, _)| rel_type == REPLACE);
        if event.json.contains_key("state_key") || is_edit {
            return Ok(None);
        }
        let (sender, kind) = (field(event, "sender"), field(event, "type"));
        let parent = event.event_id.as_str();
        let mut edits: Vec<Relation> = (self.messaging)
            .relations_to(&event.room_id, parent, Some(REPLACE))?
            .into_iter()
            .map(|(_, _, r)| r)
            .filter(|r| r.sender == sender && r.kind == kind)
            .collect();
        edits.sort_by(|a, b| {
            (b.origin_server_ts, &b.event_id).cmp(&(a.origin_server_ts, &a.event_id))
        });
        for edit in edits {
            if let Some(edit) = self.visible(&edit.event_id)? {
                return Ok(Some(edit));
            }
        }
        Ok(None)
    }

    /// The event, if the reader may see it.
    fn visible(&self, event_id: &str) -> Result<Option<StoredPdu>> {
        let Some(event) = self.messaging.stored_pdu(event_id)? else {
            return Ok(None);
        };
        match self
            .messaging
            .may_see(&self.visibility, self.reader, &event)?
        {
            true => Ok(Some(event)),
            false => Ok(None),
        }
    }
}

/// A relation pagination token: a stream position.
pub fn position_token(token: &str) -> Result<u64> {
    token
        .parse()
        .map_err(|_| Error::invalid_param("Invalid pagination token"))
}
