//! Reading a room's past (messaging-service): single events, pages of the timeline both
//! ways, an event's context; and redacting events.

use axum::extract::State;
use ruma::api::client::context::get_context;
use ruma::api::client::message::get_message_events;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::{get_event_by_timestamp, get_room_event};
use ruma::serde::Raw;

use super::raw;
use crate::gateway::{Answered, Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::{Bundler, MAX_LIMIT, StoredPdu, Transaction};

/// A pagination token: a stream position, inclusive ("everything up to here").
fn token(token: &str, what: &str) -> Result<u64> {
    token
        .parse()
        .map_err(|_| Error::invalid_param(format!("Invalid {what} token")))
}

fn events<T>(events: &[StoredPdu]) -> Result<Vec<Raw<T>>> {
    events.iter().map(|e| raw(&e.client_event())).collect()
}

/// Events as clients see them, each with what relates to it bundled.
pub(super) fn bundled<T>(bundler: &Bundler<'_>, events: &[StoredPdu]) -> Result<Vec<Raw<T>>> {
    events.iter().map(|e| raw(&bundle(bundler, e)?)).collect()
}

fn bundle(bundler: &Bundler<'_>, event: &StoredPdu) -> Result<serde_json::Value> {
    let mut served = event.client_event();
    bundler.attach(event, &mut served)?;
    Ok(served)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_event(
    State(state): State<AppState>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<RumaResponse<get_room_event::v3::Response>> {
    let reader = &request.session()?.user_id;
    let body = &request.body;
    let event = state
        .messaging
        .room_event(reader, &body.room_id, &body.event_id)?;
    let bundler = state.messaging.bundler(reader, &body.room_id)?;
    let served = bundle(&bundler, &event)?;
    Ok(RumaResponse(get_room_event::v3::Response::new(raw(
        &served,
    )?)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`: `dir` b (from the newest if no `from`)
/// or f (from the room's start), up to `to`, through `filter`. `end` is omitted once
/// there is nothing more that way: backwards at the room's start; forwards only at `to`
/// (or a former member's leave), as newer events may still come.
pub async fn messages(
    State(state): State<AppState>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<RumaResponse<get_message_events::v3::Response>> {
    let reader = &request.session()?.user_id;
    let body = &request.body;
    let from = body.from.as_deref().map(|t| token(t, "from")).transpose()?;
    let to = body.to.as_deref().map(|t| token(t, "to")).transpose()?;
    let limit = usize::try_from(body.limit).unwrap_or(MAX_LIMIT);
    let range = (from, body.dir, to);
    let (from, page) = state
        .messaging
        .messages(reader, &body.room_id, range, limit, &body.filter)
        .await?;
    let mut response = get_message_events::v3::Response::new();
    response.start = from.to_string();
    response.end = page.end.map(|end| end.to_string());
    let bundler = state.messaging.bundler(reader, &body.room_id)?;
    response.chunk = bundled(&bundler, &page.events)?;
    // A client that loads members lazily gets those of the page's senders.
    if !body.filter.lazy_load_options.is_disabled() {
        let room = body.room_id.as_str();
        let members = (state.messaging).lazy_members(room, reader, &page.events, Vec::new())?;
        response.state = events(&members)?;
    }
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`: up to `limit` events around
/// the event, half before and half after, with the room's current state.
pub async fn context(
    State(state): State<AppState>,
    request: Ruma<get_context::v3::Request>,
) -> Result<RumaResponse<get_context::v3::Response>> {
    let reader = &request.session()?.user_id;
    let body = &request.body;
    let limit = usize::try_from(body.limit).unwrap_or(MAX_LIMIT);
    let (room, event) = (&body.room_id, &body.event_id);
    let context = (state.messaging).context(reader, room, event, limit, &body.filter)?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(context.start.to_string());
    response.end = Some(context.end.to_string());
    let bundler = state.messaging.bundler(reader, room)?;
    response.events_before = bundled(&bundler, &context.before)?;
    response.events_after = bundled(&bundler, &context.after)?;
    response.event = Some(raw(&bundle(&bundler, &context.event)?)?);
    response.state = events(&context.state)?;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts&dir` → `{event_id,
/// origin_server_ts}`: the closest event the reader may see in that direction.
pub async fn timestamp_to_event(
    State(state): State<AppState>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<RumaResponse<get_event_by_timestamp::v1::Response>> {
    let reader = &request.session()?.user_id;
    let body = &request.body;
    let ts = u64::from(body.ts.get());
    let event = (state.messaging).event_at_time(reader, &body.room_id, ts, body.dir)?;
    let at = event
        .json
        .get("origin_server_ts")
        .and_then(|t| t.as_integer())
        .and_then(|t| ruma::UInt::try_from(i64::from(t)).ok())
        .unwrap_or_default();
    Ok(RumaResponse(get_event_by_timestamp::v1::Response::new(
        event.event_id,
        ruma::MilliSecondsSinceUnixEpoch(at),
    )))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`: one's own events, or
/// anyone's with the room's `redact` power level; idempotent per device like sending.
pub async fn redact(
    State(state): State<AppState>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<Answered<RumaResponse<redact_event::v3::Response>>> {
    let session = request.session()?;
    let body = &request.body;
    let scope = format!("redact/{}/{}/{}", body.room_id, body.event_id, body.txn_id);
    let transaction = Transaction {
        device_id: &session.device_id,
        txn_id: &body.txn_id,
        scope: &scope,
    };
    let (sender, reason) = (&session.user_id, body.reason.as_deref());
    let answering = state.messaging.answering(sender, &session.device_id);
    let event_id = state
        .messaging
        .redact(sender, &body.room_id, &body.event_id, reason, transaction)
        .await?;
    let response = redact_event::v3::Response::new(event_id);
    Ok(Answered(RumaResponse(response), answering))
}
