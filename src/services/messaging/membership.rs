//! A local user's membership changes: joining, inviting, leaving, and moderating others
//! (kick, ban, unban). Each is an `m.room.member` event the room's auth rules decide on;
//! the friendship policy is asked before an invite, and any request to another server
//! (asking whether it speaks friend requests) is made before the room's lock is taken.

use ruma::events::TimelineEventType;
use ruma::{OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use super::draft::{Draft, EventSpec};
use super::{Messaging, StoredPdu};
use crate::services::contacts::DIRECT_MAX_MEMBERS;
use crate::services::error::{Error, Result};
use crate::services::profile::{self, Profile};

/// A membership change one member makes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// Out of the room (joined, invited or knocking), free to come back.
    Kick,
    /// Out of the room for good, from any membership.
    Ban,
    /// A banned user back to `leave`.
    Unban,
}

impl Moderation {
    /// The membership it sets, and the ones it may change (any, if empty).
    fn change(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Moderation::Kick => ("leave", &["join", "invite", "knock"]),
            Moderation::Ban => ("ban", &[]),
            Moderation::Unban => ("leave", &["ban"]),
        }
    }
}

/// Whether a room ID has one of the forms servers make: `!opaque:server` with a server
/// one could reach (room versions up to 11) or `!` and the create event's 43-character
/// URL-safe hash (version 12). Only such an ID is asked of other servers.
fn well_formed_room_id(room_id: &RoomId) -> bool {
    let id = room_id.as_str();
    match room_id.server_name() {
        Some(server) => {
            id.split_once(':').is_some_and(|(local, _)| local.len() > 1)
                && kith_federation::reachable_name(server.as_str())
        }
        None => {
            let hash = &id[1..];
            hash.len() == 43
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
    }
}

pub(crate) fn not_in_room() -> Error {
    Error::forbidden("You are not in this room")
}

/// An `m.room.member` event `sender` sends about `target`, with `extra` content.
pub(crate) fn member_spec(
    sender: &UserId,
    target: &str,
    membership: &str,
    extra: Value,
) -> EventSpec {
    let mut content = json!({ "membership": membership });
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    EventSpec {
        sender: sender.to_owned(),
        kind: TimelineEventType::RoomMember,
        state_key: Some(target.to_owned()),
        content,
    }
}

fn reason_only(reason: Option<&str>) -> Value {
    reason.map_or_else(|| json!({}), |r| json!({ "reason": r }))
}

impl Messaging {
    /// Readers of a room must be joined to it.
    pub fn require_joined(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        match self.membership(user, room_id)? {
            Some(m) if m.membership == "join" => Ok(()),
            _ => Err(not_in_room()),
        }
    }

    /// Who may read a room: a member, and a former member (who left or was banned) as of
    /// their leaving — `Some(that event)`; history visibility then shows them only what they
    /// were there for. Anyone else: 403.
    pub fn require_reader(&self, user: &UserId, room_id: &RoomId) -> Result<Option<StoredPdu>> {
        let Some(membership) = self.membership(user, room_id)? else {
            return Err(not_in_room());
        };
        match membership.membership.as_str() {
            "join" => Ok(None),
            "leave" | "ban" => {
                // An outlier: a leave that declined an invite, from outside the room.
                let left = self.stored_pdu(membership.event_id.as_str())?;
                left.filter(|e| !e.outlier)
                    .map(Some)
                    .ok_or_else(not_in_room)
            }
            _ => Err(not_in_room()),
        }
    }

    /// The room's member events as `reader` may read them: as of `at` (a stream position),
    /// and for a former member no later than their leave (as Synapse lets them).
    pub fn member_events_for(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        at: Option<u64>,
    ) -> Result<Vec<StoredPdu>> {
        let left = self.require_reader(reader, room_id)?;
        let at = match left {
            Some(left) => Some(at.map_or(left.position, |at| at.min(left.position))),
            None => at,
        };
        let mut events = Vec::new();
        for (user, current) in self.members(room_id)? {
            let event = match at {
                Some(at) => self.member_event_at(user.as_str(), &current, at)?,
                None => self.stored_pdu(current.event_id.as_str())?,
            };
            events.extend(event);
        }
        Ok(events)
    }

    /// The room's state as `reader` may read it: now for a member, as of their leaving for
    /// a former one (`left`, from [`Messaging::require_reader`]).
    pub fn readable_state(
        &self,
        room_id: &RoomId,
        left: Option<&StoredPdu>,
    ) -> Result<Vec<StoredPdu>> {
        let ids: Vec<_> = match left {
            None => self
                .state_ids(room_id)?
                .into_iter()
                .map(|(_, id)| id)
                .collect(),
            Some(left) => self.state_when_left(left)?.into_values().collect(),
        };
        let mut events = Vec::new();
        for id in ids {
            events.extend(self.stored_pdu(id.as_str())?);
        }
        Ok(events)
    }

    /// One state event (`kind`, `key`) as `reader` may read it (see
    /// [`Messaging::readable_state`]).
    pub fn state_event_for(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        (kind, key): (&str, &str),
    ) -> Result<Option<StoredPdu>> {
        let id = match self.require_reader(reader, room_id)? {
            None => self.state_event_id(room_id, kind, key)?,
            Some(left) => self
                .state_when_left(&left)?
                .remove(&(kind.to_owned(), key.to_owned())),
        };
        match id {
            Some(id) => self.stored_pdu(id.as_str()),
            None => Ok(None),
        }
    }

    /// The state after a former member's leaving.
    fn state_when_left(&self, left: &StoredPdu) -> Result<super::state::StateIds> {
        self.state_after(&left.event_id, &std::collections::HashMap::new())?
            .ok_or_else(|| Error::not_found("The room's state when you left is not known"))
    }

    /// A member event's extra content: the user's profile (as Synapse adds it) and a reason.
    pub(crate) fn member_content(&self, user: &str, reason: Option<&str>) -> Result<Value> {
        let mut content = json!({});
        // A local user whose profile the event log has not made yet has the one it will make.
        let local = server_is(user, self.server_name());
        let found = profile::profile(&self.storage, user)?;
        let found = found.or_else(|| local.then(|| profile::new_profile(user)));
        if let Some(profile) = found {
            if let Some(name) = profile.displayname {
                content["displayname"] = name.into();
            }
            if let Some(avatar) = profile.avatar_url {
                content["avatar_url"] = avatar.into();
            }
        }
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        Ok(content)
    }

    /// Adds one event to a room the sender is in and commits it; returns the stored event.
    pub(crate) async fn append(&self, room_id: &RoomId, spec: EventSpec) -> Result<StoredPdu> {
        let mut draft = self.draft(room_id).await.map_err(|_| not_in_room())?;
        draft.add(spec)?;
        let mut stored = draft.commit(self.storage.batch()).await?;
        stored
            .pop()
            .ok_or_else(|| Error::internal("nothing committed"))
    }

    /// Joins `user` to a room: here if this server is in it (the auth rules decide: invite,
    /// public), else through the server that invited them, the one the room ID names
    /// (before v12), or those in `via`.
    pub async fn join(
        &self,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
        via: &[OwnedServerName],
    ) -> Result<()> {
        self.refuse_blocked(room_id)?;
        let mut content = self.member_content(user.as_str(), reason)?;
        if self.room(room_id)?.is_some() {
            // A restricted room lets in members of the rooms it allows, vouched for by one
            // of our members who may invite (the auth rules check both).
            if let Some(authoriser) = self.join_authoriser(user, room_id)? {
                content["join_authorised_via_users_server"] = authoriser.into();
            }
            let spec = member_spec(user, user.as_str(), "join", content);
            self.append(room_id, spec).await?;
            return Ok(());
        }
        if !well_formed_room_id(room_id) {
            return Err(Error::invalid_param("Not a room ID any server makes"));
        }
        // As Synapse: a server to join through that no one could be is a bad request.
        if let Some(bad) = via
            .iter()
            .find(|s| !kith_federation::reachable_name(s.as_str()))
        {
            return Err(Error::invalid_param(format!(
                "{bad} is not a server name one can reach"
            )));
        }
        let mut servers: Vec<OwnedServerName> = Vec::new();
        if let Some(invite) = self.membership(user, room_id)? {
            let inviter = self.stored_pdu(invite.event_id.as_str())?;
            let sender = inviter.and_then(|e| e.pdu().ok()).map(|p| p.sender);
            servers.extend(sender.map(|s| s.server_name().to_owned()));
        }
        servers.extend(room_id.server_name().map(ToOwned::to_owned));
        servers.extend(via.iter().cloned());
        self.join_remote(user, room_id, &servers, content).await
    }

    /// For a join into a restricted room by someone not invited who is in a room it allows:
    /// one of this server's joined members with the power to invite, who vouches for it.
    pub(super) fn join_authoriser(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<String>> {
        let invited = self
            .membership(user, room_id)?
            .is_some_and(|m| matches!(m.membership.as_str(), "invite" | "join"));
        if invited || !self.restricted_allows(user, room_id)? {
            return Ok(None);
        }
        let needed = self
            .state_content(room_id, "m.room.power_levels")?
            .and_then(|l| l["invite"].as_i64())
            .unwrap_or(0);
        for member in self.joined_members(room_id)? {
            if member.server_name().as_str() == self.server_name()
                && self.power_level(room_id, member.as_str())? >= needed
            {
                return Ok(Some(member.to_string()));
            }
        }
        Ok(None)
    }

    /// Knocks on a room (its join rules must allow knocking): here if this server is in it,
    /// else through the room ID's server (before v12) or those in `via`.
    pub async fn knock(
        &self,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
        via: &[OwnedServerName],
    ) -> Result<()> {
        self.refuse_blocked(room_id)?;
        let content = self.member_content(user.as_str(), reason)?;
        if self.room(room_id)?.is_some() {
            let spec = member_spec(user, user.as_str(), "knock", content);
            self.append(room_id, spec).await?;
            return Ok(());
        }
        if !well_formed_room_id(room_id) {
            return Err(Error::invalid_param("Not a room ID any server makes"));
        }
        let mut servers: Vec<OwnedServerName> = room_id
            .server_name()
            .map(ToOwned::to_owned)
            .into_iter()
            .collect();
        servers.extend(via.iter().cloned());
        self.knock_remote(user, room_id, &servers, content).await
    }

    /// Leaves a room (or declines an invite); an invite into a room on another server is
    /// declined through that server.
    pub async fn leave(&self, user: &UserId, room_id: &RoomId, reason: Option<&str>) -> Result<()> {
        if self.room(room_id)?.is_none() {
            return self.leave_remote(user, room_id).await;
        }
        let spec = member_spec(user, user.as_str(), "leave", reason_only(reason));
        self.append(room_id, spec).await?;
        Ok(())
    }

    /// `by` kicks, bans or unbans `target`. The caller's own membership is checked first, so
    /// strangers learn nothing of who is in the room; the target's under the room's lock,
    /// so it cannot change between the check and the event.
    pub async fn moderate(
        &self,
        by: &UserId,
        room_id: &RoomId,
        target: &UserId,
        moderation: Moderation,
        reason: Option<&str>,
    ) -> Result<()> {
        self.require_joined(by, room_id)?;
        let mut draft = self.draft(room_id).await.map_err(|_| not_in_room())?;
        let (membership, from) = moderation.change();
        let current = self.membership(target, room_id)?;
        let current = current.as_ref().map_or("leave", |m| m.membership.as_str());
        if !from.is_empty() && !from.contains(&current) {
            return Err(Error::forbidden(format!(
                "Cannot change membership {current} to {membership}"
            )));
        }
        let spec = member_spec(by, target.as_str(), membership, reason_only(reason));
        draft.add(spec)?;
        draft.commit(self.storage.batch()).await?;
        Ok(())
    }

    /// `inviter` invites `invitee`: the friendship policy first (the inviter's membership
    /// before it, so strangers learn nothing), then the auth rules. A room that would have
    /// at most two members with the invitee is a direct chat, and stays one.
    pub async fn invite(
        &self,
        inviter: &UserId,
        room_id: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        self.require_joined(inviter, room_id)?;
        self.refuse_blocked(room_id)?;
        // Whether the invitee's server speaks friend requests, asked outside the lock.
        let policy_applies = self.contacts.policy_applies_to(invitee).await;
        let mut draft = self.draft(room_id).await.map_err(|_| not_in_room())?;
        let target = invitee.as_str();
        let others = self
            .members(room_id)?
            .into_iter()
            .filter(|(user, m)| {
                matches!(m.membership.as_str(), "join" | "invite") && user != target
            })
            .count();
        let direct = draft.is_direct() || others < DIRECT_MAX_MEMBERS;
        if policy_applies {
            self.contacts
                .check_invite(inviter.as_str(), target, direct)?;
        }
        // An invite into a room of two is a friend request under policy `request`: counted
        // before it goes anywhere.
        if others < DIRECT_MAX_MEMBERS {
            self.contacts.charge_invite(inviter.as_str(), target)?;
        }
        if direct {
            draft.mark_direct();
        }
        let content = self.member_content(target, reason)?;
        let spec = member_spec(inviter, target, "invite", content);
        self.send_invite(draft, spec).await
    }

    /// Adds an invite to the draft and commits it; an invitee on another server is asked
    /// first, and its server's refusal (a blocked invite, say) is the answer.
    pub(crate) async fn send_invite(&self, mut draft: Draft<'_>, spec: EventSpec) -> Result<()> {
        let invite = draft.add(spec)?;
        let remote = invite
            .state_key
            .as_deref()
            .is_some_and(|user| !server_is(user, self.server_name()));
        if remote {
            self.invite_remote(&mut draft, &invite).await?;
        }
        draft.commit(self.storage.batch()).await?;
        Ok(())
    }
}

impl Messaging {
    /// A new member event with the profile in every room the user has joined. A room that
    /// refuses (power levels forbid changing one's own member event, say) keeps the old
    /// name; the others still get the new one.
    pub async fn announce_profile(&self, user_id: &UserId, new: &Profile) {
        let rooms = match self.joined_rooms(user_id) {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(user = %user_id, error = ?e, "cannot list rooms for a profile change");
                return;
            }
        };
        for room in rooms {
            if let Err(e) = self.announce_in_room(user_id, new, &room).await {
                tracing::warn!(user = %user_id, %room, error = ?e, "profile not announced in room");
            }
        }
    }

    async fn announce_in_room(
        &self,
        user_id: &UserId,
        new: &Profile,
        room_id: &RoomId,
    ) -> Result<()> {
        let mut draft = self.draft(room_id).await?;
        // Still joined under the room's lock, and keeping whatever else the event said.
        let current = self.membership(user_id, room_id)?;
        let Some(current) = current.filter(|m| m.membership == "join") else {
            return Ok(());
        };
        let event = self.stored_pdu(current.event_id.as_str())?;
        let mut content = event
            .map(|e| e.client_event()["content"].take())
            .filter(Value::is_object)
            .unwrap_or_else(|| serde_json::json!({ "membership": "join" }));
        for (key, value) in [
            ("displayname", &new.displayname),
            ("avatar_url", &new.avatar_url),
        ] {
            match value {
                Some(value) => content[key] = value.clone().into(),
                None => {
                    content.as_object_mut().map(|c| c.remove(key));
                }
            }
        }
        draft.add(member_spec(user_id, user_id.as_str(), "join", content))?;
        draft.commit(self.storage.batch()).await?;
        Ok(())
    }
}

/// Whether `user` is a user ID of `server`.
fn server_is(user: &str, server: &str) -> bool {
    crate::util::server_of(user).is_some_and(|s| s.as_str() == server)
}
