//! The account data table, as every service writes it: an entry per (user, room or none,
//! type), each change at a new stream position so `/sync` delivers it once. Messaging serves
//! clients' own account data; contacts keeps its managed `org.kith.contacts` entry here.

use kith_storage::{Batch, catalog};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The room ID part of the key for global account data.
pub(crate) const GLOBAL: &str = "";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountData {
    pub position: u64,
    pub content: Value,
}

/// Writes an account data entry into `batch` at a new stream position (for changes made
/// together with the data they describe, such as contacts).
pub fn put_account_data(
    batch: &mut Batch,
    user_id: &str,
    room: Option<&str>,
    kind: &str,
    content: Value,
) -> kith_storage::Result<()> {
    let position = batch.new_position()?;
    let key = (user_id, room.unwrap_or(GLOBAL), kind);
    let data = AccountData { position, content };
    batch.put(&catalog::USERID_ROOMID_TYPE_ACCOUNTDATA, &key, &data)
}

/// Deletes, in `batch`, the user's account data of one room (a purged one).
pub fn forget_room_into(batch: &mut Batch, user_id: &str, room: &str) -> kith_storage::Result<()> {
    batch.delete_prefix(&catalog::USERID_ROOMID_TYPE_ACCOUNTDATA, &(user_id, room))
}

/// Whether the user has global account data of this type.
pub fn has_account_data(
    storage: &kith_storage::Storage,
    user_id: &str,
    kind: &str,
) -> kith_storage::Result<bool> {
    storage.contains(
        &catalog::USERID_ROOMID_TYPE_ACCOUNTDATA,
        &(user_id, GLOBAL, kind),
    )
}

/// Whether `user` ignores `other` (`m.ignored_user_list`): what they send is not shown to
/// them, invites included.
pub fn ignores(
    storage: &kith_storage::Storage,
    user_id: &str,
    other: &str,
) -> kith_storage::Result<bool> {
    let key = (user_id, GLOBAL, "m.ignored_user_list");
    let found: Option<AccountData> = storage.get(&catalog::USERID_ROOMID_TYPE_ACCOUNTDATA, &key)?;
    Ok(found.is_some_and(|d| d.content["ignored_users"].get(other).is_some()))
}
