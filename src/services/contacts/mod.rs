//! contact-service: friend requests and friendships, and the policy messaging asks about
//! ("are these two friends?"). Every change writes both users' views and their live
//! `org.kith.contacts` account data in the same batch as the change itself.

mod invites;
mod policy;
mod remote;
mod requests;
mod view;

use std::sync::Arc;

use kith_federation::{FederationClient, Outbox};
use kith_storage::{Batch, Storage, catalog};
use serde::{Deserialize, Serialize};

use crate::config::{Config, DmPolicy};
use crate::events::DomainEvent;
use crate::services::account_data::{has_account_data, put_account_data};
use crate::services::error::Result;
use crate::util::{RateLimiter, StripedLocks, now_ms};

pub use invites::{MemberChange, RoomChanges, Settled};
pub use policy::DIRECT_MAX_MEMBERS;
pub use remote::{FEDERATION_PREFIX, RemoteRemove, RemoteRequest, RemoteResponse};
pub use requests::SendOutcome;
pub use view::CONTACTS_EVENT;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactsRecord {
    pub created_ts: u64,
    /// Others who type this user's verified email address in a search find them.
    #[serde(default)]
    pub discoverable_by_email: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Friendship {
    pub since_ts: u64,
    /// The direct chat the request that made them friends came with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm_room_id: Option<String>,
    /// The request that made them friends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredRequest")]
pub struct FriendRequest {
    pub request_id: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_ts: u64,
    /// The recipient ignores the sender: the request exists for the sender only.
    #[serde(default)]
    pub hidden: bool,
    /// The pair's direct chat: the room this request's invite is into, or (for a request
    /// between two people still in their old direct chat) that room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm_room_id: Option<String>,
    /// The request is an invite into `dm_room_id`: what happens to the invite answers it
    /// (joining, rejecting, rescinding), and no answer travels over the contacts endpoints.
    /// Under `dm_only`, an invite from a server without friend requests, held until the
    /// request is accepted.
    #[serde(default)]
    pub invite: bool,
}

/// A request as stored by any version: before `dm_room_id` and `invite`, a held invite's
/// request had only `room_id` (and was always an invite).
#[derive(Deserialize)]
struct StoredRequest {
    request_id: String,
    from: String,
    to: String,
    #[serde(default)]
    message: Option<String>,
    created_ts: u64,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    dm_room_id: Option<String>,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    invite: Option<bool>,
}

impl From<StoredRequest> for FriendRequest {
    fn from(stored: StoredRequest) -> FriendRequest {
        let legacy_held = stored.room_id.is_some();
        FriendRequest {
            request_id: stored.request_id,
            from: stored.from,
            to: stored.to,
            message: stored.message,
            created_ts: stored.created_ts,
            hidden: stored.hidden,
            dm_room_id: stored.dm_room_id.or(stored.room_id),
            invite: stored.invite.unwrap_or(legacy_held),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// A user's entry for a request between them and another user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRef {
    pub request_id: String,
    pub dir: Direction,
}

/// What one user is to another, as search results show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    None,
    Friend,
    /// They asked this user.
    Incoming,
    /// This user asked them.
    Outgoing,
}

pub struct Contacts {
    storage: Storage,
    /// Per user, across every read-check-write involving them: two mutual requests at once
    /// end in one friendship, and two changes touching one user (two people asking them at
    /// once) cannot each write a view of that user missing the other's change.
    user_locks: StripedLocks,
    request_limiter: RateLimiter,
    /// Friend requests from each other server, all its users together: ten users' worth.
    origin_limiter: RateLimiter,
    server_name: String,
    federation: Option<Arc<FederationClient>>,
    outbox: Arc<Outbox>,
    /// `[contacts] dm_requires_friendship`: what messaging asks of invites and direct chats.
    dm_policy: DmPolicy,
}

/// How many users' allowance of friend requests one other server has, all together.
const ORIGIN_SHARE: u32 = 10;

impl Contacts {
    pub fn new(
        storage: Storage,
        config: &Config,
        federation: Option<Arc<FederationClient>>,
        outbox: Arc<Outbox>,
    ) -> Contacts {
        let limits = &config.contacts;
        Contacts {
            storage,
            user_locks: StripedLocks::new(64),
            request_limiter: RateLimiter::new(limits.request_burst, limits.requests_per_minute),
            origin_limiter: RateLimiter::new(
                limits.request_burst.saturating_mul(ORIGIN_SHARE),
                limits.requests_per_minute * f64::from(ORIGIN_SHARE),
            ),
            server_name: config.server_name.clone(),
            federation,
            outbox,
            dm_policy: limits.dm_requires_friendship,
        }
    }

    async fn lock_pair(&self, a: &str, b: &str) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        self.user_locks.lock_both(a, b).await
    }

    /// The user's contacts record (their settings); `None` for users not of this server.
    pub fn record(&self, user: &str) -> Result<Option<ContactsRecord>> {
        Ok(self.storage.get(&catalog::USERID_CONTACTS, &user)?)
    }

    /// Changes whether the user is found by their verified email address.
    pub async fn set_discoverable_by_email(&self, user: &str, discoverable: bool) -> Result<()> {
        let _guard = self.user_locks.lock(user).await;
        let mut record = self.record(user)?.unwrap_or(ContactsRecord {
            created_ts: now_ms(),
            discoverable_by_email: false,
        });
        record.discoverable_by_email = discoverable;
        Ok(self
            .storage
            .put(&catalog::USERID_CONTACTS, &user, &record)
            .await?)
    }

    pub fn friendship(&self, user: &str, other: &str) -> Result<Option<Friendship>> {
        Ok(self
            .storage
            .get(&catalog::USERID_OTHERID_FRIENDSHIP, &(user, other))?)
    }

    pub fn are_friends(&self, user: &str, other: &str) -> Result<bool> {
        Ok(self.friendship(user, other)?.is_some())
    }

    /// The user's friends, with since when.
    pub fn friends(&self, user: &str) -> Result<Vec<(String, Friendship)>> {
        let rows: Vec<((String, String), Friendship)> = self
            .storage
            .scan_prefix(&catalog::USERID_OTHERID_FRIENDSHIP, &(user,))?;
        Ok(rows.into_iter().map(|((_, other), f)| (other, f)).collect())
    }

    pub fn request_ref(&self, user: &str, other: &str) -> Result<Option<RequestRef>> {
        Ok(self
            .storage
            .get(&catalog::USERID_OTHERID_REQUEST, &(user, other))?)
    }

    pub fn relationship(&self, user: &str, other: &str) -> Result<Relationship> {
        if self.are_friends(user, other)? {
            return Ok(Relationship::Friend);
        }
        Ok(match self.request_ref(user, other)? {
            Some(r) if r.dir == Direction::Incoming => Relationship::Incoming,
            Some(_) => Relationship::Outgoing,
            None => Relationship::None,
        })
    }

    /// Ends a friendship (404 if there is none); both users' views change with it.
    pub async fn remove_friend(&self, user: &str, other: &str) -> Result<()> {
        let _guard = self.lock_pair(user, other).await;
        if !self.are_friends(user, other)? {
            return Err(crate::services::error::Error::not_found("Not friends"));
        }
        let mut batch = self.storage.batch();
        let mut change = view::Change::default();
        unfriend_into(&mut batch, &mut change, user, other)?;
        self.write_views(&mut batch, &[user, other], &change)?;
        let body = serde_json::json!({ "sender": user, "target": other });
        let path = format!("/remove/{}", crate::util::random_string(18));
        let notified = self.notify_into(&mut batch, other, path, body)?;
        self.storage.commit(batch).await?;
        self.wake(notified);
        Ok(())
    }
}

impl Contacts {
    /// Ends everything a deactivated user had: friendships and open requests, both ways,
    /// each other user's view rewritten with it.
    pub async fn forget_user(&self, user: &str) -> Result<()> {
        let mut others: Vec<String> = self.friends(user)?.into_iter().map(|(o, _)| o).collect();
        let refs: Vec<((String, String), RequestRef)> = self
            .storage
            .scan_prefix(&catalog::USERID_OTHERID_REQUEST, &(user,))?;
        others.extend(refs.into_iter().map(|((_, other), _)| other));
        others.sort();
        others.dedup();
        for other in others {
            let _guard = self.lock_pair(user, &other).await;
            let mut batch = self.storage.batch();
            let mut change = view::Change::default();
            // The other user's server, if another, hears of each ending.
            let mut notified = None;
            if self.are_friends(user, &other)? {
                unfriend_into(&mut batch, &mut change, user, &other)?;
                let body = serde_json::json!({ "sender": user, "target": other });
                let path = format!("/remove/{}", crate::util::random_string(18));
                notified = self.notify_into(&mut batch, &other, path, body)?;
            }
            for (a, b) in [(user, other.as_str()), (other.as_str(), user)] {
                let Some(reference) = self.request_ref(a, b)? else {
                    continue;
                };
                if let Some(request) = self.request(&reference.request_id)? {
                    self.drop_request(&mut batch, &request)?;
                    let action = if request.from == user {
                        "cancel"
                    } else {
                        "decline"
                    };
                    let body = serde_json::json!({ "sender": user, "action": action });
                    let path = format!("/response/{}", request.request_id);
                    notified = self
                        .notify_into(&mut batch, &other, path, body)?
                        .or(notified);
                    change.requests_removed.push(request.request_id);
                }
            }
            self.write_views(&mut batch, &[user, other.as_str()], &change)?;
            self.storage.commit(batch).await?;
            self.wake(notified);
        }
        Ok(())
    }
}

/// Ends the friendship of `user` and `other` (both ways) in `batch`, as `user`'s doing.
fn unfriend_into(
    batch: &mut Batch,
    change: &mut view::Change,
    user: &str,
    other: &str,
) -> Result<()> {
    for (a, b) in [(user, other), (other, user)] {
        batch.delete(&catalog::USERID_OTHERID_FRIENDSHIP, &(a, b))?;
        change.friends_removed.push((a.to_owned(), b.to_owned()));
    }
    let removed = DomainEvent::FriendshipRemoved {
        user_id: user.to_owned(),
        other_user_id: other.to_owned(),
    };
    crate::events::append(batch, removed)?;
    Ok(())
}

/// Gives a new user a contacts record and an empty live view (`user.created`).
pub fn create_for_new_user(
    storage: &Storage,
    user_id: &str,
    batch: &mut Batch,
) -> kith_storage::Result<()> {
    if storage.contains(&catalog::USERID_CONTACTS, &user_id)? {
        return Ok(());
    }
    let record = ContactsRecord {
        created_ts: now_ms(),
        discoverable_by_email: false,
    };
    batch.put(&catalog::USERID_CONTACTS, &user_id, &record)?;
    // The live view exists from the start (empty), unless a change already wrote it.
    if !has_account_data(storage, user_id, CONTACTS_EVENT)? {
        let empty = serde_json::json!({ "friends": [], "incoming": [], "outgoing": [] });
        put_account_data(batch, user_id, None, CONTACTS_EVENT, empty)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::FriendRequest;

    /// A held invite's request stored before `dm_room_id` and `invite` is still an invite.
    #[test]
    fn requests_stored_by_earlier_versions_keep_their_meaning() {
        let old = r#"{"request_id":"r","from":"@a:x","to":"@b:y","created_ts":1,"room_id":"!r:x"}"#;
        let request: FriendRequest = serde_json::from_str(old).unwrap();
        assert_eq!(request.dm_room_id.as_deref(), Some("!r:x"));
        assert!(request.invite);
        let plain = r#"{"request_id":"r","from":"@a:x","to":"@b:y","created_ts":1}"#;
        let request: FriendRequest = serde_json::from_str(plain).unwrap();
        assert!(!request.invite && request.dm_room_id.is_none());
        let new = r#"{"request_id":"r","from":"@a:x","to":"@b:y","created_ts":1,"dm_room_id":"!r:x","invite":false}"#;
        let request: FriendRequest = serde_json::from_str(new).unwrap();
        assert!(!request.invite);
        assert_eq!(request.dm_room_id.as_deref(), Some("!r:x"));
    }
}
