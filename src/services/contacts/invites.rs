//! Policy `request`: a friend request is a direct-chat invite. An invite into a room that
//! then has two members (the inviter and the invitee), to someone who is not a friend, is
//! a friend request from the inviter, with the room as its `dm_room_id` and the invite's
//! reason as its message; the invitee joining accepts it, and either of them leaving
//! (rejecting, rescinding, leaving the room) ends it. Messaging tells contacts of every
//! membership change it commits, in the same batch, under the room's lock; contacts takes
//! the pairs' locks after it (never the other way round).
//!
//! The membership events are the answer across servers too, whatever the other server
//! runs: each server holding the request sees the join, the rejection or the rescinding
//! in its room (or, out of the room, its own user's), so no answer travels over the
//! contacts endpoints. Both kith servers keep the request under one ID, the invite's
//! event ID without its sigil.

use kith_storage::Batch;
use ruma::{OwnedEventId, OwnedUserId, RoomId, UserId};
use tokio::sync::MutexGuard;

use super::requests::MAX_MESSAGE_BYTES;
use super::view::Change;
use super::{Contacts, Direction, FriendRequest};
use crate::config::DmPolicy;
use crate::services::account_data::ignores;
use crate::services::error::Result;
use crate::util::now_ms;

/// One member event's change of a user's membership.
#[derive(Debug, Clone)]
pub struct MemberChange {
    /// Whose membership (the state key).
    pub user: OwnedUserId,
    pub sender: OwnedUserId,
    pub before: Option<String>,
    pub after: String,
    pub event_id: OwnedEventId,
    pub reason: Option<String>,
}

/// The membership changes of one write into a room.
pub struct RoomChanges<'a> {
    pub room_id: &'a RoomId,
    /// Whether an invite among the changes is into a direct chat: the room then has just
    /// the inviter and the invitee (for a room this server is not in, the invite says
    /// `is_direct`).
    pub direct: bool,
    /// The members (joined or invited) once the changes are made; for a room this server
    /// is not in, the other party it knows (the inviter).
    pub members: Vec<OwnedUserId>,
    pub changes: Vec<MemberChange>,
    /// An invite another server asks us to take: refused (429) past its sender's allowance
    /// of requests, rather than delivered as a plain invite.
    pub refuse_over_limit: bool,
}

/// What the caller holds until the batch the changes went into is committed (the pairs'
/// locks), and the servers to wake after (answers queued for them).
#[derive(Default)]
pub struct Settled<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
    pub wake: Vec<String>,
}

impl Contacts {
    /// Whether membership changes mean anything to friend requests.
    pub fn requests_are_invites(&self) -> bool {
        self.dm_policy == DmPolicy::Request
    }

    /// Counts an invite by a local user against their allowance of friend requests, if
    /// it will be one (not friends, not already asked): before the invite goes anywhere,
    /// so past the allowance no invite is sent (429).
    pub fn charge_invite(&self, inviter: &str, invitee: &str) -> Result<()> {
        if !self.requests_are_invites() || self.are_friends(inviter, invitee)? {
            return Ok(());
        }
        if self.request_ref(inviter, invitee)?.is_some() {
            return Ok(());
        }
        (self.request_limiter)
            .take(inviter)
            .map_err(crate::services::error::Error::limit_exceeded)
    }

    /// The locks of these users, for a caller to take before its batch takes stream
    /// positions (a batch holding positions while it waits would hold back every later
    /// write's visibility); see [`Contacts::membership_changed_into`].
    pub async fn lock_users(&self, users: &[&str]) -> Vec<MutexGuard<'_, ()>> {
        self.user_locks.lock_all(users).await
    }

    /// What `room`'s membership changes do to friend requests, written into `batch`
    /// (see the module's comment). `locked`: the users' locks, if the caller took them
    /// already ([`Contacts::lock_users`], for every user the changes concern).
    pub async fn membership_changed_into<'a>(
        &'a self,
        batch: &mut Batch,
        room: &RoomChanges<'_>,
        locked: Option<Vec<MutexGuard<'a, ()>>>,
    ) -> Result<Settled<'a>> {
        let pairs = match self.requests_are_invites() {
            true => self.pairs(room),
            false => Vec::new(),
        };
        if pairs.is_empty() {
            return Ok(Settled::default());
        }
        let guards = match locked {
            Some(guards) => guards,
            None => {
                let users: Vec<&str> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
                self.user_locks.lock_all(&users).await
            }
        };
        let mut change = Change::default();
        for member in &room.changes {
            match member.after.as_str() {
                "invite" if room.direct && member.before.as_deref() != Some("join") => {
                    self.invited(batch, &mut change, room, member)?
                }
                "join" => self.joined(batch, &mut change, room, member)?,
                "leave" | "ban" => self.left(batch, &mut change, room, member)?,
                _ => {}
            }
        }
        self.write_change(batch, &change)?;
        Ok(Settled {
            _guards: guards,
            wake: change.wake,
        })
    }

    /// The pairs of users a change may concern: its user and each other member (or its
    /// sender), where one of the two is ours.
    fn pairs<'a>(&self, room: &'a RoomChanges<'_>) -> Vec<(&'a str, &'a str)> {
        let mut pairs = Vec::new();
        for member in &room.changes {
            let user = member.user.as_str();
            let others = room.members.iter().chain([&member.sender]);
            for other in others.map(|o| o.as_str()).filter(|o| *o != user) {
                if (self.is_local(user) || self.is_local(other)) && !pairs.contains(&(user, other))
                {
                    pairs.push((user, other));
                }
            }
        }
        pairs
    }

    /// An invite into a direct chat: a new request, or the pair's request (from either
    /// side) now about this room.
    fn invited(
        &self,
        batch: &mut Batch,
        change: &mut Change,
        room: &RoomChanges<'_>,
        member: &MemberChange,
    ) -> Result<()> {
        let (inviter, invitee) = (member.sender.as_str(), member.user.as_str());
        let room_id = room.room_id.as_str();
        let two = room.members.len() == 2
            && room.members.iter().any(|m| m == &member.sender)
            && room.members.iter().any(|m| m == &member.user);
        if inviter == invitee || !two || self.are_friends(inviter, invitee)? {
            return Ok(());
        }
        match self.request_ref(inviter, invitee)? {
            // The invitee had asked: inviting them is the answer.
            Some(theirs) if theirs.dir == Direction::Incoming => {
                if let Some(request) = self.request(&theirs.request_id)? {
                    self.befriend_into(batch, change, &request, Some(room_id))?;
                    // Their server hears it unless their request was an invite itself.
                    if let Some(server) = self.answer_into(batch, &request, inviter, "accept")? {
                        change.wake.push(server);
                    }
                }
            }
            // Asked again: the request is about this room now.
            Some(ours) => {
                if let Some(mut request) = self.request(&ours.request_id)? {
                    change.requests_removed.push(request.request_id.clone());
                    request.dm_room_id = Some(room_id.to_owned());
                    request.invite = true;
                    batch.put(
                        &kith_storage::catalog::REQUESTID_REQUEST,
                        &request.request_id.as_str(),
                        &request,
                    )?;
                    self.remember_dm_room(batch, inviter, invitee, room_id)?;
                    change
                        .views
                        .extend([inviter.to_owned(), invitee.to_owned()]);
                    change.requests_added.push(request);
                }
            }
            None => {
                // Another server's user has its allowance here as an API request has.
                if !self.is_local(inviter) {
                    let taken = self.take_request(member.sender.server_name(), inviter);
                    if let Err(e) = taken {
                        if room.refuse_over_limit {
                            return Err(e);
                        }
                        tracing::info!(%inviter, "invite past its sender's allowance is no request");
                        return Ok(());
                    }
                }
                let message = member
                    .reason
                    .as_deref()
                    .filter(|r| r.len() <= MAX_MESSAGE_BYTES)
                    .map(str::to_owned);
                let hidden = self.is_local(invitee) && ignores(&self.storage, invitee, inviter)?;
                let request = FriendRequest {
                    request_id: invite_request_id(&member.event_id),
                    from: inviter.to_owned(),
                    to: invitee.to_owned(),
                    message,
                    created_ts: now_ms(),
                    hidden,
                    dm_room_id: Some(room_id.to_owned()),
                    invite: true,
                };
                self.store_request_into(batch, change, &request)?;
            }
        }
        Ok(())
    }

    /// A join: the joining user accepts a request to them about this room.
    fn joined(
        &self,
        batch: &mut Batch,
        change: &mut Change,
        room: &RoomChanges<'_>,
        member: &MemberChange,
    ) -> Result<()> {
        for request in self.room_requests(room, &member.user)? {
            if request.to == member.user.as_str() {
                self.befriend_into(batch, change, &request, None)?;
            }
        }
        Ok(())
    }

    /// A leave or ban: the request between its user and the other ends (declined by the
    /// invitee, or cancelled by the inviter or whoever rescinded the invite).
    fn left(
        &self,
        batch: &mut Batch,
        change: &mut Change,
        room: &RoomChanges<'_>,
        member: &MemberChange,
    ) -> Result<()> {
        for request in self.room_requests(room, &member.user)? {
            self.drop_request(batch, &request)?;
            change.requests_removed.push(request.request_id.clone());
            change
                .views
                .extend([request.from.clone(), request.to.clone()]);
        }
        Ok(())
    }

    /// The requests between `user` and the room's other members that are invites into
    /// this room.
    fn room_requests(&self, room: &RoomChanges<'_>, user: &UserId) -> Result<Vec<FriendRequest>> {
        let mut found = Vec::new();
        for other in room.members.iter().filter(|o| *o != user) {
            // Either side's ref: a request hidden from an invitee who ignores the inviter
            // has only the inviter's.
            let refs = [
                self.request_ref(user.as_str(), other.as_str())?,
                self.request_ref(other.as_str(), user.as_str())?,
            ];
            let Some(reference) = refs.into_iter().flatten().next() else {
                continue;
            };
            if let Some(request) = self.request(&reference.request_id)?
                && request.invite
                && request.dm_room_id.as_deref() == Some(room.room_id.as_str())
            {
                found.push(request);
            }
        }
        Ok(found)
    }
}

/// The ID of the request an invite is: the invite's event ID without its sigil, the same
/// on every server that sees the invite.
fn invite_request_id(event_id: &ruma::EventId) -> String {
    event_id.as_str().trim_start_matches('$').to_owned()
}
