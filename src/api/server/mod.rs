//! Server-Server API handlers.

pub mod keys;
