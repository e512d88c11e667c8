//! Relations (messaging-service): the events relating to one (`/relations`, with or
//! without a relation type and event type) and a room's threads (`/threads`), each event
//! with its own relations bundled.

use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::api::client::threads::get_threads;
use ruma::{EventId, RoomId, UInt};

use super::history::bundled;
use crate::gateway::{Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::{
    MAX_LIMIT, RelationsPage, RelationsQuery, ThreadsInclude, position_token,
};
use crate::services::session::Session;

/// A page's size: what the client asks, at most `MAX_LIMIT` (default 50, as Synapse).
fn limit(limit: Option<UInt>) -> usize {
    limit
        .map_or(50, |l| usize::try_from(l).unwrap_or(MAX_LIMIT))
        .clamp(1, MAX_LIMIT)
}

/// What every `/relations` form shares.
struct Asked<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

/// A page as served: its events bundled, where to go on, and how deep it looked.
struct Served<T> {
    chunk: Vec<ruma::serde::Raw<T>>,
    next_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

/// What every `/relations` form shares, read from its request (the three ruma types have
/// the same fields but no common type).
macro_rules! asked {
    ($body:expr) => {
        Asked {
            room_id: &$body.room_id,
            event_id: &$body.event_id,
            from: $body.from.as_deref(),
            to: $body.to.as_deref(),
            dir: $body.dir,
            limit: $body.limit,
            recurse: $body.recurse,
        }
    };
}

/// Reads one page.
fn page<T>(
    state: &AppState,
    session: &Session,
    asked: Asked<'_>,
    (rel_type, event_type): (Option<&str>, Option<&str>),
) -> Result<Served<T>> {
    let query = RelationsQuery {
        rel_type,
        event_type,
        dir: asked.dir,
        from: asked.from.map(position_token).transpose()?,
        to: asked.to.map(position_token).transpose()?,
        limit: limit(asked.limit),
        recurse: asked.recurse,
    };
    let reader = &session.user_id;
    let RelationsPage { events, next } =
        (state.messaging).relations(reader, asked.room_id, asked.event_id, &query)?;
    let bundler = state.messaging.bundler(reader, asked.room_id)?;
    Ok(Served {
        chunk: bundled(&bundler, &events)?,
        next_batch: next.map(|n| n.to_string()),
        recursion_depth: asked.recurse.then(|| UInt::from(3u32)),
    })
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn relations(
    State(state): State<AppState>,
    request: Ruma<get_relating_events::v1::Request>,
) -> Result<RumaResponse<get_relating_events::v1::Response>> {
    let body = &request.body;
    let asked = asked!(body);
    let served = page(&state, request.session()?, asked, (None, None))?;
    let mut response = get_relating_events::v1::Response::new(served.chunk);
    response.next_batch = served.next_batch;
    response.recursion_depth = served.recursion_depth;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn relations_of_type(
    State(state): State<AppState>,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type::v1::Response>> {
    let body = &request.body;
    let asked = asked!(body);
    let rel_type = body.rel_type.to_string();
    let types = (Some(rel_type.as_str()), None);
    let served = page(&state, request.session()?, asked, types)?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(served.chunk);
    response.next_batch = served.next_batch;
    response.recursion_depth = served.recursion_depth;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn relations_of_type_and_event_type(
    State(state): State<AppState>,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type_and_event_type::v1::Response>> {
    let body = &request.body;
    let asked = asked!(body);
    let (rel_type, event_type) = (body.rel_type.to_string(), body.event_type.to_string());
    let types = (Some(rel_type.as_str()), Some(event_type.as_str()));
    let served = page(&state, request.session()?, asked, types)?;
    let mut response =
        get_relating_events_with_rel_type_and_event_type::v1::Response::new(served.chunk);
    response.next_batch = served.next_batch;
    response.recursion_depth = served.recursion_depth;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`: thread roots, the latest active first.
pub async fn threads(
    State(state): State<AppState>,
    request: Ruma<get_threads::v1::Request>,
) -> Result<RumaResponse<get_threads::v1::Response>> {
    let reader = &request.session()?.user_id;
    let body = &request.body;
    let include = match body.include {
        get_threads::v1::IncludeThreads::Participated => ThreadsInclude::Participated,
        _ => ThreadsInclude::All,
    };
    let from = body.from.as_deref().map(position_token).transpose()?;
    let RelationsPage { events, next } =
        (state.messaging).threads(reader, &body.room_id, include, from, limit(body.limit))?;
    let bundler = state.messaging.bundler(reader, &body.room_id)?;
    let mut response = get_threads::v1::Response::new(bundled(&bundler, &events)?);
    response.next_batch = next.map(|n| n.to_string());
    Ok(RumaResponse(response))
}
