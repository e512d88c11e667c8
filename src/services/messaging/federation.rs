//! Rooms over federation: events other servers send us, joins through a resident server
//! (as the joining server and as the resident one), and invites both ways. Every received
//! event is checked as the spec orders it: format and reference hash, signatures (a bad
//! content hash redacts it), then the auth rules against its auth events and the room's
//! current state; it is stored only if all pass.

use http::StatusCode;
use kith_federation::pdu::{self, SUPPORTED_VERSIONS};
use kith_federation::{FederationClient, FederationError, Pdu};
use kith_storage::catalog;
use ruma::api::federation::event::get_missing_events;
use ruma::api::federation::membership::{
    create_join_event, create_leave_event, prepare_join_event, prepare_leave_event,
};
use ruma::events::TimelineEventType;
use ruma::signatures::Verified;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId,
    RoomVersionId, ServerName, UserId,
};
use serde_json::{Value, json};

use super::draft::{Draft, EventSpec};
use super::{Messaging, Room, StoredPdu};
use crate::gateway::{Error, Result};
use crate::util::now_ms;

/// How long a remote user types without a renewal (Synapse renews every 40 s and forgets
/// after 60).
pub const REMOTE_TYPING: std::time::Duration = std::time::Duration::from_secs(60);

fn incompatible(version: &RoomVersionId) -> Error {
    Error::new(
        StatusCode::BAD_REQUEST,
        "M_INCOMPATIBLE_ROOM_VERSION",
        format!("Room version {version} is not supported here"),
    )
    .with("room_version", version.as_str())
}

/// A peer's failure, as our client sees it: its own Matrix error passed on where it gave
/// one (an invite it blocked stays `M_INVITE_BLOCKED`), else 502.
pub fn remote_error(e: FederationError) -> Error {
    match e {
        FederationError::Remote {
            status,
            errcode,
            error,
            ..
        } if !errcode.is_empty() && status.is_client_error() => Error::new(status, &errcode, error),
        other => Error::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", other.to_string()),
    }
}

fn object_of(value: &Value) -> Result<CanonicalJsonObject> {
    serde_json::from_value(value.clone()).map_err(|e| Error::bad_json(format!("Bad event: {e}")))
}

impl Messaging {
    pub(super) fn federation(&self) -> Result<&FederationClient> {
        self.federation
            .as_deref()
            .ok_or_else(|| Error::forbidden("Federation is disabled on this server"))
    }

    /// Parses and checks an event another server built: its ID from its reference hash,
    /// its signatures with its signers' keys. A wrong content hash keeps only the redacted
    /// event, as the spec says.
    pub async fn verify_received(
        &self,
        version: &RoomVersionId,
        json: CanonicalJsonObject,
    ) -> Result<Pdu> {
        let client = self.federation()?;
        let rules = pdu::rules(version).map_err(|_| incompatible(version))?;
        let pdu = Pdu::received(version, json).map_err(|e| Error::bad_json(e.to_string()))?;
        let at = u64::from(pdu.origin_server_ts.get());
        // The sender's server must have signed, and for a restricted join the server
        // of the member who authorised it.
        let authoriser = pdu
            .content_as::<Value>()
            .ok()
            .and_then(|c| {
                c.get("join_authorised_via_users_server")?
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|user| UserId::parse(user).ok());
        let mut servers = vec![pdu.origin().as_str()];
        servers.extend(authoriser.as_ref().map(|u| u.server_name().as_str()));
        let keys = client
            .remote_keys
            .signers_key_map(client, &pdu.json, &servers, at)
            .await;
        match pdu.verify(&keys, version) {
            Ok(Verified::All) => Ok(pdu),
            Ok(Verified::Signatures) => {
                let redacted = ruma::canonical_json::redact(pdu.json, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(e.to_string()))?;
                Pdu::from_json(pdu.event_id, redacted).map_err(|e| Error::bad_json(e.to_string()))
            }
            Err(e) => Err(Error::forbidden(format!("Bad event signature: {e}"))),
        }
    }

    /// One PDU of an inbound transaction, into a room this server is in.
    /// One PDU of an inbound transaction, into a room this server is in. Events it
    /// builds on that this server lacks are asked of `origin` first
    /// (`get_missing_events`), and taken in, oldest first, if they check out.
    pub async fn receive_pdu(&self, origin: &ServerName, json: &Value) -> Result<OwnedEventId> {
        let room_id = json
            .get("room_id")
            .and_then(|r| r.as_str())
            .and_then(|r| RoomId::parse(r).ok())
            .ok_or_else(|| Error::bad_json("Event without a valid room_id"))?;
        let room = self
            .room(&room_id)?
            .ok_or_else(|| Error::not_found("This server is not in that room"))?;
        let pdu = self
            .verify_received(&room.version, object_of(json)?)
            .await?;
        if self.stored_pdu(pdu.event_id.as_str())?.is_some() {
            return Ok(pdu.event_id);
        }
        let gap = pdu
            .prev_events
            .iter()
            .any(|id| self.stored_pdu(id.as_str()).ok().flatten().is_none());
        if gap {
            self.fill_gap(origin, &room_id, &room, &pdu).await;
        }
        let mut draft = self.draft(&room_id).await?;
        if !draft.has(&pdu.event_id)? {
            let event_id = pdu.event_id.clone();
            draft.accept(pdu, false)?;
            draft.commit(self.storage.batch()).await?;
            return Ok(event_id);
        }
        Ok(pdu.event_id)
    }

    /// Fetches the events between the room's head here and `pdu` from `origin`, and takes
    /// in those that check out, oldest first. Best effort: what cannot be had is skipped.
    async fn fill_gap(&self, origin: &ServerName, room_id: &RoomId, room: &Room, pdu: &Pdu) {
        const GAP_LIMIT: u32 = 20;
        let Ok(client) = self.federation() else {
            return;
        };
        let mut request = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            room.extremities.clone(),
            vec![pdu.event_id.clone()],
        );
        request.limit = GAP_LIMIT.into();
        let found = match client.send(origin, request).await {
            Ok(found) => found,
            Err(e) => {
                tracing::info!(%origin, %room_id, "cannot fill a gap: {e}");
                return;
            }
        };
        let mut events = Vec::new();
        for raw in found.events {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                continue;
            };
            if let Ok(event) = self.verify_received(&room.version, object).await
                && event.room_id.as_deref() == Some(room_id)
            {
                events.push(event);
            }
        }
        events.sort_by_key(|e| u64::from(e.depth));
        for event in events {
            let Ok(mut draft) = self.draft(room_id).await else {
                return;
            };
            if draft.has(&event.event_id).unwrap_or(true) {
                continue;
            }
            let event_id = event.event_id.clone();
            let taken = match draft.accept(event, false) {
                Ok(()) => draft.commit(self.storage.batch()).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                tracing::info!(%origin, %event_id, "left out a missing event: {}", e.message());
            }
        }
    }

    /// An `m.typing` EDU: a user of the origin started or stopped typing in a room they
    /// are joined to, for [`REMOTE_TYPING`] unless renewed. Returns the room whose typing
    /// must be expired then.
    pub async fn receive_typing(
        &self,
        origin: &ServerName,
        content: &Value,
    ) -> Result<Option<String>> {
        let field = |name: &str| {
            content
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        let (room, user) = (field("room_id"), field("user_id"));
        if !self.is_member_from(origin, room, user)? {
            return Ok(None);
        }
        let typing = content
            .get("typing")
            .and_then(|t| t.as_bool())
            .unwrap_or(false);
        let until = typing.then(|| now_ms() + REMOTE_TYPING.as_millis() as u64);
        self.set_typing(room, user, until).await?;
        Ok(typing.then(|| room.to_owned()))
    }

    /// An `m.receipt` EDU: read receipts of the origin's users, per room.
    pub async fn receive_receipts(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let Some(rooms) = content.as_object() else {
            return Ok(());
        };
        for (room, kinds) in rooms {
            let Some(readers) = kinds.get("m.read").and_then(|r| r.as_object()) else {
                continue;
            };
            for (user, receipt) in readers {
                if !self.is_member_from(origin, room, user)? {
                    continue;
                }
                let event_id = receipt
                    .get("event_ids")
                    .and_then(|ids| ids.as_array())
                    .and_then(|ids| ids.last())
                    .and_then(|id| id.as_str());
                let thread = receipt
                    .get("data")
                    .and_then(|d| d.get("thread_id"))
                    .and_then(|t| t.as_str());
                let Some(event) = event_id
                    .map(|id| self.stored_pdu(id))
                    .transpose()?
                    .flatten()
                else {
                    continue;
                };
                if event.room_id == *room {
                    self.set_receipt(user, "m.read", thread, &event).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether `user` is one of `origin`'s users and joined to `room`.
    fn is_member_from(&self, origin: &ServerName, room: &str, user: &str) -> Result<bool> {
        let theirs = UserId::parse(user).is_ok_and(|u| u.server_name() == origin);
        let joined = theirs
            && self
                .membership(user, room)?
                .is_some_and(|m| m.membership == "join");
        Ok(joined)
    }

    /// `make_join` and `make_leave`, as the resident server: a member event of
    /// `membership` for `user_id` built on the room's head, unsigned, if the auth rules
    /// would allow it. `versions`: those the joining server speaks (a leave names none).
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
        versions: Option<&[RoomVersionId]>,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden(
                "The user does not belong to the requesting server",
            ));
        }
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        // Servers that name no versions are from before room version 2.
        if versions.is_some_and(|versions| !versions.contains(&room.version)) {
            return Err(incompatible(&room.version));
        }
        let draft = self.draft(room_id).await?;
        let spec = EventSpec {
            sender: user_id.to_owned(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(user_id.to_string()),
            content: json!({ "membership": membership }),
        };
        let mut template = draft.build(spec)?.json;
        template.remove("signatures");
        template.remove("hashes");
        Ok((room.version, template))
    }

    /// `send_join` and `send_leave`, as the resident server: takes the signed member
    /// event of `membership` into the room (and on to its other servers). Returns the
    /// state before it and that state's auth chain, as PDUs, which a joining server needs.
    pub async fn send_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        json: &Value,
        membership: &str,
    ) -> Result<(Vec<Value>, Vec<Value>)> {
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let pdu = self
            .verify_received(&room.version, object_of(json)?)
            .await?;
        let given = pdu.content_as::<Value>().ok().and_then(|c| {
            c.get("membership")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
        if pdu.event_id != event_id
            || pdu.kind != TimelineEventType::RoomMember
            || given.as_deref() != Some(membership)
            || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
            || pdu.origin() != origin
            || pdu.room_id.as_deref() != Some(room_id)
        {
            return Err(Error::bad_json(format!(
                "Not a {membership} of the requesting server's user for this room"
            )));
        }
        let mut draft = self.draft(room_id).await?;
        let state: Vec<StoredPdu> = self.state_events(room_id.as_str())?;
        if !draft.has(&pdu.event_id)? {
            draft.accept(pdu, true)?;
            draft.commit(self.storage.batch()).await?;
        }
        if membership != "join" {
            return Ok((Vec::new(), Vec::new()));
        }
        let auth_chain = self.auth_chain(&state)?;
        let pdus = |events: &[StoredPdu]| {
            events
                .iter()
                .map(|e| serde_json::to_value(&e.json).map_err(Error::internal))
                .collect::<Result<Vec<_>>>()
        };
        Ok((pdus(&state)?, pdus(&auth_chain)?))
    }

    /// Declines an invite into a room this server is not in: `make_leave` and
    /// `send_leave` through the inviting server, then the invite is over here too.
    pub async fn leave_remote(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        let client = self.federation()?;
        let invite = self
            .membership(user_id.as_str(), room_id.as_str())?
            .filter(|m| m.membership == "invite")
            .ok_or_else(|| Error::forbidden("You are not invited to this room"))?;
        let inviter = self
            .stored_pdu(invite.event_id.as_str())?
            .and_then(|e| e.pdu().ok())
            .ok_or_else(|| Error::internal("the invite is missing"))?;
        let server = inviter.origin().to_owned();
        let request = prepare_leave_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        let made = client.send(&server, request).await.map_err(remote_error)?;
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        if pdu::rules(&version).is_err() {
            return Err(incompatible(&version));
        }
        let template =
            self.fill_template(made.event.get(), room_id, user_id, "leave", json!({}))?;
        let leave = self
            .keys
            .sign_new_pdu(&version, template)
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let raw = serde_json::value::to_raw_value(&leave.json).map_err(Error::internal)?;
        let request =
            create_leave_event::v2::Request::new(room_id.to_owned(), leave.event_id.clone(), raw);
        client.send(&server, request).await.map_err(remote_error)?;
        let outside = Outside {
            membership: "leave",
            invite_state: Vec::new(),
            held: false,
        };
        let batch = self.storage.batch();
        let leave = (leave.event_id.as_ref(), leave.json);
        self.store_outside_membership(batch, room_id, user_id, leave, outside)
            .await
    }

    /// Every event the given ones' `auth_events` lead to, transitively.
    pub fn auth_chain(&self, events: &[StoredPdu]) -> Result<Vec<StoredPdu>> {
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for event in events {
            todo.extend(event.pdu().map_err(Error::internal)?.auth_events);
        }
        let mut chain = Vec::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(event) = self.stored_pdu(id.as_str())? {
                todo.extend(event.pdu().map_err(Error::internal)?.auth_events);
                chain.push(event);
            }
        }
        Ok(chain)
    }

    /// Joins a local user to a room this server is not in, through the first of
    /// `servers` that lets them: `make_join`, sign, `send_join`, then the room's state
    /// as the resident server gave it, each event checked.
    pub async fn join_remote(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        content: Value,
    ) -> Result<()> {
        let mut last = Error::not_found("No server to join this room through");
        for server in servers.iter().filter(|s| s.as_str() != self.server_name()) {
            match self
                .join_via(server, user_id, room_id, content.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, %room_id, "joining through {server} failed: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn join_via(
        &self,
        server: &ServerName,
        user_id: &UserId,
        room_id: &RoomId,
        content: Value,
    ) -> Result<()> {
        let client = self.federation()?;
        let mut request =
            prepare_join_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        request.ver = SUPPORTED_VERSIONS.to_vec();
        let made = client.send(server, request).await.map_err(remote_error)?;
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        if pdu::rules(&version).is_err() {
            return Err(incompatible(&version));
        }
        let template = self.fill_template(made.event.get(), room_id, user_id, "join", content)?;
        let join = self
            .keys
            .sign_new_pdu(&version, template)
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let raw = serde_json::value::to_raw_value(&join.json).map_err(Error::internal)?;
        let request =
            create_join_event::v2::Request::new(room_id.to_owned(), join.event_id.clone(), raw);
        let joined = client.send(server, request).await.map_err(remote_error)?;

        let mut events = Vec::new();
        let mut state_ids = Vec::new();
        let state = &joined.room_state;
        for (raw, is_state) in state
            .state
            .iter()
            .map(|r| (r, true))
            .chain(state.auth_chain.iter().map(|r| (r, false)))
        {
            let object: CanonicalJsonObject = serde_json::from_str(raw.get())
                .map_err(|e| Error::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", e.to_string()))?;
            let event = match self.verify_received(&version, object).await {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(%server, %room_id, "left out a state event that does not verify: {e}");
                    continue;
                }
            };
            // Only this room's events; a v12 create event is named by the room ID instead.
            let ours = match &event.room_id {
                Some(id) => id == room_id,
                None => event.derived_room_id().is_ok_and(|id| id == room_id),
            };
            if !ours {
                continue;
            }
            if is_state {
                state_ids.push(event.event_id.clone());
            }
            events.push(event);
        }
        let rules = pdu::rules(&version).map_err(Error::internal)?;
        let events = authorised(&rules, events);
        state_ids.retain(|id| events.iter().any(|e| e.event_id == *id));
        // A direct chat as its invite says, or by its size (the friendship policy then
        // watches who writes into it, as in rooms made here).
        let invited_direct = self
            .membership(user_id.as_str(), room_id.as_str())?
            .filter(|m| m.membership == "invite")
            .and_then(|m| self.stored_pdu(m.event_id.as_str()).ok().flatten())
            .and_then(|invite| invite.pdu().ok())
            .and_then(|invite| invite.content_as::<Value>().ok())
            .is_some_and(|content| content["is_direct"] == true);
        let members = events
            .iter()
            .filter(|e| e.kind == TimelineEventType::RoomMember && state_ids.contains(&e.event_id))
            .filter(|e| {
                let content = e.content_as::<Value>().unwrap_or_default();
                matches!(content["membership"].as_str(), Some("join" | "invite"))
                    && e.state_key.as_deref() != Some(user_id.as_str())
            })
            .count();
        let mut draft = self.draft_remote_room(room_id, version).await?;
        if self.room(room_id)?.is_some() {
            // Another local user's join got the room here first: build on that.
            drop(draft);
            draft = self.draft(room_id).await?;
        } else {
            draft.import_state(events, &state_ids);
            if invited_direct || members < crate::services::contacts::DIRECT_MAX_MEMBERS {
                draft.mark_direct();
            }
        }
        draft.accept(join, false)?;
        draft.commit(self.storage.batch()).await?;
        Ok(())
    }

    /// A resident server's member event template, made ours: only the room and kind
    /// asked for, with our user, membership, content and time.
    fn fill_template(
        &self,
        template: &str,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
        content: Value,
    ) -> Result<CanonicalJsonObject> {
        let bad_gateway = |m: String| Error::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", m);
        let mut template: CanonicalJsonObject =
            serde_json::from_str(template).map_err(|e| bad_gateway(e.to_string()))?;
        let asked = template.get("room_id").and_then(|r| r.as_str()) == Some(room_id.as_str());
        if !asked {
            return Err(bad_gateway(
                "The resident server offered an event for another room".into(),
            ));
        }
        let mut full = json!({ "membership": membership });
        if let (Some(full), Some(extra)) = (full.as_object_mut(), content.as_object()) {
            full.extend(extra.clone());
        }
        let full: CanonicalJsonValue = serde_json::from_value(full).map_err(Error::internal)?;
        template.insert("type".into(), "m.room.member".into());
        template.insert("content".into(), full);
        template.insert("sender".into(), user_id.as_str().into());
        template.insert("state_key".into(), user_id.as_str().into());
        let ts = ruma::UInt::new_saturating(now_ms());
        template.insert("origin_server_ts".into(), ts.into());
        Ok(template)
    }

    /// A draft for a room this server joins through another: empty until the state it
    /// is given is imported.
    async fn draft_remote_room(
        &self,
        room_id: &RoomId,
        version: RoomVersionId,
    ) -> Result<Draft<'_>> {
        let room = Room {
            version,
            extremities: Vec::new(),
            depth: 0,
            direct: false,
        };
        self.draft_on(room_id, room, false).await
    }

    /// Sends a drafted invite of a user on another server to that server, which checks
    /// it (its friendship policy too) and signs it; the draft keeps its signatures.
    pub async fn invite_remote(&self, draft: &mut Draft<'_>, invite: &Pdu) -> Result<()> {
        let client = self.federation()?;
        let Some(room_id) = draft.room_id().map(ToOwned::to_owned) else {
            return Err(Error::internal("invite without a room"));
        };
        let Some(invitee) = invite
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
        else {
            return Err(Error::internal("invite without an invitee"));
        };
        // Whole PDUs, the create event among them, as v1.18 (MSC4311) asks; servers
        // accept them in every room version.
        let invite_state = self.invite_state_pdus(room_id.as_str())?;
        let body = json!({
            "event": invite.json,
            "room_version": draft.version().as_str(),
            "invite_room_state": invite_state,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            urlencode(room_id.as_str()),
            urlencode(invite.event_id.as_str())
        );
        let answer = client
            .send_json(invitee.server_name(), http::Method::PUT, &path, Some(&body))
            .await
            .map_err(remote_error)?;
        let signed = answer.get("event").ok_or_else(|| {
            Error::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "The invitee's server sent no event",
            )
        })?;
        // Only their signature is taken, and only if it holds over our event.
        let server = invitee.server_name().as_str();
        let bad = |m: &str| Error::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", m.to_owned());
        let theirs = signed
            .get("signatures")
            .and_then(|s| s.get(server))
            .cloned()
            .ok_or_else(|| bad("The invitee's server did not sign the invite"))?;
        let theirs: CanonicalJsonValue = serde_json::from_value(theirs)
            .map_err(|_| bad("The invitee's server sent a malformed signature"))?;
        let key_ids: Vec<String> = match &theirs {
            CanonicalJsonValue::Object(keys) => keys.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let keys = client
            .remote_keys
            .key_map(client, server, &key_ids, None)
            .await
            .map_err(|_| bad("Cannot get the invitee's server's key"))?;
        // Checked alone (ruma wants keys for every signature it is shown), over the
        // redacted event, as event signatures are made.
        let rules = pdu::rules(draft.version()).map_err(Error::internal)?;
        let mut alone = invite.json.clone();
        let only_theirs = CanonicalJsonObject::from([(server.to_owned(), theirs.clone())]);
        alone.insert("signatures".into(), CanonicalJsonValue::Object(only_theirs));
        let redacted =
            ruma::canonical_json::redact(alone, &rules.redaction, None).map_err(Error::internal)?;
        ruma::signatures::verify_json(&keys, &redacted)
            .map_err(|_| bad("The invitee's server did not sign the invite"))?;
        let mut ours = invite.json.clone();
        if let Some(CanonicalJsonValue::Object(signatures)) = ours.get_mut("signatures") {
            signatures.insert(server.to_owned(), theirs);
        }
        draft.set_signatures(&invite.event_id, &ours);
        Ok(())
    }

    /// `PUT /v2/invite`, as the invitee's server: checks the invite, signs it, and keeps it
    /// (with the room state it came with) for the user to see in `/sync`, committing it
    /// with whatever `batch` holds (the friend request a held invite comes as).
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        invite: InviteIn<'_>,
        batch: kith_storage::Batch,
    ) -> Result<CanonicalJsonObject> {
        let InviteIn {
            room_id,
            event_id,
            version,
            event: json,
            invite_state,
            held,
        } = invite;
        if pdu::rules(version).is_err() {
            return Err(incompatible(version));
        }
        let mut signed = object_of(json)?;
        let pdu = self.verify_received(version, signed.clone()).await?;
        let invitee = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        let membership = pdu.content_as::<Value>().ok().and_then(|c| {
            c.get("membership")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
        let Some(invitee) = invitee.filter(|u| u.server_name().as_str() == self.server_name())
        else {
            return Err(Error::bad_json("The invitee is not a user of this server"));
        };
        if pdu.event_id != event_id
            || pdu.kind != TimelineEventType::RoomMember
            || membership.as_deref() != Some("invite")
            || pdu.origin() != origin
            || pdu.room_id.as_deref() != Some(room_id)
        {
            return Err(Error::bad_json(
                "Not an invite from the requesting server for this room",
            ));
        }
        self.keys
            .countersign(version, &mut signed)
            .map_err(Error::internal)?;
        // A room one of our users is in hears of the invite in a transaction as well (a
        // held one is kept here first, so it stays held when it comes).
        let local = |user: &String| user.ends_with(&format!(":{}", self.server_name()));
        if !held
            && self.room(room_id)?.is_some()
            && self.joined_members(room_id.as_str())?.iter().any(local)
        {
            self.storage.commit(batch).await?;
            return Ok(signed);
        }
        let membership = Outside {
            membership: "invite",
            invite_state,
            held,
        };
        self.store_outside_membership(
            batch,
            room_id,
            &invitee,
            (&pdu.event_id, signed.clone()),
            membership,
        )
        .await?;
        Ok(signed)
    }

    /// Shows a held invite to its user (they accepted the friend request it came as), in
    /// `batch`.
    pub fn release_invite_into(
        &self,
        batch: &mut kith_storage::Batch,
        user_id: &str,
        room_id: &str,
    ) -> Result<()> {
        let Some(mut membership) = self.membership(user_id, room_id)? else {
            return Ok(());
        };
        if !membership.held {
            return Ok(());
        }
        membership.held = false;
        // Seen as new by the user's next sync.
        membership.changed_at = batch.new_position()?;
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(user_id, room_id),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room_id, user_id),
            &membership,
        )?;
        Ok(())
    }

    /// Keeps a member event of a room this server is not in (an invite, or the leave
    /// that declined it) and the user's membership as it says, outside any timeline.
    async fn store_outside_membership(
        &self,
        mut batch: kith_storage::Batch,
        room_id: &RoomId,
        user_id: &UserId,
        (event_id, json): (&EventId, CanonicalJsonObject),
        outside: Outside,
    ) -> Result<()> {
        let _guard = self.room_locks.lock(room_id.as_str()).await;
        let position = batch.new_position()?;
        let record = StoredPdu {
            event_id: event_id.to_owned(),
            room_id: room_id.to_string(),
            position,
            json,
            transaction: None,
            redacted_because: None,
            outlier: true,
        };
        batch.put(&catalog::EVENTID_PDU, &event_id.as_str(), &record)?;
        let membership = super::Membership {
            membership: outside.membership.into(),
            event_id: event_id.to_owned(),
            position,
            changed_at: position,
            forgotten: false,
            invite_state: outside.invite_state,
            held: outside.held,
        };
        let (user, room) = (user_id.as_str(), room_id.as_str());
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(user, room),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room, user),
            &membership,
        )?;
        Ok(self.storage.commit(batch).await?)
    }
}

/// The events that pass the auth rules against their own auth events (found among
/// `events`; the create event is implied in v12): a resident server cannot hand a joining
/// server state that its own history does not allow.
fn authorised(rules: &ruma::room_version_rules::RoomVersionRules, events: Vec<Pdu>) -> Vec<Pdu> {
    use ruma::state_res::{check_state_dependent_auth_rules, check_state_independent_auth_rules};
    let by_id: std::collections::HashMap<OwnedEventId, Pdu> = events
        .iter()
        .map(|e| (e.event_id.clone(), e.clone()))
        .collect();
    let create = events
        .iter()
        .find(|e| e.kind == TimelineEventType::RoomCreate && e.state_key.as_deref() == Some(""))
        .map(|e| e.event_id.clone());
    let authz = &rules.authorization;
    events
        .into_iter()
        .filter(|pdu| {
            let fetch = |id: &EventId| by_id.get(id).cloned();
            if let Err(e) = check_state_independent_auth_rules(authz, pdu, fetch) {
                tracing::warn!(event_id = %pdu.event_id, "left out a state event: {e}");
                return false;
            }
            let named: Vec<&Pdu> = pdu
                .auth_events
                .iter()
                .chain(create.iter())
                .filter_map(|id| by_id.get(id))
                .collect();
            let by_auth_events = |kind: &ruma::events::StateEventType, key: &str| {
                named
                    .iter()
                    .find(|e| {
                        e.kind.to_string() == kind.to_string()
                            && e.state_key.as_deref() == Some(key)
                    })
                    .map(|e| (*e).clone())
            };
            match check_state_dependent_auth_rules(authz, pdu, by_auth_events) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(event_id = %pdu.event_id, "left out a state event: {e}");
                    false
                }
            }
        })
        .collect()
}

/// An invite another server sends for one of our users (`PUT /v2/invite`).
pub struct InviteIn<'a> {
    pub room_id: &'a RoomId,
    pub event_id: &'a EventId,
    pub version: &'a RoomVersionId,
    pub event: &'a Value,
    /// The stripped room state it came with.
    pub invite_state: Vec<Value>,
    /// Kept from the user until they accept the friend request it came as.
    pub held: bool,
}

/// A membership in a room this server is not in.
struct Outside {
    membership: &'static str,
    invite_state: Vec<Value>,
    held: bool,
}

/// Percent-encodes a path segment (room and event IDs hold `!`, `$`, `:` and more).
pub fn urlencode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
