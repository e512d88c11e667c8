//! `/sync` (v3): the request read, the response assembled by [`crate::services::sync`].

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::sync::sync_events::v3::{self, Filter};
use ruma::api::client::sync::sync_events::v5;
use ruma::presence::PresenceState;

use super::account_data::stored_filter;
use axum::response::IntoResponse;
use ruma::api::OutgoingResponseExt;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::metrics::SyncApi;
use crate::services::AppState;
use crate::services::session::Session;
use crate::services::sync::{self, SyncRequest};

/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;

/// What kith reads of the request's filter, inline or stored (unknown ID → 404): the
/// timeline limit, whether member events are lazy-loaded, and whether threads' unread
/// counts come apart.
fn room_filter(
    state: &AppState,
    session: &Session,
    filter: Option<&Filter>,
) -> Result<(usize, bool, bool)> {
    let stored;
    let definition = match filter {
        Some(Filter::FilterDefinition(definition)) => Some(definition),
        Some(Filter::FilterId(id)) => {
            stored = stored_filter(state, session, id)?;
            Some(&stored)
        }
        _ => None,
    };
    let limit = definition.and_then(|d| d.room.timeline.limit);
    let limit = limit.map_or(DEFAULT_TIMELINE_LIMIT, |l| {
        usize::try_from(l)
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, 100)
    });
    let lazy = definition.is_some_and(|d| !d.room.state.lazy_load_options.is_disabled());
    let threads = definition.is_some_and(|d| d.room.timeline.unread_thread_notifications);
    Ok((limit, lazy, threads))
}

/// `GET /_matrix/client/v3/sync`
pub async fn sync(
    State(state): State<AppState>,
    request: Ruma<v3::Request>,
) -> Result<axum::response::Response> {
    let session = request.session()?;
    let body = &request.body;
    let _open = state.metrics.sync_in_flight(SyncApi::V2);
    // Syncing says the client is there; `offline` only means "do not mark me online".
    let presence = match body.set_presence {
        PresenceState::Offline => None,
        ref other => Some(super::presence::known(other)?),
    };
    let (timeline_limit, lazy_members, thread_counts) =
        room_filter(&state, session, body.filter.as_ref())?;
    let sync_request = SyncRequest {
        since: body.since.as_deref(),
        timeout: body.timeout.unwrap_or(Duration::ZERO),
        timeline_limit,
        lazy_members,
        thread_counts,
        full_state: body.full_state,
        presence,
    };
    let response = sync::sync(&state, session, sync_request).await?;
    if response.rooms.leave.is_empty() {
        return Ok(RumaResponse(response).into_response());
    }
    Ok(with_left_rooms_whole(response)?.into_response())
}

/// The response with each left room's `state` and `timeline` holding an `events` list,
/// empty or not, as Synapse sends them: ruma leaves an empty one out, and matrix-nio
/// refuses a whole sync whose left room lacks one (a rescinded invite, say).
fn with_left_rooms_whole(response: v3::Response) -> Result<axum::Json<serde_json::Value>> {
    let http = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(Error::internal)?;
    let mut body: serde_json::Value =
        serde_json::from_slice(http.body()).map_err(Error::internal)?;
    if let Some(left) = body["rooms"]["leave"].as_object_mut() {
        for room in left.values_mut() {
            for part in ["state", "timeline"] {
                if !room[part]["events"].is_array() {
                    room[part]["events"] = serde_json::json!([]);
                }
            }
        }
    }
    Ok(axum::Json(body))
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (MSC4186).
pub async fn sliding_sync(
    State(state): State<AppState>,
    request: Ruma<v5::Request>,
) -> Result<RumaResponse<v5::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let _open = state.metrics.sync_in_flight(SyncApi::Sliding);
    let presence = match body.set_presence {
        PresenceState::Offline => None,
        ref other => Some(super::presence::known(other)?),
    };
    let response = sync::sliding::sliding_sync(&state, session, body, presence).await?;
    Ok(RumaResponse(response))
}
