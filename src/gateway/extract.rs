//! The one extractor every Matrix endpoint uses: it enforces the body limit, authenticates
//! the request as the endpoint's ruma metadata demands, and parses it into the ruma type.
//! [`RumaResponse`] turns a ruma response back into HTTP.

use std::any::TypeId;
use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::request::Parts;
use ruma::api::auth_scheme::{self, extract_bearer_or_query_token};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::federation::authentication::ServerSignatures;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};
use ruma::{OwnedServerName, ServerName};

use super::{Error, Result};
use crate::services::AppState;
use crate::services::session::Session;

/// A parsed, authenticated Matrix request.
pub struct Ruma<T> {
    pub body: T,
    /// The caller, for endpoints that take an access token.
    pub session: Option<Session>,
    /// The caller's address, for rate limits and `last_seen_ip`.
    pub client_ip: IpAddr,
    /// The body as sent, for what is stored verbatim (filters).
    pub raw_body: Bytes,
    /// The server that signed the request, for federation endpoints.
    pub origin: Option<OwnedServerName>,
}

impl<T> Ruma<T> {
    /// The caller of an endpoint whose auth scheme requires an access token.
    pub fn session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or_else(Error::missing_token)
    }

    /// The calling server of a federation endpoint.
    pub fn origin(&self) -> Result<&ServerName> {
        self.origin
            .as_deref()
            .ok_or_else(|| Error::unauthorized("Missing X-Matrix authorization"))
    }
}

/// A transaction holds up to 50 PDUs of up to 64 KiB each, and EDUs.
const FEDERATION_BODY_LIMIT: usize = 8 << 20;

/// What the gateway does about access tokens for a given ruma auth scheme.
pub trait AuthPolicy {
    /// `Some(true)`: required; `Some(false)`: optional; `None`: ignored.
    const ACCESS_TOKEN: Option<bool>;
    /// Whether the request must be X-Matrix-signed by a server.
    const SERVER_SIGNATURES: bool = false;
}

impl AuthPolicy for ServerSignatures {
    const ACCESS_TOKEN: Option<bool> = None;
    const SERVER_SIGNATURES: bool = true;
}

impl AuthPolicy for auth_scheme::AccessToken {
    const ACCESS_TOKEN: Option<bool> = Some(true);
}
impl AuthPolicy for auth_scheme::AccessTokenOptional {
    const ACCESS_TOKEN: Option<bool> = Some(false);
}
impl AuthPolicy for auth_scheme::NoAuthentication {
    const ACCESS_TOKEN: Option<bool> = None;
}
impl AuthPolicy for auth_scheme::NoAccessToken {
    const ACCESS_TOKEN: Option<bool> = None;
}
/// Login and registration accept an application-service token; kith has no application
/// services yet, so there is nothing to check.
impl AuthPolicy for auth_scheme::AppserviceTokenOptional {
    const ACCESS_TOKEN: Option<bool> = None;
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthPolicy,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        let mut path_args = path_args(&mut parts, state).await?;
        if parts.extensions.get::<super::EmptyLastParam>().is_some() {
            path_args.push(String::new());
        }
        let client_ip = super::ClientIp::of(&parts);

        let session = match T::Authentication::ACCESS_TOKEN {
            None => None,
            Some(required) => {
                let probe = http::Request::from_parts(parts.clone(), ());
                match extract_bearer_or_query_token(&probe)
                    .map_err(|_| Error::unknown_token(false))?
                {
                    Some(token) => Some(state.sessions.authenticate(&token).await?),
                    None if required => return Err(Error::missing_token()),
                    None => None,
                }
            }
        };

        // Only now the body: a caller without a valid token never gets a large upload
        // buffered.
        let limit = match T::Authentication::SERVER_SIGNATURES {
            true => FEDERATION_BODY_LIMIT,
            false => body_limit::<T>(state),
        };
        let bytes = read_body(&parts, body, limit).await?;
        let origin = match T::Authentication::SERVER_SIGNATURES {
            true => Some(authenticate_server(&parts, &bytes, state).await?),
            false => None,
        };

        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        refuse_what_ruma_cannot_take::<T>(&bytes)?;
        let parse = |bytes: &[u8]| {
            let request = http::Request::from_parts(parts.clone(), bytes);
            // A deserializer that panics on some input (a bug upstream) must not make a
            // client's bad body a 500: it is a bad body.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                T::try_from_http_request(request, &args)
            }))
            .unwrap_or_else(|_| {
                let error = serde::de::Error::custom("Malformed request body");
                Err(FromHttpRequestError::Deserialization(
                    DeserializationError::Json(error),
                ))
            })
        };
        let body = match parse(&bytes) {
            Ok(body) => body,
            Err(error) => {
                // Synapse takes no body as `{}` where every field is optional (matrix-nio
                // joins without one), and an `auth` object with neither `type` nor
                // `session` as no auth at all (matrix-nio's token registration sends one);
                // ruma rejects both.
                let fixed = if bytes.is_empty() && empty_body_is_object::<T>() {
                    Some(b"{}".to_vec())
                } else {
                    without_empty_auth(&bytes)
                };
                match fixed {
                    Some(fixed) => parse(&fixed).map_err(|_| parse_error(error, &bytes))?,
                    None => return Err(parse_error(error, &bytes)),
                }
            }
        };
        Ok(Ruma {
            body,
            session,
            client_ip,
            raw_body: bytes,
            origin,
        })
    }
}

/// Checks a federation request's X-Matrix signature (over the URI as sent) and returns
/// its origin: 401 `M_UNAUTHORIZED` for anything unsigned, forged, or not for us.
pub(super) async fn authenticate_server(
    parts: &Parts,
    body: &[u8],
    state: &AppState,
) -> Result<OwnedServerName> {
    let Some(client) = &state.federation else {
        return Err(Error::forbidden("Federation is disabled on this server"));
    };
    let mut request = http::Request::builder().method(parts.method.clone());
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    request = request.uri(uri.clone());
    for (name, value) in &parts.headers {
        request = request.header(name, value);
    }
    let request = request.body(body).map_err(Error::internal)?;
    let origin = client.authenticate(&request).await.map_err(|e| {
        tracing::info!("refused a federation request: {e}");
        Error::unauthorized(e.to_string())
    })?;
    state.messaging.peer_alive(origin.as_str()).await;
    Ok(origin)
}

async fn path_args(parts: &mut Parts, state: &AppState) -> Result<Vec<String>> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| Error::invalid_param("Malformed path parameter"))?;
    Ok(params.iter().map(|(_, value)| value.to_owned()).collect())
}

/// Reads the whole body, refusing more than `limit` bytes with 413 `M_TOO_LARGE`.
pub(super) async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let cause = e.into_inner();
        if cause
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            Error::too_large(limit)
        } else {
            Error::bad_json("Could not read the request body")
        }
    })
}

fn parse_error(error: FromHttpRequestError, body: &[u8]) -> Error {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        }
        FromHttpRequestError::Deserialization(error) => match error {
            DeserializationError::Json(e) => Error::body(e, body),
            DeserializationError::Query(e) => Error::invalid_param(format!("Invalid query: {e}")),
            DeserializationError::Ident(e) => {
                Error::invalid_param(format!("Invalid identifier: {e}"))
            }
            other => Error::bad_json(other.to_string()),
        },
        other => Error::bad_json(other.to_string()),
    }
}

/// The largest body `T` takes: uploads may be as large as media allows.
fn body_limit<T: 'static>(state: &AppState) -> usize {
    use ruma::api::client::media::{create_content, create_content_async};
    let uploads = [
        TypeId::of::<create_content::v3::Request>(),
        TypeId::of::<create_content_async::v3::Request>(),
    ];
    if uploads.contains(&TypeId::of::<T>()) {
        state.media.max_upload_size
    } else {
        state.config.limits.max_request_size
    }
}

/// Refuses, before ruma parses it, a body ruma would panic on: ruma 0.17's `LoginInfo`
/// indexes its object by `"type"` unchecked, so a login body without one aborts the parse.
fn refuse_what_ruma_cannot_take<T: 'static>(body: &[u8]) -> Result<()> {
    use ruma::api::client::session::login;
    if TypeId::of::<T>() != TypeId::of::<login::v3::Request>() {
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::body(e, body))?;
    match value.get("type").and_then(serde_json::Value::as_str) {
        Some(_) => Ok(()),
        None => Err(Error::bad_json("The login needs a \"type\", a string")),
    }
}

/// Whether `T` is a request whose body fields are all optional and that clients send with
/// no body at all. Elsewhere an empty body stays an error, so an empty send is never an
/// event with empty content.
fn empty_body_is_object<T: 'static>() -> bool {
    use ruma::api::client::membership::{
        forget_room, join_room_by_id, join_room_by_id_or_alias, leave_room,
    };
    use ruma::api::client::receipt::create_receipt;
    [
        TypeId::of::<join_room_by_id::v3::Request>(),
        TypeId::of::<join_room_by_id_or_alias::v3::Request>(),
        TypeId::of::<leave_room::v3::Request>(),
        TypeId::of::<forget_room::v3::Request>(),
        TypeId::of::<create_receipt::v3::Request>(),
    ]
    .contains(&TypeId::of::<T>())
}

/// The body with an `auth` object that has neither `type` nor `session` removed, if it has one.
fn without_empty_auth(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    let auth = object.get("auth")?.as_object()?;
    if auth.contains_key("type") || auth.contains_key("session") {
        return None;
    }
    object.remove("auth");
    serde_json::to_vec(&value).ok()
}

/// A ruma response as an HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response
                .map(|body| Body::from(body.freeze()))
                .into_response(),
            Err(e) => Error::internal(e).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn drops_only_meaningless_auth() {
        let fixed = super::without_empty_auth(
            br#"{"username":"a","auth":{"initial_device_display_name":"x"}}"#,
        );
        assert_eq!(fixed.as_deref(), Some(&br#"{"username":"a"}"#[..]));
        assert!(super::without_empty_auth(br#"{"auth":{"type":"m.login.dummy"}}"#).is_none());
        assert!(super::without_empty_auth(br#"{"auth":{"session":"s"}}"#).is_none());
        assert!(super::without_empty_auth(b"not json").is_none());
    }
}
