//! Reading a room's past (messaging-service): single events, pages of the timeline both
//! ways, an event's context; and redacting events.

use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::context::get_context;
use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::message::get_message_events;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::events::TimelineEventType;
use ruma::{EventId, RoomId, UInt};
use serde_json::json;

use super::raw;
use super::rooms::{require_joined, send_once};
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::{EventSpec, StoredPdu};

/// The most events one page returns.
const MAX_LIMIT: usize = 100;

fn limit(requested: UInt) -> usize {
    usize::try_from(requested)
        .unwrap_or(MAX_LIMIT)
        .clamp(1, MAX_LIMIT)
}

/// A pagination token: a stream position, inclusive ("everything up to here").
fn token(token: &str, what: &str) -> Result<u64> {
    token
        .parse()
        .map_err(|_| Error::invalid_param(format!("Invalid {what} token")))
}

/// Whether an event passes a room event filter (`types`/`senders` with `*` wildcards).
fn matches(filter: &RoomEventFilter, event: &StoredPdu) -> bool {
    let field = |key: &str| event.json.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let (kind, sender) = (field("type"), field("sender"));
    let glob = |pattern: &String, value: &str| match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    };
    filter
        .types
        .as_ref()
        .is_none_or(|types| types.iter().any(|t| glob(t, kind)))
        && !filter.not_types.iter().any(|t| glob(t, kind))
        && filter
            .senders
            .as_ref()
            .is_none_or(|senders| senders.iter().any(|s| s == sender))
        && !filter.not_senders.iter().any(|s| s == sender)
}

/// An event of this room, or 404.
fn room_event(state: &AppState, room_id: &RoomId, event_id: &EventId) -> Result<StoredPdu> {
    state
        .messaging
        .stored_pdu(event_id.as_str())?
        .filter(|s| s.room_id == room_id.as_str())
        .ok_or_else(|| Error::not_found("Event not found"))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_event(
    State(state): State<AppState>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<RumaResponse<get_room_event::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    let event = room_event(&state, &body.room_id, &body.event_id)?;
    let visibility = state.messaging.visibility(&body.room_id)?;
    if !state
        .messaging
        .may_see(&visibility, session.user_id.as_str(), &event)?
    {
        return Err(Error::not_found("Event not found"));
    }
    Ok(RumaResponse(get_room_event::v3::Response::new(raw(
        &event.client_event(),
    )?)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`: `dir` b (from the newest if no `from`)
/// or f (from the room's start), up to `to`, through `filter`. `end` is omitted once
/// there is nothing more that way.
pub async fn messages(
    State(state): State<AppState>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<RumaResponse<get_message_events::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    let from = match (&body.from, body.dir) {
        (Some(from), _) => token(from, "from")?,
        (None, Direction::Backward) => state.storage.position(),
        (None, Direction::Forward) => 0,
    };
    let to = body.to.as_deref().map(|t| token(t, "to")).transpose()?;
    let reader = session.user_id.as_str();
    let visibility = state.messaging.visibility(&body.room_id)?;
    let read_page = || {
        state.messaging.page(
            body.room_id.as_str(),
            from,
            body.dir,
            to,
            limit(body.limit),
            |event| {
                // An event whose visibility cannot be read (a storage error) is not shown.
                matches(&body.filter, event)
                    && state
                        .messaging
                        .may_see(&visibility, reader, event)
                        .unwrap_or(false)
            },
        )
    };
    let mut page = read_page()?;
    // Paging back past the start of what this server holds of a room it joined from
    // elsewhere: fetch the earlier history from a server in the room, then read again.
    if body.dir == Direction::Backward
        && page.end.is_none()
        && to.is_none()
        && state.messaging.backfill(&body.room_id).await? > 0
    {
        page = read_page()?;
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = from.to_string();
    response.end = page.end.map(|end| end.to_string());
    response.chunk = page
        .events
        .iter()
        .map(|event| raw(&event.client_event()))
        .collect::<Result<_>>()?;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`: up to `limit` events around
/// the event, half before and half after, with the room's current state.
pub async fn context(
    State(state): State<AppState>,
    request: Ruma<get_context::v3::Request>,
) -> Result<RumaResponse<get_context::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    let event = room_event(&state, &body.room_id, &body.event_id)?;
    let room = body.room_id.as_str();
    let total = usize::try_from(body.limit)
        .unwrap_or(MAX_LIMIT)
        .min(MAX_LIMIT);
    let (reader, visibility) = (
        session.user_id.as_str(),
        state.messaging.visibility(&body.room_id)?,
    );
    if !state.messaging.may_see(&visibility, reader, &event)? {
        return Err(Error::not_found("Event not found"));
    }
    let keep = |e: &StoredPdu| {
        matches(&body.filter, e)
            && state
                .messaging
                .may_see(&visibility, reader, e)
                .unwrap_or(false)
    };
    let (before_limit, after_limit) = (total / 2, total - total / 2);
    let mut response = get_context::v3::Response::new();
    let position = event.position;
    if before_limit > 0 {
        let before = state.messaging.page(
            room,
            position.saturating_sub(1),
            Direction::Backward,
            None,
            before_limit,
            keep,
        )?;
        response.events_before = before
            .events
            .iter()
            .map(|e| raw(&e.client_event()))
            .collect::<Result<_>>()?;
        response.start = Some(before.end.unwrap_or(0).to_string());
    } else {
        response.start = Some(position.saturating_sub(1).to_string());
    }
    if after_limit > 0 {
        let after =
            state
                .messaging
                .page(room, position, Direction::Forward, None, after_limit, keep)?;
        response.events_after = after
            .events
            .iter()
            .map(|e| raw(&e.client_event()))
            .collect::<Result<_>>()?;
        let last = after.events.last().map_or(position, |e| e.position);
        response.end = Some(after.end.unwrap_or(last).to_string());
    } else {
        response.end = Some(position.to_string());
    }
    response.event = Some(raw(&event.client_event())?);
    response.state = state
        .messaging
        .state_events(room)?
        .iter()
        .map(|e| raw(&e.client_event()))
        .collect::<Result<_>>()?;
    Ok(RumaResponse(response))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`: one's own events, or
/// anyone's with the room's `redact` power level; idempotent per device like sending.
pub async fn redact(
    State(state): State<AppState>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<RumaResponse<redact_event::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    // Who may redact what is checked where every redaction is built (the draft).
    room_event(&state, &body.room_id, &body.event_id)?;
    let mut content = json!({ "redacts": body.event_id });
    if let Some(reason) = &body.reason {
        content["reason"] = reason.clone().into();
    }
    let spec = EventSpec {
        sender: session.user_id.clone(),
        kind: TimelineEventType::RoomRedaction,
        state_key: None,
        content,
    };
    let scope = format!("redact/{}/{}/{}", body.room_id, body.event_id, body.txn_id);
    let event_id = send_once(&state, session, &body.room_id, &scope, &body.txn_id, spec).await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}
