//! Account changes that need the password again: changing it, deactivating; and resetting
//! a forgotten password through a verified email address.

use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, change_password, deactivate};

use crate::gateway::{Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::account;
use crate::services::auth::UiaFlows;

const RESET_FLOWS: UiaFlows = &[&["m.login.email.identity"]];

/// `POST /_matrix/client/v3/account/password`: UIA with the old password; other devices are
/// logged out unless `logout_devices` is false. Without an access token, a password reset:
/// UIA with a validated `account/password/email/requestToken` session.
pub async fn change_password(
    State(state): State<AppState>,
    request: Ruma<change_password::v3::Request>,
) -> Result<RumaResponse<change_password::v3::Response>> {
    let body = &request.body;
    let Some(session) = &request.session else {
        return reset_password(&state, body).await;
    };
    let user_id = &session.user_id;
    let uia = state.auth.uia(
        "change_password",
        state.auth.reauth_flows(user_id)?,
        body.auth.as_ref(),
        Some(user_id),
    );
    uia.await?;
    let keep = body.logout_devices.then_some(session.device_id.as_str());
    account::change_password(
        &state,
        user_id,
        &body.new_password,
        body.logout_devices,
        keep,
    )
    .await?;
    Ok(RumaResponse(change_password::v3::Response::new()))
}

async fn reset_password(
    state: &AppState,
    body: &change_password::v3::Request,
) -> Result<RumaResponse<change_password::v3::Response>> {
    let auth = &state.auth;
    if auth.mailer.is_none() {
        return Err(crate::gateway::Error::missing_token());
    }
    let uia = auth
        .uia("reset_password", RESET_FLOWS, body.auth.as_ref(), None)
        .await?;
    let proof = uia
        .email
        .as_ref()
        .ok_or_else(|| crate::gateway::Error::internal("email stage completed without a proof"))?;
    let user_id = auth
        .email_owner(&proof.address)?
        .ok_or_else(|| crate::gateway::Error::forbidden("No account has this email address"))?;
    account::reset_password(
        state,
        &user_id,
        &body.new_password,
        body.logout_devices,
        proof,
    )
    .await?;
    Ok(RumaResponse(change_password::v3::Response::new()))
}

/// `POST /_matrix/client/v3/account/deactivate`: UIA with the password; every session ends
/// in the same write as the deactivation.
pub async fn deactivate(
    State(state): State<AppState>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<RumaResponse<deactivate::v3::Response>> {
    let session = request.session()?;
    let auth = request.body.auth.as_ref();
    state
        .auth
        .uia(
            "deactivate",
            state.auth.reauth_flows(&session.user_id)?,
            auth,
            Some(&session.user_id),
        )
        .await?;
    account::deactivate(&state, &session.user_id).await?;
    let unbind = ThirdPartyIdRemovalStatus::NoSupport;
    Ok(RumaResponse(deactivate::v3::Response::new(unbind)))
}
