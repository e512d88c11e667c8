//! `GET /_matrix/federation/v1/version`.

use ruma::api::federation::discovery::get_server_version;

use crate::gateway::{Result, Ruma, RumaResponse};

/// `GET /_matrix/federation/v1/version`: which software answers.
pub async fn version(
    _request: Ruma<get_server_version::v1::Request>,
) -> Result<RumaResponse<get_server_version::v1::Response>> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("kith".into());
    server.version = Some(env!("CARGO_PKG_VERSION").into());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(RumaResponse(response))
}
