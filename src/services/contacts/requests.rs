//! Friend requests: sending (a request to someone who already asked you is a friendship at
//! once), accepting, declining, cancelling. Each runs under the pair's lock, so its checks
//! still hold when its batch commits.

use kith_storage::{Batch, catalog};
use serde_json::Value;

use super::view::Change;
use super::{Contacts, Direction, FriendRequest, Friendship, RequestRef};
use crate::events::{self, DomainEvent};
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::{now_ms, random_string};

/// The longest message a request may carry, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1000;

/// How a new request ended.
pub enum SendOutcome {
    Pending(String),
    /// The other user had already asked: now friends, by their request.
    Accepted(String),
}

impl Contacts {
    /// `from` asks `to` to be friends. `to` must be a local user (checked by the caller)
    /// who is not `from`; `ignored_by_recipient` hides the request from them; `dm_room` is
    /// their direct chat, both still in it.
    pub async fn send_request(
        &self,
        (from, to): (&str, &str),
        message: Option<String>,
        ignored_by_recipient: bool,
        dm_room: Option<&str>,
    ) -> Result<SendOutcome> {
        if from == to {
            return Err(Error::invalid_param(
                "You cannot send yourself a friend request",
            ));
        }
        self.check_message(&message)?;
        let _guard = self.lock_pair(from, to).await;
        self.check_new_request(from, to)?;
        // They asked first (even unseen, if this user ignores them): that request is accepted.
        if let Some(theirs) = self
            .request_ref(to, from)?
            .filter(|r| r.dir == Direction::Outgoing)
        {
            let request = self.request(&theirs.request_id)?;
            let request = request.ok_or_else(|| Error::internal("request ref without request"))?;
            let mut batch = self.storage.batch();
            self.befriend(&mut batch, &request)?;
            self.storage.commit(batch).await?;
            return Ok(SendOutcome::Accepted(request.request_id));
        }
        let mut request = self.new_request(from, to, message, ignored_by_recipient)?;
        request.dm_room_id = dm_room.map(str::to_owned);
        let mut batch = self.storage.batch();
        // An ignored sender's request stays theirs alone: pending for them, unseen by the
        // recipient, and in no log event another part of the server would act on.
        self.store_request(&mut batch, &request)?;
        self.storage.commit(batch).await?;
        Ok(SendOutcome::Pending(request.request_id))
    }

    /// A new request from `from` to `to`, counted against `from`'s rate limit. Only
    /// requests that would reach someone are counted: retries of errors are free.
    pub(super) fn new_request(
        &self,
        from: &str,
        to: &str,
        message: Option<String>,
        hidden: bool,
    ) -> Result<FriendRequest> {
        self.request_limiter
            .take(from)
            .map_err(Error::limit_exceeded)?;
        Ok(FriendRequest {
            request_id: random_string(18),
            from: from.to_owned(),
            to: to.to_owned(),
            message,
            created_ts: now_ms(),
            hidden,
            dm_room_id: None,
            invite: false,
        })
    }

    /// Writes a new request with both users' refs, its log event, and the views.
    pub(super) fn store_request(&self, batch: &mut Batch, request: &FriendRequest) -> Result<()> {
        let mut change = Change::default();
        self.store_request_into(batch, &mut change, request)?;
        self.write_change(batch, &change)
    }

    /// Writes a new request with both users' refs and its log event; `change` gathers what
    /// the users' views must show.
    pub(super) fn store_request_into(
        &self,
        batch: &mut Batch,
        change: &mut Change,
        request: &FriendRequest,
    ) -> Result<()> {
        let (id, from, to) = (
            request.request_id.as_str(),
            request.from.as_str(),
            request.to.as_str(),
        );
        batch.put(&catalog::REQUESTID_REQUEST, &id, request)?;
        let outgoing = RequestRef {
            request_id: id.to_owned(),
            dir: Direction::Outgoing,
        };
        batch.put(&catalog::USERID_OTHERID_REQUEST, &(from, to), &outgoing)?;
        change.views.push(from.to_owned());
        if !request.hidden {
            let incoming = RequestRef {
                request_id: id.to_owned(),
                dir: Direction::Incoming,
            };
            batch.put(&catalog::USERID_OTHERID_REQUEST, &(to, from), &incoming)?;
            let created = DomainEvent::FriendshipCreated {
                request_id: id.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
            };
            events::append(batch, created)?;
            change.views.push(to.to_owned());
        }
        if let Some(room) = &request.dm_room_id {
            self.remember_dm_room(batch, from, to, room)?;
        }
        change.requests_added.push(request.clone());
        Ok(())
    }

    /// Notes `room` as the direct chat of `a` and `b`, for whichever of them is ours.
    pub(super) fn remember_dm_room(
        &self,
        batch: &mut Batch,
        a: &str,
        b: &str,
        room: &str,
    ) -> Result<()> {
        for (user, other) in [(a, b), (b, a)] {
            if self.is_local(user) {
                batch.put(&catalog::USERID_OTHERID_DMROOM, &(user, other), &room)?;
            }
        }
        Ok(())
    }

    /// Forgets, in `batch`, a purged room as the direct chat of local `user` with anyone:
    /// the next request between them makes a new one.
    pub fn forget_dm_room_into(&self, batch: &mut Batch, user: &str, room: &str) -> Result<()> {
        let chats: Vec<((String, String), String)> = self
            .storage
            .scan_prefix(&catalog::USERID_OTHERID_DMROOM, &(user,))?;
        for ((_, other), chat) in chats {
            if chat == room {
                batch.delete(&catalog::USERID_OTHERID_DMROOM, &(user, other.as_str()))?;
            }
        }
        Ok(())
    }

    /// The direct chat the last request between `user` and `other` made or named.
    pub fn dm_room(&self, user: &str, other: &str) -> Result<Option<String>> {
        Ok(self
            .storage
            .get(&catalog::USERID_OTHERID_DMROOM, &(user, other))?)
    }

    /// A request's message must fit.
    pub fn check_message(&self, message: &Option<String>) -> Result<()> {
        if message
            .as_ref()
            .is_some_and(|m| m.len() > MAX_MESSAGE_BYTES)
        {
            return Err(Error::invalid_param(format!(
                "A request's message holds at most {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// 409 if `from` and `to` are friends, or `from` has asked already (checked under the
    /// pair's lock).
    pub fn check_new_request(&self, from: &str, to: &str) -> Result<()> {
        if self.are_friends(from, to)? {
            return Err(Error::new(ErrorKind::AlreadyFriends, "Already friends"));
        }
        if self
            .request_ref(from, to)?
            .is_some_and(|r| r.dir == Direction::Outgoing)
        {
            return Err(Error::new(
                ErrorKind::RequestExists,
                "You have already asked this user",
            ));
        }
        Ok(())
    }

    /// Removes a request and its refs in `batch`.
    pub(super) fn drop_request(&self, batch: &mut Batch, request: &FriendRequest) -> Result<()> {
        batch.delete(&catalog::REQUESTID_REQUEST, &request.request_id.as_str())?;
        let (from, to) = (request.from.as_str(), request.to.as_str());
        batch.delete(&catalog::USERID_OTHERID_REQUEST, &(from, to))?;
        batch.delete(&catalog::USERID_OTHERID_REQUEST, &(to, from))?;
        Ok(())
    }

    /// Turns a request into a friendship, in `batch`.
    pub(super) fn befriend(&self, batch: &mut Batch, request: &FriendRequest) -> Result<()> {
        let mut change = Change::default();
        self.befriend_into(batch, &mut change, request, None)?;
        self.write_change(batch, &change)
    }

    /// Turns a request into a friendship, in `batch`; their direct chat is `dm_room`, or the
    /// request's.
    pub(super) fn befriend_into(
        &self,
        batch: &mut Batch,
        change: &mut Change,
        request: &FriendRequest,
        dm_room: Option<&str>,
    ) -> Result<()> {
        let (from, to) = (request.from.as_str(), request.to.as_str());
        self.drop_request(batch, request)?;
        let dm_room_id = dm_room.or(request.dm_room_id.as_deref());
        if let Some(room) = dm_room_id {
            self.remember_dm_room(batch, from, to, room)?;
        }
        let friendship = Friendship {
            since_ts: now_ms(),
            dm_room_id: dm_room_id.map(str::to_owned),
            request_id: Some(request.request_id.clone()),
        };
        change.requests_removed.push(request.request_id.clone());
        for (a, b) in [(from, to), (to, from)] {
            batch.put(&catalog::USERID_OTHERID_FRIENDSHIP, &(a, b), &friendship)?;
            change
                .friends_added
                .push((a.to_owned(), b.to_owned(), friendship.clone()));
        }
        let accepted = DomainEvent::FriendshipAccepted {
            request_id: request.request_id.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        events::append(batch, accepted)?;
        change.views.extend([from.to_owned(), to.to_owned()]);
        Ok(())
    }

    /// A request `user` may act on as `role`: 404 if there is none, 403 if it is someone
    /// else's. A request hidden from its recipient does not exist for them.
    fn own_request(&self, request_id: &str, user: &str, role: Direction) -> Result<FriendRequest> {
        let request = self.request(request_id)?;
        let request = request
            .filter(|r| !(r.hidden && r.to == user))
            .ok_or_else(|| Error::not_found("No such friend request"))?;
        let theirs = match role {
            Direction::Incoming => request.to == user,
            Direction::Outgoing => request.from == user,
        };
        if !theirs {
            return Err(Error::forbidden("This request is not yours to act on"));
        }
        Ok(request)
    }

    /// The recipient accepts: friends from now on.
    /// Commits with whatever `batch` holds (the release of the invite the request came
    /// as).
    pub async fn accept(
        &self,
        user: &str,
        request_id: &str,
        also: impl FnOnce(&mut Batch, &FriendRequest) -> Result<()>,
    ) -> Result<()> {
        let request = self.own_request(request_id, user, Direction::Incoming)?;
        let _guard = self.lock_pair(&request.from, &request.to).await;
        // Looked up again under the lock: the sender may have cancelled meanwhile.
        let request = self.own_request(request_id, user, Direction::Incoming)?;
        // Staged only now: a batch takes its stream position as it is written to, and one
        // taken before waiting for the lock would hold back every later write's visibility.
        let mut batch = self.storage.batch();
        also(&mut batch, &request)?;
        self.befriend(&mut batch, &request)?;
        let notified = self.answer_into(&mut batch, &request, user, "accept")?;
        self.storage.commit(batch).await?;
        self.wake(notified);
        Ok(())
    }

    /// The recipient declines (`Incoming`) or the sender cancels (`Outgoing`).
    pub async fn withdraw(&self, user: &str, request_id: &str, role: Direction) -> Result<()> {
        let request = self.own_request(request_id, user, role)?;
        let _guard = self.lock_pair(&request.from, &request.to).await;
        let request = self.own_request(request_id, user, role)?;
        let mut batch = self.storage.batch();
        self.drop_request(&mut batch, &request)?;
        let change = Change {
            requests_removed: vec![request.request_id.clone()],
            ..Change::default()
        };
        let mut views = vec![request.from.as_str()];
        if !request.hidden {
            views.push(request.to.as_str());
        }
        self.write_views(&mut batch, &views, &change)?;
        // The other side's server hears of it (a hidden request it never had, too: the
        // answer changes nothing there).
        let action = match role {
            Direction::Incoming => "decline",
            Direction::Outgoing => "cancel",
        };
        let notified = self.answer_into(&mut batch, &request, user, action)?;
        self.storage.commit(batch).await?;
        self.wake(notified);
        Ok(())
    }

    /// The user's requests in one direction, oldest first.
    pub fn requests(&self, user: &str, dir: Direction) -> Result<Vec<Value>> {
        let view = self.view(user)?;
        let key = match dir {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        };
        Ok(view[key].as_array().cloned().unwrap_or_default())
    }
}
