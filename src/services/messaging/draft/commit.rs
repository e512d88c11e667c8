//! Writing a draft: its events, their state and memberships, the room's head, log
//! entries and the copies for other servers, in one batch.

use super::*;
use crate::services::contacts::{MemberChange, RoomChanges, Settled};

impl<'a> Draft<'a> {
    /// Writes the drafted events, their state, memberships, the room's new head, their
    /// log entries and the copies queued for the room's other servers, with whatever
    /// `batch` already holds, in one write.
    pub async fn commit(self, mut batch: Batch) -> Result<Vec<StoredPdu>> {
        let room_id = self
            .room_id
            .clone()
            .ok_or_else(|| Error::internal("draft without a room"))?;
        // Taken before the batch takes stream positions (see `lock_friend_pairs`).
        let friend_locks = self.lock_friend_pairs().await?;
        let room = room_id.as_str();
        if self.changes_no_state() && !batch.has_positions() {
            batch.concerns_only_room(room);
        } else {
            batch.changes_room(room);
        }
        let mut memberships: HashMap<String, Membership> = HashMap::new();
        // Who is notified: the members joined before these events (a new room has none).
        let members = match self.stored {
            true => self.messaging.joined_members(&room_id)?,
            false => Vec::new(),
        };
        for pdu in &self.imported {
            // An event already kept (this room's invite, say) stays as it is stored.
            if let Some(known) = self.messaging.stored_pdu(pdu.event_id.as_str())? {
                if known.room_id == room && self.is_current(pdu) {
                    self.write_state(&mut batch, &mut memberships, pdu, known.position)?;
                }
                continue;
            }
            let position = batch.new_position()?;
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position,
                json: pdu.json.clone(),
                transaction: None,
                redacted_because: None,
                outlier: true,
                replaced: None,
            };
            batch.put(&catalog::EVENTID_PDU, &pdu.event_id.as_str(), &record)?;
            if self.is_current(pdu) {
                self.write_state(&mut batch, &mut memberships, pdu, position)?;
            }
        }
        for pdu in &self.soft_failed {
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position: batch.new_position()?,
                json: pdu.json.clone(),
                transaction: None,
                redacted_because: None,
                outlier: true,
                replaced: None,
            };
            batch.put(&catalog::EVENTID_PDU, &pdu.event_id.as_str(), &record)?;
        }
        let mut unread = HashMap::new();
        let mut stored = Vec::new();
        let mut member_changes = Vec::new();
        // The state each built event replaces: what was stored, or built before it here.
        let mut replaced_here: HashMap<(String, String), Replaced> = HashMap::new();
        batch.persists_events(self.built.len());
        for pdu in &self.built {
            let position = batch.new_position()?;
            let event_id = pdu.event_id.as_str();
            let replaced = match &pdu.state_key {
                Some(key) => {
                    let slot = (pdu.kind.to_string(), key.clone());
                    let before = match replaced_here.remove(&slot) {
                        Some(here) => Some(here),
                        None => self.stored_state(&room_id, &slot)?,
                    };
                    replaced_here.insert(slot, Replaced::by(pdu));
                    before
                }
                None => None,
            };
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position,
                json: pdu.json.clone(),
                transaction: self.transactions.get(&pdu.event_id).cloned(),
                redacted_because: None,
                outlier: false,
                replaced,
            };
            batch.put(&catalog::EVENTID_PDU, &event_id, &record)?;
            batch.put(
                &catalog::ROOMID_POSITION_EVENTID,
                &(room, position),
                &event_id,
            )?;
            super::super::relations::index_into(&mut batch, &record)?;
            super::super::message_search::index_into(&mut batch, &record)?;
            // Its own entry, unless state resolution chose another.
            if self.is_current(pdu) {
                let changed = self.write_state(&mut batch, &mut memberships, pdu, position)?;
                member_changes.extend(changed);
            }
            if let Some(snapshot) = self.snapshots.get(&pdu.event_id) {
                batch.put(&catalog::EVENTID_STATE, &event_id, snapshot)?;
            }
            if matches!(
                pdu.kind,
                TimelineEventType::RoomMessage | TimelineEventType::RoomEncrypted
            ) {
                let sent = DomainEvent::MessageSent {
                    room_id: room.to_owned(),
                    event_id: event_id.to_owned(),
                    sender: pdu.sender.to_string(),
                };
                events::append(&mut batch, sent)?;
            }
            self.messaging
                .count_notifications(&mut batch, &mut unread, &room_id, &members, &record)
                .await?;
            if let Some(target) = &pdu.redacts
                && self.may_apply_redaction(pdu, target)?
            {
                self.redact(&mut batch, &mut unread, &members, target, &record)?;
            }
            stored.push(record);
        }
        // State resolution may have made older events current again.
        let written: HashSet<&OwnedEventId> = self
            .built
            .iter()
            .chain(&self.imported)
            .map(|p| &p.event_id)
            .collect();
        for id in self.state.values().filter(|id| !written.contains(id)) {
            if let Some(stored) = self.messaging.stored_pdu(id.as_str())?
                && let Ok(pdu) = stored.pdu()
            {
                // A new position, so syncing clients see the membership change.
                let position = batch.new_position()?;
                self.write_state(&mut batch, &mut memberships, &pdu, position)?;
            }
        }
        for (kind, key) in &self.removed {
            let row = (room, kind.as_str(), key.as_str());
            batch.delete(&catalog::ROOMID_TYPE_STATEKEY_EVENTID, &row)?;
            if kind == "m.room.member" {
                batch.delete(&catalog::USERID_ROOMID_MEMBERSHIP, &(key.as_str(), room))?;
                batch.delete(&catalog::ROOMID_USERID_MEMBERSHIP, &(room, key.as_str()))?;
            }
        }
        let destinations = self.queue_for_servers(&mut batch, &members, &memberships)?;
        batch.put(&catalog::ROOMID_ROOM, &room, &self.room)?;
        let settled = self
            .settle_friend_requests(
                &mut batch,
                &room_id,
                &memberships,
                member_changes,
                friend_locks,
            )
            .await?;
        // Before the events are visible, so no sync orders the room by an older bump.
        self.messaging.note_bumps(room, &stored);
        self.messaging.storage.commit(batch).await?;
        self.messaging.contacts.wake_settled(settled);
        // Redacted events change their stored form: forgotten once it is written, still
        // under the room's lock, so no reader can keep the old one.
        for target in self.built.iter().filter_map(|pdu| pdu.redacts.as_ref()) {
            self.messaging.auth_events.forget(target);
        }
        self.messaging.wake(&destinations);
        Ok(stored)
    }

    /// The stored state event at (type, key), as the one a new event replaces.
    fn stored_state(
        &self,
        room_id: &RoomId,
        (kind, key): &(String, String),
    ) -> Result<Option<Replaced>> {
        let Some(id) = self.messaging.state_event_id(room_id, kind, key)? else {
            return Ok(None);
        };
        let stored = self.messaging.stored_pdu(id.as_str())?;
        Ok(stored.map(|event| {
            let client = event.client_event();
            Replaced {
                event_id: event.event_id,
                sender: client["sender"].as_str().unwrap_or_default().to_owned(),
                content: client["content"].clone(),
            }
        }))
    }

    /// Whether the draft only adds timeline events to a stored room (messages, redactions):
    /// then it concerns the room's members alone, and other users' long-polls sleep on.
    fn changes_no_state(&self) -> bool {
        self.stored
            && self.state.is_empty()
            && self.removed.is_empty()
            && self.imported.is_empty()
            && self.soft_failed.is_empty()
            && self.built.iter().all(|pdu| pdu.state_key.is_none())
    }

    /// Whether the event is the draft's current state for its type and key.
    fn is_current(&self, pdu: &Pdu) -> bool {
        pdu.state_key.as_ref().is_some_and(|key| {
            self.state.get(&(pdu.kind.to_string(), key.clone())) == Some(&pdu.event_id)
        })
    }

    /// Whether the draft's membership changes may concern friend requests: under policy
    /// `request`, in a direct chat (only its invites are requests, and only it has
    /// requests about it to answer; no other room is read for it).
    fn concerns_friend_requests(&self) -> bool {
        self.messaging.contacts.requests_are_invites()
            && self.is_direct()
            && self
                .built
                .iter()
                .any(|p| p.kind == TimelineEventType::RoomMember)
    }

    /// The contacts locks of everyone the draft's membership changes may concern (the
    /// room's members, and the members and senders of its member events), taken before the
    /// batch takes positions, after the room's lock (always in that order).
    async fn lock_friend_pairs(&self) -> Result<Option<Vec<MutexGuard<'a, ()>>>> {
        if !self.concerns_friend_requests() {
            return Ok(None);
        }
        let mut users: Vec<String> = Vec::new();
        if self.stored {
            let room_id = self
                .room_id
                .as_ref()
                .ok_or_else(|| Error::internal("no room"))?;
            for (user, membership) in self.messaging.members(room_id)? {
                if matches!(membership.membership.as_str(), "join" | "invite") {
                    users.push(user.to_string());
                }
            }
        }
        for pdu in self
            .built
            .iter()
            .filter(|p| p.kind == TimelineEventType::RoomMember)
        {
            users.extend(pdu.state_key.clone());
            users.push(pdu.sender.to_string());
        }
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        Ok(Some(self.messaging.contacts.lock_users(&users).await))
    }

    /// Tells contacts of the draft's membership changes (under policy `request`, invites
    /// into direct chats are friend requests), in the same batch.
    async fn settle_friend_requests(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        memberships: &HashMap<String, Membership>,
        changes: Vec<MemberChange>,
        locked: Option<Vec<MutexGuard<'a, ()>>>,
    ) -> Result<Settled<'a>> {
        let contacts = &self.messaging.contacts;
        if changes.is_empty() || !self.concerns_friend_requests() {
            return Ok(Settled::default());
        }
        let mut members: Vec<OwnedUserId> = Vec::new();
        let stored = match self.stored {
            true => self.messaging.members(room_id)?,
            false => Vec::new(),
        };
        let now = stored
            .iter()
            .filter(|(user, _)| !memberships.contains_key(user.as_str()))
            .map(|(user, m)| (user.clone(), m.membership.as_str()));
        let drafted = memberships.iter().filter_map(|(user, m)| {
            let user = OwnedUserId::try_from(user.as_str()).ok()?;
            Some((user, m.membership.as_str()))
        });
        for (user, membership) in now.chain(drafted) {
            if matches!(membership, "join" | "invite") {
                members.push(user);
            }
        }
        let room = RoomChanges {
            room_id,
            direct: members.len() == 2,
            members,
            changes,
            refuse_over_limit: false,
        };
        contacts.membership_changed_into(batch, &room, locked).await
    }

    /// Makes a state event current: its state row and, for a member event, the member's
    /// membership in both directions. Returns the change of membership it makes.
    fn write_state(
        &self,
        batch: &mut Batch,
        memberships: &mut HashMap<String, Membership>,
        pdu: &Pdu,
        position: u64,
    ) -> Result<Option<MemberChange>> {
        let Some(key) = &pdu.state_key else {
            return Ok(None);
        };
        let room = self
            .room_id
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or_default();
        let kind = pdu.kind.to_string();
        batch.put(
            &catalog::ROOMID_TYPE_STATEKEY_EVENTID,
            &(room, kind.as_str(), key.as_str()),
            &pdu.event_id.as_str(),
        )?;
        if pdu.kind != TimelineEventType::RoomMember {
            return Ok(None);
        }
        let content: MembershipContent = pdu
            .content_as()
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let previous = match memberships.get(key.as_str()) {
            Some(previous) => Some(previous.clone()),
            None => self.messaging.membership_row(key, room)?,
        };
        // Another server's members are found in the user directory as their member events
        // name them.
        let own = format!(":{}", self.messaging.server_name());
        if content.membership == "join" && !key.ends_with(&own) {
            let content = pdu.content_as::<serde_json::Value>().unwrap_or_default();
            crate::services::profile::directory::index_remote(
                &self.messaging.storage,
                batch,
                key,
                &content,
            )?;
        }
        // A held invite stays held when the same invite comes again in a transaction.
        let held = previous
            .as_ref()
            .is_some_and(|p| p.held && p.event_id == pdu.event_id);
        let before = previous.as_ref().map(|p| p.membership.clone());
        let changed_at = previous
            .filter(|p| p.membership == content.membership)
            .map_or(position, |p| p.changed_at);
        let change = UserId::parse(key.as_str()).ok().map(|user| MemberChange {
            user,
            sender: pdu.sender.clone(),
            before,
            after: content.membership.clone(),
            event_id: pdu.event_id.clone(),
            reason: content
                .reason
                .as_ref()
                .and_then(|r| r.as_str())
                .map(str::to_owned),
        });
        let membership = Membership {
            membership: content.membership,
            event_id: pdu.event_id.clone(),
            position,
            changed_at,
            forgotten: false,
            invite_state: Vec::new(),
            held,
            via: None,
        };
        memberships.insert(key.clone(), membership.clone());
        batch.put(
            &catalog::USERID_ROOMID_MEMBERSHIP,
            &(key.as_str(), room),
            &membership,
        )?;
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room, key.as_str()),
            &membership,
        )?;
        Ok(change)
    }

    /// Queues this server's new events for every other server in the room: those of the
    /// members joined before or by the draft, and of members it removes (so they learn).
    /// No event goes back to its sender's server. Returns the destinations.
    fn queue_for_servers(
        &self,
        batch: &mut Batch,
        members: &[OwnedUserId],
        memberships: &HashMap<String, Membership>,
    ) -> Result<Vec<String>> {
        let own = self.messaging.server_name();
        let server_of = |user: &str| crate::util::server_of(user).map(|s| s.to_string());
        let mut servers: BTreeSet<String> = members
            .iter()
            .filter_map(|u| server_of(u.as_str()))
            .collect();
        for (user, membership) in memberships {
            if matches!(membership.membership.as_str(), "join" | "leave" | "ban") {
                servers.extend(server_of(user));
            }
        }
        servers.remove(own);
        let mut destinations = BTreeSet::new();
        for pdu in self
            .built
            .iter()
            .filter(|p| !self.received.contains(&p.event_id))
        {
            for server in servers.iter().filter(|s| *s != pdu.origin().as_str()) {
                Outbox::push_into(batch, server, &Outgoing::Pdu(pdu.json.clone()))?;
                destinations.insert(server.clone());
            }
        }
        Ok(destinations.into_iter().collect())
    }
}
