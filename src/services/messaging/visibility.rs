//! History visibility: which past events a room member, or another server, may read. As
//! the spec's algorithm says, what counts is the `history_visibility` in force at each
//! event (read from the state kept after it), not the room's setting now: under `shared`
//! (the default) and `world_readable`, every member reads it; under `invited`, those
//! invited or joined at that event; under `joined`, those joined at it. Another server
//! reads an event its users could; one it may not read comes redacted, so the room's
//! history stays whole for it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use ruma::{CanonicalJsonObject, EventId, OwnedEventId, OwnedUserId, RoomId, ServerName};

use super::state::MAX_HOPS;
use super::{Membership, Messaging, StoredPdu};
use crate::services::error::{Error, Result};

/// From the most open to the least (the order `Ord` compares by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl Setting {
    fn of(content: Option<&serde_json::Value>) -> Setting {
        match content.and_then(|c| c["history_visibility"].as_str()) {
            Some("world_readable") => Setting::WorldReadable,
            Some("invited") => Setting::Invited,
            Some("joined") => Setting::Joined,
            _ => Setting::Shared,
        }
    }

    /// The memberships at an event that let a reader see it; `None`: any.
    fn needs(self) -> Option<&'static [&'static str]> {
        match self {
            Setting::WorldReadable | Setting::Shared => None,
            Setting::Invited => Some(&["invite", "join"]),
            Setting::Joined => Some(&["join"]),
        }
    }
}

/// What readers may see of one room, for one request: the setting at each event looked up
/// once (events in a row share the walk back to where the setting last changed).
pub struct Visibility {
    /// The room's setting now: for events whose state is not kept here (history fetched
    /// from other servers before this one joined).
    current: Setting,
    at: Mutex<HashMap<OwnedEventId, Option<Setting>>>,
}

/// Another server reading a room's history, for one request.
pub struct ServerReader {
    /// Its users with a membership in the room, and that membership now.
    users: Vec<(OwnedUserId, Membership)>,
    visibility: Visibility,
}

const HISTORY_VISIBILITY: &str = "m.room.history_visibility";

impl Messaging {
    /// A sync timeline as a member sees it: one who joined within it sees what history
    /// visibility lets them; one joined before it, all of it.
    pub fn visible_to_member(
        &self,
        user: &str,
        room_id: &RoomId,
        joined_at: u64,
        timeline: Vec<StoredPdu>,
    ) -> Result<Vec<StoredPdu>> {
        if timeline.first().is_none_or(|e| e.position > joined_at) {
            return Ok(timeline);
        }
        let visibility = self.visibility(room_id)?;
        let mut seen = Vec::with_capacity(timeline.len());
        for event in timeline {
            if self.may_see(&visibility, user, &event)? {
                seen.push(event);
            }
        }
        Ok(seen)
    }

    /// The room's visibility, for deciding event by event.
    pub fn visibility(&self, room_id: &RoomId) -> Result<Visibility> {
        let current = Setting::of(self.state_content(room_id, HISTORY_VISIBILITY)?.as_ref());
        Ok(Visibility {
            current,
            at: Mutex::new(HashMap::new()),
        })
    }

    /// The setting in force at `event`. A change of the setting is itself seen under the
    /// more open of the settings before and after it, as the spec says.
    fn setting_at(&self, visibility: &Visibility, event: &StoredPdu) -> Result<Setting> {
        let mut memo = visibility.at.lock().unwrap_or_else(PoisonError::into_inner);
        let after = self.setting_after(&event.event_id, &mut memo)?;
        let after = after.unwrap_or(visibility.current);
        let is_change = event.json.get("type").and_then(|t| t.as_str()) == Some(HISTORY_VISIBILITY)
            && event.json.get("state_key").and_then(|k| k.as_str()) == Some("");
        let base = match is_change {
            true => self
                .snapshot(&event.event_id, &HashMap::new())?
                .and_then(|s| s.base),
            false => None,
        };
        let before = match base {
            Some(base) => self.setting_after(&base, &mut memo)?,
            None => None,
        };
        Ok(before.map_or(after, |before| before.min(after)))
    }

    /// Walks the kept state back from `event_id` to where the setting was last set,
    /// remembering the answer for every event on the way. `None`: no state kept here.
    fn setting_after(
        &self,
        event_id: &EventId,
        memo: &mut HashMap<OwnedEventId, Option<Setting>>,
    ) -> Result<Option<Setting>> {
        let pending = HashMap::new();
        let mut walked = Vec::new();
        let mut next = Some(event_id.to_owned());
        let found = loop {
            let Some(id) = next.take() else { break None };
            if let Some(known) = memo.get(&id) {
                break *known;
            }
            let Some(snapshot) = self.snapshot(&id, &pending)? else {
                walked.push(id);
                break None;
            };
            walked.push(id);
            let set = snapshot
                .changes
                .iter()
                .find(|(kind, key, _)| kind == HISTORY_VISIBILITY && key.is_empty());
            if let Some((_, _, setting_event)) = set {
                let content = self
                    .stored_pdu(setting_event.as_str())?
                    .map(|e| e.client_event()["content"].take());
                break Some(Setting::of(content.as_ref()));
            }
            if snapshot.base.is_none() {
                break Some(Setting::Shared);
            }
            if walked.len() > MAX_HOPS as usize + 1 {
                return Err(Error::internal("a state snapshot chain is too long"));
            }
            next = snapshot.base;
        };
        for id in walked {
            memo.insert(id, found);
        }
        Ok(found)
    }

    /// Whether `user`, a member or a former one, may see `event`: under `shared`, a member
    /// sees all of it, a former member what they were joined for (as Synapse decides).
    pub fn may_see(&self, visibility: &Visibility, user: &str, event: &StoredPdu) -> Result<bool> {
        let setting = self.setting_at(visibility, event)?;
        if setting == Setting::WorldReadable {
            return Ok(true);
        }
        let Some(current) = self.membership_row(user, &event.room_id)? else {
            return Ok(false);
        };
        let memberships: &[&str] = match setting {
            Setting::Shared if current.membership == "join" => return Ok(true),
            Setting::Invited => &["invite", "join"],
            _ => &["join"],
        };
        let then = self.member_event_at(user, &current, event.position)?;
        Ok(then.is_some_and(|e| memberships.contains(&e.membership())))
    }

    /// How `server` reads the room: its users' memberships looked up once, for every event
    /// of a request.
    pub fn server_reader(&self, room_id: &RoomId, server: &ServerName) -> Result<ServerReader> {
        let users = self.member_rows(room_id.as_str())?;
        Ok(ServerReader {
            users: users
                .into_iter()
                .filter(|(u, _)| u.server_name() == server)
                .collect(),
            visibility: self.visibility(room_id)?,
        })
    }

    /// Whether the reading server (in the room now) may see `event`: under `invited` or
    /// `joined`, one of its users was invited or joined at the event (each user's
    /// membership then, walked back from their current one).
    fn server_may_see(&self, reader: &ServerReader, event: &StoredPdu) -> Result<bool> {
        let Some(memberships) = self.setting_at(&reader.visibility, event)?.needs() else {
            return Ok(true);
        };
        for (user, current) in &reader.users {
            let then = self.member_event_at(user.as_str(), current, event.position)?;
            if then.is_some_and(|e| memberships.contains(&e.membership())) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `event` as the reading server may have it: whole, or redacted if history visibility
    /// hides it from that server.
    pub fn for_server(
        &self,
        reader: &ServerReader,
        event: StoredPdu,
    ) -> Result<CanonicalJsonObject> {
        if self.server_may_see(reader, &event)? {
            return Ok(event.json);
        }
        let room_id = RoomId::parse(&event.room_id).map_err(Error::internal)?;
        let room = self
            .room(&room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = kith_federation::pdu::rules(&room.version).map_err(Error::internal)?;
        ruma::canonical_json::redact(event.json, &rules.redaction, None).map_err(Error::internal)
    }
}
