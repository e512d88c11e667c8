//! The extractor for kith's own federation endpoints (contacts across servers), which
//! ruma has no types for: the X-Matrix check [`super::Ruma`] does for server endpoints,
//! and a JSON body parsed with serde.

use axum::extract::{FromRequest, Request};
use ruma::OwnedServerName;
use serde::de::DeserializeOwned;

use super::{Error, Result};
use crate::services::AppState;

/// The most a contacts request body may hold.
const LIMIT: usize = 64 * 1024;

pub struct Signed<T> {
    pub origin: OwnedServerName,
    pub body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Signed<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let (parts, body) = request.into_parts();
        let bytes = super::extract::read_body(&parts, body, LIMIT).await?;
        let origin = super::extract::authenticate_server(&parts, &bytes, state).await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| Error::body(e, &bytes))?;
        Ok(Signed { origin, body })
    }
}
