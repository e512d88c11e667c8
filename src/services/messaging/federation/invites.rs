//! Invites across servers: ours sent to the invitee's server to sign, theirs for our users
//! checked, signed and kept (held, under the friendship policy, until a request is
//! accepted).

use super::*;
use crate::services::account_data::ignores;
use crate::services::contacts::{MemberChange, RoomChanges};

impl Messaging {
    /// Sends a drafted invite of a user on another server to that server, which checks
    /// it (its friendship policy too) and signs it; the draft keeps its signatures.
    pub async fn invite_remote(&self, draft: &mut Draft<'_>, invite: &Pdu) -> Result<()> {
        let client = self.federation()?;
        let Some(room_id) = draft.room_id().map(ToOwned::to_owned) else {
            return Err(Error::internal("invite without a room"));
        };
        let Some(invitee) = invite
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
        else {
            return Err(Error::internal("invite without an invitee"));
        };
        // Whole PDUs, the create event among them, as v1.18 (MSC4311) asks; servers
        // accept them in every room version.
        let inviter = invite.sender.as_str();
        let invite_state = self.invite_state_pdus(room_id.as_str(), inviter)?;
        let body = json!({
            "event": invite.json,
            "room_version": draft.version().as_str(),
            "invite_room_state": invite_state,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            urlencode(room_id.as_str()),
            urlencode(invite.event_id.as_str())
        );
        let answer = client
            .send_json(invitee.server_name(), http::Method::PUT, &path, Some(&body))
            .await
            .map_err(remote_error)?;
        let signed = answer
            .get("event")
            .ok_or_else(|| Error::bad_gateway("The invitee's server sent no event"))?;
        // Only their signature is taken, and only if it holds over our event.
        let server = invitee.server_name().as_str();
        let bad = |m: &str| Error::bad_gateway(m);
        let theirs = signed
            .get("signatures")
            .and_then(|s| s.get(server))
            .cloned()
            .ok_or_else(|| bad("The invitee's server did not sign the invite"))?;
        let theirs: CanonicalJsonValue = serde_json::from_value(theirs)
            .map_err(|_| bad("The invitee's server sent a malformed signature"))?;
        let key_ids: Vec<String> = match &theirs {
            CanonicalJsonValue::Object(keys) => keys.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let keys = client
            .remote_keys
            .key_map(client, server, &key_ids, None)
            .await
            .map_err(|_| bad("Cannot get the invitee's server's key"))?;
        // Checked alone (ruma wants keys for every signature it is shown), over the
        // redacted event, as event signatures are made.
        let rules = pdu::rules(draft.version()).map_err(Error::internal)?;
        let mut alone = invite.json.clone();
        let only_theirs = CanonicalJsonObject::from([(server.to_owned(), theirs.clone())]);
        alone.insert("signatures".into(), CanonicalJsonValue::Object(only_theirs));
        let redacted =
            ruma::canonical_json::redact(alone, &rules.redaction, None).map_err(Error::internal)?;
        ruma::signatures::verify_json(&keys, &redacted)
            .map_err(|_| bad("The invitee's server did not sign the invite"))?;
        let mut ours = invite.json.clone();
        if let Some(CanonicalJsonValue::Object(signatures)) = ours.get_mut("signatures") {
            signatures.insert(server.to_owned(), theirs);
        }
        draft.set_signatures(&invite.event_id, &ours);
        Ok(())
    }

    /// `PUT /v2/invite`, as the invitee's server. The friendship policy decides first: a
    /// kith server's user could have asked to be friends, so theirs is refused (403
    /// `M_INVITE_BLOCKED`); anyone else's is held as a friend request instead, shown once
    /// it is accepted. Then the invite is checked and signed — before it may count against
    /// a rate limit or be held, so only a real invite from `origin` can — and kept (with
    /// the room state it came with, stripped for our clients) for the user to see in
    /// `/sync`.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        invite: InviteIn<'_>,
    ) -> Result<CanonicalJsonObject> {
        let text = |key: &str| invite.event.get(key).and_then(Value::as_str);
        let (inviter, invitee) = (text("sender").unwrap_or_default(), text("state_key"));
        let invitee = invitee.unwrap_or_default();
        if let Ok(room_id) = ruma::RoomId::parse(text("room_id").unwrap_or_default()) {
            self.refuse_blocked(&room_id)?;
        }
        let direct = invite.event["content"]["is_direct"].as_bool() == Some(true);
        let mut held = false;
        if let Err(blocked) = self.contacts.check_invite(inviter, invitee, direct) {
            if self.contacts.speaks_contacts(origin).await {
                return Err(blocked);
            }
            held = true;
        }
        let checked = self.check_invite(origin, invite).await?;
        let mut batch = self.storage.batch();
        // Holds the two users' contact locks until the invite is kept with the request.
        let mut _pair = Vec::new();
        if held {
            let (inviter, invitee) = (checked.pdu.sender.as_str(), checked.invitee.as_str());
            let ignored = ignores(&self.storage, invitee, inviter)?;
            let (pair, room) = ((inviter, invitee), checked.room_id.as_str());
            _pair = self
                .contacts
                .hold_invite_into(&mut batch, origin, pair, room, ignored)
                .await?;
        }
        self.keep_invite(checked, held, batch).await
    }

    /// Checks that a received invite is one `origin` made and signed, of one of our users
    /// into `room_id`, and countersigns it.
    async fn check_invite(
        &self,
        origin: &ServerName,
        invite: InviteIn<'_>,
    ) -> Result<CheckedInvite> {
        let InviteIn {
            room_id,
            event_id,
            version,
            event: json,
            invite_room_state,
        } = invite;
        if pdu::rules(version).is_err() {
            return Err(incompatible(version));
        }
        // A room this server is in may have shut the inviting server out.
        if self.room(room_id)?.is_some() {
            self.require_acl_allows(room_id, origin)?;
        }
        // Nothing is kept for made-up users, so invites cannot fill the database; asked of
        // the unverified event first, as it is cheap (the verified one must say the same).
        let named = json.get("state_key").and_then(Value::as_str);
        let exists = |user: &UserId| self.auth.is_active(user);
        if let Some(user) = named.and_then(|u| UserId::parse(u).ok())
            && user.server_name().as_str() == self.server_name()
            && !exists(&user)?
        {
            return Err(Error::not_found("The invitee has no account here"));
        }
        let mut signed = object_of(json)?;
        let pdu = self.verify_received(version, signed.clone()).await?;
        let invitee = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        let membership = pdu.content_as::<Value>().ok().and_then(|c| {
            c.get("membership")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
        let Some(invitee) = invitee.filter(|u| u.server_name().as_str() == self.server_name())
        else {
            return Err(Error::bad_json("The invitee is not a user of this server"));
        };
        if !self.auth.is_active(&invitee)? {
            return Err(Error::not_found("The invitee has no account here"));
        }
        if pdu.event_id != event_id
            || pdu.kind != TimelineEventType::RoomMember
            || membership.as_deref() != Some("invite")
            || pdu.origin() != origin
            || pdu.room_id.as_deref() != Some(room_id)
        {
            return Err(Error::bad_json(
                "Not an invite from the requesting server for this room",
            ));
        }
        self.keys
            .countersign(version, &mut signed)
            .map_err(Error::internal)?;
        Ok(CheckedInvite {
            room_id: room_id.to_owned(),
            invitee,
            pdu,
            signed,
            invite_state: stripped(invite_room_state),
        })
    }

    /// Keeps a checked invite, committing it with whatever `batch` holds (the friend
    /// request a held invite comes as).
    async fn keep_invite(
        &self,
        invite: CheckedInvite,
        held: bool,
        batch: kith_storage::Batch,
    ) -> Result<CanonicalJsonObject> {
        let CheckedInvite {
            room_id,
            invitee,
            pdu,
            signed,
            invite_state,
        } = invite;
        // A room one of our users is in hears of the invite in a transaction as well (a
        // held one is kept here first, so it stays held when it comes).
        let local = |user: &ruma::OwnedUserId| user.server_name() == self.server_name();
        if !held
            && self.room(&room_id)?.is_some()
            && self.joined_members(&room_id)?.iter().any(local)
        {
            self.storage.commit(batch).await?;
            return Ok(signed);
        }
        let content = pdu.content_as::<Value>().unwrap_or_default();
        let membership = Outside {
            membership: "invite",
            invite_state,
            held,
            sender: pdu.sender.clone(),
            inviter: pdu.sender.clone(),
            direct: content["is_direct"] == true,
            reason: content["reason"].as_str().map(str::to_owned),
            via: None,
        };
        self.store_outside_membership(
            batch,
            &room_id,
            &invitee,
            (&pdu.event_id, signed.clone()),
            membership,
        )
        .await?;
        Ok(signed)
    }

    /// Shows a held invite to its user (they accepted the friend request it came as), in
    /// `batch`.
    pub fn release_invite_into(
        &self,
        batch: &mut kith_storage::Batch,
        user_id: &str,
        room_id: &str,
    ) -> Result<()> {
        let Some(mut membership) = self.membership_row(user_id, room_id)? else {
            return Ok(());
        };
        if !membership.held {
            return Ok(());
        }
        membership.held = false;
        // Seen as new by the user's next sync.
        membership.changed_at = batch.new_position()?;
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(user_id, room_id),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room_id, user_id),
            &membership,
        )?;
        Ok(())
    }

    /// Keeps a member event of a room this server is not in (an invite, the leave that
    /// declined it, or another server's rescinding it) and the user's membership as it
    /// says, outside any timeline; contacts hears of the change in the same write (an
    /// invite is a friend request under policy `request`, and past its sender's allowance
    /// it is refused).
    pub(super) async fn store_outside_membership(
        &self,
        mut batch: kith_storage::Batch,
        room_id: &RoomId,
        user_id: &UserId,
        (event_id, json): (&EventId, CanonicalJsonObject),
        outside: Outside,
    ) -> Result<()> {
        let _guard = self.room_locks.lock(room_id.as_str()).await;
        let (user, room) = (user_id.as_str(), room_id.as_str());
        let before = self.membership_row(user, room)?.map(|m| m.membership);
        let invite = outside.membership == "invite";
        let mut members = vec![outside.inviter];
        if invite {
            members.push(user_id.to_owned());
        }
        let change = MemberChange {
            user: user_id.to_owned(),
            sender: outside.sender,
            before,
            after: outside.membership.to_owned(),
            event_id: event_id.to_owned(),
            reason: outside.reason,
        };
        let changes = RoomChanges {
            room_id,
            direct: outside.direct,
            members,
            changes: vec![change],
            refuse_over_limit: invite,
        };
        let settled = (self.contacts)
            .membership_changed_into(&mut batch, &changes, None)
            .await?;
        let position = batch.new_position()?;
        let record = StoredPdu {
            event_id: event_id.to_owned(),
            room_id: room_id.to_string(),
            position,
            json,
            transaction: None,
            redacted_because: None,
            outlier: true,
            replaced: None,
        };
        batch.put(&catalog::EVENTID_PDU, &event_id.as_str(), &record)?;
        let membership = crate::services::messaging::Membership {
            membership: outside.membership.into(),
            event_id: event_id.to_owned(),
            position,
            changed_at: position,
            forgotten: false,
            invite_state: outside.invite_state,
            held: outside.held,
            via: outside.via,
        };
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(user, room),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room, user),
            &membership,
        )?;
        self.storage.commit(batch).await?;
        self.contacts.wake_settled(settled);
        Ok(())
    }

    /// A member event for one of our users in a room this server is not in, from another
    /// server's transaction: only an invite's end (a leave or ban, the inviter's server
    /// rescinding it) is taken, checked against the invite held here, as Synapse does;
    /// anything else is for a room we are not in.
    pub(super) async fn receive_outside_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        json: &Value,
    ) -> Result<OwnedEventId> {
        let not_here = || Error::not_found("This server is not in that room");
        let target = json.get("state_key").and_then(Value::as_str);
        let target = target
            .and_then(|t| UserId::parse(t).ok())
            .ok_or_else(not_here)?;
        let invite = self.membership(&target, room_id)?;
        let invite = invite.filter(|m| {
            matches!(m.membership.as_str(), "invite" | "knock")
                && target.server_name() == self.server_name()
        });
        let invite = invite.ok_or_else(not_here)?;
        let held = self.stored_pdu(invite.event_id.as_str())?;
        let inviter = held.and_then(|e| e.pdu().ok()).ok_or_else(not_here)?.sender;
        // Who may end it: the inviting server, or for a knock the server that took it.
        let ender = match invite.membership.as_str() {
            "knock" => invite.via.clone().unwrap_or_default(),
            _ => inviter.server_name().to_string(),
        };
        let version = invite
            .invite_state
            .iter()
            .find(|e| e["type"] == "m.room.create")
            .and_then(|e| e["content"]["room_version"].as_str())
            .and_then(|v| RoomVersionId::try_from(v).ok())
            .unwrap_or(RoomVersionId::V11);
        let pdu = self.verify_received(&version, object_of(json)?).await?;
        let membership = pdu.content_as::<Value>().unwrap_or_default()["membership"].clone();
        let membership = match membership.as_str() {
            Some("leave") => "leave",
            Some("ban") => "ban",
            _ => return Err(not_here()),
        };
        if pdu.kind != TimelineEventType::RoomMember
            || pdu.state_key.as_deref() != Some(target.as_str())
            || pdu.room_id.as_deref() != Some(room_id)
            || pdu.origin() != origin
            || ender != origin.as_str()
        {
            return Err(Error::forbidden(
                "Only the inviting server may end an invite (or the server that took a knock) \
                 into a room this server is not in",
            ));
        }
        let outside = Outside {
            membership,
            invite_state: Vec::new(),
            held: false,
            sender: pdu.sender.clone(),
            inviter,
            direct: false,
            reason: None,
            via: None,
        };
        let batch = self.storage.batch();
        let event = (pdu.event_id.as_ref(), pdu.json.clone());
        self.store_outside_membership(batch, room_id, &target, event, outside)
            .await?;
        Ok(pdu.event_id)
    }
}

/// A received invite, checked: `origin` made it, for one of our users.
struct CheckedInvite {
    room_id: ruma::OwnedRoomId,
    invitee: ruma::OwnedUserId,
    pdu: Pdu,
    signed: CanonicalJsonObject,
    invite_state: Vec<Value>,
}

/// An invite another server sends for one of our users (`PUT /v2/invite`).
pub struct InviteIn<'a> {
    pub room_id: &'a RoomId,
    pub event_id: &'a EventId,
    pub version: &'a RoomVersionId,
    pub event: &'a Value,
    /// The room state it came with (`invite_room_state`: stripped events or whole PDUs).
    pub invite_room_state: Option<&'a Value>,
}

/// Room state as our clients see it in an invite, whichever form it came in.
pub(super) fn stripped(invite_room_state: Option<&Value>) -> Vec<Value> {
    let Some(events) = invite_room_state.and_then(Value::as_array) else {
        return Vec::new();
    };
    events
        .iter()
        .filter(|e| e["type"].is_string() && e["state_key"].is_string())
        .map(|e| {
            json!({
                "type": e["type"], "state_key": e["state_key"],
                "content": e["content"], "sender": e["sender"],
            })
        })
        .collect()
}

/// A membership in a room this server is not in.
pub(super) struct Outside {
    pub(super) membership: &'static str,
    pub(super) invite_state: Vec<Value>,
    pub(super) held: bool,
    /// Who changed it, and who invited the user (the other party of a friend request).
    pub(super) sender: ruma::OwnedUserId,
    pub(super) inviter: ruma::OwnedUserId,
    /// An invite marked `is_direct`: all this server can know of the room's size.
    pub(super) direct: bool,
    pub(super) reason: Option<String>,
    /// For a knock: the server that took it.
    pub(super) via: Option<String>,
}
