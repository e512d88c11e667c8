//! The HTTP API: one handler per endpoint, a file per area, each handler's route in its doc
//! line. [`router`] is the whole surface kith serves (also listed in `spec/README.md`).

pub mod admin;
mod client;
mod server;

use axum::Router;
use ruma::api::client::{
    account, device, discovery, membership, message, profile, room, session, state as room_state,
};
use ruma::api::federation::discovery::{discover_homeserver as server_discovery, get_server_keys};

use crate::gateway::{self, RumaRouter};
use crate::services::AppState;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        // discovery
        .ruma::<discovery::get_supported_versions::Request, _, _>(client::discovery::versions)
        .ruma::<discovery::discover_homeserver::Request, _, _>(client::discovery::well_known_client)
        .ruma::<discovery::get_capabilities::v3::Request, _, _>(client::discovery::capabilities)
        .ruma::<server_discovery::Request, _, _>(client::discovery::well_known_server)
        // auth-service: registration and accounts
        .ruma::<account::register::v3::Request, _, _>(client::register::register)
        .ruma::<account::get_username_availability::v3::Request, _, _>(client::register::available)
        .ruma::<account::check_registration_token_validity::v1::Request, _, _>(
            client::register::token_validity,
        )
        .ruma::<account::change_password::v3::Request, _, _>(client::account::change_password)
        .ruma::<account::deactivate::v3::Request, _, _>(client::account::deactivate)
        // session-service
        .ruma::<session::get_login_types::v3::Request, _, _>(client::session::login_types)
        .ruma::<session::login::v3::Request, _, _>(client::session::login)
        .ruma::<session::refresh_token::v3::Request, _, _>(client::session::refresh)
        .ruma::<session::logout::v3::Request, _, _>(client::session::logout)
        .ruma::<session::logout_all::v3::Request, _, _>(client::session::logout_all)
        .ruma::<account::whoami::v3::Request, _, _>(client::session::whoami)
        .ruma::<device::get_devices::v3::Request, _, _>(client::devices::list)
        .ruma::<device::get_device::v3::Request, _, _>(client::devices::get)
        .ruma::<device::update_device::v3::Request, _, _>(client::devices::update)
        .ruma::<device::delete_device::v3::Request, _, _>(client::devices::delete)
        .ruma::<device::delete_devices::v3::Request, _, _>(client::devices::delete_many)
        // messaging-service
        .ruma::<room::create_room::v3::Request, _, _>(client::rooms::create_room)
        .ruma::<message::send_message_event::v3::Request, _, _>(client::rooms::send_message)
        .ruma::<room_state::send_state_event::v3::Request, _, _>(client::rooms::send_state)
        .ruma::<room_state::get_state_events::v3::Request, _, _>(client::rooms::get_state)
        .ruma::<room_state::get_state_event_for_key::v3::Request, _, _>(
            client::rooms::get_state_event,
        )
        .ruma::<membership::joined_rooms::v3::Request, _, _>(client::rooms::joined)
        .ruma::<membership::join_room_by_id::v3::Request, _, _>(client::rooms::join)
        .ruma::<membership::invite_user::v3::Request, _, _>(client::rooms::invite)
        .ruma::<membership::leave_room::v3::Request, _, _>(client::rooms::leave)
        .ruma::<room::get_room_event::v3::Request, _, _>(client::rooms::get_event)
        .ruma::<message::get_message_events::v3::Request, _, _>(client::rooms::messages)
        .ruma::<ruma::api::client::sync::sync_events::v3::Request, _, _>(client::sync::sync)
        // profile-service
        .ruma::<profile::get_profile::v3::Request, _, _>(client::profile::get_profile)
        // federation keys
        .ruma::<get_server_keys::v2::Request, _, _>(server::keys::server_keys)
        // kith's own admin API
        .nest("/_kith/admin/v1", admin::router(state.clone()));
    gateway::finish(api, state)
}
