//! Our signing key, for other servers.

use axum::extract::State;
use ruma::api::federation::discovery::get_server_keys;
use ruma::serde::Raw;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;

/// `GET /_matrix/key/v2/server`: the self-signed key document.
pub async fn server_keys(
    State(state): State<AppState>,
    _request: Ruma<get_server_keys::v2::Request>,
) -> Result<RumaResponse<get_server_keys::v2::Response>> {
    let document = state.keys.key_document();
    let raw = serde_json::value::to_raw_value(&document).map_err(Error::internal)?;
    Ok(RumaResponse(get_server_keys::v2::Response::new(
        Raw::from_json(raw),
    )))
}
