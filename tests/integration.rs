//! Integration tests: each starts the real `kith` binary on an ephemeral loopback port with
//! a temporary database and talks HTTP to it (see `integration/common.rs`). One test crate,
//! so the binary with RocksDB is linked once.

#[path = "integration/accounts.rs"]
mod accounts;
#[path = "integration/admin.rs"]
mod admin;
#[path = "integration/authorization.rs"]
mod authorization;
#[path = "integration/backup.rs"]
mod backup;
#[path = "integration/clients.rs"]
mod clients;
#[path = "integration/common.rs"]
mod common;
#[path = "integration/contacts.rs"]
mod contacts;
#[path = "integration/crash.rs"]
mod crash;
#[path = "integration/directory.rs"]
mod directory;
#[path = "integration/dm_requests.rs"]
mod dm_requests;
#[path = "integration/e2ee.rs"]
mod e2ee;
#[path = "integration/element.rs"]
mod element;
#[path = "integration/element_x.rs"]
mod element_x;
#[path = "integration/email.rs"]
mod email;
#[path = "integration/ephemeral.rs"]
mod ephemeral;
#[path = "integration/federation.rs"]
mod federation;
#[path = "integration/federation_abuse.rs"]
mod federation_abuse;
#[path = "integration/federation_input.rs"]
mod federation_input;
#[path = "integration/gateway.rs"]
mod gateway;
#[path = "integration/hardening.rs"]
mod hardening;
#[path = "integration/history.rs"]
mod history;
#[path = "integration/hostile_peers.rs"]
mod hostile_peers;
#[path = "integration/media.rs"]
mod media;
#[path = "integration/membership.rs"]
mod membership;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/peer.rs"]
mod peer;
#[path = "integration/profiles.rs"]
mod profiles;
#[path = "integration/push.rs"]
mod push;
#[path = "integration/refresh.rs"]
mod refresh;
#[path = "integration/relations.rs"]
mod relations;
#[path = "integration/room_deletion.rs"]
mod room_deletion;
#[path = "integration/room_extras.rs"]
mod room_extras;
#[path = "integration/rooms.rs"]
mod rooms;
#[path = "integration/search.rs"]
mod search;
#[path = "integration/sliding_connections.rs"]
mod sliding_connections;
#[path = "integration/sliding_sync.rs"]
mod sliding_sync;
#[path = "integration/spaces.rs"]
mod spaces;
#[path = "integration/sso.rs"]
mod sso;
#[path = "integration/synapse.rs"]
mod synapse;
#[path = "integration/synapse_admin.rs"]
mod synapse_admin;
#[path = "integration/synapse_contacts.rs"]
mod synapse_contacts;
#[path = "integration/synapse_rooms.rs"]
mod synapse_rooms;
#[path = "integration/sync.rs"]
mod sync;
#[path = "integration/upgrade.rs"]
mod upgrade;
