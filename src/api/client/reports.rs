//! Reporting events, rooms and users to the server's admins (messaging-service keeps them).

use axum::extract::State;
use ruma::api::client::reporting::report_user;
use ruma::api::client::room::{report_content, report_room};

use crate::gateway::{Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::Reported;

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}` `{reason?}`
pub async fn report_event(
    State(state): State<AppState>,
    request: Ruma<report_content::v3::Request>,
) -> Result<RumaResponse<report_content::v3::Response>> {
    let reporter = &request.session()?.user_id;
    let body = &request.body;
    let about = Reported::Event {
        room_id: body.room_id.to_string(),
        event_id: body.event_id.to_string(),
    };
    (state.messaging)
        .report(reporter, about, body.reason.clone())
        .await?;
    Ok(RumaResponse(report_content::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report` `{reason}`
pub async fn report_room(
    State(state): State<AppState>,
    request: Ruma<report_room::v3::Request>,
) -> Result<RumaResponse<report_room::v3::Response>> {
    let reporter = &request.session()?.user_id;
    let body = &request.body;
    let about = Reported::Room {
        room_id: body.room_id.to_string(),
    };
    (state.messaging)
        .report(reporter, about, Some(body.reason.clone()))
        .await?;
    Ok(RumaResponse(report_room::v3::Response::new()))
}

/// `POST /_matrix/client/v3/users/{userId}/report` `{reason}`
pub async fn report_user(
    State(state): State<AppState>,
    request: Ruma<report_user::v3::Request>,
) -> Result<RumaResponse<report_user::v3::Response>> {
    let reporter = &request.session()?.user_id;
    let body = &request.body;
    let about = Reported::User {
        user_id: body.user_id.to_string(),
    };
    (state.messaging)
        .report(reporter, about, Some(body.reason.clone()))
        .await?;
    Ok(RumaResponse(report_user::v3::Response::new()))
}
