//! kith's federation crate: the server's ed25519 signing key (generated on first start,
//! kept in the database, served self-signed at `GET /_matrix/key/v2/server`), the PDU type
//! every room event is, and the transport to other servers: discovery, X-Matrix-signed
//! requests both ways, other servers' keys, and the persisted outbound queue. It knows
//! nothing of rooms or contacts beyond the PDUs and EDUs it carries.

mod cache;
mod client;
mod discovery;
pub mod inbound;
mod keyed_locks;
mod keys;
pub mod media;
pub mod pdu;
mod queue;
mod remote_keys;

pub use client::{
    AuthError, FederationClient, FederationError, GuardedHttp, Settings, reachable_name,
};
pub use discovery::DEFAULT_DENIED_RANGES;
pub use keyed_locks::{KeyedGuard, KeyedLocks};
pub use keys::{KeyError, ServerKeys, read_secret_file, write_private_file};
pub use pdu::{NewEvent, Pdu, PduError};
pub use queue::{DestinationFigures, Outbox, Outgoing, Queue};
pub use remote_keys::RemoteKey;

/// Milliseconds since the Unix epoch (0 if the clock is before it): the one clock of
/// timestamps, expiries and backoffs, here and in the server.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
