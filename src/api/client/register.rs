//! Registration (auth-service): the flows are auth's, the account and its first session
//! one write of [`crate::services::account::register`].

use axum::extract::State;
use http::StatusCode;
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability, register,
};

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::session::NewDevice;
use crate::services::{AppState, account};

/// `POST /_matrix/client/v3/register`
pub async fn register(
    State(state): State<AppState>,
    request: Ruma<register::v3::Request>,
) -> Result<RumaResponse<register::v3::Response>> {
    let body = &request.body;
    let flows = state.auth.registration_flows()?;
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access is disabled",
        ));
    }
    let auth = &state.auth;
    // Check the name before any auth, so clients can tell the user at once (as Synapse does).
    if let Some(username) = &body.username {
        auth.check_available(username)?;
    }
    let uia = auth
        .uia("register", flows, body.auth.as_ref(), None)
        .await?;
    let password = body
        .password
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing password"))?;
    let device = (!body.inhibit_login).then(|| NewDevice {
        device_id: body.device_id.as_ref().map(|d| d.as_str()),
        display_name: body.initial_device_display_name.clone(),
        want_refresh: body.refresh_token,
        ip: request.client_ip,
    });
    let username = body.username.as_deref();
    let (user_id, signed_in) =
        account::register(&state, request.client_ip, username, password, &uia, device).await?;
    let mut response = register::v3::Response::new(user_id);
    if let Some((session, tokens)) = signed_in {
        response.access_token = Some(tokens.access_token);
        response.device_id = Some(session.device_id);
        response.refresh_token = tokens.refresh_token;
        response.expires_in = tokens.expires_in;
    }
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/register/available`
pub async fn available(
    State(state): State<AppState>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<RumaResponse<get_username_availability::v3::Response>> {
    state.auth.check_available(&request.body.username)?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn token_validity(
    State(state): State<AppState>,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<RumaResponse<check_registration_token_validity::v1::Response>> {
    let valid = state.auth.registration_token_valid(&request.body.token)?;
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}
