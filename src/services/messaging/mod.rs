//! messaging-service: rooms and their events. Every event is a signed PDU of its room
//! version, checked against the room's auth rules before it is stored; a room's events,
//! state and memberships change together in one write.

mod account_data;
mod acl;
mod aliases;
mod auth_events;
mod backfill;
mod bumps;
mod create;
mod directory;
mod draft;
mod federation;
mod history;
mod membership;
mod message_search;
mod power;
mod purge;
mod push;
mod receipts;
mod relations;
mod reports;
mod room;
mod send;
mod shutdown;
mod spaces;
mod state;
mod sync;
mod typing_timers;
mod upgrade;
mod verify;
mod visibility;

use std::sync::Arc;
use std::time::Duration;

use kith_federation::{FederationClient, Outbox, ServerKeys};
use kith_storage::{Storage, catalog};
use ruma::{DeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

pub use create::{NewRoom, Preset, object};
pub use directory::DirectoryQuery;
pub use draft::EventSpec;
pub use federation::InviteIn;
pub use history::MAX_LIMIT;
pub use membership::Moderation;
pub use message_search::{Found, SearchOrder, SearchQuery};

pub use push::{PUSH_RULES, UnreadCounts};
pub use receipts::PRIVATE_READ;
pub use relations::{Bundler, RelationsPage, RelationsQuery, ThreadsInclude, position_token};
pub use reports::Reported;
pub use room::{LocalTransaction, Membership, Replaced, Room, StoredPdu};
pub use send::Transaction;
pub use shutdown::{NOTICE_MESSAGE, NOTICE_ROOM_NAME};
pub use spaces::HierarchyQuery;
pub use sync::JoinedSync;

use crate::services::auth::AuthService;
use crate::services::contacts::Contacts;
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::{InFlight, InFlightGuard, RateLimiter, StripedLocks, server_of};

pub struct Messaging {
    storage: Storage,
    keys: Arc<ServerKeys>,
    federation: Option<Arc<FederationClient>>,
    /// Asked whether a local invitee exists.
    auth: Arc<AuthService>,
    /// Asked before an invite or a message in a direct chat (the friendship policy).
    contacts: Arc<Contacts>,
    /// What other servers are to receive, written with the changes that cause it.
    pub(crate) outbox: Arc<Outbox>,
    /// Per room, held from reading the room's head to committing the events built on it
    /// (across an invite's round trip to the invitee's server too). One lock per room, not
    /// shared stripes: two servers inviting each other's users at once each hold a room
    /// the other must lock to answer, and a shared stripe would make that a deadlock.
    room_locks: crate::util::KeyedLocks,
    /// Per room, held across the read-modify-write of its typing state.
    ephemeral_locks: StripedLocks,
    /// When rooms' typing notices run out.
    typing_timers: typing_timers::TypingTimers,
    /// Per user or alias name, held across a read-modify-write of a user's push rules or
    /// the check that an alias is free.
    name_locks: StripedLocks,
    /// Parsed auth events for drafts (see [`auth_events`]).
    auth_events: auth_events::AuthEvents,
    /// Events each local user may send (`[rate_limits] messages`).
    send_limiter: RateLimiter,
    /// Each device's sends not yet answered: its own `/sync` waits for them (see
    /// [`Messaging::own_sends_answered`]).
    own_sends: Arc<InFlight>,
    /// Each room's last bump event, for sliding sync's order.
    bumps: bumps::Bumps,
}

impl Messaging {
    pub fn new(
        storage: Storage,
        keys: Arc<ServerKeys>,
        federation: Option<Arc<FederationClient>>,
        (auth, contacts): (Arc<AuthService>, Arc<Contacts>),
        outbox: Arc<Outbox>,
        send_limiter: RateLimiter,
    ) -> Messaging {
        Messaging {
            storage,
            keys,
            federation,
            auth,
            contacts,
            outbox,
            room_locks: Default::default(),
            ephemeral_locks: StripedLocks::new(64),
            typing_timers: Default::default(),
            name_locks: StripedLocks::new(64),
            auth_events: Default::default(),
            send_limiter,
            own_sends: Default::default(),
            bumps: Default::default(),
        }
    }

    /// Marks a send of `device`'s as unanswered until the guard is dropped: the handler
    /// keeps it until its answer is handed to the connection (see
    /// [`Messaging::own_sends_answered`]).
    pub fn answering(&self, user: &UserId, device: &DeviceId) -> InFlightGuard {
        self.own_sends.start(format!("{user}|{device}"))
    }

    /// Waits (at most a second) until `device`'s sends are answered, so that its `/sync`
    /// brings an event it sent after the send's answer, as clients expect: matrix-js-sdk
    /// never resolves a thread reply whose copy came down `/sync` first.
    pub async fn own_sends_answered(&self, user: &str, device: &str) {
        let key = format!("{user}|{device}");
        self.own_sends.settled(&key, Duration::from_secs(1)).await;
    }

    /// Queues an EDU about a local user's doing in a room for the room's other servers;
    /// returns them, to [`Messaging::wake`] after the commit. Remote users' doings are
    /// their own servers' to share.
    pub fn share_into(
        &self,
        batch: &mut kith_storage::Batch,
        room_id: &str,
        user_id: &str,
        edu: serde_json::Value,
    ) -> Result<Vec<String>> {
        let own = self.server_name();
        if !user_id.ends_with(&format!(":{own}")) {
            return Ok(Vec::new());
        }
        let servers: std::collections::BTreeSet<String> = self
            .joined_member_rows(room_id)?
            .iter()
            .map(|user| user.server_name().to_string())
            .filter(|server| server != own)
            .collect();
        let item = kith_federation::Outgoing::Edu(edu);
        for server in &servers {
            Outbox::push_into(batch, server, &item)?;
        }
        Ok(servers.into_iter().collect())
    }

    /// Has the queue send what was just committed for these servers.
    pub fn wake(&self, destinations: &[String]) {
        self.outbox.wake(destinations);
    }

    /// A server just proved itself to us: whatever waits for it can go now.
    pub async fn peer_alive(&self, server: &str) {
        self.outbox.peer_alive(server).await;
    }

    pub fn server_name(&self) -> &str {
        self.keys.server_name()
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<Room>> {
        Ok(self.storage.get(&catalog::ROOMID_ROOM, &room_id.as_str())?)
    }

    pub fn stored_pdu(&self, event_id: &str) -> Result<Option<StoredPdu>> {
        Ok(self.storage.get(&catalog::EVENTID_PDU, &event_id)?)
    }

    pub fn state_event_id(
        &self,
        room_id: &RoomId,
        kind: &str,
        key: &str,
    ) -> Result<Option<OwnedEventId>> {
        Ok(self.storage.get(
            &catalog::ROOMID_TYPE_STATEKEY_EVENTID,
            &(room_id.as_str(), kind, key),
        )?)
    }

    /// The room's current state, as event IDs keyed by (type, state key).
    pub fn state_ids(&self, room_id: &RoomId) -> Result<Vec<((String, String), OwnedEventId)>> {
        let rows: Vec<((String, String, String), OwnedEventId)> = self
            .storage
            .scan_prefix(&catalog::ROOMID_TYPE_STATEKEY_EVENTID, &(room_id.as_str(),))?;
        Ok(rows
            .into_iter()
            .map(|((_, kind, key), id)| ((kind, key), id))
            .collect())
    }

    /// The event a device's earlier send with this transaction ID created.
    pub fn transaction(&self, key: (&str, &str, &str)) -> Result<Option<OwnedEventId>> {
        Ok(self
            .storage
            .get(&catalog::USERID_DEVICEID_TXNID_EVENTID, &key)?)
    }

    pub fn membership(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<Membership>> {
        self.membership_row(user_id.as_str(), room_id.as_str())
    }

    /// [`Messaging::membership`] by IDs as events and rows hold them.
    pub(super) fn membership_row(&self, user: &str, room: &str) -> Result<Option<Membership>> {
        let key = (user, room);
        Ok(self.storage.get(&catalog::USERID_ROOMID_MEMBERSHIP, &key)?)
    }

    /// The media (`mxc://` URIs) the room's events name, newest first: each message's
    /// `url` and its `info.thumbnail_url`.
    pub fn media_in_room(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let rows: Vec<((String, u64), String)> = self
            .storage
            .scan_prefix(&catalog::ROOMID_POSITION_EVENTID, &room_id.as_str())?;
        let mut uris = Vec::new();
        for (_, event_id) in rows.iter().rev() {
            let Some(event) = self.stored_pdu(event_id)? else {
                continue;
            };
            let content = &event.client_event()["content"];
            for uri in [&content["url"], &content["info"]["thumbnail_url"]] {
                if let Some(uri) = uri.as_str().filter(|u| u.starts_with("mxc://")) {
                    uris.push(uri.to_owned());
                }
            }
        }
        Ok(uris)
    }

    /// Every room this server holds, by ID.
    pub fn rooms(&self) -> Result<Vec<(OwnedRoomId, Room)>> {
        let rows: Vec<(String, Room)> = self.storage.scan_prefix(&catalog::ROOMID_ROOM, &())?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, room)| Some((RoomId::parse(id).ok()?, room)))
            .collect())
    }

    /// The rooms a user is joined to.
    pub fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .memberships(user_id)?
            .into_iter()
            .filter(|(_, m)| m.membership == "join")
            .map(|(room, _)| room)
            .collect())
    }

    /// Everyone with a membership in the room, with it, in user ID order.
    pub fn members(&self, room_id: &RoomId) -> Result<Vec<(OwnedUserId, Membership)>> {
        self.member_rows(room_id.as_str())
    }

    /// [`Messaging::members`] by a room ID as events and rows hold it.
    pub(super) fn member_rows(&self, room: &str) -> Result<Vec<(OwnedUserId, Membership)>> {
        let rows: Vec<((String, String), Membership)> = self
            .storage
            .scan_prefix(&catalog::ROOMID_USERID_MEMBERSHIP, &(room,))?;
        Ok(rows
            .into_iter()
            .filter_map(|((_, user), m)| Some((OwnedUserId::try_from(user).ok()?, m)))
            .collect())
    }

    /// A member's event as of stream position `at`: the current one if it is not newer,
    /// else the member event it replaced (every member event names the one before it among
    /// its auth events), and so on back. `None` if they had none yet.
    pub fn member_event_at(
        &self,
        user_id: &str,
        current: &Membership,
        at: u64,
    ) -> Result<Option<StoredPdu>> {
        let mut next = Some(current.event_id.clone());
        while let Some(event_id) = next.take() {
            let Some(event) = self.stored_pdu(event_id.as_str())? else {
                break;
            };
            if event.position <= at {
                return Ok(Some(event));
            }
            let pdu = event.pdu().map_err(Error::internal)?;
            for auth_id in &pdu.auth_events {
                let earlier = self.stored_pdu(auth_id.as_str())?;
                let is_previous = earlier.as_ref().is_some_and(|e| {
                    e.json.get("type").and_then(|t| t.as_str()) == Some("m.room.member")
                        && e.json.get("state_key").and_then(|k| k.as_str()) == Some(user_id)
                });
                if is_previous {
                    next = Some(auth_id.clone());
                }
            }
        }
        Ok(None)
    }

    /// Forgets a room the user has left or been banned from (400 while still in it).
    pub async fn forget(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        let room = room_id.as_str();
        let _guard = self.room_locks.lock(room).await;
        let mut membership = self
            .membership(user_id, room_id)?
            .ok_or_else(|| Error::not_found("You were never in this room"))?;
        if !matches!(membership.membership.as_str(), "leave" | "ban") {
            return Err(Error::new(
                ErrorKind::StillInRoom,
                "You must leave the room before forgetting it",
            ));
        }
        membership.forgotten = true;
        let mut batch = self.storage.batch();
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(user_id.as_str(), room),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room, user_id.as_str()),
            &membership,
        )?;
        Ok(self.storage.commit(batch).await?)
    }

    /// The users joined to the room.
    pub fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        self.joined_member_rows(room_id.as_str())
    }

    /// [`Messaging::joined_members`] by a room ID as events and rows hold it.
    pub(super) fn joined_member_rows(&self, room: &str) -> Result<Vec<OwnedUserId>> {
        Ok(self
            .member_rows(room)?
            .into_iter()
            .filter(|(_, m)| m.membership == "join")
            .map(|(user, _)| user)
            .collect())
    }

    /// Events of a room's timeline before `before` (exclusive), newest first.
    pub fn timeline_before(
        &self,
        room_id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredPdu)>> {
        let rows = self.storage.scan_prefix_back(
            &catalog::ROOMID_POSITION_EVENTID,
            &(room_id,),
            &(room_id, before),
            limit,
        )?;
        self.timeline_events(rows)
    }

    /// Up to `limit` events of a room's timeline after `after` up to `upto` (inclusive),
    /// newest first. Only those events are read: an incremental sync costs what it returns,
    /// not the timeline limit.
    pub fn timeline_between(
        &self,
        room_id: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredPdu)>> {
        let in_range = |rows: Vec<((String, u64), OwnedEventId)>| -> Vec<_> {
            rows.into_iter()
                .filter(|((_, p), _)| *p > after && *p <= upto)
                .collect()
        };
        // Usually few events are new: read forwards from `after`, and only if more than
        // `limit` are, the newest `limit` backwards from `upto` (at once when there is no
        // `after`: an initial sync wants the newest).
        let mut rows = match after {
            0 => Vec::new(),
            _ => in_range(self.storage.scan_prefix_after(
                &catalog::ROOMID_POSITION_EVENTID,
                &(room_id,),
                &(room_id, after),
                limit,
            )?),
        };
        if after == 0 || rows.len() >= limit {
            rows = in_range(self.storage.scan_prefix_back(
                &catalog::ROOMID_POSITION_EVENTID,
                &(room_id,),
                &(room_id, upto.saturating_add(1)),
                limit,
            )?);
        } else {
            rows.reverse();
        }
        self.timeline_events(rows)
    }

    /// The stored events of timeline rows, with their positions.
    fn timeline_events(
        &self,
        rows: Vec<((String, u64), OwnedEventId)>,
    ) -> Result<Vec<(u64, StoredPdu)>> {
        let mut out = Vec::new();
        for ((_, position), event_id) in rows {
            if let Some(stored) = self.stored_pdu(event_id.as_str())? {
                out.push((position, stored));
            }
        }
        Ok(out)
    }
}

/// The other servers with a user joined to a room `user_id` is joined to: who hears of
/// that user's presence and device changes. Read from the tables directly, for services
/// that announce from outside a request.
pub fn servers_sharing_rooms(
    storage: &Storage,
    user_id: &str,
    own: &str,
) -> kith_storage::Result<std::collections::BTreeSet<String>> {
    let rooms: Vec<((String, String), Membership)> =
        storage.scan_prefix(&catalog::USERID_ROOMID_MEMBERSHIP, &(user_id,))?;
    let mut servers = std::collections::BTreeSet::new();
    for ((_, room), _) in rooms.iter().filter(|(_, m)| m.membership == "join") {
        let members: Vec<((String, String), Membership)> =
            storage.scan_prefix(&catalog::ROOMID_USERID_MEMBERSHIP, &(room.as_str(),))?;
        for ((_, member), membership) in members {
            if membership.membership == "join"
                && let Some(server) = server_of(&member)
                && server != own
            {
                servers.insert(server.to_string());
            }
        }
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {

    use kith_federation::ServerKeys;
    use ruma::events::TimelineEventType;
    use ruma::{OwnedUserId, RoomVersionId};
    use serde_json::json;

    use super::*;

    /// Every stored event, read back from the database, is a valid signed PDU of its room's
    /// version: content hash and signature check out with the server's published key.
    #[tokio::test]
    async fn stored_events_are_valid_signed_pdus_redactions_included() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let keys = Arc::new(ServerKeys::load_or_generate(&storage, "kith.test").unwrap());
        let outbox = Arc::new(Outbox::default());
        let config = crate::config::Config::default();
        let contacts = Contacts::new(storage.clone(), &config, None, Arc::clone(&outbox));
        let auth = AuthService::new(storage.clone(), &config).unwrap();
        let services = (Arc::new(auth), Arc::new(contacts));
        let sends = config.rate_limits.messages.limiter();
        let messaging = Messaging::new(storage.clone(), keys, None, services, outbox, sends);
        let alice: OwnedUserId = "@alice:kith.test".try_into().unwrap();
        let spec = |kind: &str, key: Option<&str>, content| EventSpec {
            sender: alice.clone(),
            kind: TimelineEventType::from(kind),
            state_key: key.map(str::to_owned),
            content,
        };
        let mut rooms = Vec::new();
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            let mut draft = messaging.draft_new_room(version.clone()).unwrap();
            let mut create = json!({ "room_version": version.as_str() });
            if version == RoomVersionId::V10 {
                create["creator"] = alice.as_str().into();
            }
            draft.add(spec("m.room.create", Some(""), create)).unwrap();
            draft
                .add(spec(
                    "m.room.member",
                    Some(alice.as_str()),
                    json!({ "membership": "join" }),
                ))
                .unwrap();
            let room_id = draft.room_id().unwrap().to_owned();
            draft.commit(storage.batch()).await.unwrap();
            let mut draft = messaging.draft(&room_id).await.unwrap();
            let message = draft
                .add(spec(
                    "m.room.message",
                    None,
                    json!({ "msgtype": "m.text", "body": "hi" }),
                ))
                .unwrap();
            draft.commit(storage.batch()).await.unwrap();
            let mut draft = messaging.draft(&room_id).await.unwrap();
            let redaction = json!({ "redacts": message.event_id });
            draft
                .add(spec("m.room.redaction", None, redaction))
                .unwrap();
            draft.commit(storage.batch()).await.unwrap();
            rooms.push((room_id, version));
        }

        let report = messaging.verify_all().unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        // Per room: create, join, redaction verify whole; the redacted message by signature.
        assert_eq!((report.verified, report.redacted), (9, 3));
        let stored: Vec<(String, StoredPdu)> =
            storage.scan_prefix(&catalog::EVENTID_PDU, &()).unwrap();
        for (_, event) in stored {
            let version = &rooms
                .iter()
                .find(|(r, _)| r.as_str() == event.room_id)
                .unwrap()
                .1;
            let pdu = event.pdu().unwrap();
            if pdu.kind == TimelineEventType::RoomMessage {
                assert!(
                    event.redacted_because.is_some(),
                    "{version} message redacted"
                );
                assert_eq!(event.client_event()["content"], json!({}));
            }
            if pdu.kind == TimelineEventType::RoomRedaction {
                // v10 names the target top-level, v11 and later in content; clients see both.
                let in_content = pdu.json["content"]
                    .as_object()
                    .unwrap()
                    .contains_key("redacts");
                assert_eq!(in_content, *version != RoomVersionId::V10);
                assert!(event.client_event()["redacts"].is_string());
            }
        }
    }
}
