//! Our media, for other servers' users (through their servers): the multipart answers of
//! `/_matrix/federation/v1/media/...`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ruma::api::federation::authenticated_media::{get_content, get_content_thumbnail};

use crate::gateway::{Result, Ruma};
use crate::services::AppState;
use crate::services::media::{Content, Fit};

fn multipart(content: Content) -> Response {
    let kind = content
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let boundary = crate::util::random_string(24);
    let (header, body) = kith_federation::media::encode_multipart(&kind, &content.bytes, &boundary);
    ([(http::header::CONTENT_TYPE, header)], body).into_response()
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: a file uploaded here.
pub async fn download(
    State(state): State<AppState>,
    request: Ruma<get_content::v1::Request>,
) -> Result<Response> {
    request.origin()?;
    let own = state.server_name.as_str();
    let (_, content) = state.media.content(own, &request.body.media_id).await?;
    Ok(multipart(content))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}` (`width`, `height`, `method`)
pub async fn thumbnail(
    State(state): State<AppState>,
    request: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    request.origin()?;
    let body = &request.body;
    let fit = Fit::of(body.method.as_ref())?;
    let id = (state.server_name.as_str(), body.media_id.as_str());
    let size = (body.width, body.height);
    let content = state.media.thumbnail(id, size, fit).await?;
    Ok(multipart(content))
}
