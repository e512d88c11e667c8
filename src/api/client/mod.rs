//! Client-Server API handlers.

pub mod account;
pub mod account_data;
pub mod backup;
pub mod calls;
pub mod contacts;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod history;
pub mod keys;
pub mod media;
pub mod membership;
mod pages;
pub mod presence;
pub mod profile;
pub mod push_rules;
pub mod pushers;
pub mod receipts;
pub mod register;
pub mod relations;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod session;
pub mod spaces;
pub mod sso;
pub mod sync;
pub mod threepid;
pub mod unconfigured;

use ruma::serde::Raw;
use serde_json::Value;

use crate::gateway::{Error, Result};

/// A JSON value as a ruma `Raw`, for responses built from stored JSON.
fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(value).map_err(Error::internal)?,
    ))
}

/// A client-sent `Raw` as JSON; content the client got wrong is `M_BAD_JSON`.
fn json_of<T>(raw: &Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}
