//! What clients need for calls: the TURN server and the MatrixRTC foci (Element Call).

use axum::Json;
use axum::extract::State;
use ruma::api::client::voip::get_turn_server_info;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::gateway::{Authed, Result, Ruma};
use crate::services::AppState;

/// `GET /_matrix/client/v3/voip/turnServer`: `[turn]`'s server with credentials for the
/// user, or `{}` when none is configured (as Synapse).
pub async fn turn_server(
    State(state): State<AppState>,
    request: Ruma<get_turn_server_info::v3::Request>,
) -> Result<Json<Value>> {
    let user = &request.session()?.user_id;
    Ok(Json(state.turn_server(user)))
}

/// `GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports` → `{rtc_transports}`:
/// the MatrixRTC foci (`[well_known] rtc_foci`), for Element Call.
pub async fn rtc_transports(
    State(state): State<AppState>,
    _request: Authed<IgnoredAny>,
) -> Json<Value> {
    Json(json!({ "rtc_transports": state.rtc_foci() }))
}
