//! Client-Server API handlers.

pub mod account;
pub mod devices;
pub mod discovery;
pub mod profile;
pub mod register;
pub mod rooms;
pub mod session;
pub mod sync;
