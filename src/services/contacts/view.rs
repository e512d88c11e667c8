//! A user's contacts as lists (friends, incoming and outgoing requests): what the API
//! returns and what the live `org.kith.contacts` account data holds. A change computes the
//! new lists with itself applied, so they are written in the change's own batch.

use kith_storage::{Batch, catalog};
use serde_json::{Value, json};

use super::{Contacts, Direction, FriendRequest, Friendship, RequestRef};
use crate::services::account_data::put_account_data;
use crate::services::error::Result;

/// The global account data type the server keeps for each user's contacts.
pub const CONTACTS_EVENT: &str = "org.kith.contacts";

/// What a change does, to be seen as done before it is committed.
#[derive(Default)]
pub(super) struct Change {
    pub friends_added: Vec<(String, String, Friendship)>,
    pub friends_removed: Vec<(String, String)>,
    pub requests_added: Vec<FriendRequest>,
    pub requests_removed: Vec<String>,
    /// The users whose views the change touches.
    pub views: Vec<String>,
    /// Other servers it queued news for, to wake once it is committed.
    pub wake: Vec<String>,
}

/// A request as `user` sees it.
pub(super) fn request_json(request: &FriendRequest, user: &str) -> Value {
    let (other, dir) = if request.from == user {
        (&request.to, Direction::Outgoing)
    } else {
        (&request.from, Direction::Incoming)
    };
    let mut out = json!({
        "request_id": request.request_id,
        "user_id": other,
        "dir": dir,
        "created_ts": request.created_ts,
    });
    if let Some(message) = &request.message {
        out["message"] = message.clone().into();
    }
    if let Some(room) = &request.dm_room_id {
        out["dm_room_id"] = room.clone().into();
    }
    out
}

impl Contacts {
    pub fn request(&self, request_id: &str) -> Result<Option<FriendRequest>> {
        Ok(self.storage.get(&catalog::REQUESTID_REQUEST, &request_id)?)
    }

    /// `{friends, incoming, outgoing}` for `user`, with `change` applied.
    pub(super) fn view_with(&self, user: &str, change: &Change) -> Result<Value> {
        let mut friends: Vec<(String, Friendship)> = self
            .friends(user)?
            .into_iter()
            .filter(|(other, _)| {
                !change
                    .friends_removed
                    .iter()
                    .any(|(a, b)| a == user && b == other)
            })
            .collect();
        for (a, b, friendship) in &change.friends_added {
            if a == user {
                friends.push((b.clone(), friendship.clone()));
            }
        }
        friends.sort_by(|a, b| a.0.cmp(&b.0));
        let refs: Vec<((String, String), RequestRef)> = self
            .storage
            .scan_prefix(&catalog::USERID_OTHERID_REQUEST, &(user,))?;
        let mut requests = Vec::new();
        for (_, reference) in refs {
            if change.requests_removed.contains(&reference.request_id) {
                continue;
            }
            requests.extend(self.request(&reference.request_id)?);
        }
        requests.extend(
            change
                .requests_added
                .iter()
                .filter(|r| r.from == user || (r.to == user && !r.hidden))
                .cloned(),
        );
        requests.sort_by_key(|r| r.created_ts);
        let listed = |dir: Direction| -> Vec<Value> {
            requests
                .iter()
                .map(|r| request_json(r, user))
                .filter(|r| r["dir"] == json!(dir))
                .collect()
        };
        let friends: Vec<Value> = friends
            .iter()
            .map(|(other, f)| {
                let mut entry = json!({ "user_id": other, "since_ts": f.since_ts });
                if let Some(room) = &f.dm_room_id {
                    entry["dm_room_id"] = room.clone().into();
                }
                entry
            })
            .collect();
        Ok(json!({
            "friends": friends,
            "incoming": listed(Direction::Incoming),
            "outgoing": listed(Direction::Outgoing),
        }))
    }

    /// `{friends, incoming, outgoing}` for `user` as stored.
    pub fn view(&self, user: &str) -> Result<Value> {
        self.view_with(user, &Change::default())
    }

    /// Rewrites the `org.kith.contacts` account data of each user `change` touches.
    pub(super) fn write_change(&self, batch: &mut Batch, change: &Change) -> Result<()> {
        let mut users: Vec<&str> = change.views.iter().map(String::as_str).collect();
        users.sort_unstable();
        users.dedup();
        self.write_views(batch, &users, change)
    }

    /// Rewrites each user's `org.kith.contacts` account data in `batch`.
    pub(super) fn write_views(
        &self,
        batch: &mut Batch,
        users: &[&str],
        change: &Change,
    ) -> Result<()> {
        // Only this server's users have views here.
        for user in users.iter().filter(|u| self.is_local(u)) {
            let content = self.view_with(user, change)?;
            put_account_data(batch, user, None, CONTACTS_EVENT, content)?;
        }
        Ok(())
    }
}
