//! Events and history for other servers in a room with us.

use axum::extract::State;
use ruma::MilliSecondsSinceUnixEpoch;
use ruma::api::federation::authorization::get_event_authorization;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::event::{
    get_event, get_missing_events, get_room_state, get_room_state_ids,
};

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;

/// The most events one `/backfill` answers with.
const MAX_BACKFILL: usize = 100;

/// A requested number of events, at most [`MAX_BACKFILL`].
fn limit(requested: ruma::UInt) -> usize {
    usize::try_from(u64::from(requested))
        .unwrap_or(MAX_BACKFILL)
        .min(MAX_BACKFILL)
}

fn raw(value: &impl serde::Serialize) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(value).map_err(Error::internal)
}

/// `GET /_matrix/federation/v1/event/{eventId}`: one event, for a server in its room
/// (redacted if history visibility hides it from that server).
pub async fn event(
    State(state): State<AppState>,
    request: Ruma<get_event::v1::Request>,
) -> Result<RumaResponse<get_event::v1::Response>> {
    let origin = request.origin()?;
    let event = state
        .messaging
        .event_json_for(origin, request.body.event_id.as_str())?;
    let own = state.server_name.clone();
    Ok(RumaResponse(get_event::v1::Response::new(
        own,
        MilliSecondsSinceUnixEpoch::now(),
        raw(&event)?,
    )))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`: the given events and those
/// before them, for a server in the room.
pub async fn backfill(
    State(state): State<AppState>,
    request: Ruma<get_backfill::v1::Request>,
) -> Result<RumaResponse<get_backfill::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let limit = limit(body.limit);
    let pdus = state
        .messaging
        .backfill_for(origin, &body.room_id, &body.v, limit)?;
    let own = state.server_name.clone();
    let pdus = pdus.iter().map(raw).collect::<Result<_>>()?;
    Ok(RumaResponse(get_backfill::v1::Response::new(
        own,
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    )))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: what lies between the
/// given events, for a server that found gaps.
pub async fn missing_events(
    State(state): State<AppState>,
    request: Ruma<get_missing_events::v1::Request>,
) -> Result<RumaResponse<get_missing_events::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let limit = limit(body.limit);
    let bounds = (
        body.earliest_events.as_slice(),
        body.latest_events.as_slice(),
    );
    let events = state.messaging.missing_for(
        origin,
        &body.room_id,
        bounds,
        limit,
        u64::from(body.min_depth),
    )?;
    let events = events.iter().map(raw).collect::<Result<_>>()?;
    Ok(RumaResponse(get_missing_events::v1::Response::new(events)))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`: the event's auth chain.
pub async fn event_auth(
    State(state): State<AppState>,
    request: Ruma<get_event_authorization::v1::Request>,
) -> Result<RumaResponse<get_event_authorization::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let chain = state
        .messaging
        .event_auth_for(origin, &body.room_id, &body.event_id)?;
    let chain = chain.iter().map(raw).collect::<Result<_>>()?;
    Ok(RumaResponse(get_event_authorization::v1::Response::new(
        chain,
    )))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`: the IDs of the room's state
/// before the event (not including it, as Synapse answers) and of its auth chain.
pub async fn state_ids(
    State(state): State<AppState>,
    request: Ruma<get_room_state_ids::v1::Request>,
) -> Result<RumaResponse<get_room_state_ids::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let events = state
        .messaging
        .state_before_event(origin, &body.room_id, &body.event_id)?;
    let chain = state.messaging.auth_chain(&events)?;
    let ids = |events: &[crate::services::messaging::StoredPdu]| {
        events.iter().map(|e| e.event_id.clone()).collect()
    };
    Ok(RumaResponse(get_room_state_ids::v1::Response::new(
        ids(&chain),
        ids(&events),
    )))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`: the same, as whole events.
pub async fn room_state(
    State(state): State<AppState>,
    request: Ruma<get_room_state::v1::Request>,
) -> Result<RumaResponse<get_room_state::v1::Response>> {
    let origin = request.origin()?;
    let body = &request.body;
    let events = state
        .messaging
        .state_before_event(origin, &body.room_id, &body.event_id)?;
    let chain = state.messaging.auth_chain(&events)?;
    let pdus = |events: &[crate::services::messaging::StoredPdu]| {
        events
            .iter()
            .map(|e| raw(&e.json))
            .collect::<Result<Vec<_>>>()
    };
    Ok(RumaResponse(get_room_state::v1::Response::new(
        pdus(&chain)?,
        pdus(&events)?,
    )))
}
