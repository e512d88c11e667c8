//! Friend requests through the contacts API, where they meet rooms (contacts and
//! messaging). Under policy `request` a request is a direct-chat invite: sending one opens
//! (or re-invites into) the pair's direct chat, and the answers are what a Matrix client
//! would do with the invite — accepting joins the room, declining rejects the invite,
//! cancelling rescinds it; messaging then tells contacts, in the same write. Under
//! `dm_only`, a request may have come as a held invite from a server without friend
//! requests: accepting reveals it, declining declines it too.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use crate::services::Services;
use crate::services::account_data::ignores;
use crate::services::contacts::{Direction, FriendRequest, SendOutcome};
use crate::services::error::{Error, Result};
use crate::services::messaging::{Moderation, NewRoom, Preset};

/// `from` asks `to` (an active user here, or anyone elsewhere) to be friends.
pub async fn send(
    services: &Services,
    from: &UserId,
    to: &UserId,
    message: Option<String>,
) -> Result<SendOutcome> {
    let contacts = &services.contacts;
    let (me, them) = (from.as_str(), to.as_str());
    if !contacts.requests_are_invites() {
        if !services.is_ours(to.server_name()) {
            return contacts.send_remote_request(me, to, message, None).await;
        }
        let ignored = ignores(&services.storage, them, me)?;
        return contacts
            .send_request((me, them), message, ignored, None)
            .await;
    }
    if from == to {
        return Err(Error::invalid_param(
            "You cannot send yourself a friend request",
        ));
    }
    contacts.check_message(&message)?;
    contacts.check_new_request(me, them)?;
    // They asked first: this is the answer to their request.
    if let Some(theirs) = contacts.request_ref(me, them)? {
        accept(services, me, &theirs.request_id).await?;
        return Ok(SendOutcome::Accepted(theirs.request_id));
    }
    let messaging = &services.messaging;
    let room = usable_dm_room(services, from, to)?;
    match room {
        // Both still in their old direct chat: a request with a notice in it.
        Some((room, true)) => return ask_in_room(services, from, to, &room, message).await,
        Some((room, false)) => {
            messaging
                .invite(from, &room, to, message.as_deref())
                .await?
        }
        None => {
            open_direct_chat(services, from, to, message.as_deref()).await?;
        }
    }
    if let Some(ours) = contacts.request_ref(me, them)? {
        return Ok(SendOutcome::Pending(ours.request_id));
    }
    // The invite crossed theirs: friends already, by their request.
    let friendship = contacts.friendship(me, them)?;
    match friendship.and_then(|f| f.request_id) {
        Some(id) => Ok(SendOutcome::Accepted(id)),
        None => Err(Error::internal("the invite made no request")),
    }
}

/// The pair's direct chat, if `from` is still in it and no one else is (a room that grew is
/// no direct chat, and an invite into it no request); with whether `to` is in it too.
fn usable_dm_room(
    services: &Services,
    from: &UserId,
    to: &UserId,
) -> Result<Option<(OwnedRoomId, bool)>> {
    let Some(room) = services.contacts.dm_room(from.as_str(), to.as_str())? else {
        return Ok(None);
    };
    let Ok(room) = RoomId::parse(room) else {
        return Ok(None);
    };
    let joined = |user: &UserId| -> Result<bool> {
        let membership = services.messaging.membership(user, &room)?;
        Ok(membership.is_some_and(|m| m.membership == "join"))
    };
    if services.messaging.room(&room)?.is_none() || !joined(from)? {
        return Ok(None);
    }
    let others = services
        .messaging
        .members(&room)?
        .into_iter()
        .filter(|(user, m)| {
            matches!(m.membership.as_str(), "join" | "invite") && user != from && user != to
        });
    if others.count() > 0 {
        return Ok(None);
    }
    let both = joined(to)?;
    Ok(Some((room, both)))
}

/// A new direct chat as Element makes one: private, `to` invited with `is_direct`,
/// encrypted unless the server says otherwise, and in `from`'s `m.direct`.
async fn open_direct_chat(
    services: &Services,
    from: &UserId,
    to: &UserId,
    reason: Option<&str>,
) -> Result<OwnedRoomId> {
    let messaging = &services.messaging;
    let mut initial_state = Vec::new();
    if services.config.contacts.encrypt_request_rooms {
        initial_state.push(json!({
            "type": "m.room.encryption", "state_key": "",
            "content": { "algorithm": "m.megolm.v1.aes-sha2" },
        }));
    }
    let new = NewRoom {
        preset: Some(Preset::TrustedPrivate),
        is_direct: true,
        invite: vec![to.to_owned()],
        invite_reason: reason.map(str::to_owned),
        initial_state,
        ..NewRoom::default()
    };
    let room = messaging.create_room(from, new).await?;
    let mut direct = messaging
        .account_data(from.as_str(), None, "m.direct")?
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let rooms = direct[to.as_str()].as_array().cloned().unwrap_or_default();
    let mut rooms: Vec<Value> = rooms.into_iter().filter(|r| r != room.as_str()).collect();
    rooms.push(room.as_str().into());
    direct[to.as_str()] = rooms.into();
    messaging
        .set_account_data(from.as_str(), None, "m.direct", direct)
        .await?;
    Ok(room)
}

/// A request between two people both still in their direct chat (they were friends): the
/// request, and a notice from `from` in the room, which the other answers through the API.
async fn ask_in_room(
    services: &Services,
    from: &UserId,
    to: &UserId,
    room: &RoomId,
    message: Option<String>,
) -> Result<SendOutcome> {
    let contacts = &services.contacts;
    let outcome = match services.is_ours(to.server_name()) {
        true => {
            let ignored = ignores(&services.storage, to.as_str(), from.as_str())?;
            let (pair, room) = ((from.as_str(), to.as_str()), Some(room.as_str()));
            (contacts.send_request(pair, message.clone(), ignored, room)).await?
        }
        false => {
            let room = Some(room.as_str());
            (contacts.send_remote_request(from.as_str(), to, message.clone(), room)).await?
        }
    };
    if let SendOutcome::Pending(id) = &outcome {
        let mut body = format!("{from} would like to be friends again.");
        if let Some(message) = &message {
            body.push_str(&format!(" \u{201c}{message}\u{201d}"));
        }
        let content = json!({
            "msgtype": "m.notice", "body": body,
            "org.kith.friend_request": { "request_id": id },
        });
        let spec = crate::services::messaging::EventSpec {
            sender: from.to_owned(),
            kind: TimelineEventType::RoomMessage,
            state_key: None,
            content,
        };
        services.messaging.append(room, spec).await?;
    }
    Ok(outcome)
}

/// The request `id` if it is `user`'s to answer as `role` (else the contacts service's
/// own checks answer 404 or 403).
fn own(
    services: &Services,
    user: &str,
    id: &str,
    role: Direction,
) -> Result<Option<FriendRequest>> {
    let request = services.contacts.request(id)?;
    Ok(request.filter(|r| match role {
        Direction::Incoming => r.to == user && !r.hidden,
        Direction::Outgoing => r.from == user,
    }))
}

/// The room a request is an invite into, with the invitee's membership there being an
/// invite they can see (not held).
fn invited_room(services: &Services, request: &FriendRequest) -> Option<OwnedRoomId> {
    let room = RoomId::parse(request.dm_room_id.as_deref()?).ok()?;
    let invitee = UserId::parse(&request.to).ok()?;
    let membership = services.messaging.membership(&invitee, &room).ok()??;
    (request.invite && membership.membership == "invite" && !membership.held).then_some(room)
}

/// Accepts a request: joins its room if it is an invite (the join accepts it), else
/// befriends at once; a held invite is revealed in the same write.
pub async fn accept(services: &Services, user: &str, request_id: &str) -> Result<()> {
    if let Some(request) = own(services, user, request_id, Direction::Incoming)?
        && let Some(room) = invited_room(services, &request)
    {
        let user_id = UserId::parse(user).map_err(Error::internal)?;
        services.messaging.join(&user_id, &room, None, &[]).await?;
        if services.contacts.request(request_id)?.is_none() {
            return Ok(());
        }
    }
    let release = |batch: &mut kith_storage::Batch, request: &FriendRequest| match &request
        .dm_room_id
    {
        Some(room) if request.invite => services.messaging.release_invite_into(batch, user, room),
        _ => Ok(()),
    };
    services.contacts.accept(user, request_id, release).await
}

/// Declines a request; one that is an invite is rejected (best effort: the inviting
/// server may be gone; the request ends here either way).
pub async fn decline(services: &Services, user: &str, request_id: &str) -> Result<()> {
    let request = own(services, user, request_id, Direction::Incoming)?;
    if let Some(request) = &request
        && request.invite
        && let Some(room) = request.dm_room_id.as_deref()
        && let (Ok(user_id), Ok(room)) = (UserId::parse(user), RoomId::parse(room))
        && services
            .messaging
            .membership(&user_id, &room)?
            .is_some_and(|m| m.membership == "invite")
        && let Err(e) = services.messaging.leave(&user_id, &room, None).await
    {
        tracing::info!(%room, "rejecting a friend request's invite failed: {}", e.message());
    }
    withdraw_unless_ended(services, (user, request_id), request, Direction::Incoming).await
}

/// Cancels a request; one that is an invite is rescinded (best effort, as declining).
pub async fn cancel(services: &Services, user: &str, request_id: &str) -> Result<()> {
    let request = own(services, user, request_id, Direction::Outgoing)?;
    if let Some(request) = &request
        && let Some(room) = invited_room(services, request)
        && services.messaging.room(&room)?.is_some()
        && let (Ok(user_id), Ok(invitee)) = (UserId::parse(user), UserId::parse(&request.to))
    {
        let reason = Some("Friend request cancelled");
        let rescind =
            (services.messaging).moderate(&user_id, &room, &invitee, Moderation::Kick, reason);
        if let Err(e) = rescind.await {
            tracing::info!(%room, "rescinding a friend request's invite failed: {}", e.message());
        }
    }
    withdraw_unless_ended(services, (user, request_id), request, Direction::Outgoing).await
}

/// Withdraws the request, unless what happened to its invite ended it already. One that
/// was not `user`'s (`found` is `None`) gets the contacts service's 404 or 403.
async fn withdraw_unless_ended(
    services: &Services,
    (user, request_id): (&str, &str),
    found: Option<FriendRequest>,
    role: Direction,
) -> Result<()> {
    if found.is_some() && services.contacts.request(request_id)?.is_none() {
        return Ok(());
    }
    services.contacts.withdraw(user, request_id, role).await
}
