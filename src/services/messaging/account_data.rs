//! Account data (global and per room) and sync filters: what a user's clients store on the
//! server for themselves. Each change takes a stream position, so `/sync` delivers it once.

use kith_storage::{Batch, catalog};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Messaging;
use crate::services::error::Result;
use crate::util::random_string;

/// The room ID part of the key for global account data.
const GLOBAL: &str = "";

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

impl Messaging {
    /// One account data entry's content; `room` is `None` for global data.
    pub fn account_data(
        &self,
        user_id: &str,
        room: Option<&str>,
        kind: &str,
    ) -> Result<Option<Value>> {
        let key = (user_id, room.unwrap_or(GLOBAL), kind);
        let found: Option<AccountData> = self
            .storage
            .get(&catalog::USERID_ROOMID_TYPE_ACCOUNTDATA, &key)?;
        Ok(found.map(|d| d.content))
    }

    pub async fn set_account_data(
        &self,
        user_id: &str,
        room: Option<&str>,
        kind: &str,
        content: Value,
    ) -> Result<()> {
        let mut batch = self.storage.batch();
        put_account_data(&mut batch, user_id, room, kind, content)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// The user's account data changed in (`after`, `upto`] (all of it for `None`), as
    /// (room ID or `None`, type, content).
    pub fn account_data_changes(
        &self,
        user_id: &str,
        after: Option<u64>,
        upto: u64,
    ) -> Result<Vec<(Option<String>, String, Value)>> {
        let rows: Vec<((String, String, String), AccountData)> = self
            .storage
            .scan_prefix(&catalog::USERID_ROOMID_TYPE_ACCOUNTDATA, &(user_id,))?;
        Ok(rows
            .into_iter()
            .filter(|(_, d)| d.position <= upto && after.is_none_or(|a| d.position > a))
            .map(|((_, room, kind), d)| ((!room.is_empty()).then_some(room), kind, d.content))
            .collect())
    }

    /// Stores a filter as sent and returns its new ID.
    pub async fn create_filter(&self, user_id: &str, filter: Value) -> Result<String> {
        let id = random_string(12);
        self.storage
            .put(
                &catalog::USERID_FILTERID_FILTER,
                &(user_id, id.as_str()),
                &filter,
            )
            .await?;
        Ok(id)
    }

    pub fn filter(&self, user_id: &str, filter_id: &str) -> Result<Option<Value>> {
        Ok(self
            .storage
            .get(&catalog::USERID_FILTERID_FILTER, &(user_id, filter_id))?)
    }
}
