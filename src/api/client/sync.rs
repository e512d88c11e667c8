//! `/sync` (v3): initial and incremental, long-polling on the commit notifier. The token
//! is the global stream position, so nothing committed is skipped or repeated between one
//! `next_batch` and the next.

use std::time::Duration;

use axum::extract::State;
use ruma::OneTimeKeyAlgorithm;
use ruma::api::client::filter::FilterDefinition;
use ruma::api::client::sync::sync_events::v3::{
    self, Filter, InviteState, InvitedRoom, JoinedRoom, LeftRoom, State as RoomState, StateEvents,
    Timeline,
};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, UInt};

use super::raw;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::StoredPdu;
use crate::services::session::Session;

/// The longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;

fn timeline_limit(filter: Option<&Filter>) -> usize {
    let limit = match filter {
        Some(Filter::FilterDefinition(definition)) => limit_of(definition),
        // Stored filters come with the filter endpoints; until then, the default.
        _ => None,
    };
    limit.map_or(DEFAULT_TIMELINE_LIMIT, |l| {
        usize::try_from(l)
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, 100)
    })
}

fn limit_of(definition: &FilterDefinition) -> Option<UInt> {
    definition.room.timeline.limit
}

/// `GET /_matrix/client/v3/sync`
pub async fn sync(
    State(state): State<AppState>,
    request: Ruma<v3::Request>,
) -> Result<RumaResponse<v3::Response>> {
    let session = request.session()?.clone();
    let body = &request.body;
    let since = match &body.since {
        Some(token) => {
            let position = token
                .parse::<u64>()
                .ok()
                .filter(|p| *p <= state.storage.position());
            Some(position.ok_or_else(|| Error::invalid_param("Unknown since token"))?)
        }
        None => None,
    };
    let limit = timeline_limit(body.filter.as_ref());
    let deadline = tokio::time::Instant::now() + body.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let mut commits = state.storage.subscribe();
    loop {
        commits.borrow_and_update();
        let upto = state.storage.position();
        let (response, empty) = assemble(&state, &session, since, upto, limit, body.full_state)?;
        if !empty || since.is_none() || body.full_state {
            return Ok(RumaResponse(response));
        }
        // Nothing yet: wait for the next commit, or the deadline.
        match tokio::time::timeout_at(deadline, commits.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(RumaResponse(response)),
        }
    }
}

fn events<T>(events: &[StoredPdu], session: &Session) -> Result<Vec<Raw<T>>> {
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    events
        .iter()
        .map(|e| raw(&e.sync_event(user, device)))
        .collect()
}

/// The response for (since, upto], and whether it says nothing.
fn assemble(
    state: &AppState,
    session: &Session,
    since: Option<u64>,
    upto: u64,
    limit: usize,
    full_state: bool,
) -> Result<(v3::Response, bool)> {
    let messaging = &state.messaging;
    let mut response = v3::Response::new(upto.to_string());
    let after = since.unwrap_or(0);
    for (room, membership) in messaging.memberships(session.user_id.as_str())? {
        let Ok(room_id) = OwnedRoomId::try_from(room.as_str()) else {
            continue;
        };
        // A membership that changed after `upto` committed early (a lower position is still
        // in flight): it has not happened yet for this sync; the next one shows it.
        if membership.changed_at > upto {
            continue;
        }
        let changed = membership.changed_at > after;
        match membership.membership.as_str() {
            "join" => {
                // A room joined since the last sync is sent whole.
                let full = full_state || (since.is_some() && changed);
                let since_for_room = if full && since.is_some() { None } else { since };
                let Some(joined) =
                    messaging.joined_sync(&room, since_for_room, upto, limit, full)?
                else {
                    continue;
                };
                let mut out = JoinedRoom::new();
                let mut timeline = Timeline::new();
                timeline.limited = joined.limited;
                timeline.prev_batch = joined
                    .timeline
                    .first()
                    .map(|e| e.position.saturating_sub(1).to_string());
                timeline.events = events(&joined.timeline, session)?;
                out.timeline = timeline;
                let mut state_events = StateEvents::new();
                state_events.events = events(&joined.state, session)?;
                out.state = RoomState::Before(state_events);
                out.summary.joined_member_count = Some(UInt::new_saturating(joined.joined_count));
                out.summary.invited_member_count = Some(UInt::new_saturating(joined.invited_count));
                out.summary.heroes = joined
                    .heroes
                    .iter()
                    .filter(|h| *h != session.user_id.as_str())
                    .filter_map(|h| h.as_str().try_into().ok())
                    .collect();
                response.rooms.join.insert(room_id, out);
            }
            "invite" if changed || since.is_none() => {
                let stripped = messaging.invite_state(&room, membership.event_id.as_str())?;
                let mut invite_state = InviteState::new();
                invite_state.events = stripped.iter().map(raw).collect::<Result<_>>()?;
                let mut invited = InvitedRoom::new();
                invited.invite_state = invite_state;
                response.rooms.invite.insert(room_id, invited);
            }
            "leave" | "ban" if changed && since.is_some() => {
                // What happened in the room between the last sync and the leave, ending with it.
                let upto_leave = membership.changed_at;
                let gap = messaging.joined_sync(&room, since, upto_leave, limit, false)?;
                let mut timeline = Timeline::new();
                if let Some(gap) = gap {
                    timeline.limited = gap.limited;
                    timeline.events = events(&gap.timeline, session)?;
                }
                let mut left = LeftRoom::new();
                left.timeline = timeline;
                response.rooms.leave.insert(room_id, left);
            }
            _ => {}
        }
    }
    let empty = response.rooms.join.is_empty()
        && response.rooms.invite.is_empty()
        && response.rooms.leave.is_empty();
    // Always present, as clients rely on (no E2EE keys yet, so zero and none).
    response
        .device_one_time_keys_count
        .insert(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN);
    response.device_unused_fallback_key_types = Some(Vec::new());
    Ok((response, empty))
}
