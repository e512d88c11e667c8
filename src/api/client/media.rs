//! Media: uploads (`/_matrix/media/v3/upload`, and `/v1/create` then a PUT), authenticated
//! downloads and thumbnails under `/_matrix/client/v1/media`, and the legacy unauthenticated
//! `/_matrix/media/v3` reads that older clients still use. Only types a browser cannot run
//! are served inline; everything else is an attachment, under a sandboxing CSP.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use ruma::api::client::authenticated_media as v1;
use ruma::api::client::media::{self as v3, get_content_thumbnail::v3::Method};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedMxcUri, UInt};

use crate::gateway::{Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::media::{Content, Fit};

/// Types served `inline`, as the spec lists them; nothing here can run script.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// What Synapse sends with media, so a file opened directly cannot act as a page.
const MEDIA_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                         style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// `filename*` per RFC 6266/5987: UTF-8, percent-encoded outside the safe characters.
fn encoded_filename(name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'!'
            | b'#'
            | b'$'
            | b'&'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("filename*=utf-8''{encoded}")
}

fn serve(content: Content, filename: Option<&str>) -> Response {
    let content_type = content
        .content_type
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut disposition = if INLINE_TYPES.contains(&essence.as_str()) {
        "inline".to_owned()
    } else {
        "attachment".to_owned()
    };
    if let Some(name) = filename.or(content.filename.as_deref()) {
        disposition = format!("{disposition}; {}", encoded_filename(name));
    }
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CONTENT_SECURITY_POLICY, MEDIA_CSP.to_owned()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "cross-origin".to_owned(),
        ),
        (header::CACHE_CONTROL, "private, max-age=86400".to_owned()),
    ];
    let mut response = (headers, content.bytes).into_response();
    // A header value a client could not have put there (a control character in a name)
    // falls back to the bare disposition rather than failing.
    if response
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .is_none()
    {
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_static("attachment"),
        );
    }
    response
}

/// `POST /_matrix/media/v3/upload` (`filename`, `Content-Type`)
pub async fn upload(
    State(state): State<AppState>,
    request: Ruma<v3::create_content::v3::Request>,
) -> Result<RumaResponse<v3::create_content::v3::Response>> {
    let user = request.session()?.user_id.clone();
    let body = request.body;
    let uri = state
        .media
        .upload(user.as_str(), body.file, body.content_type, body.filename)
        .await?;
    Ok(RumaResponse(v3::create_content::v3::Response::new(
        OwnedMxcUri::from(uri),
    )))
}

/// `POST /_matrix/media/v1/create`: an ID now, the content within 24 hours.
pub async fn create(
    State(state): State<AppState>,
    request: Ruma<v3::create_mxc_uri::v1::Request>,
) -> Result<RumaResponse<v3::create_mxc_uri::v1::Response>> {
    let session = request.session()?;
    let (uri, expires) = state.media.create(session.user_id.as_str()).await?;
    let mut response = v3::create_mxc_uri::v1::Response::new(OwnedMxcUri::from(uri));
    response.unused_expires_at = Some(MilliSecondsSinceUnixEpoch(UInt::new_saturating(expires)));
    Ok(RumaResponse(response))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the content of a `/create`d ID.
pub async fn upload_reserved(
    State(state): State<AppState>,
    request: Ruma<v3::create_content_async::v3::Request>,
) -> Result<axum::Json<serde_json::Value>> {
    let session = request.session()?.clone();
    let body = request.body;
    state
        .media
        .upload_reserved(
            session.user_id.as_str(),
            body.server_name.as_str(),
            &body.media_id,
            body.file,
            body.content_type,
            body.filename,
        )
        .await?;
    // ruma's response type for this endpoint cannot be built outside ruma; it is `{}`.
    Ok(axum::Json(serde_json::json!({})))
}

/// For the authenticated endpoints: another server's file is fetched first, for the
/// asking user (the legacy endpoints serve only what is here).
async fn fetch<T>(state: &AppState, request: &Ruma<T>, server: &str, media_id: &str) -> Result<()> {
    let user = request.session()?.user_id.as_str();
    Ok(state.media.fetch_for(user, server, media_id).await?)
}

async fn download(
    state: &AppState,
    server: &str,
    media_id: &str,
    filename: Option<&str>,
) -> Result<Response> {
    let (_, content) = state.media.content(server, media_id).await?;
    Ok(serve(content, filename))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub async fn get(
    State(state): State<AppState>,
    request: Ruma<v1::get_content::v1::Request>,
) -> Result<Response> {
    let body = &request.body;
    fetch(&state, &request, body.server_name.as_str(), &body.media_id).await?;
    download(&state, body.server_name.as_str(), &body.media_id, None).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub async fn get_named(
    State(state): State<AppState>,
    request: Ruma<v1::get_content_as_filename::v1::Request>,
) -> Result<Response> {
    let body = &request.body;
    fetch(&state, &request, body.server_name.as_str(), &body.media_id).await?;
    download(
        &state,
        body.server_name.as_str(),
        &body.media_id,
        Some(&body.filename),
    )
    .await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (legacy, unauthenticated):
/// this server's media and what it already fetched, nothing fetched for it.
#[allow(deprecated)]
pub async fn legacy_get(
    State(state): State<AppState>,
    request: Ruma<v3::get_content::v3::Request>,
) -> Result<Response> {
    let body = &request.body;
    let server = body.server_name.as_str();
    download(&state, server, &body.media_id, None).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (legacy)
#[allow(deprecated)]
pub async fn legacy_get_named(
    State(state): State<AppState>,
    request: Ruma<v3::get_content_as_filename::v3::Request>,
) -> Result<Response> {
    let body = &request.body;
    let server = body.server_name.as_str();
    download(&state, server, &body.media_id, Some(&body.filename)).await
}

async fn thumbnail(
    state: &AppState,
    id: (&str, &str),
    size: (UInt, UInt),
    method: Option<&Method>,
) -> Result<Response> {
    let fit = Fit::of(method)?;
    let content = state.media.thumbnail(id, size, fit).await?;
    Ok(serve(content, None))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}` (`width`, `height`,
/// `method` crop | scale)
pub async fn get_thumbnail(
    State(state): State<AppState>,
    request: Ruma<v1::get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    let body = &request.body;
    let id = (body.server_name.as_str(), body.media_id.as_str());
    fetch(&state, &request, id.0, id.1).await?;
    thumbnail(&state, id, (body.width, body.height), body.method.as_ref()).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (legacy)
#[allow(deprecated)]
pub async fn legacy_get_thumbnail(
    State(state): State<AppState>,
    request: Ruma<v3::get_content_thumbnail::v3::Request>,
) -> Result<Response> {
    let body = &request.body;
    let id = (body.server_name.as_str(), body.media_id.as_str());
    thumbnail(&state, id, (body.width, body.height), body.method.as_ref()).await
}

/// `GET /_matrix/client/v1/media/config`
pub async fn config(
    State(state): State<AppState>,
    request: Ruma<v1::get_media_config::v1::Request>,
) -> Result<RumaResponse<v1::get_media_config::v1::Response>> {
    request.session()?;
    let size = UInt::new_saturating(state.media.max_upload_size as u64);
    Ok(RumaResponse(v1::get_media_config::v1::Response::new(size)))
}

/// `GET /_matrix/media/v3/config` (legacy)
#[allow(deprecated)]
pub async fn legacy_config(
    State(state): State<AppState>,
    request: Ruma<v3::get_media_config::v3::Request>,
) -> Result<RumaResponse<v3::get_media_config::v3::Response>> {
    request.session()?;
    let size = UInt::new_saturating(state.media.max_upload_size as u64);
    Ok(RumaResponse(v3::get_media_config::v3::Response::new(size)))
}
