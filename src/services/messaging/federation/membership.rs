//! Joins and leaves across servers: as the resident server (`make_*`, `send_*`) and as
//! the joining or leaving one, with the state a resident hands over checked.

use super::invites::Outside;
use super::*;

/// What the resident server answers a `send_join`/`send_leave`/`send_knock` with.
pub struct SentMembership {
    pub state: Vec<Value>,
    pub auth_chain: Vec<Value>,
    /// The event as taken in.
    pub event: Value,
}

impl Messaging {
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
        self.require_acl_allows(room_id, origin)?;
        if membership != "leave" {
            self.refuse_blocked(room_id)?;
        }
        // Servers that name no versions are from before room version 2.
        if versions.is_some_and(|versions| !versions.contains(&room.version)) {
            return Err(incompatible(&room.version));
        }
        let mut content = json!({ "membership": membership });
        // A restricted room: one of our members vouches for a user of a room it allows.
        if membership == "join"
            && let Some(authoriser) = self.join_authoriser(user_id, room_id)?
        {
            content["join_authorised_via_users_server"] = authoriser.into();
        }
        let draft = self.draft(room_id).await?;
        let spec = EventSpec {
            sender: user_id.to_owned(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(user_id.to_string()),
            content,
        };
        let mut template = draft.build(spec)?.json;
        template.remove("signatures");
        template.remove("hashes");
        Ok((room.version, template))
    }

    /// `send_join` and `send_leave`, as the resident server: takes the signed member
    /// event of `membership` into the room (and on to its other servers). Returns the
    /// state before it and that state's auth chain, as PDUs, which a joining server needs,
    /// and the event as taken (with our signature, for a join we vouched for).
    pub async fn send_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        json: &Value,
        membership: &str,
    ) -> Result<SentMembership> {
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        self.require_acl_allows(room_id, origin)?;
        if membership != "leave" {
            self.refuse_blocked(room_id)?;
        }
        let mut object = object_of(json)?;
        // A join one of our members vouches for carries our signature too, and only one
        // we would have vouched for ourselves: the joining user is in a room the join rules
        // allow, and not already invited or joined.
        let authoriser = json["content"]["join_authorised_via_users_server"].as_str();
        let ours = authoriser
            .and_then(|a| UserId::parse(a).ok())
            .is_some_and(|a| a.server_name().as_str() == self.server_name());
        if membership == "join" && ours {
            let joining = json["sender"].as_str().and_then(|s| UserId::parse(s).ok());
            let vouched = match &joining {
                Some(user) => self.join_authoriser(user, room_id)?.is_some(),
                None => false,
            };
            if !vouched {
                return Err(Error::new(
                    ErrorKind::UnableToGrantJoin,
                    "This server cannot vouch for that join",
                ));
            }
            self.keys
                .countersign(&room.version, &mut object)
                .map_err(Error::internal)?;
        }
        let signed = object.clone();
        let pdu = self.verify_received(&room.version, object).await?;
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
            let mut batch = self.storage.batch();
            if membership == "join" {
                draft.queue_heads_unseen_by(&mut batch, &pdu)?;
            }
            draft.accept(pdu, true)?;
            draft.commit(batch).await?;
            self.wake(&[origin.to_string()]);
        }
        let event = serde_json::to_value(&signed).map_err(Error::internal)?;
        if membership != "join" {
            return Ok(SentMembership {
                state: Vec::new(),
                auth_chain: Vec::new(),
                event,
            });
        }
        let auth_chain = self.auth_chain(&state)?;
        let pdus = |events: &[StoredPdu]| {
            events
                .iter()
                .map(|e| serde_json::to_value(&e.json).map_err(Error::internal))
                .collect::<Result<Vec<_>>>()
        };
        Ok(SentMembership {
            state: pdus(&state)?,
            auth_chain: pdus(&auth_chain)?,
            event,
        })
    }

    /// Declines an invite into a room this server is not in: `make_leave` and
    /// `send_leave` through the inviting server, then the invite is over here too.
    pub async fn leave_remote(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        let client = self.federation()?;
        let invite = self
            .membership(user_id, room_id)?
            .filter(|m| matches!(m.membership.as_str(), "invite" | "knock"))
            .ok_or_else(|| Error::forbidden("You are not invited to this room"))?;
        let inviter = self
            .stored_pdu(invite.event_id.as_str())?
            .and_then(|e| e.pdu().ok())
            .ok_or_else(|| Error::internal("the invite is missing"))?;
        // An invite is declined through the inviting server, a knock withdrawn through the
        // server that took it.
        let server = match invite.via.as_deref().map(ServerName::parse) {
            Some(Ok(via)) => via,
            _ => inviter.origin().to_owned(),
        };
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
            sender: user_id.to_owned(),
            inviter: inviter.sender.clone(),
            direct: false,
            reason: None,
            via: None,
        };
        let batch = self.storage.batch();
        let leave = (leave.event_id.as_ref(), leave.json);
        self.store_outside_membership(batch, room_id, user_id, leave, outside)
            .await
    }

    /// Knocks on a room this server is not in, through the first of `servers` that lets
    /// the user: `make_knock`, sign, `send_knock`; the room's stripped state it answers
    /// with is kept with the knock, for the user's `/sync`.
    pub async fn knock_remote(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        content: Value,
    ) -> Result<()> {
        use ruma::api::federation::membership::{create_knock_event, prepare_knock_event};
        let client = self.federation()?;
        let mut last = Error::not_found("No server to knock through");
        for server in servers.iter().filter(|s| s.as_str() != self.server_name()) {
            let mut request =
                prepare_knock_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
            request.ver = SUPPORTED_VERSIONS.to_vec();
            let made = match client.send(server, request).await {
                Ok(made) => made,
                Err(e) => {
                    last = remote_error(e);
                    continue;
                }
            };
            let version = made.room_version;
            if pdu::rules(&version).is_err() {
                return Err(incompatible(&version));
            }
            let template =
                self.fill_template(made.event.get(), room_id, user_id, "knock", content.clone())?;
            let knock = self
                .keys
                .sign_new_pdu(&version, template)
                .map_err(|e| Error::bad_json(e.to_string()))?;
            let raw = serde_json::value::to_raw_value(&knock.json).map_err(Error::internal)?;
            let request = create_knock_event::v1::Request::new(
                room_id.to_owned(),
                knock.event_id.clone(),
                raw,
            );
            let answer = client.send(server, request).await.map_err(remote_error)?;
            // Whole PDUs or stripped events, shown to our user as stripped state.
            let given = serde_json::to_value(&answer.knock_room_state).ok();
            let state = super::invites::stripped(given.as_ref());
            let outside = Outside {
                membership: "knock",
                invite_state: state,
                held: false,
                sender: user_id.to_owned(),
                inviter: user_id.to_owned(),
                direct: false,
                reason: None,
                via: Some(server.to_string()),
            };
            let batch = self.storage.batch();
            let event = (knock.event_id.as_ref(), knock.json);
            return self
                .store_outside_membership(batch, room_id, user_id, event, outside)
                .await;
        }
        Err(last)
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
        // A restricted join comes back signed by the server that vouched for it too.
        let join = match &joined.room_state.event {
            Some(event) if join.json.get("content").is_some_and(|c| {
                matches!(c, CanonicalJsonValue::Object(c) if c.contains_key("join_authorised_via_users_server"))
            }) =>
            {
                let object: CanonicalJsonObject = serde_json::from_str(event.get())
                    .map_err(|e| Error::bad_gateway(e.to_string()))?;
                let countersigned = self.verify_received(&version, object).await?;
                if countersigned.event_id != join.event_id {
                    return Err(Error::bad_gateway("The resident server sent another event"));
                }
                countersigned
            }
            _ => join,
        };

        let mut events = Vec::new();
        let mut state_ids = Vec::new();
        let state = &joined.room_state;
        for (raw, is_state) in state
            .state
            .iter()
            .map(|r| (r, true))
            .chain(state.auth_chain.iter().map(|r| (r, false)))
        {
            let object: CanonicalJsonObject =
                serde_json::from_str(raw.get()).map_err(|e| Error::bad_gateway(e.to_string()))?;
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
            .membership(user_id, room_id)?
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
        let bad_gateway = Error::bad_gateway;
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
        // The resident server's member who vouches for a restricted join stays named.
        if let Some(CanonicalJsonValue::Object(offered)) = template.get("content")
            && let Some(CanonicalJsonValue::String(authoriser)) =
                offered.get("join_authorised_via_users_server")
        {
            full["join_authorised_via_users_server"] = authoriser.clone().into();
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
