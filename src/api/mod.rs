//! The HTTP API: one handler per endpoint, a file per area, each handler's route in its doc
//! line. [`router`] is the whole surface kith serves (also listed in `spec/README.md`).

pub mod admin;
mod client;
mod health;
mod metrics;
mod server;
mod synapse_admin;

use axum::Router;
use axum::routing::{delete, get, post};
use ruma::api::client::{
    account, alias, authenticated_media, backup, config, context, device, directory, discovery,
    filter, keys, knock, media, membership, message, presence, profile, push, read_marker, receipt,
    redact, relations, reporting, room, search, session, space, state as room_state, tag,
    thirdparty, threads, to_device, typing, user_directory, voip,
};
use ruma::api::federation::authenticated_media as federation_media;
use ruma::api::federation::authorization::get_event_authorization;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::device::get_devices;
use ruma::api::federation::directory as federation_directory;
use ruma::api::federation::discovery::{
    discover_homeserver as server_discovery, get_server_keys, get_server_version,
};
use ruma::api::federation::event::{
    get_event, get_missing_events, get_room_state, get_room_state_ids,
};
use ruma::api::federation::keys::{claim_keys as federation_claim, get_keys as federation_query};
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};
use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::api::federation::space as federation_space;
use ruma::api::federation::transactions::send_transaction_message;

use crate::gateway::{self, RumaRouter};
use crate::services::AppState;

/// The contacts API (`spec/contacts.yaml`).
fn contacts_api() -> Router<AppState> {
    use client::contacts;
    Router::new()
        .route("/friends", get(contacts::friends))
        .route("/friends/{user_id}", delete(contacts::remove_friend))
        .route(
            "/requests",
            post(contacts::send_request).get(contacts::requests),
        )
        .route("/requests/{request_id}", delete(contacts::cancel))
        .route("/requests/{request_id}/accept", post(contacts::accept))
        .route("/requests/{request_id}/decline", post(contacts::decline))
        .route("/search", post(contacts::search))
        .route(
            "/settings",
            get(contacts::settings).put(contacts::set_settings),
        )
}

/// kith's contacts between servers (`spec/contacts.md`).
fn contacts_federation() -> Router<AppState> {
    use axum::routing::put;
    use server::contacts;
    Router::new()
        .route("/request/{request_id}", put(contacts::request))
        .route("/response/{request_id}", put(contacts::response))
        .route("/remove/{txn_id}", put(contacts::remove))
}

/// The unauthenticated media reads from before v1.11, which older clients still use.
#[allow(deprecated)]
fn legacy_media(api: Router<AppState>) -> Router<AppState> {
    api.ruma::<media::get_content::v3::Request, _, _>(client::media::legacy_get)
        .ruma::<media::get_content_as_filename::v3::Request, _, _>(client::media::legacy_get_named)
        .ruma::<media::get_content_thumbnail::v3::Request, _, _>(
            client::media::legacy_get_thumbnail,
        )
        .ruma::<media::get_media_config::v3::Request, _, _>(client::media::legacy_config)
}

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
        // auth-service: email addresses
        .ruma::<account::request_registration_token_via_email::v3::Request, _, _>(
            client::threepid::register_token,
        )
        .ruma::<account::request_3pid_management_token_via_email::v3::Request, _, _>(
            client::threepid::add_token,
        )
        .ruma::<account::request_password_change_token_via_email::v3::Request, _, _>(
            client::threepid::password_token,
        )
        .ruma::<account::request_registration_token_via_msisdn::v3::Request, _, _>(
            client::threepid::register_msisdn,
        )
        .ruma::<account::request_3pid_management_token_via_msisdn::v3::Request, _, _>(
            client::threepid::add_msisdn,
        )
        .ruma::<account::request_password_change_token_via_msisdn::v3::Request, _, _>(
            client::threepid::password_msisdn,
        )
        .route(
            crate::services::auth::email::VALIDATE_PATH,
            get(client::threepid::validate),
        )
        // auth-service: sign-in with identity providers (own routes: they set cookies)
        .route(
            "/_matrix/client/v3/login/sso/redirect",
            get(client::sso::redirect),
        )
        .route(
            "/_matrix/client/r0/login/sso/redirect",
            get(client::sso::redirect),
        )
        .route(
            "/_matrix/client/v3/login/sso/redirect/{idp}",
            get(client::sso::redirect_to),
        )
        .route(
            "/_matrix/client/r0/login/sso/redirect/{idp}",
            get(client::sso::redirect_to),
        )
        .route(
            crate::services::auth::sso::CALLBACK_PATH,
            get(client::sso::callback),
        )
        .route(
            "/_matrix/client/v3/auth/{auth_type}/fallback/web",
            get(client::sso::fallback).post(client::sso::fallback_confirm),
        )
        .route(
            "/_matrix/client/r0/auth/{auth_type}/fallback/web",
            get(client::sso::fallback).post(client::sso::fallback_confirm),
        )
        .ruma::<account::get_3pids::v3::Request, _, _>(client::threepid::list)
        .ruma::<account::add_3pid::v3::Request, _, _>(client::threepid::add)
        .ruma::<account::delete_3pid::v3::Request, _, _>(client::threepid::delete)
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
        .ruma::<membership::joined_rooms::v3::Request, _, _>(client::membership::joined)
        .ruma::<membership::join_room_by_id::v3::Request, _, _>(client::membership::join)
        .ruma::<membership::join_room_by_id_or_alias::v3::Request, _, _>(
            client::membership::join_by_id_or_alias,
        )
        .ruma::<membership::invite_user::v3::Request, _, _>(client::membership::invite)
        .ruma::<knock::knock_room::v3::Request, _, _>(client::membership::knock)
        .ruma::<membership::leave_room::v3::Request, _, _>(client::membership::leave)
        .ruma::<membership::kick_user::v3::Request, _, _>(client::membership::kick)
        .ruma::<membership::ban_user::v3::Request, _, _>(client::membership::ban)
        .ruma::<membership::unban_user::v3::Request, _, _>(client::membership::unban)
        .ruma::<membership::forget_room::v3::Request, _, _>(client::membership::forget)
        .ruma::<membership::get_member_events::v3::Request, _, _>(client::membership::members)
        .ruma::<membership::joined_members::v3::Request, _, _>(client::membership::joined_members)
        .ruma::<alias::create_alias::v3::Request, _, _>(client::directory::create)
        .ruma::<alias::get_alias::v3::Request, _, _>(client::directory::get)
        .ruma::<alias::delete_alias::v3::Request, _, _>(client::directory::delete)
        .ruma::<directory::get_public_rooms::v3::Request, _, _>(client::directory::public_rooms)
        .ruma::<directory::get_public_rooms_filtered::v3::Request, _, _>(
            client::directory::public_rooms_filtered,
        )
        .ruma::<directory::get_room_visibility::v3::Request, _, _>(client::directory::visibility)
        .ruma::<directory::set_room_visibility::v3::Request, _, _>(
            client::directory::set_visibility,
        )
        .ruma::<room::get_room_event::v3::Request, _, _>(client::history::get_event)
        .ruma::<message::get_message_events::v3::Request, _, _>(client::history::messages)
        .ruma::<context::get_context::v3::Request, _, _>(client::history::context)
        .ruma::<search::search_events::v3::Request, _, _>(client::search::search)
        .ruma::<room::get_event_by_timestamp::v1::Request, _, _>(
            client::history::timestamp_to_event,
        )
        .ruma::<relations::get_relating_events::v1::Request, _, _>(client::relations::relations)
        .ruma::<relations::get_relating_events_with_rel_type::v1::Request, _, _>(
            client::relations::relations_of_type,
        )
        .ruma::<relations::get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
            client::relations::relations_of_type_and_event_type,
        )
        .ruma::<threads::get_threads::v1::Request, _, _>(client::relations::threads)
        .ruma::<space::get_hierarchy::v1::Request, _, _>(client::spaces::hierarchy)
        .ruma::<redact::redact_event::v3::Request, _, _>(client::history::redact)
        .ruma::<room::upgrade_room::v3::Request, _, _>(client::rooms::upgrade)
        .ruma::<room::report_content::v3::Request, _, _>(client::reports::report_event)
        .ruma::<room::report_room::v3::Request, _, _>(client::reports::report_room)
        .ruma::<reporting::report_user::v3::Request, _, _>(client::reports::report_user)
        .ruma::<ruma::api::client::sync::sync_events::v3::Request, _, _>(client::sync::sync)
        .ruma::<ruma::api::client::sync::sync_events::v5::Request, _, _>(client::sync::sliding_sync)
        .ruma::<receipt::create_receipt::v3::Request, _, _>(client::receipts::receipt)
        .ruma::<read_marker::set_read_marker::v3::Request, _, _>(client::receipts::read_markers)
        .ruma::<typing::create_typing_event::v3::Request, _, _>(client::receipts::typing)
        .ruma::<config::set_global_account_data::v3::Request, _, _>(
            client::account_data::set_global,
        )
        .ruma::<config::get_global_account_data::v3::Request, _, _>(
            client::account_data::get_global,
        )
        .ruma::<config::set_room_account_data::v3::Request, _, _>(client::account_data::set_room)
        .ruma::<config::get_room_account_data::v3::Request, _, _>(client::account_data::get_room)
        .ruma::<tag::get_tags::v3::Request, _, _>(client::account_data::get_tags)
        .ruma::<tag::create_tag::v3::Request, _, _>(client::account_data::set_tag)
        .ruma::<tag::delete_tag::v3::Request, _, _>(client::account_data::delete_tag)
        .ruma::<filter::create_filter::v3::Request, _, _>(client::account_data::create)
        .ruma::<filter::get_filter::v3::Request, _, _>(client::account_data::get)
        .ruma::<push::get_pushrules_all::v3::Request, _, _>(client::push_rules::get_all)
        .ruma::<push::get_pushrules_global_scope::v3::Request, _, _>(client::push_rules::get_global)
        .ruma::<push::get_pushrule::v3::Request, _, _>(client::push_rules::get)
        .ruma::<push::set_pushrule::v3::Request, _, _>(client::push_rules::set)
        .ruma::<push::delete_pushrule::v3::Request, _, _>(client::push_rules::delete)
        .ruma::<push::get_pushrule_enabled::v3::Request, _, _>(client::push_rules::get_enabled)
        .ruma::<push::set_pushrule_enabled::v3::Request, _, _>(client::push_rules::set_enabled)
        .ruma::<push::get_pushrule_actions::v3::Request, _, _>(client::push_rules::get_actions)
        .ruma::<push::set_pushrule_actions::v3::Request, _, _>(client::push_rules::set_actions)
        // clients ask for `/pushrules` without the slash too
        .route(
            "/_matrix/client/v3/pushrules",
            get(client::push_rules::get_all),
        )
        .route(
            "/_matrix/client/r0/pushrules",
            get(client::push_rules::get_all),
        )
        .ruma::<push::get_pushers::v3::Request, _, _>(client::pushers::pushers)
        .ruma::<push::set_pusher::v3::Request, _, _>(client::pushers::set_pusher)
        .ruma::<push::get_notifications::v3::Request, _, _>(client::pushers::notifications)
        .ruma::<voip::get_turn_server_info::v3::Request, _, _>(client::calls::turn_server)
        .route(
            "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
            get(client::calls::rtc_transports),
        )
        .ruma::<thirdparty::get_protocols::v3::Request, _, _>(client::unconfigured::protocols)
        .ruma::<thirdparty::get_protocol::v3::Request, _, _>(client::unconfigured::protocol)
        .ruma::<thirdparty::get_user_for_protocol::v3::Request, _, _>(
            client::unconfigured::users_for_protocol,
        )
        .ruma::<thirdparty::get_location_for_protocol::v3::Request, _, _>(
            client::unconfigured::locations_for_protocol,
        )
        .ruma::<thirdparty::get_user_for_user_id::v3::Request, _, _>(
            client::unconfigured::users_for_user_id,
        )
        .ruma::<thirdparty::get_location_for_room_alias::v3::Request, _, _>(
            client::unconfigured::locations_for_alias,
        )
        // profile-service
        .ruma::<profile::get_profile::v3::Request, _, _>(client::profile::get_profile)
        .ruma::<profile::get_profile_field::v3::Request, _, _>(client::profile::get_field)
        .ruma::<profile::set_profile_field::v3::Request, _, _>(client::profile::set_field)
        .ruma::<profile::delete_profile_field::v3::Request, _, _>(client::profile::delete_field)
        .ruma::<presence::set_presence::v3::Request, _, _>(client::presence::set)
        .ruma::<presence::get_presence::v3::Request, _, _>(client::presence::get)
        // federation
        .ruma::<get_server_keys::v2::Request, _, _>(server::keys::server_keys)
        .ruma::<get_server_version::v1::Request, _, _>(server::version::version)
        .ruma::<send_transaction_message::v1::Request, _, _>(server::transactions::send)
        .ruma::<prepare_join_event::v1::Request, _, _>(server::membership::make_join)
        .ruma::<create_join_event::v2::Request, _, _>(server::membership::send_join)
        .ruma::<create_invite::v2::Request, _, _>(server::membership::invite)
        .ruma::<prepare_leave_event::v1::Request, _, _>(server::membership::make_leave)
        .ruma::<create_leave_event::v2::Request, _, _>(server::membership::send_leave)
        .ruma::<prepare_knock_event::v1::Request, _, _>(server::membership::make_knock)
        .ruma::<create_knock_event::v1::Request, _, _>(server::membership::send_knock)
        .ruma::<get_profile_information::v1::Request, _, _>(server::query::profile)
        .ruma::<get_room_information::v1::Request, _, _>(server::query::directory)
        .ruma::<federation_space::get_hierarchy::v1::Request, _, _>(server::query::hierarchy)
        .ruma::<federation_directory::get_public_rooms::v1::Request, _, _>(
            server::query::public_rooms,
        )
        .ruma::<federation_directory::get_public_rooms_filtered::v1::Request, _, _>(
            server::query::public_rooms_filtered,
        )
        .ruma::<get_event::v1::Request, _, _>(server::events::event)
        .ruma::<get_backfill::v1::Request, _, _>(server::events::backfill)
        .ruma::<get_missing_events::v1::Request, _, _>(server::events::missing_events)
        .ruma::<get_event_authorization::v1::Request, _, _>(server::events::event_auth)
        .ruma::<get_room_state_ids::v1::Request, _, _>(server::events::state_ids)
        .ruma::<get_room_state::v1::Request, _, _>(server::events::room_state)
        .ruma::<federation_query::v1::Request, _, _>(server::keys_e2ee::query)
        .ruma::<federation_claim::v1::Request, _, _>(server::keys_e2ee::claim)
        .ruma::<get_devices::v1::Request, _, _>(server::keys_e2ee::devices)
        .ruma::<federation_media::get_content::v1::Request, _, _>(server::media::download)
        .ruma::<federation_media::get_content_thumbnail::v1::Request, _, _>(
            server::media::thumbnail,
        )
        // the E2EE relay
        .ruma::<keys::upload_keys::v3::Request, _, _>(client::keys::upload)
        .ruma::<keys::get_keys::v3::Request, _, _>(client::keys::query)
        .ruma::<keys::claim_keys::v3::Request, _, _>(client::keys::claim)
        .ruma::<keys::get_key_changes::v3::Request, _, _>(client::keys::changes)
        .ruma::<keys::upload_signing_keys::v3::Request, _, _>(client::keys::upload_cross_signing)
        .ruma::<keys::upload_signatures::v3::Request, _, _>(client::keys::upload_signatures)
        .ruma::<to_device::send_event_to_device::v3::Request, _, _>(client::keys::send_to_device)
        .ruma::<backup::create_backup_version::v3::Request, _, _>(client::backup::create)
        .ruma::<backup::get_latest_backup_info::v3::Request, _, _>(client::backup::latest)
        .ruma::<backup::get_backup_info::v3::Request, _, _>(client::backup::info)
        .ruma::<backup::update_backup_version::v3::Request, _, _>(client::backup::update)
        .ruma::<backup::delete_backup_version::v3::Request, _, _>(client::backup::delete)
        .ruma::<backup::add_backup_keys::v3::Request, _, _>(client::backup::put_all)
        .ruma::<backup::add_backup_keys_for_room::v3::Request, _, _>(client::backup::put_room)
        .ruma::<backup::add_backup_keys_for_session::v3::Request, _, _>(client::backup::put_session)
        .ruma::<backup::get_backup_keys::v3::Request, _, _>(client::backup::get_all)
        .ruma::<backup::get_backup_keys_for_room::v3::Request, _, _>(client::backup::get_room)
        .ruma::<backup::get_backup_keys_for_session::v3::Request, _, _>(client::backup::get_session)
        .ruma::<backup::delete_backup_keys::v3::Request, _, _>(client::backup::delete_all)
        .ruma::<backup::delete_backup_keys_for_room::v3::Request, _, _>(client::backup::delete_room)
        .ruma::<backup::delete_backup_keys_for_session::v3::Request, _, _>(
            client::backup::delete_session,
        )
        // media
        .ruma::<media::create_content::v3::Request, _, _>(client::media::upload)
        .ruma::<media::create_mxc_uri::v1::Request, _, _>(client::media::create)
        .ruma::<media::create_content_async::v3::Request, _, _>(client::media::upload_reserved)
        .ruma::<authenticated_media::get_content::v1::Request, _, _>(client::media::get)
        .ruma::<authenticated_media::get_content_as_filename::v1::Request, _, _>(
            client::media::get_named,
        )
        .ruma::<authenticated_media::get_content_thumbnail::v1::Request, _, _>(
            client::media::get_thumbnail,
        )
        .ruma::<authenticated_media::get_media_config::v1::Request, _, _>(client::media::config)
        // contact-service
        .nest(
            "/_matrix/client/unstable/org.kith.contacts/v1",
            contacts_api(),
        )
        .ruma::<user_directory::search_users::v3::Request, _, _>(client::contacts::user_directory)
        .nest(
            crate::services::contacts::FEDERATION_PREFIX,
            contacts_federation(),
        )
        // kith's own admin API, and its health for monitors
        .nest("/_kith/admin/v1", admin::router(state.clone()))
        // Synapse's Admin API, as moderation tools speak it, for server admins' tokens
        .nest("/_synapse/admin", synapse_admin::router())
        .route("/health", get(health::health));
    gateway::finish(legacy_media(api), state)
}

/// The metrics listener's routes (`[metrics] listen`): `GET /metrics` alone.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}
