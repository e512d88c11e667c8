//! Server-Server API handlers: what other homeservers call, each request X-Matrix-signed
//! (the gateway checks the signature and names the origin).

pub mod contacts;
pub mod events;
pub mod keys;
pub mod keys_e2ee;
pub mod media;
pub mod membership;
pub mod query;
pub mod transactions;
pub mod version;
