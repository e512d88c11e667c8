//! Pushers and notifications (push-service): where a user's phones get pushes, and the list
//! of what notified them.

use axum::Json;
use axum::extract::State;
use ruma::api::client::push::{get_notifications, get_pushers, set_pusher};
use serde_json::{Value, json};

use crate::gateway::{Error, Result, Ruma};
use crate::services::AppState;
use crate::services::pushers::Pusher;

/// `GET /_matrix/client/v3/pushers` → `{pushers}`
pub async fn pushers(
    State(state): State<AppState>,
    request: Ruma<get_pushers::v3::Request>,
) -> Result<Json<Value>> {
    let user = &request.session()?.user_id;
    let pushers = state.pushers.pushers(user.as_str())?;
    Ok(Json(json!({ "pushers": pushers })))
}

/// `POST /_matrix/client/v3/pushers/set`: sets a pusher, or with `kind: null` removes it.
pub async fn set_pusher(
    State(state): State<AppState>,
    request: Ruma<set_pusher::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str().to_owned();
    match &request.body.action {
        set_pusher::v3::PusherAction::Post(post) => {
            let fields = serde_json::to_value(&post.pusher).map_err(Error::internal)?;
            let pusher: Pusher = serde_json::from_value(fields)
                .map_err(|e| Error::bad_json(format!("Not a pusher: {e}")))?;
            state.pushers.set(&user, pusher, post.append).await?;
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            state
                .pushers
                .remove(&user, &ids.app_id, &ids.pushkey)
                .await?;
        }
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    }
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/notifications?from&limit&only=highlight` →
/// `{notifications, next_token?}`, newest first.
pub async fn notifications(
    State(state): State<AppState>,
    request: Ruma<get_notifications::v3::Request>,
) -> Result<Json<Value>> {
    let user = &request.session()?.user_id;
    let body = &request.body;
    let from = match body.from.as_deref() {
        Some(token) => Some(
            token
                .parse::<u64>()
                .map_err(|_| Error::invalid_param("Invalid from token"))?,
        ),
        None => None,
    };
    let limit = body
        .limit
        .map_or(20, |l| usize::try_from(l).unwrap_or(100))
        .clamp(1, 100);
    let only_highlight = body.only.as_deref() == Some("highlight");
    let page = (state.pushers).notifications(user.as_str(), from, limit, only_highlight)?;
    let mut notifications = Vec::new();
    for (position, notified) in page.listed {
        let Some(event) = state.messaging.stored_pdu(&notified.event_id)? else {
            continue;
        };
        let read = !state
            .messaging
            .unread_at(user.as_str(), &notified.room_id, position)?;
        notifications.push(json!({
            "actions": notified.actions,
            "event": event.client_event(),
            "read": read,
            "room_id": notified.room_id,
            "ts": notified.ts,
        }));
    }
    let mut answer = json!({ "notifications": notifications });
    if let Some(next) = page.next {
        answer["next_token"] = next.to_string().into();
    }
    Ok(Json(answer))
}
