//! Endpoints of features a fresh kith has nothing behind yet, answered as an unconfigured
//! Synapse answers them, so clients that call them at start carry on.

use axum::Json;
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};
use serde_json::{Value, json};

use crate::gateway::{Error, Result, Ruma};

/// `GET /_matrix/client/v3/thirdparty/protocols`: no bridges, so `{}`.
pub async fn protocols(request: Ruma<get_protocols::v3::Request>) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`: no bridge speaks any protocol.
pub async fn protocol(request: Ruma<get_protocol::v3::Request>) -> Result<Json<Value>> {
    request.session()?;
    Err(Error::not_found("Unknown protocol"))
}

/// `GET /_matrix/client/v3/thirdparty/user/{protocol}`: no bridge knows anyone, so `[]`
/// (Element looks up a SIP "virtual user" for every direct chat it opens).
pub async fn users_for_protocol(
    request: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!([])))
}

/// `GET /_matrix/client/v3/thirdparty/location/{protocol}`: `[]`.
pub async fn locations_for_protocol(
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!([])))
}

/// `GET /_matrix/client/v3/thirdparty/user?userid=`: `[]`.
pub async fn users_for_user_id(
    request: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!([])))
}

/// `GET /_matrix/client/v3/thirdparty/location?alias=`: `[]`.
pub async fn locations_for_alias(
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<Json<Value>> {
    request.session()?;
    Ok(Json(json!([])))
}
