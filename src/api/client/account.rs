//! Account changes that need the password again: changing it, deactivating.

use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, change_password, deactivate};

use crate::events::RevokeReason;
use crate::gateway::{Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::auth::{UiaFlows, password};

pub const PASSWORD_FLOWS: UiaFlows = &[&["m.login.password"]];

/// `POST /_matrix/client/v3/account/password`: UIA with the old password; other devices are
/// logged out unless `logout_devices` is false.
pub async fn change_password(
    State(state): State<AppState>,
    request: Ruma<change_password::v3::Request>,
) -> Result<RumaResponse<change_password::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let uia = state
        .auth
        .uia(
            "change_password",
            PASSWORD_FLOWS,
            body.auth.as_ref(),
            Some(&session.user_id),
        )
        .await?;
    let hash = password::hash(&body.new_password).await?;
    let _guard = state.auth.registering().await;
    let mut batch = state.storage.batch();
    uia.finish_into(&mut batch)?;
    state
        .auth
        .set_password_into(&mut batch, &session.user_id, hash)?;
    if body.logout_devices {
        let keep = Some(session.device_id.as_str());
        state
            .sessions
            .remove_all_devices(
                batch,
                session.user_id.as_str(),
                keep,
                RevokeReason::PasswordChanged,
            )
            .await?;
    } else {
        state.storage.commit(batch).await?;
    }
    Ok(RumaResponse(change_password::v3::Response::new()))
}

/// `POST /_matrix/client/v3/account/deactivate`: UIA with the password; every session ends
/// in the same write as the deactivation.
pub async fn deactivate(
    State(state): State<AppState>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<RumaResponse<deactivate::v3::Response>> {
    let session = request.session()?;
    let uia = state
        .auth
        .uia(
            "deactivate",
            PASSWORD_FLOWS,
            request.body.auth.as_ref(),
            Some(&session.user_id),
        )
        .await?;
    let _guard = state.auth.registering().await;
    let mut batch = state.storage.batch();
    uia.finish_into(&mut batch)?;
    state.auth.deactivate_into(&mut batch, &session.user_id)?;
    state
        .sessions
        .remove_all_devices(
            batch,
            session.user_id.as_str(),
            None,
            RevokeReason::Deactivated,
        )
        .await?;
    Ok(RumaResponse(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}
