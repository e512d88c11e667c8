//! kith's federation crate. For now: the server's ed25519 signing key, generated on first
//! start, kept in the database, and the self-signed key document served at
//! `GET /_matrix/key/v2/server`. X-Matrix, discovery and the send queue come later.

mod keys;

pub use keys::{KeyError, ServerKeys};
