//! Endpoints of features a fresh kith has nothing behind yet, answered as an unconfigured
//! Synapse answers them, so clients that call them at start carry on.

use axum::Json;
use ruma::api::client::thirdparty::get_protocols;
use ruma::api::client::voip::get_turn_server_info;
use serde_json::{Value, json};

use crate::gateway::{Result, Ruma};

/// `GET /_matrix/client/v3/voip/turnServer`: no TURN server configured, so `{}`.
pub async fn turn_server(request: Ruma<get_turn_server_info::v3::Request>) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/thirdparty/protocols`: no bridges, so `{}`.
pub async fn protocols(request: Ruma<get_protocols::v3::Request>) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!({})))
}
