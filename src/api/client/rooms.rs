//! Rooms (messaging-service): creating them, membership, sending, reading state and history.

use axum::extract::State;
use http::StatusCode;
use ruma::api::client::message::send_message_event;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::api::client::room::{Visibility, create_room};
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::events::TimelineEventType;

use ruma::{OwnedEventId, RoomId, RoomVersionId, TransactionId};
use serde_json::{Value, json};

use super::membership::member_content;
use super::{json_of, raw};
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::contacts::DIRECT_MAX_MEMBERS;
use crate::services::messaging::{EventSpec, StoredPdu, Transaction};
use crate::services::session::Session;

const SUPPORTED_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

pub(super) fn not_in_room() -> Error {
    Error::forbidden("You are not in this room")
}

/// Readers of a room must be joined to it (history visibility for past members comes later).
pub(super) fn require_joined(state: &AppState, session: &Session, room_id: &RoomId) -> Result<()> {
    match state
        .messaging
        .membership(session.user_id.as_str(), room_id.as_str())?
    {
        Some(m) if m.membership == "join" => Ok(()),
        _ => Err(not_in_room()),
    }
}

pub(super) fn state_spec(session: &Session, kind: &str, key: &str, content: Value) -> EventSpec {
    EventSpec {
        sender: session.user_id.clone(),
        kind: TimelineEventType::from(kind),
        state_key: Some(key.to_owned()),
        content,
    }
}

pub(super) fn member(session: &Session, target: &str, membership: &str, extra: Value) -> EventSpec {
    let mut content = json!({ "membership": membership });
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    state_spec(session, "m.room.member", target, content)
}

/// An event's content as sent: no body at all is not JSON (ruma would take it as `{}`).
fn content_of<T>(raw_body: &[u8], content: &ruma::serde::Raw<T>) -> Result<Value> {
    if raw_body.is_empty() {
        return Err(Error::not_json());
    }
    json_of(content)
}

/// Whether `value` is a JSON object; room content must be.
fn object(value: Value, what: &str) -> Result<Value> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::bad_json(format!("{what} must be a JSON object")))
    }
}

/// `POST /_matrix/client/v3/createRoom`: the whole room in one write, events in the spec's
/// order (create, creator's join, power levels, join rules, history visibility, guest
/// access, initial state, name, topic, invites).
pub async fn create_room(
    State(state): State<AppState>,
    request: Ruma<create_room::v3::Request>,
) -> Result<RumaResponse<create_room::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let version = body.room_version.clone().unwrap_or(RoomVersionId::V12);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            "Unsupported room version",
        ));
    }
    // The friendship policy, before anything is built: no orphan room on refusal. Each
    // invitee counts once, the creator not at all, and local invitees must exist.
    let me = session.user_id.as_str();
    let mut invitees: Vec<&ruma::UserId> = Vec::new();
    for invitee in &body.invite {
        if invitee.as_str() != me && !invitees.contains(&invitee.as_ref()) {
            invitees.push(invitee);
        }
    }
    for invitee in &invitees {
        let local = invitee.server_name().as_str() == state.config.server_name;
        if local && state.auth.account(invitee)?.is_none_or(|a| a.deactivated) {
            return Err(Error::not_found(format!("No such user {invitee}")));
        }
    }
    // With its creator and an invitee, a room of two is a direct chat (a room made alone
    // is not yet anything; inviting into it decides).
    let direct = body.is_direct || invitees.len() + 1 == DIRECT_MAX_MEMBERS;
    for invitee in &invitees {
        super::membership::check_invite(&state, me, invitee, direct).await?;
    }
    let preset = body.preset.clone().unwrap_or(match body.visibility {
        Visibility::Public => RoomPreset::PublicChat,
        _ => RoomPreset::PrivateChat,
    });
    let public = preset == RoomPreset::PublicChat;

    let mut create = match &body.creation_content {
        Some(content) => object(json_of(content)?, "creation_content")?,
        None => json!({}),
    };
    create["room_version"] = version.as_str().into();
    let mut draft = state.messaging.draft_new_room(version.clone())?;
    let rules = kith_federation::pdu::rules(&version).map_err(Error::internal)?;
    if !rules.authorization.use_room_create_sender {
        create["creator"] = me.into();
    }

    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(me.to_owned(), 100.into());
    }
    if preset == RoomPreset::TrustedPrivateChat {
        for invitee in &body.invite {
            users.insert(invitee.to_string(), 100.into());
        }
    }
    let mut power_levels = json!({
        "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": if public { 50 } else { 0 },
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
    });
    if let Some(overrides) = &body.power_level_content_override {
        let overrides: Value = json_of(overrides)?;
        if let (Some(base), Some(overrides)) = (power_levels.as_object_mut(), overrides.as_object())
        {
            base.extend(overrides.clone());
        }
    }

    draft.add(state_spec(session, "m.room.create", "", create))?;
    draft.add(member(
        session,
        me,
        "join",
        member_content(&state, me, None)?,
    ))?;
    draft.add(state_spec(session, "m.room.power_levels", "", power_levels))?;
    let join_rule = if public { "public" } else { "invite" };
    draft.add(state_spec(
        session,
        "m.room.join_rules",
        "",
        json!({ "join_rule": join_rule }),
    ))?;
    draft.add(state_spec(
        session,
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": "shared" }),
    ))?;
    let guest_access = if public { "forbidden" } else { "can_join" };
    draft.add(state_spec(
        session,
        "m.room.guest_access",
        "",
        json!({ "guest_access": guest_access }),
    ))?;
    for event in &body.initial_state {
        let event: Value = json_of(event)?;
        let kind = event["type"]
            .as_str()
            .ok_or_else(|| Error::bad_json("initial_state events need a type"))?;
        let key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = object(
            event.get("content").cloned().unwrap_or(Value::Null),
            "initial_state content",
        )?;
        draft.add(state_spec(session, kind, key, content))?;
    }
    if let Some(name) = &body.name {
        draft.add(state_spec(
            session,
            "m.room.name",
            "",
            json!({ "name": name }),
        ))?;
    }
    if let Some(topic) = &body.topic {
        draft.add(state_spec(
            session,
            "m.room.topic",
            "",
            json!({ "topic": topic }),
        ))?;
    }
    if direct {
        draft.mark_direct();
    }
    let invite_content = |invitee: &ruma::UserId| -> Result<Value> {
        let mut content = member_content(&state, invitee.as_str(), None)?;
        if body.is_direct {
            content["is_direct"] = true.into();
        }
        Ok(content)
    };
    let (local, remote): (Vec<&ruma::UserId>, Vec<&ruma::UserId>) = invitees
        .iter()
        .copied()
        .partition(|u| u.server_name().as_str() == state.config.server_name);
    for invitee in local {
        draft.add(member(
            session,
            invitee.as_str(),
            "invite",
            invite_content(invitee)?,
        ))?;
    }
    let room_id = draft
        .room_id()
        .map(RoomId::to_owned)
        .ok_or_else(|| Error::internal("room without ID"))?;
    draft.commit(state.storage.batch()).await?;
    // Invitees elsewhere are asked one by one, once the room exists; the first refusal
    // is the answer (the room stays, as with Synapse).
    for invitee in remote {
        let draft = state.messaging.draft(&room_id).await?;
        let spec = member(
            session,
            invitee.as_str(),
            "invite",
            invite_content(invitee)?,
        );
        super::membership::send_invite(&state, draft, spec).await?;
    }
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

/// Adds one event to a room and commits it; returns the stored event.
pub(super) async fn append(
    state: &AppState,
    room_id: &RoomId,
    spec: EventSpec,
) -> Result<StoredPdu> {
    let mut draft = state
        .messaging
        .draft(room_id)
        .await
        .map_err(|_| not_in_room())?;
    draft.add(spec)?;
    let mut stored = draft.commit(state.storage.batch()).await?;
    stored
        .pop()
        .ok_or_else(|| Error::internal("nothing committed"))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`: idempotent per device.
pub async fn send_message(
    State(state): State<AppState>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<RumaResponse<send_message_event::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let content = object(content_of(&request.raw_body, &body.body)?, "Event content")?;
    let spec = EventSpec {
        sender: session.user_id.clone(),
        kind: TimelineEventType::from(body.event_type.to_string()),
        state_key: None,
        content,
    };
    let scope = format!("send/{}/{}/{}", body.room_id, body.event_type, body.txn_id);
    let event_id = send_once(&state, session, &body.room_id, &scope, &body.txn_id, spec).await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}

/// Sends one event for a device under a transaction ID, through messaging (which applies
/// the friendship policy and makes replays answer the first event's ID).
pub(super) async fn send_once(
    state: &AppState,
    session: &Session,
    room_id: &RoomId,
    scope: &str,
    txn_id: &TransactionId,
    spec: EventSpec,
) -> Result<OwnedEventId> {
    let transaction = Transaction {
        device_id: &session.device_id,
        txn_id,
        scope,
    };
    let policy = state.config.contacts.dm_requires_friendship;
    let contacts = &state.contacts;
    let sent = state
        .messaging
        .send(contacts, policy, room_id, Some(transaction), spec);
    Ok(sent.await?)
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
    let spec = state_spec(
        session,
        &body.event_type.to_string(),
        &body.state_key,
        content,
    );
    let policy = state.config.contacts.dm_requires_friendship;
    let room_id = &body.room_id;
    let sent = state
        .messaging
        .send(&state.contacts, policy, room_id, None, spec);
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
    require_joined(&state, session, room_id)?;
    let mut events = Vec::new();
    for (_, event_id) in state.messaging.state_ids(room_id)? {
        if let Some(stored) = state.messaging.stored_pdu(event_id.as_str())? {
            events.push(raw(&stored.client_event())?);
        }
    }
    Ok(RumaResponse(get_state_events::v3::Response::new(events)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`: the content.
pub async fn get_state_event(
    State(state): State<AppState>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<RumaResponse<get_state_event_for_key::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    let kind = body.event_type.to_string();
    let event_id = state
        .messaging
        .state_event_id(&body.room_id, &kind, &body.state_key)?;
    let stored = match event_id {
        Some(id) => state.messaging.stored_pdu(id.as_str())?,
        None => None,
    };
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
