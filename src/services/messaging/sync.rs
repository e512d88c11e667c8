//! What `/sync` tells a user about their rooms between two stream positions.

use kith_storage::catalog;
use ruma::{CanonicalJsonValue, OwnedRoomId, UserId};
use serde_json::{Value, json};

use super::{Membership, Messaging, StoredPdu};
use crate::services::error::Result;

/// A joined room's part of a sync.
pub struct JoinedSync {
    pub timeline: Vec<StoredPdu>,
    pub limited: bool,
    /// State before the timeline that the client does not have yet.
    pub state: Vec<StoredPdu>,
    pub joined_count: u64,
    pub invited_count: u64,
    pub heroes: Vec<String>,
}

/// The state types shown to someone invited, before they join: Synapse's default
/// `room_prejoin_state`, which clients name and decorate invites from. The inviter's own
/// member event goes with them (Element names a direct-chat invite after it).
const INVITE_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.topic",
    "m.room.encryption",
];

impl Messaging {
    /// `state` with member events only for the timeline's senders and `user`, and those
    /// senders' current member events added where neither the state nor the timeline
    /// carries one (the client may not have them: it loads members lazily). Sent again on
    /// later syncs, as with `include_redundant_members`: no per-device record is kept.
    pub fn lazy_members(
        &self,
        room_id: &str,
        user: &UserId,
        timeline: &[StoredPdu],
        mut state: Vec<StoredPdu>,
    ) -> Result<Vec<StoredPdu>> {
        let text = |e: &StoredPdu, key: &str| -> Option<String> {
            e.json.get(key).and_then(|v| v.as_str()).map(str::to_owned)
        };
        let is_member = |e: &StoredPdu| text(e, "type").as_deref() == Some("m.room.member");
        let mut wanted: Vec<String> = timeline.iter().filter_map(|e| text(e, "sender")).collect();
        wanted.push(user.to_string());
        wanted.sort();
        wanted.dedup();
        state
            .retain(|e| !is_member(e) || text(e, "state_key").is_some_and(|k| wanted.contains(&k)));
        let carried = |member: &str| {
            state
                .iter()
                .chain(timeline)
                .any(|e| is_member(e) && text(e, "state_key").as_deref() == Some(member))
        };
        let missing: Vec<String> = wanted.into_iter().filter(|m| !carried(m)).collect();
        let room = ruma::RoomId::parse(room_id).map_err(crate::services::error::Error::internal)?;
        for member in missing {
            // As the user may read the room's state: a former member's as of their leaving.
            state.extend(self.state_event_for(user, &room, ("m.room.member", &member))?);
        }
        Ok(state)
    }

    /// Every room the user has a membership in, with it.
    pub fn memberships(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, Membership)>> {
        let rows: Vec<((String, String), Membership)> = self.storage.scan_prefix(
            &kith_storage::catalog::USERID_ROOMID_MEMBERSHIP,
            &(user_id.as_str(),),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|((_, room), m)| Some((OwnedRoomId::try_from(room).ok()?, m)))
            .collect())
    }

    /// The room's current state events.
    pub fn state_events(&self, room_id: &str) -> Result<Vec<StoredPdu>> {
        let room_id =
            ruma::RoomId::parse(room_id).map_err(crate::services::error::Error::internal)?;
        let mut events = Vec::new();
        for (_, event_id) in self.state_ids(&room_id)? {
            events.extend(self.stored_pdu(event_id.as_str())?);
        }
        Ok(events)
    }

    /// A joined room between `since` (exclusive; `None` for an initial sync) and `upto`
    /// (inclusive): the newest `limit` events, and the state the client lacks before them
    /// (all of it with `full_state`). With `lazy` (the syncing user, who asked for lazily
    /// loaded members), of the member events only those of the timeline's senders and the
    /// user's own. `None` when an incremental sync has nothing for the room.
    pub fn joined_sync(
        &self,
        room_id: &str,
        since: Option<u64>,
        upto: u64,
        (limit, full_state): (usize, bool),
        lazy: Option<&UserId>,
    ) -> Result<Option<JoinedSync>> {
        let after = since.unwrap_or(0);
        let page = self.timeline_between(room_id, after, upto, limit + 1)?;
        let mut timeline: Vec<StoredPdu> = page.into_iter().map(|(_, s)| s).collect();
        let limited = timeline.len() > limit;
        timeline.truncate(limit);
        timeline.reverse();
        if since.is_some() && timeline.is_empty() && !full_state {
            return Ok(None);
        }
        let first = timeline
            .first()
            .map_or(upto.saturating_add(1), |s| s.position);
        // Initial, full or after a gap: the state as of the timeline's start (approximated by
        // the current state not in the timeline); otherwise the state changed in the gap,
        // which the timeline carries, so the state events are not even read. (A change
        // state resolution makes without a timeline event is missed here, as it was before.)
        let state = match since.is_none() || full_state || limited {
            true => self
                .state_events(room_id)?
                .into_iter()
                .filter(|s| s.position < first)
                .filter(|s| since.is_none() || full_state || s.position > after)
                .collect(),
            false => Vec::new(),
        };
        let state = match lazy {
            Some(user) => self.lazy_members(room_id, user, &timeline, state)?,
            None => state,
        };
        // The summary, from the membership table rather than the member events.
        let members: Vec<((String, String), Membership)> = self
            .storage
            .scan_prefix(&catalog::ROOMID_USERID_MEMBERSHIP, &(room_id,))?;
        let mut joined_count = 0;
        let mut invited_count = 0;
        let mut heroes = Vec::new();
        for ((_, user), membership) in members {
            match membership.membership.as_str() {
                "join" => joined_count += 1,
                "invite" => invited_count += 1,
                _ => continue,
            }
            if heroes.len() < 5 {
                heroes.push(user);
            }
        }
        Ok(Some(JoinedSync {
            timeline,
            limited,
            state,
            joined_count,
            invited_count,
            heroes,
        }))
    }

    /// The stripped state an invited user sees, with their own invite event: for a room
    /// on another server, the state its invite came with.
    pub fn invite_state(&self, room_id: &str, membership: &Membership) -> Result<Vec<Value>> {
        let invite = self.stored_pdu(membership.event_id.as_str())?;
        let mut stripped = match membership.invite_state.is_empty() {
            true => {
                let inviter = invite.as_ref().and_then(|i| match i.json.get("sender") {
                    Some(CanonicalJsonValue::String(sender)) => Some(sender.as_str()),
                    _ => None,
                });
                let events = self.invite_state_events(room_id, inviter.unwrap_or_default())?;
                events.iter().map(strip).collect()
            }
            false => membership.invite_state.clone(),
        };
        stripped.extend(invite.as_ref().map(strip));
        Ok(stripped)
    }

    /// The state someone knocking sees (`knock_room_state`): as an invitee would, stripped.
    pub fn knock_state(&self, room_id: &str) -> Result<Vec<Value>> {
        Ok(self
            .invite_state_events(room_id, "")?
            .iter()
            .map(strip)
            .collect())
    }

    /// The same state as whole signed PDUs, as invites over federation carry it (v1.18).
    pub fn invite_state_pdus(&self, room_id: &str, inviter: &str) -> Result<Vec<Value>> {
        Ok(self
            .invite_state_events(room_id, inviter)?
            .iter()
            .filter_map(|s| serde_json::to_value(&s.json).ok())
            .collect())
    }

    /// The room's state events shown before joining: those of the types above and the
    /// inviter's member event.
    fn invite_state_events(&self, room_id: &str, inviter: &str) -> Result<Vec<StoredPdu>> {
        let room_id =
            ruma::RoomId::parse(room_id).map_err(crate::services::error::Error::internal)?;
        let mut events = Vec::new();
        for ((kind, key), event_id) in self.state_ids(&room_id)? {
            let shown = INVITE_STATE.contains(&kind.as_str())
                || (kind == "m.room.member" && key == inviter);
            if shown {
                events.extend(self.stored_pdu(event_id.as_str())?);
            }
        }
        Ok(events)
    }
}

/// An event as invite state shows it: type, state key, content and sender only.
fn strip(event: &StoredPdu) -> Value {
    let event = event.client_event();
    json!({
        "type": event["type"],
        "state_key": event["state_key"],
        "content": event["content"],
        "sender": event["sender"],
    })
}
