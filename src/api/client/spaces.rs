//! Spaces (messaging-service): a space's rooms and subspaces.

use axum::Json;
use axum::extract::State;
use ruma::api::client::space::get_hierarchy;
use serde_json::Value;

use crate::gateway::{Result, Ruma};
use crate::services::AppState;
use crate::services::messaging::HierarchyQuery;

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy?suggested_only&max_depth&limit&from`
/// → `{rooms, next_batch?}`
pub async fn hierarchy(
    State(state): State<AppState>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<Json<Value>> {
    let user = &request.session()?.user_id;
    let body = &request.body;
    let query = HierarchyQuery {
        suggested_only: body.suggested_only,
        max_depth: body.max_depth.and_then(|d| usize::try_from(d).ok()),
        limit: body
            .limit
            .map_or(50, |l| usize::try_from(l).unwrap_or(100))
            .clamp(1, 100),
        from: body.from.clone(),
    };
    let answer = state
        .messaging
        .hierarchy(user, &body.room_id, &query)
        .await?;
    Ok(Json(answer))
}
