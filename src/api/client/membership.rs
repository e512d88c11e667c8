//! Membership (messaging-service): joining, inviting, leaving, kicking, banning, forgetting,
//! and who is in a room. Every change is an `m.room.member` event the room's auth rules
//! decide on (invite-only rooms, power levels for kick, ban and invite).

use axum::extract::State;
use http::StatusCode;
use ruma::RoomId;
use ruma::api::client::knock::knock_room;
use ruma::api::client::membership::{
    ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
    join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
};
use ruma::events::room::member::MembershipState;
use serde_json::Value;

use super::raw;
use super::rooms::require_joined;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::Moderation;

/// `POST /_matrix/client/v3/rooms/{roomId}/join`: the auth rules decide (invite, public).
pub async fn join(
    State(state): State<AppState>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> Result<RumaResponse<join_room_by_id::v3::Response>> {
    let body = &request.body;
    let user = &request.session()?.user_id;
    let reason = body.reason.as_deref();
    state
        .messaging
        .join(user, &body.room_id, reason, &[])
        .await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(
        body.room_id.clone(),
    )))
}

/// The room a room ID or alias names, with the servers to reach it through: the alias's
/// (resolved here, or asked of its server) and those the client gave.
async fn room_and_servers(
    state: &AppState,
    room_or_alias: &ruma::RoomOrAliasId,
    given: &[ruma::OwnedServerName],
) -> Result<(ruma::OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    let (room_id, mut via) = match <&RoomId>::try_from(room_or_alias) {
        Ok(room_id) => (room_id.to_owned(), Vec::new()),
        Err(alias) => state.messaging.resolve_alias(alias).await?,
    };
    via.extend(given.iter().cloned());
    Ok((room_id, via))
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`: a local alias is resolved first.
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let body = &request.body;
    let user = &request.session()?.user_id;
    let (room_id, via) = room_and_servers(&state, &body.room_id_or_alias, &body.via).await?;
    let reason = body.reason.as_deref();
    state.messaging.join(user, &room_id, reason, &via).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}` `{reason?}` → `{room_id}`: asks to be
/// let in (a local alias is resolved first).
pub async fn knock(
    State(state): State<AppState>,
    request: Ruma<knock_room::v3::Request>,
) -> Result<RumaResponse<knock_room::v3::Response>> {
    let body = &request.body;
    let user = &request.session()?.user_id;
    let (room_id, via) = room_and_servers(&state, &body.room_id_or_alias, &body.via).await?;
    let reason = body.reason.as_deref();
    state.messaging.knock(user, &room_id, reason, &via).await?;
    Ok(RumaResponse(knock_room::v3::Response::new(room_id)))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
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
    let (room_id, reason) = (&request.body.room_id, invitee.reason.as_deref());
    state
        .messaging
        .invite(&session.user_id, room_id, &invitee.user_id, reason)
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave` (also declines an invite)
pub async fn leave(
    State(state): State<AppState>,
    request: Ruma<leave_room::v3::Request>,
) -> Result<RumaResponse<leave_room::v3::Response>> {
    let user = &request.session()?.user_id;
    let (room_id, reason) = (&request.body.room_id, request.body.reason.as_deref());
    state.messaging.leave(user, room_id, reason).await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`: only someone in the room (a leave
/// event for a stranger would mean nothing).
pub async fn kick(
    State(state): State<AppState>,
    request: Ruma<kick_user::v3::Request>,
) -> Result<RumaResponse<kick_user::v3::Response>> {
    let body = &request.body;
    let (by, reason) = (&request.session()?.user_id, body.reason.as_deref());
    let kick = Moderation::Kick;
    let moderate = state
        .messaging
        .moderate(by, &body.room_id, &body.user_id, kick, reason);
    moderate.await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban(
    State(state): State<AppState>,
    request: Ruma<ban_user::v3::Request>,
) -> Result<RumaResponse<ban_user::v3::Response>> {
    let body = &request.body;
    let (by, reason) = (&request.session()?.user_id, body.reason.as_deref());
    let ban = Moderation::Ban;
    let moderate = state
        .messaging
        .moderate(by, &body.room_id, &body.user_id, ban, reason);
    moderate.await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`: only a banned user can be unbanned.
pub async fn unban(
    State(state): State<AppState>,
    request: Ruma<unban_user::v3::Request>,
) -> Result<RumaResponse<unban_user::v3::Response>> {
    let body = &request.body;
    let (by, reason) = (&request.session()?.user_id, body.reason.as_deref());
    let unban = Moderation::Unban;
    let moderate = state
        .messaging
        .moderate(by, &body.room_id, &body.user_id, unban, reason);
    moderate.await?;
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
        .forget(&session.user_id, &request.body.room_id)
        .await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn joined(
    State(state): State<AppState>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<RumaResponse<joined_rooms::v3::Response>> {
    let session = request.session()?;
    let rooms = state.messaging.joined_rooms(&session.user_id)?;
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members` (`at`, `membership`, `not_membership`);
/// for a former member, as of their leave.
pub async fn members(
    State(state): State<AppState>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<RumaResponse<get_member_events::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
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
    let events = (state.messaging).member_events_for(&session.user_id, &body.room_id, at)?;
    let mut chunk = Vec::new();
    for event in events.iter().filter(|e| wanted(e.membership())) {
        chunk.push(raw(&event.client_event())?);
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
    for (user_id, current) in state.messaging.members(room_id)? {
        if current.membership != MembershipState::Join.as_str() {
            continue;
        }
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
