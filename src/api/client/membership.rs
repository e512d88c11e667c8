//! Membership (messaging-service): joining, inviting, leaving, kicking, banning, forgetting,
//! and who is in a room. Every change is an `m.room.member` event the room's auth rules
//! decide on (invite-only rooms, power levels for kick, ban and invite).

use axum::extract::State;
use http::StatusCode;
use ruma::api::client::membership::{
    ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
    join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId};
use serde_json::{Value, json};

use super::raw;
use super::rooms::{append, member, not_in_room, require_joined};
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::contacts::DIRECT_MAX_MEMBERS;
use crate::services::messaging::{Draft, EventSpec};
use crate::services::profile;
use crate::services::session::Session;
use crate::util::server_of;

/// A member event's extra content: the user's profile (as Synapse adds it) and a reason.
pub(super) fn member_content(
    state: &AppState,
    user: &str,
    reason: Option<&String>,
) -> Result<Value> {
    let mut content = json!({});
    // A local user whose profile the event log has not made yet has the one it will make.
    let local = user.ends_with(&format!(":{}", state.config.server_name));
    let found = profile::profile(&state.storage, user)?;
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
        content["reason"] = reason.clone().into();
    }
    Ok(content)
}

fn reason_only(reason: Option<&String>) -> Value {
    reason.map_or_else(|| json!({}), |r| json!({ "reason": r }))
}

async fn join_room(
    state: &AppState,
    session: &Session,
    room_id: &RoomId,
    reason: Option<&String>,
    via: &[OwnedServerName],
) -> Result<()> {
    let user = session.user_id.as_str();
    let content = member_content(state, user, reason)?;
    if state.messaging.room(room_id)?.is_none() {
        // A room this server is not in: join through the server that invited us, or the
        // one the room ID names (before v12), or those the client named.
        let mut servers: Vec<OwnedServerName> = Vec::new();
        if let Some(invite) = state.messaging.membership(user, room_id.as_str())? {
            let inviter = state.messaging.stored_pdu(invite.event_id.as_str())?;
            let sender = inviter.and_then(|e| e.pdu().ok()).map(|p| p.sender);
            servers.extend(sender.map(|s| s.server_name().to_owned()));
        }
        servers.extend(room_id.server_name().map(ToOwned::to_owned));
        servers.extend(via.iter().cloned());
        return Ok(state
            .messaging
            .join_remote(&session.user_id, room_id, &servers, content)
            .await?);
    }
    append(state, room_id, member(session, user, "join", content)).await?;
    Ok(())
}

/// Sets `target`'s membership as `session`'s user (kick, ban, unban), if the target's
/// current membership is one of `from` (any, if empty). The caller's own membership is
/// checked first, so strangers learn nothing of who is in the room; the target's under the
/// room's lock, so it cannot change between the check and the event.
async fn set_membership(
    state: &AppState,
    session: &Session,
    room_id: &RoomId,
    target: &OwnedUserId,
    (membership, from): (&str, &[&str]),
    reason: Option<&String>,
) -> Result<()> {
    require_joined(state, session, room_id)?;
    let mut draft = state
        .messaging
        .draft(room_id)
        .await
        .map_err(|_| not_in_room())?;
    let current = state
        .messaging
        .membership(target.as_str(), room_id.as_str())?;
    let current = current.as_ref().map_or("leave", |m| m.membership.as_str());
    if !from.is_empty() && !from.contains(&current) {
        return Err(Error::forbidden(format!(
            "Cannot change membership {current} to {membership}"
        )));
    }
    let content = reason_only(reason);
    draft.add(member(session, target.as_str(), membership, content))?;
    draft.commit(state.storage.batch()).await?;
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`: the auth rules decide (invite, public).
pub async fn join(
    State(state): State<AppState>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> Result<RumaResponse<join_room_by_id::v3::Response>> {
    let body = &request.body;
    join_room(
        &state,
        request.session()?,
        &body.room_id,
        body.reason.as_ref(),
        &[],
    )
    .await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(
        body.room_id.clone(),
    )))
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`: a local alias is resolved first.
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let body = &request.body;
    let session = request.session()?;
    let (room_id, mut via) = match <&RoomId>::try_from(&*body.room_id_or_alias) {
        Ok(room_id) => (room_id.to_owned(), Vec::new()),
        Err(alias) => state.messaging.resolve_alias(alias).await?,
    };
    via.extend(body.via.iter().cloned());
    join_room(&state, session, &room_id, body.reason.as_ref(), &via).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`: the friendship policy first (the
/// caller's membership before it, so strangers learn nothing), then the auth rules.
pub async fn invite(
    State(state): State<AppState>,
    request: Ruma<invite_user::v3::Request>,
) -> Result<RumaResponse<invite_user::v3::Response>> {
    let session = request.session()?;
    let invite_user::v3::InvitationRecipient::UserId(invitee) = &request.body.recipient else {
        return Err(Error::unknown(
            StatusCode::BAD_REQUEST,
            "Third-party invites are not supported",
        ));
    };
    let room_id = &request.body.room_id;
    require_joined(&state, session, room_id)?;
    let mut draft = state
        .messaging
        .draft(room_id)
        .await
        .map_err(|_| not_in_room())?;
    // Under the room's lock: a room that would have at most two members with the invitee
    // is a direct chat, and stays one.
    let target = invitee.user_id.as_str();
    let others = state
        .messaging
        .members(room_id.as_str())?
        .into_iter()
        .filter(|(user, m)| matches!(m.membership.as_str(), "join" | "invite") && user != target)
        .count();
    let direct = draft.is_direct() || others < DIRECT_MAX_MEMBERS;
    let me = session.user_id.as_str();
    check_invite(&state, me, &invitee.user_id, direct).await?;
    if direct {
        draft.mark_direct();
    }
    let content = member_content(&state, target, invitee.reason.as_ref())?;
    send_invite(&state, draft, member(session, target, "invite", content)).await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

/// The friendship policy for an invite by `me`. Users of servers without friend requests
/// cannot be asked to be friends: inviting them is the inviter's own consent, and their
/// server decides for them.
pub(super) async fn check_invite(
    state: &AppState,
    me: &str,
    invitee: &ruma::UserId,
    direct: bool,
) -> Result<()> {
    let server = invitee.server_name();
    if server.as_str() != state.config.server_name && !state.contacts.speaks_contacts(server).await
    {
        return Ok(());
    }
    let policy = state.config.contacts.dm_requires_friendship;
    Ok(state
        .contacts
        .check_invite(policy, me, invitee.as_str(), direct)?)
}

/// Adds an invite to the draft and commits it; an invitee on another server is asked
/// first, and its server's refusal (a blocked invite, say) is the answer.
pub(super) async fn send_invite(
    state: &AppState,
    mut draft: Draft<'_>,
    spec: EventSpec,
) -> Result<()> {
    let invite = draft.add(spec)?;
    let remote = invite
        .state_key
        .as_deref()
        .and_then(server_of)
        .is_some_and(|server| server != state.config.server_name.as_str());
    if remote {
        state.messaging.invite_remote(&mut draft, &invite).await?;
    }
    draft.commit(state.storage.batch()).await?;
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave` (also declines an invite)
pub async fn leave(
    State(state): State<AppState>,
    request: Ruma<leave_room::v3::Request>,
) -> Result<RumaResponse<leave_room::v3::Response>> {
    let session = request.session()?;
    let room_id = &request.body.room_id;
    // An invite into a room on another server is declined through that server.
    if state.messaging.room(room_id)?.is_none() {
        state
            .messaging
            .leave_remote(&session.user_id, room_id)
            .await?;
        return Ok(RumaResponse(leave_room::v3::Response::new()));
    }
    let extra = reason_only(request.body.reason.as_ref());
    let spec = member(session, session.user_id.as_str(), "leave", extra);
    append(&state, room_id, spec).await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`: only someone in the room (a leave
/// event for a stranger would mean nothing).
pub async fn kick(
    State(state): State<AppState>,
    request: Ruma<kick_user::v3::Request>,
) -> Result<RumaResponse<kick_user::v3::Response>> {
    let body = &request.body;
    let change = ("leave", &["join", "invite", "knock"][..]);
    let (room, target, reason) = (&body.room_id, &body.user_id, body.reason.as_ref());
    set_membership(&state, request.session()?, room, target, change, reason).await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban(
    State(state): State<AppState>,
    request: Ruma<ban_user::v3::Request>,
) -> Result<RumaResponse<ban_user::v3::Response>> {
    let body = &request.body;
    let change = ("ban", &[][..]);
    let (room, target, reason) = (&body.room_id, &body.user_id, body.reason.as_ref());
    set_membership(&state, request.session()?, room, target, change, reason).await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`: only a banned user can be unbanned.
pub async fn unban(
    State(state): State<AppState>,
    request: Ruma<unban_user::v3::Request>,
) -> Result<RumaResponse<unban_user::v3::Response>> {
    let body = &request.body;
    let change = ("leave", &["ban"][..]);
    let (room, target, reason) = (&body.room_id, &body.user_id, body.reason.as_ref());
    set_membership(&state, request.session()?, room, target, change, reason).await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`: only a room one has left.
pub async fn forget(
    State(state): State<AppState>,
    request: Ruma<forget_room::v3::Request>,
) -> Result<RumaResponse<forget_room::v3::Response>> {
    let session = request.session()?;
    state
        .messaging
        .forget(session.user_id.as_str(), &request.body.room_id)
        .await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn joined(
    State(state): State<AppState>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<RumaResponse<joined_rooms::v3::Response>> {
    let session = request.session()?;
    let rooms = state.messaging.joined_rooms(session.user_id.as_str())?;
    let rooms = rooms
        .into_iter()
        .filter_map(|r| OwnedRoomId::try_from(r).ok())
        .collect();
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members` (`at`, `membership`, `not_membership`)
pub async fn members(
    State(state): State<AppState>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<RumaResponse<get_member_events::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    let at = match &body.at {
        Some(token) => Some(
            token
                .parse::<u64>()
                .map_err(|_| Error::invalid_param("Invalid at token"))?,
        ),
        None => None,
    };
    let wanted = |m: &str| {
        body.membership.as_ref().is_none_or(|w| w.as_str() == m)
            && body.not_membership.as_ref().is_none_or(|n| n.as_str() != m)
    };
    let mut chunk = Vec::new();
    for (user, current) in state.messaging.members(body.room_id.as_str())? {
        let event = match at {
            Some(at) => state.messaging.member_event_at(&user, &current, at)?,
            None => state.messaging.stored_pdu(current.event_id.as_str())?,
        };
        let Some(event) = event else { continue };
        if wanted(event.membership()) {
            chunk.push(raw(&event.client_event())?);
        }
    }
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    State(state): State<AppState>,
    request: Ruma<joined_members::v3::Request>,
) -> Result<RumaResponse<joined_members::v3::Response>> {
    let session = request.session()?;
    let room_id = &request.body.room_id;
    require_joined(&state, session, room_id)?;
    let mut joined = std::collections::BTreeMap::new();
    for (user, current) in state.messaging.members(room_id.as_str())? {
        if current.membership != MembershipState::Join.as_str() {
            continue;
        }
        let Ok(user_id) = OwnedUserId::try_from(user) else {
            continue;
        };
        let event = state.messaging.stored_pdu(current.event_id.as_str())?;
        let content = event.map(|e| e.client_event()["content"].clone());
        let text = |key: &str| {
            content
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = text("displayname");
        member.avatar_url = text("avatar_url").map(Into::into);
        joined.insert(user_id, member);
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}
