//! Public profiles (profile-service). Only reading for now; profiles are created from the
//! event log when a user is created.

use axum::extract::State;
use ruma::api::client::profile::get_profile;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::{AppState, profile};

/// `GET /_matrix/client/v3/profile/{userId}`: 404 for users without a profile.
pub async fn get_profile(
    State(state): State<AppState>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<RumaResponse<get_profile::v3::Response>> {
    let user_id = request.body.user_id.as_str();
    let found = profile::profile(&state.storage, user_id)?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = found.displayname {
        response.set("displayname".into(), name.into());
    }
    if let Some(url) = found.avatar_url {
        response.set("avatar_url".into(), url.into());
    }
    Ok(RumaResponse(response))
}
