//! Contacts across servers. A request, its answer and an unfriending travel as
//! X-Matrix-signed `PUT`s under `/_matrix/federation/unstable/org.kith.contacts/v1/`:
//! `/request/{requestId}` `{sender, target, message?, origin_server_ts}` → `{state}`,
//! `/response/{requestId}` `{sender, action: accept|decline|cancel}`, and
//! `/remove/{txnId}` `{sender, target}`. Each is idempotent; both servers keep the request
//! under the same ID and write their own users' views and domain events. A new request is
//! tried at once, so a server without the extension (404 `M_UNRECOGNIZED`, as Synapse
//! answers) is reported to the sender; everything else goes through the outbound queue,
//! written in the same batch as the change, and is retried until the peer takes it.

use http::StatusCode;
use kith_federation::{FederationError, Outbox, Outgoing};
use kith_storage::Batch;
use ruma::{ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::view::Change;
use super::{Contacts, Direction, FriendRequest, SendOutcome, Settled};
use crate::services::account_data::ignores;
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::{now_ms, random_string, server_of};

/// Where kith's contacts endpoints live on every server.
pub const FEDERATION_PREFIX: &str = "/_matrix/federation/unstable/org.kith.contacts/v1";

/// `PUT /request/{requestId}`
#[derive(Debug, Deserialize)]
pub struct RemoteRequest {
    pub sender: String,
    pub target: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub origin_server_ts: Option<u64>,
    /// The pair's direct chat, both of them still in it (after an unfriending).
    #[serde(default)]
    pub dm_room_id: Option<ruma::OwnedRoomId>,
}

/// `PUT /response/{requestId}`
#[derive(Debug, Deserialize)]
pub struct RemoteResponse {
    pub sender: String,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    Decline,
    Cancel,
}

/// `PUT /remove/{txnId}`
#[derive(Debug, Deserialize)]
pub struct RemoteRemove {
    pub sender: String,
    pub target: String,
}

fn unsupported(server: &str) -> Error {
    Error::new(
        ErrorKind::RemoteUnsupported,
        format!("{server} does not support friend requests (it is not a kith server)"),
    )
}

impl Contacts {
    pub(super) fn is_local(&self, user: &str) -> bool {
        server_of(user).is_some_and(|s| s == self.server_name.as_str())
    }

    /// Queues a `PUT` to `user`'s server in `batch` if they are on another server;
    /// returns that server, to wake after the commit.
    pub(super) fn notify_into(
        &self,
        batch: &mut Batch,
        user: &str,
        path: String,
        body: Value,
    ) -> Result<Option<String>> {
        if self.is_local(user) || self.federation.is_none() {
            return Ok(None);
        }
        let Some(server) = server_of(user).map(|s| s.to_string()) else {
            return Ok(None);
        };
        let path = format!("{FEDERATION_PREFIX}{path}");
        Outbox::push_into(batch, &server, &Outgoing::Put { path, body })?;
        Ok(Some(server))
    }

    /// Queues `user`'s answer to a request for the other side's server, if another (not
    /// for a request that is an invite: the membership event is the answer there).
    pub(super) fn answer_into(
        &self,
        batch: &mut Batch,
        request: &FriendRequest,
        user: &str,
        action: &str,
    ) -> Result<Option<String>> {
        if request.invite {
            return Ok(None);
        }
        let other = if request.from == user {
            &request.to
        } else {
            &request.from
        };
        let body = json!({ "sender": user, "action": action });
        let path = format!("/response/{}", request.request_id);
        self.notify_into(batch, other, path, body)
    }

    pub(super) fn wake(&self, destinations: Option<String>) {
        self.outbox
            .wake(&destinations.into_iter().collect::<Vec<_>>());
    }

    /// Wakes the queues of the servers a settled membership change queued news for.
    pub fn wake_settled(&self, settled: Settled<'_>) {
        self.outbox.wake(&settled.wake);
    }

    /// Whether `server` runs kith, so its users can send and answer friend requests.
    pub async fn speaks_contacts(&self, server: &ServerName) -> bool {
        let Some(client) = &self.federation else {
            return false;
        };
        client.software(server).await.as_deref() == Some("kith")
    }

    /// `from` (local) asks `to` (on another server): tried at once; a peer that cannot be
    /// reached gets it later from the queue, one without the extension is an error.
    pub async fn send_remote_request(
        &self,
        from: &str,
        to: &UserId,
        message: Option<String>,
        dm_room: Option<&str>,
    ) -> Result<SendOutcome> {
        let client = self
            .federation
            .clone()
            .ok_or_else(|| Error::forbidden("Federation is disabled on this server"))?;
        let to_str = to.as_str();
        self.check_message(&message)?;
        {
            let _pair = self.lock_pair(from, to_str).await;
            self.check_new_request(from, to_str)?;
            // They asked first: this is their request accepted, and their server is told.
            if let Some(theirs) = self
                .request_ref(from, to_str)?
                .filter(|r| r.dir == Direction::Incoming)
                && let Some(request) = self.request(&theirs.request_id)?
            {
                let mut batch = self.storage.batch();
                self.befriend(&mut batch, &request)?;
                let notified = self.answer_into(&mut batch, &request, from, "accept")?;
                self.storage.commit(batch).await?;
                self.wake(notified);
                return Ok(SendOutcome::Accepted(request.request_id));
            }
        }
        let mut request = self.new_request(from, to_str, message, false)?;
        request.dm_room_id = dm_room.map(str::to_owned);
        let mut body = json!({
            "sender": from,
            "target": to_str,
            "message": request.message,
            "origin_server_ts": request.created_ts,
        });
        if let Some(room) = dm_room {
            body["dm_room_id"] = room.into();
        }
        let path = format!("/request/{}", request.request_id);
        let full = format!("{FEDERATION_PREFIX}{path}");
        // Sent at once, outside the pair's lock (the other server may be asking this one
        // at the same moment), unless earlier news for that server waits in the queue:
        // then behind it, so it cannot overtake an unfriending or a cancellation.
        let server = to.server_name();
        let answer = match self.outbox.has_pending(server.as_str()) {
            true => Err(FederationError::Unreachable(
                server.to_string(),
                "queued".into(),
            )),
            false => {
                client
                    .send_json(server, http::Method::PUT, &full, Some(&body))
                    .await
            }
        };
        let _pair = self.lock_pair(from, to_str).await;
        // What changed meanwhile wins: a friendship, or the other side's request, which
        // crossed this one (their server did the same with ours, or will find it gone).
        if self.are_friends(from, to_str)? {
            return Ok(SendOutcome::Accepted(request.request_id));
        }
        if let Some(theirs) = self
            .request_ref(from, to_str)?
            .filter(|r| r.dir == Direction::Incoming)
            && let Some(theirs) = self.request(&theirs.request_id)?
        {
            let mut batch = self.storage.batch();
            self.befriend(&mut batch, &theirs)?;
            let notified = self.answer_into(&mut batch, &theirs, from, "accept")?;
            self.storage.commit(batch).await?;
            self.wake(notified);
            return Ok(SendOutcome::Accepted(theirs.request_id));
        }
        self.check_new_request(from, to_str)?;
        let mut batch = self.storage.batch();
        let mut queued = None;
        let accepted = match answer {
            Ok(answer) => answer["state"] == "accepted",
            Err(FederationError::Remote {
                status, errcode, ..
            }) if status == StatusCode::NOT_FOUND && errcode == "M_UNRECOGNIZED"
                || status == StatusCode::METHOD_NOT_ALLOWED =>
            {
                return Err(unsupported(to.server_name().as_str()));
            }
            Err(e) if e.answered() => return Err(crate::services::error::remote_error(e)),
            // Not reachable now: the request stands here and reaches them later.
            Err(e) => {
                tracing::info!(%to, "friend request queued: {e}");
                queued = self.notify_into(&mut batch, to_str, path, body)?;
                false
            }
        };
        self.store_request(&mut batch, &request)?;
        if accepted {
            self.befriend(&mut batch, &request)?;
        }
        self.storage.commit(batch).await?;
        self.wake(queued);
        Ok(match accepted {
            true => SendOutcome::Accepted(request.request_id),
            false => SendOutcome::Pending(request.request_id),
        })
    }

    /// Counts a friend request (or a held invite) from `from` on `origin`, per sender and
    /// per server: one server cannot flood us by making up senders.
    pub(super) fn take_request(&self, origin: &ServerName, from: &str) -> Result<()> {
        (self.origin_limiter)
            .take(origin.as_str())
            .map_err(Error::limit_exceeded)?;
        if let Err(wait) = self.request_limiter.take(from) {
            self.origin_limiter.refund(origin.as_str());
            return Err(Error::limit_exceeded(wait));
        }
        Ok(())
    }

    /// `PUT /request/{requestId}` from `origin`: a request for one of our users. Answers
    /// `pending`, or `accepted` when they are friends already or our user had asked too.
    pub async fn receive_request(
        &self,
        origin: &ServerName,
        request_id: &str,
        body: RemoteRequest,
    ) -> Result<&'static str> {
        let (from, to) = (body.sender.as_str(), body.target.as_str());
        if UserId::parse(from).map_or(true, |u| u.server_name() != origin) {
            return Err(Error::forbidden("The sender is not a user of your server"));
        }
        if !self.is_local(to) {
            return Err(Error::not_found("The target is not a user of this server"));
        }
        self.check_message(&body.message)?;
        let _guard = self.lock_pair(from, to).await;
        if self.are_friends(from, to)? {
            return Ok("accepted");
        }
        if let Some(known) = self.request(request_id)? {
            if known.from == from && known.to == to {
                return Ok("pending");
            }
            return Err(Error::forbidden("That request ID is taken"));
        }
        let mut batch = self.storage.batch();
        // Our user had asked them too: one friendship, by our user's request.
        if let Some(ours) = self
            .request_ref(to, from)?
            .filter(|r| r.dir == Direction::Outgoing)
            && let Some(request) = self.request(&ours.request_id)?
        {
            self.befriend(&mut batch, &request)?;
            self.storage.commit(batch).await?;
            return Ok("accepted");
        }
        self.take_request(origin, from)?;
        // When the sender made it, unless that claims to be in the future.
        let now = now_ms();
        let created_ts = body.origin_server_ts.filter(|ts| *ts <= now).unwrap_or(now);
        let request = FriendRequest {
            request_id: request_id.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            message: body.message,
            created_ts,
            hidden: ignores(&self.storage, to, from)?,
            dm_room_id: body.dm_room_id.map(|r| r.to_string()),
            invite: false,
        };
        self.store_request(&mut batch, &request)?;
        self.storage.commit(batch).await?;
        Ok("pending")
    }

    /// A direct-chat invite from `from`, on `origin` (a server without friend requests),
    /// to `to`, who is not their friend: it becomes `from`'s incoming request to `to` (or
    /// joins the one there is), which reveals the invite when accepted. Written into
    /// `batch`, with the held invite; the returned locks keep the pair's requests as
    /// checked until it is committed. Rate-limited per sender and per server, as each
    /// such invite shows the user something.
    pub async fn hold_invite_into(
        &self,
        batch: &mut Batch,
        origin: &ServerName,
        (from, to): (&str, &str),
        room_id: &str,
        ignored: bool,
    ) -> Result<Vec<tokio::sync::MutexGuard<'_, ()>>> {
        let guards = self.lock_pair(from, to).await;
        let existing = self
            .request_ref(to, from)?
            .filter(|r| r.dir == Direction::Incoming)
            .and_then(|r| self.request(&r.request_id).ok().flatten());
        if let Some(mut request) = existing {
            request.dm_room_id = Some(room_id.to_owned());
            request.invite = true;
            let id = request.request_id.clone();
            batch.put(
                &kith_storage::catalog::REQUESTID_REQUEST,
                &id.as_str(),
                &request,
            )?;
            return Ok(guards);
        }
        self.take_request(origin, from)?;
        let request = FriendRequest {
            request_id: random_string(18),
            from: from.to_owned(),
            to: to.to_owned(),
            message: None,
            created_ts: now_ms(),
            hidden: ignored,
            dm_room_id: Some(room_id.to_owned()),
            invite: true,
        };
        self.store_request(batch, &request)?;
        Ok(guards)
    }

    /// `PUT /response/{requestId}` from `origin`: the remote recipient accepted or
    /// declined our user's request, or the remote sender cancelled theirs.
    pub async fn receive_response(
        &self,
        origin: &ServerName,
        request_id: &str,
        body: RemoteResponse,
    ) -> Result<()> {
        let sender = body.sender.as_str();
        if UserId::parse(sender).map_or(true, |u| u.server_name() != origin) {
            return Err(Error::forbidden("The sender is not a user of your server"));
        }
        let Some(request) = self.request(request_id)? else {
            // Done already (or never known): nothing changes, twice or not.
            return Ok(());
        };
        let (local, party) = match body.action {
            Action::Accept | Action::Decline => (&request.from, &request.to),
            Action::Cancel => (&request.to, &request.from),
        };
        if party != sender || !self.is_local(local) {
            return Err(Error::forbidden("This request is not yours to act on"));
        }
        let _guard = self.lock_pair(&request.from, &request.to).await;
        let Some(request) = self.request(request_id)? else {
            return Ok(());
        };
        let mut batch = self.storage.batch();
        match body.action {
            Action::Accept => self.befriend(&mut batch, &request)?,
            Action::Decline | Action::Cancel => self.forget_request(&mut batch, &request)?,
        }
        Ok(self.storage.commit(batch).await?)
    }

    /// `PUT /remove/{txnId}` from `origin`: a remote user ended a friendship with ours.
    pub async fn receive_remove(&self, origin: &ServerName, body: RemoteRemove) -> Result<()> {
        let (sender, target) = (body.sender.as_str(), body.target.as_str());
        if UserId::parse(sender).map_or(true, |u| u.server_name() != origin) {
            return Err(Error::forbidden("The sender is not a user of your server"));
        }
        if !self.is_local(target) {
            return Err(Error::not_found("The target is not a user of this server"));
        }
        let _guard = self.lock_pair(sender, target).await;
        if !self.are_friends(sender, target)? {
            return Ok(());
        }
        let mut batch = self.storage.batch();
        let mut change = Change::default();
        super::unfriend_into(&mut batch, &mut change, sender, target)?;
        self.write_views(&mut batch, &[sender, target], &change)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Drops a request and shows both users it is gone.
    fn forget_request(&self, batch: &mut Batch, request: &FriendRequest) -> Result<()> {
        self.drop_request(batch, request)?;
        let change = Change {
            requests_removed: vec![request.request_id.clone()],
            ..Change::default()
        };
        self.write_views(batch, &[&request.from, &request.to], &change)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kith_storage::Storage;

    use super::*;

    /// A server cannot get past the per-sender limit by making up senders: all its users
    /// together have ten users' allowance.
    #[tokio::test]
    async fn another_server_has_ten_users_worth_of_friend_requests() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut config = crate::config::Config {
            server_name: "kith.test".into(),
            ..Default::default()
        };
        config.contacts.request_burst = 1;
        config.contacts.requests_per_minute = 0.0;
        let contacts = Contacts::new(storage, &config, None, Arc::default());
        let origin = ServerName::parse("other.example").unwrap();
        let ask = |i: usize| {
            let body = RemoteRequest {
                sender: format!("@u{i}:other.example"),
                target: "@bob:kith.test".into(),
                message: None,
                origin_server_ts: None,
                dm_room_id: None,
            };
            let contacts = &contacts;
            let origin = &origin;
            async move {
                let id = format!("r{i}");
                contacts.receive_request(origin, &id, body).await
            }
        };
        for i in 0..10 {
            assert_eq!(ask(i).await.unwrap(), "pending");
        }
        let refused = ask(10).await.unwrap_err();
        assert!(
            matches!(refused.kind(), ErrorKind::LimitExceeded { .. }),
            "{refused:?}"
        );
        let other = ServerName::parse("third.example").unwrap();
        let body = RemoteRequest {
            sender: "@u0:third.example".into(),
            target: "@bob:kith.test".into(),
            message: None,
            origin_server_ts: None,
            dm_room_id: None,
        };
        let answer = contacts.receive_request(&other, "t0", body).await;
        assert_eq!(
            answer.unwrap(),
            "pending",
            "another server has its own allowance"
        );
    }
}
