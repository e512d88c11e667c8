//! A user's devices (session-service). Deleting needs the password again (UIA).

use axum::extract::State;
use ruma::api::client::device::{
    self as cs, delete_device, delete_devices, get_device, get_devices, update_device,
};
use ruma::{MilliSecondsSinceUnixEpoch, UInt};

use crate::events::RevokeReason;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::session::Device;

fn to_ruma(device_id: &str, device: Device) -> cs::Device {
    let mut out = cs::Device::new(device_id.into());
    out.display_name = device.display_name;
    out.last_seen_ip = device.last_seen_ip;
    out.last_seen_ts = Some(MilliSecondsSinceUnixEpoch(UInt::new_saturating(
        device.last_seen_ts,
    )));
    out
}

/// `GET /_matrix/client/v3/devices`
pub async fn list(
    State(state): State<AppState>,
    request: Ruma<get_devices::v3::Request>,
) -> Result<RumaResponse<get_devices::v3::Response>> {
    let session = request.session()?;
    let devices = state.sessions.devices(session.user_id.as_str())?;
    let devices = devices
        .into_iter()
        .map(|(id, device)| to_ruma(&id, device))
        .collect();
    Ok(RumaResponse(get_devices::v3::Response::new(devices)))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get(
    State(state): State<AppState>,
    request: Ruma<get_device::v3::Request>,
) -> Result<RumaResponse<get_device::v3::Response>> {
    let session = request.session()?;
    let device_id = request.body.device_id.as_str();
    let device = state
        .sessions
        .device(session.user_id.as_str(), device_id)?
        .ok_or_else(|| Error::not_found("Unknown device"))?;
    Ok(RumaResponse(get_device::v3::Response::new(to_ruma(
        device_id, device,
    ))))
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update(
    State(state): State<AppState>,
    request: Ruma<update_device::v3::Request>,
) -> Result<RumaResponse<update_device::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    if body.display_name.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(Error::invalid_param(
            "Device display names are at most 512 bytes",
        ));
    }
    state
        .sessions
        .rename(
            session.user_id.as_str(),
            body.device_id.as_str(),
            body.display_name.clone(),
        )
        .await?;
    Ok(RumaResponse(update_device::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`: UIA with the password.
pub async fn delete(
    State(state): State<AppState>,
    request: Ruma<delete_device::v3::Request>,
) -> Result<RumaResponse<delete_device::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let user_id = session.user_id.as_str();
    if state
        .sessions
        .device(user_id, body.device_id.as_str())?
        .is_none()
    {
        return Err(Error::not_found("Unknown device"));
    }
    state
        .auth
        .uia(
            "delete_device",
            state.auth.reauth_flows(&session.user_id)?,
            body.auth.as_ref(),
            Some(&session.user_id),
        )
        .await?;
    let ids = [body.device_id.to_string()];
    state
        .sessions
        .remove_devices(user_id, &ids, RevokeReason::DeviceDeleted)
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

/// `POST /_matrix/client/v3/delete_devices`: UIA with the password; unknown IDs are skipped.
pub async fn delete_many(
    State(state): State<AppState>,
    request: Ruma<delete_devices::v3::Request>,
) -> Result<RumaResponse<delete_devices::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    state
        .auth
        .uia(
            "delete_devices",
            state.auth.reauth_flows(&session.user_id)?,
            body.auth.as_ref(),
            Some(&session.user_id),
        )
        .await?;
    let ids: Vec<String> = body.devices.iter().map(|d| d.to_string()).collect();
    state
        .sessions
        .remove_devices(session.user_id.as_str(), &ids, RevokeReason::DeviceDeleted)
        .await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
