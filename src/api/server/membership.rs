//! Joins and invites from other servers.

use axum::extract::State;
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};
use serde_json::Value;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::InviteIn;

fn raw(value: &impl serde::Serialize) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(value).map_err(Error::internal)
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: a join template built on the
/// room's head, if the user may join and their server speaks the room's version.
pub async fn make_join(
    State(state): State<AppState>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> Result<RumaResponse<prepare_join_event::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let (version, template) = state
        .messaging
        .make_membership(
            origin,
            &body.room_id,
            &body.user_id,
            "join",
            Some(&body.ver),
        )
        .await?;
    let mut response = prepare_join_event::v1::Response::new(raw(&template)?);
    response.room_version = Some(version);
    Ok(RumaResponse(response))
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`: takes the signed join in and
/// answers with the room's state before it and that state's auth chain.
pub async fn send_join(
    State(state): State<AppState>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<RumaResponse<create_join_event::v2::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let event: Value =
        serde_json::from_str(body.pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let sent = state
        .messaging
        .send_membership(origin, &body.room_id, &body.event_id, &event, "join")
        .await?;
    let mut answer = create_join_event::v2::RoomState::new();
    answer.state = sent.state.iter().map(raw).collect::<Result<_>>()?;
    answer.auth_chain = sent.auth_chain.iter().map(raw).collect::<Result<_>>()?;
    answer.event = Some(raw(&sent.event)?);
    Ok(RumaResponse(create_join_event::v2::Response::new(answer)))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`: a leave template (to decline
/// an invite, or leave, without being in the room on the user's own server).
pub async fn make_leave(
    State(state): State<AppState>,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> Result<RumaResponse<prepare_leave_event::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let (version, template) = state
        .messaging
        .make_membership(origin, &body.room_id, &body.user_id, "leave", None)
        .await?;
    Ok(RumaResponse(prepare_leave_event::v1::Response::new(
        Some(version),
        raw(&template)?,
    )))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`: takes the signed leave in.
pub async fn send_leave(
    State(state): State<AppState>,
    request: Ruma<create_leave_event::v2::Request>,
) -> Result<RumaResponse<create_leave_event::v2::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let event: Value =
        serde_json::from_str(body.pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    state
        .messaging
        .send_membership(origin, &body.room_id, &body.event_id, &event, "leave")
        .await?;
    Ok(RumaResponse(create_leave_event::v2::Response::new()))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`: a knock template, if the
/// room's join rules let the user knock and their server speaks its version.
pub async fn make_knock(
    State(state): State<AppState>,
    request: Ruma<prepare_knock_event::v1::Request>,
) -> Result<RumaResponse<prepare_knock_event::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let (version, template) = state
        .messaging
        .make_membership(
            origin,
            &body.room_id,
            &body.user_id,
            "knock",
            Some(&body.ver),
        )
        .await?;
    Ok(RumaResponse(prepare_knock_event::v1::Response::new(
        version,
        raw(&template)?,
    )))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: takes the signed knock in
/// and answers with the room's state as a knocker may see it (whole PDUs, as v1.16 asks).
pub async fn send_knock(
    State(state): State<AppState>,
    request: Ruma<create_knock_event::v1::Request>,
) -> Result<axum::Json<Value>> {
    let origin = request.origin()?;
    let body = &request.body;
    let event: Value =
        serde_json::from_str(body.pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    state
        .messaging
        .send_membership(origin, &body.room_id, &body.event_id, &event, "knock")
        .await?;
    let knock_room_state = (state.messaging).invite_state_pdus(body.room_id.as_str(), "")?;
    Ok(axum::Json(
        serde_json::json!({ "knock_room_state": knock_room_state }),
    ))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: an invite for one of our users;
/// the friendship policy decides first (403 `M_INVITE_BLOCKED`), then it is signed and kept.
pub async fn invite(
    State(state): State<AppState>,
    request: Ruma<create_invite::v2::Request>,
) -> Result<RumaResponse<create_invite::v2::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let event: Value =
        serde_json::from_str(body.event.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let whole: Value =
        serde_json::from_slice(&request.raw_body).map_err(|e| Error::bad_json(e.to_string()))?;
    let invite = InviteIn {
        room_id: &body.room_id,
        event_id: &body.event_id,
        version: &body.room_version,
        event: &event,
        invite_room_state: whole.get("invite_room_state"),
    };
    let signed = state.messaging.receive_invite(origin, invite).await?;
    Ok(RumaResponse(create_invite::v2::Response::new(raw(
        &signed,
    )?)))
}
