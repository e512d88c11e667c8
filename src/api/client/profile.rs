//! Public profiles (profile-service): anyone signed in reads them, only the owner writes.
//! Profiles are created from the event log when a user is created.

use axum::extract::State;
use ruma::api::client::profile::{
    delete_profile_field, get_profile, get_profile_field, set_profile_field,
};
use ruma::api::federation::query::get_profile_information;
use ruma::profile::ProfileFieldValue;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::account;
use crate::services::error::remote_error;
use crate::services::profile::Profile;
use crate::services::session::Session;

/// A user's profile: ours from the database, another server's users' from their server.
async fn found(state: &AppState, user_id: &ruma::UserId) -> Result<Profile> {
    if !state.is_ours(user_id.server_name()) {
        return remote(state, user_id).await;
    }
    let found = state.profiles.get(user_id.as_str())?;
    found.ok_or_else(|| Error::not_found("Profile not found"))
}

/// Asks the user's server (`/_matrix/federation/v1/query/profile`).
async fn remote(state: &AppState, user_id: &ruma::UserId) -> Result<Profile> {
    let client = state
        .federation
        .as_ref()
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let request = get_profile_information::v1::Request::new(user_id.to_owned());
    let answer = client
        .send(user_id.server_name(), request)
        .await
        .map_err(remote_error)?;
    let mut profile = Profile::default();
    for (field, value) in answer.data.iter() {
        match (field.as_str(), value.as_str()) {
            ("displayname", Some(name)) => profile.displayname = Some(name.to_owned()),
            ("avatar_url", Some(url)) => profile.avatar_url = Some(url.to_owned()),
            _ => {
                profile.fields.insert(field.clone(), value.clone());
            }
        }
    }
    Ok(profile)
}

fn owner(session: &Session, user_id: &ruma::UserId) -> Result<()> {
    if session.user_id != user_id {
        return Err(Error::forbidden("Cannot change another user's profile"));
    }
    Ok(())
}

/// `GET /_matrix/client/v3/profile/{userId}`: 404 for users without a profile.
pub async fn get_profile(
    State(state): State<AppState>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<RumaResponse<get_profile::v3::Response>> {
    let found = found(&state, &request.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = found.displayname {
        response.set("displayname".into(), name.into());
    }
    if let Some(url) = found.avatar_url {
        response.set("avatar_url".into(), url.into());
    }
    for (field, value) in found.fields {
        response.set(field, value);
    }
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/profile/{userId}/{field}` (`displayname`, `avatar_url`, others)
pub async fn get_field(
    State(state): State<AppState>,
    request: Ruma<get_profile_field::v3::Request>,
) -> Result<RumaResponse<get_profile_field::v3::Response>> {
    let body = &request.body;
    let found = found(&state, &body.user_id).await?;
    let field = body.field.as_str();
    let value = match field {
        "displayname" => found.displayname.map(Into::into),
        "avatar_url" => found.avatar_url.map(Into::into),
        _ => found.fields.get(field).cloned(),
    };
    let value = value.ok_or_else(|| Error::not_found(format!("No {field} set")))?;
    let value = ProfileFieldValue::new(field, value).map_err(Error::internal)?;
    Ok(RumaResponse(get_profile_field::v3::Response::new(value)))
}

/// `PUT /_matrix/client/v3/profile/{userId}/{field}`: the owner only; a new name or avatar
/// goes into every joined room.
pub async fn set_field(
    State(state): State<AppState>,
    request: Ruma<set_profile_field::v3::Request>,
) -> Result<RumaResponse<set_profile_field::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    owner(session, &body.user_id)?;
    let field = body.value.field_name();
    let value = body.value.value().into_owned();
    account::set_profile_field(&state, &body.user_id, field.as_str(), Some(value)).await?;
    Ok(RumaResponse(set_profile_field::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{field}`: the owner only.
pub async fn delete_field(
    State(state): State<AppState>,
    request: Ruma<delete_profile_field::v3::Request>,
) -> Result<RumaResponse<delete_profile_field::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    owner(session, &body.user_id)?;
    account::set_profile_field(&state, &body.user_id, body.field.as_str(), None).await?;
    Ok(RumaResponse(delete_profile_field::v3::Response::new()))
}
