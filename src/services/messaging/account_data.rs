//! Account data (global and per room) and sync filters: what a user's clients store on the
//! server for themselves. Each change takes a stream position, so `/sync` delivers it once.

use std::collections::HashSet;

use kith_storage::catalog;
use serde_json::Value;

use super::Messaging;
use crate::services::account_data::{AccountData, GLOBAL, put_account_data};
use crate::services::error::Result;
use crate::util::random_string;

/// Room tags live in room account data of this type, as `/sync` delivers them.
const TAGS: &str = "m.tag";

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

    /// The users this one ignores (`m.ignored_user_list`): their invites are not shown.
    pub fn ignored_users(&self, user_id: &str) -> Result<HashSet<String>> {
        let list = self.account_data(user_id, None, "m.ignored_user_list")?;
        let users = list.as_ref().and_then(|l| l["ignored_users"].as_object());
        Ok(users.into_iter().flat_map(|u| u.keys().cloned()).collect())
    }

    /// The rooms the user's `m.direct` names as direct chats.
    pub fn direct_rooms(&self, user_id: &str) -> Result<HashSet<String>> {
        let direct = self.account_data(user_id, None, "m.direct")?;
        let by_user = direct.as_ref().and_then(|d| d.as_object());
        let rooms = by_user.into_iter().flat_map(|d| d.values());
        let rooms = rooms.filter_map(|r| r.as_array()).flatten();
        Ok(rooms
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect())
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

    /// The user's tags on a room (`m.tag` room account data): `{tags: {name: {order?}}}`.
    pub fn tags(&self, user_id: &str, room: &str) -> Result<Value> {
        let found = self.account_data(user_id, Some(room), TAGS)?;
        Ok(found
            .filter(|t| t["tags"].is_object())
            .unwrap_or_else(|| serde_json::json!({ "tags": {} })))
    }

    /// Sets (`Some`) or removes (`None`) one of the user's tags on a room; the whole
    /// `m.tag` entry is rewritten under the user's lock, so two changes at once keep both.
    pub async fn set_tag(
        &self,
        user_id: &str,
        room: &str,
        tag: &str,
        info: Option<Value>,
    ) -> Result<()> {
        let _guard = self.name_locks.lock(user_id).await;
        let mut tags = self.tags(user_id, room)?;
        match info {
            Some(info) => tags["tags"][tag] = info,
            None => {
                tags["tags"].as_object_mut().map(|t| t.remove(tag));
            }
        }
        self.set_account_data(user_id, Some(room), TAGS, tags).await
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
