//! kith's federation crate: the server's ed25519 signing key (generated on first start,
//! kept in the database, served self-signed at `GET /_matrix/key/v2/server`) and the PDU
//! type every room event is, signed with it. X-Matrix, discovery and the send queue come
//! later.

mod keys;
pub mod pdu;

pub use keys::{KeyError, ServerKeys};
pub use pdu::{NewEvent, Pdu, PduError};
