//! What a client asks before anything else: versions, well-known, capabilities.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::api::client::discovery::get_capabilities::v3::{
    Capabilities, ProfileFieldsCapability, RoomVersionStability, RoomVersionsCapability,
};
use ruma::api::client::discovery::{discover_homeserver, get_capabilities, get_supported_versions};
use ruma::api::federation::discovery::discover_homeserver as server_discovery;
use ruma::{OwnedServerName, RoomVersionId};

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;

/// The spec versions advertised. Each switches client behaviour on, so only versions whose
/// required endpoints kith serves (or will serve in the same release) are listed.
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11",
];

/// `GET /_matrix/client/versions`
pub async fn versions(
    _request: Ruma<get_supported_versions::Request>,
) -> RumaResponse<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| v.to_string()).collect());
    response.unstable_features = BTreeMap::from([
        ("org.kith.contacts".to_owned(), true),
        // Element Web sets up cross-signing at first login only where this is set (as
        // Synapse does); without it the Rust crypto finds no identity of its own user and
        // re-queries its keys in a loop.
        ("org.matrix.e2e_cross_signing".to_owned(), true),
        // Simplified sliding sync (MSC4186): Element X signs in only where this is set.
        ("org.matrix.simplified_msc3575".to_owned(), true),
    ]);
    RumaResponse(response)
}

/// `GET /.well-known/matrix/client`
pub async fn well_known_client(
    State(state): State<AppState>,
    _request: Ruma<discover_homeserver::Request>,
) -> axum::Json<serde_json::Value> {
    let mut answer = serde_json::json!({
        "m.homeserver": { "base_url": state.auth.public_baseurl() },
    });
    // Element Call finds its MatrixRTC focus here.
    if !state.rtc_foci().is_empty() {
        answer["org.matrix.msc4143.rtc_foci"] = state.rtc_foci().into();
    }
    axum::Json(answer)
}

/// `GET /.well-known/matrix/server`: only when delegation is configured, else 404 (Synapse).
pub async fn well_known_server(
    State(state): State<AppState>,
    _request: Ruma<server_discovery::Request>,
) -> Result<RumaResponse<server_discovery::Response>> {
    let server = state
        .config
        .well_known
        .server
        .as_deref()
        .ok_or_else(|| Error::not_found("No server delegation configured"))?;
    let server = OwnedServerName::try_from(server).map_err(Error::internal)?;
    Ok(RumaResponse(server_discovery::Response::new(server)))
}

/// `GET /_matrix/client/v3/capabilities`
pub async fn capabilities(
    State(state): State<AppState>,
    _request: Ruma<get_capabilities::v3::Request>,
) -> Result<RumaResponse<get_capabilities::v3::Response>> {
    let available = [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12]
        .into_iter()
        .map(|v| (v, RoomVersionStability::Stable))
        .collect();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(RoomVersionId::V12, available);
    capabilities.change_password.enabled = true;
    #[allow(deprecated)] // still what clients before v1.16 read
    {
        capabilities.set_displayname.enabled = true;
        capabilities.set_avatar_url.enabled = true;
    }
    capabilities.profile_fields = Some(ProfileFieldsCapability::new(true));
    // Email addresses can be added only when kith can send mail; clients hide them otherwise.
    capabilities.thirdparty_id_changes.enabled = state.auth.mailer.is_some();
    let policy = state.contacts.dm_policy().as_str();
    let contacts = serde_json::json!({ "enabled": true, "dm_requires_friendship": policy });
    capabilities
        .set("org.kith.contacts", contacts)
        .map_err(Error::internal)?;
    Ok(RumaResponse(get_capabilities::v3::Response::new(
        capabilities,
    )))
}
