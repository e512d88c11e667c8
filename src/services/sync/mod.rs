//! `/sync` as a use case across services: rooms, account data and receipts from
//! messaging, presence from profile, to-device messages, device lists and key counts from
//! e2ee. It sits above those services (as [`crate::services::account`] does), so none of
//! them depends on another to be synced.
//!
//! The token is the global stream position, read from the stream and not the event log:
//! nothing committed is skipped or repeated between one `next_batch` and the next, and a
//! long-poll waits on the commit notifier.

mod assemble;
mod device_lists;
pub mod sliding;

use std::collections::HashSet;
use std::time::Duration;

use ruma::api::client::sync::sync_events::v3;
use ruma::serde::Raw;
use serde_json::Value;

pub use device_lists::device_lists;

use crate::services::Services;
use crate::services::error::{Error, Result};
use crate::services::session::Session;

/// The longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// What a device asks of one `/sync`.
pub struct SyncRequest<'a> {
    /// The `next_batch` of the previous sync, if any.
    pub since: Option<&'a str>,
    /// How long to wait for something new (at most a minute).
    pub timeout: Duration,
    /// Timeline events per room.
    pub timeline_limit: usize,
    /// Member events only for the timeline's senders (`lazy_load_members`).
    pub lazy_members: bool,
    /// Unread counts of threads apart from the main timeline's
    /// (`unread_thread_notifications`).
    pub thread_counts: bool,
    pub full_state: bool,
    /// The presence syncing sets (`None`: leave it as it is).
    pub presence: Option<&'static str>,
}

/// A JSON value as a ruma `Raw`, for responses built from stored JSON.
fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(value).map_err(Error::internal)?,
    ))
}

/// The device's next sync: at once if there is something since `since` (or no `since`),
/// else once something concerning the user commits, or empty at the timeout.
pub async fn sync(
    services: &Services,
    session: &Session,
    request: SyncRequest<'_>,
) -> Result<v3::Response> {
    let storage = &services.storage;
    let since = match request.since {
        Some(token) => {
            let position = token
                .parse::<u64>()
                .ok()
                .filter(|p| *p <= storage.position());
            Some(position.ok_or_else(|| Error::invalid_param("Unknown since token"))?)
        }
        None => None,
    };
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    if let Some(presence) = request.presence {
        services.presence.set(user, presence, None).await?;
    }
    let (limit, full_state) = (request.timeline_limit, request.full_state);
    let shape = assemble::Shape {
        limit,
        full_state,
        lazy_members: request.lazy_members,
        thread_counts: request.thread_counts,
    };
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    loop {
        services.messaging.own_sends_answered(user, device).await;
        let upto = storage.position();
        let (mut response, mut empty) = assemble::assemble(services, session, since, upto, &shape)?;
        // To-device messages up to here; those up to `since` arrived, so they go.
        let to_device = services
            .e2ee
            .to_device_for_sync(user, device, since, upto)
            .await?;
        if !to_device.is_empty() {
            empty = false;
            response.to_device.events = to_device.iter().map(raw).collect::<Result<_>>()?;
        }
        if !empty || since.is_none() || full_state {
            return Ok(response);
        }
        // Nothing yet: wait for a commit that may concern this user (in one of their
        // rooms, or one that concerns anyone), or the deadline.
        let rooms: HashSet<String> = services
            .messaging
            .memberships(&session.user_id)?
            .into_iter()
            .map(|(room, _)| room.to_string())
            .collect();
        let waiter = storage.waiter(rooms.iter().map(String::as_str));
        let mut seen = upto;
        loop {
            let now = storage.position();
            if !storage.only_other_rooms(seen, now, |room| rooms.contains(room)) {
                break;
            }
            seen = now;
            if tokio::time::timeout_at(deadline, waiter.woken())
                .await
                .is_err()
            {
                // Nothing up to `seen` concerned the user, so the next sync starts there.
                response.next_batch = seen.to_string();
                return Ok(response);
            }
        }
    }
}
