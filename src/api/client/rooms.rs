//! Rooms (messaging-service): creating them, membership, sending, reading state and history.

use axum::extract::State;
use ruma::api::client::message::send_message_event;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::api::client::room::{Visibility, create_room, upgrade_room};
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::events::TimelineEventType;

use ruma::RoomId;
use serde_json::Value;

use super::{json_of, raw};
use crate::gateway::{Answered, Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::{EventSpec, NewRoom, Preset, Transaction, object};
use crate::services::session::Session;

/// Where only members may ask (a former member reads history and state as of their leaving,
/// through [`crate::services::messaging::Messaging::require_reader`]).
pub(super) fn require_joined(state: &AppState, session: &Session, room_id: &RoomId) -> Result<()> {
    Ok(state.messaging.require_joined(&session.user_id, room_id)?)
}

/// An event's content as sent: no body at all is not JSON (ruma would take it as `{}`).
fn content_of<T>(raw_body: &[u8], content: &ruma::serde::Raw<T>) -> Result<Value> {
    if raw_body.is_empty() {
        return Err(Error::not_json());
    }
    json_of(content)
}

/// `POST /_matrix/client/v3/createRoom`
pub async fn create_room(
    State(state): State<AppState>,
    request: Ruma<create_room::v3::Request>,
) -> Result<RumaResponse<create_room::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let preset = body.preset.as_ref().map(|preset| match preset {
        RoomPreset::PublicChat => Preset::Public,
        RoomPreset::TrustedPrivateChat => Preset::TrustedPrivate,
        _ => Preset::Private,
    });
    let new = NewRoom {
        version: body.room_version.clone(),
        preset,
        public: body.visibility == Visibility::Public,
        is_direct: body.is_direct,
        invite: body.invite.clone(),
        invite_reason: None,
        creation_content: body.creation_content.as_ref().map(json_of).transpose()?,
        power_level_content_override: (body.power_level_content_override.as_ref())
            .map(json_of)
            .transpose()?,
        initial_state: body
            .initial_state
            .iter()
            .map(json_of)
            .collect::<Result<_>>()?,
        name: body.name.clone(),
        topic: body.topic.clone(),
        alias_name: body.room_alias_name.clone(),
    };
    let room_id = state.messaging.create_room(&session.user_id, new).await?;
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`: idempotent per device
/// (a replay answers the first event's ID).
pub async fn send_message(
    State(state): State<AppState>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<Answered<RumaResponse<send_message_event::v3::Response>>> {
    let session = request.session()?;
    let body = &request.body;
    let content = object(content_of(&request.raw_body, &body.body)?, "Event content")?;
    let spec = EventSpec {
        sender: session.user_id.clone(),
        kind: TimelineEventType::from(body.event_type.to_string()),
        state_key: None,
        content,
    };
    // Scoped to the request path, as Synapse scopes transaction IDs.
    let scope = format!("send/{}/{}/{}", body.room_id, body.event_type, body.txn_id);
    let transaction = Transaction {
        device_id: &session.device_id,
        txn_id: &body.txn_id,
        scope: &scope,
    };
    let answering = state
        .messaging
        .answering(&session.user_id, &session.device_id);
    let sent = state.messaging.send(&body.room_id, Some(transaction), spec);
    let event_id = sent.await?;
    let response = send_message_event::v3::Response::new(event_id);
    Ok(Answered(RumaResponse(response), answering))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state(
    State(state): State<AppState>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<RumaResponse<send_state_event::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let content = content_of(&request.raw_body, &body.body)?;
    let content = object(content, "State content")?;
    let spec = EventSpec {
        sender: session.user_id.clone(),
        kind: TimelineEventType::from(body.event_type.to_string()),
        state_key: Some(body.state_key.clone()),
        content,
    };
    let sent = state.messaging.send(&body.room_id, None, spec);
    Ok(RumaResponse(send_state_event::v3::Response::new(
        sent.await?,
    )))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn get_state(
    State(state): State<AppState>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<RumaResponse<get_state_events::v3::Response>> {
    let session = request.session()?;
    let room_id = &request.body.room_id;
    let left = state.messaging.require_reader(&session.user_id, room_id)?;
    let stored = state.messaging.readable_state(room_id, left.as_ref())?;
    let events = stored
        .iter()
        .map(|e| raw(&e.client_event()))
        .collect::<Result<_>>()?;
    Ok(RumaResponse(get_state_events::v3::Response::new(events)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`: the content.
pub async fn get_state_event(
    State(state): State<AppState>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<RumaResponse<get_state_event_for_key::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let kind = body.event_type.to_string();
    let key = (kind.as_str(), body.state_key.as_str());
    let stored = (state.messaging).state_event_for(&session.user_id, &body.room_id, key)?;
    let stored = stored.ok_or_else(|| Error::not_found("No such state event"))?;
    let event = stored.client_event();
    let wanted = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => event,
        _ => event["content"].clone(),
    };
    let raw = serde_json::value::to_raw_value(&wanted).map_err(Error::internal)?;
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        raw,
    )))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade` `{new_version}` → `{replacement_room}`
pub async fn upgrade(
    State(state): State<AppState>,
    request: Ruma<upgrade_room::v3::Request>,
) -> Result<RumaResponse<upgrade_room::v3::Response>> {
    let user = &request.session()?.user_id;
    let body = &request.body;
    let replacement = (state.messaging)
        .upgrade(user, &body.room_id, body.new_version.clone())
        .await?;
    Ok(RumaResponse(upgrade_room::v3::Response::new(replacement)))
}
