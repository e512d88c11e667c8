//! History from before this server joined a room: served to other servers (`/backfill`,
//! `/event`) and fetched from them when a client pages back past the start of what is
//! stored here. Fetched events are verified, checked against their own auth events, and
//! placed in the timeline before everything this server saw itself.

use std::collections::{BinaryHeap, HashMap, HashSet};

use kith_storage::catalog;
use ruma::api::federation::backfill::get_backfill;
use ruma::events::TimelineEventType;
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, OwnedServerName, RoomId, ServerName, UInt};
use serde_json::Value;

use super::{Messaging, StoredPdu};
use crate::services::error::{Error, Result};

/// Events asked for per backfill request.
const BACKFILL_LIMIT: u32 = 100;

impl Messaging {
    /// Whether a server may read the room's events: one of its users is joined to it,
    /// and the room's ACL does not shut it out.
    pub fn server_in_room(&self, server: &ServerName, room: &str) -> Result<bool> {
        let joined = self
            .joined_member_rows(room)?
            .iter()
            .any(|user| user.server_name() == server);
        Ok(joined && self.acl_allows(room, server)?)
    }

    /// An event for another server, if one of its users is in the event's room.
    pub fn event_for(&self, origin: &ServerName, event_id: &str) -> Result<StoredPdu> {
        let event = self.stored_pdu(event_id)?;
        match event {
            Some(event) if self.server_in_room(origin, &event.room_id)? => Ok(event),
            _ => Err(Error::not_found("Event not found")),
        }
    }

    /// `/event` as the serving side: the event, redacted if history visibility hides it
    /// from `origin`.
    pub fn event_json_for(
        &self,
        origin: &ServerName,
        event_id: &str,
    ) -> Result<CanonicalJsonObject> {
        let event = self.event_for(origin, event_id)?;
        let room_id = RoomId::parse(&event.room_id).map_err(Error::internal)?;
        let reader = self.server_reader(&room_id, origin)?;
        self.for_server(&reader, event)
    }

    /// `/backfill` as the serving side: the given events and those before them, newest
    /// (deepest) first, at most `limit`, each redacted if history visibility hides it from
    /// `origin`.
    pub fn backfill_for(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Value>> {
        if !self.server_in_room(origin, room_id.as_str())? {
            return Err(Error::forbidden("Your server is not in this room"));
        }
        let reader = self.server_reader(room_id, origin)?;
        let mut heap = BinaryHeap::new();
        let mut seen = HashSet::new();
        let mut push = |heap: &mut BinaryHeap<(u64, OwnedEventId)>, id: OwnedEventId| {
            if seen.insert(id.clone())
                && let Some(event) = self.stored_pdu(id.as_str())?
                && event.room_id == room_id.as_str()
            {
                let depth = event.json.get("depth").and_then(|d| d.as_integer());
                let depth = depth.map_or(0, |d| u64::try_from(i64::from(d)).unwrap_or(0));
                heap.push((depth, id));
            }
            Ok::<_, Error>(())
        };
        for id in from {
            push(&mut heap, id.clone())?;
        }
        let mut out = Vec::new();
        while let Some((_, id)) = heap.pop() {
            if out.len() >= limit {
                break;
            }
            let Some(event) = self.stored_pdu(id.as_str())? else {
                continue;
            };
            for prev in event.pdu().map_err(Error::internal)?.prev_events {
                push(&mut heap, prev)?;
            }
            let json = self.for_server(&reader, event)?;
            out.push(serde_json::to_value(&json).map_err(Error::internal)?);
        }
        Ok(out)
    }

    /// `/get_missing_events` as the serving side: events before `latest` (not themselves)
    /// back to `earliest` (exclusive), newest first, at most `limit`, none below
    /// `min_depth`; for a server in the room.
    pub fn missing_for(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        (earliest, latest): (&[OwnedEventId], &[OwnedEventId]),
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<Value>> {
        if !self.server_in_room(origin, room_id.as_str())? {
            return Err(Error::forbidden("Your server is not in this room"));
        }
        let reader = self.server_reader(room_id, origin)?;
        let mut seen: HashSet<OwnedEventId> = earliest.iter().cloned().collect();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for id in latest {
            if let Some(event) = self.stored_pdu(id.as_str())? {
                todo.extend(event.pdu().map_err(Error::internal)?.prev_events);
            }
        }
        let mut out = Vec::new();
        while let Some(id) = todo.pop() {
            if out.len() >= limit || !seen.insert(id.clone()) {
                continue;
            }
            let Some(event) = self.stored_pdu(id.as_str())? else {
                continue;
            };
            let pdu = event.pdu().map_err(Error::internal)?;
            if event.room_id != room_id.as_str() || u64::from(pdu.depth) < min_depth {
                continue;
            }
            todo.extend(pdu.prev_events);
            let json = self.for_server(&reader, event)?;
            out.push(serde_json::to_value(&json).map_err(Error::internal)?);
        }
        Ok(out)
    }

    /// `/event_auth` as the serving side: the event's whole auth chain.
    pub fn event_auth_for(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Value>> {
        let event = self.event_for(origin, event_id.as_str())?;
        if event.room_id != room_id.as_str() {
            return Err(Error::not_found("Event not found"));
        }
        self.auth_chain(&[event])?
            .iter()
            .map(|e| serde_json::to_value(&e.json).map_err(Error::internal))
            .collect()
    }

    /// The room's first timeline event here, if its history goes on before it (it is not
    /// the room's create event): what to backfill from.
    fn backfill_point(&self, room_id: &str) -> Result<Option<Vec<OwnedEventId>>> {
        let first = self.timeline_after(room_id, 0, 1)?;
        let Some((_, event)) = first.into_iter().next() else {
            return Ok(None);
        };
        let pdu = event.pdu().map_err(Error::internal)?;
        if pdu.kind == TimelineEventType::RoomCreate || pdu.prev_events.is_empty() {
            return Ok(None);
        }
        Ok(Some(pdu.prev_events))
    }

    /// Fetches the history before the room's first timeline event here from another
    /// server in the room; returns how many events it added.
    pub async fn backfill(&self, room_id: &RoomId) -> Result<usize> {
        let Some(room) = self.room(room_id)? else {
            return Ok(0);
        };
        let Some(prev_events) = self.backfill_point(room_id.as_str())? else {
            return Ok(0);
        };
        let Some(client) = self.federation.as_deref() else {
            return Ok(0);
        };
        let own = self.server_name();
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for user in self.joined_members(room_id)? {
            let server = user.server_name();
            if server != own && !servers.iter().any(|s| s == server) {
                servers.push(server.to_owned());
            }
        }
        for server in servers {
            let request = get_backfill::v1::Request::new(
                room_id.to_owned(),
                prev_events.clone(),
                UInt::from(BACKFILL_LIMIT),
            );
            let answer = match client.send(&server, request).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::info!(%server, %room_id, "backfill failed: {e}");
                    continue;
                }
            };
            let mut events = Vec::new();
            for raw in answer.pdus {
                let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                    continue;
                };
                match self.verify_received(&room.version, object).await {
                    // A v12 create event names its room by its own hash.
                    Ok(pdu)
                        if pdu
                            .room_id
                            .clone()
                            .or_else(|| pdu.derived_room_id().ok())
                            .as_deref()
                            == Some(room_id) =>
                    {
                        events.push(pdu)
                    }
                    Ok(_) => {}
                    Err(e) => tracing::info!(%server, "left out a backfilled event: {e}"),
                }
            }
            return self.place_history(room_id, events).await;
        }
        Ok(0)
    }

    /// Puts fetched history into the timeline before its first event, deepest first,
    /// leaving out what is already in it, what repeats, and what fails its own auth events.
    async fn place_history(
        &self,
        room_id: &RoomId,
        mut events: Vec<kith_federation::Pdu>,
    ) -> Result<usize> {
        let room = room_id.as_str();
        let _guard = self.room_locks.lock(room).await;
        // Read under the lock: another backfill may have placed events meanwhile.
        let Some((first, _)) = self.timeline_after(room, 0, 1)?.into_iter().next() else {
            return Ok(0);
        };
        let mut placed: HashSet<OwnedEventId> = HashSet::new();
        events.sort_by_key(|e| std::cmp::Reverse(u64::from(e.depth)));
        let fetched: HashMap<OwnedEventId, kith_federation::Pdu> = events
            .iter()
            .map(|e| (e.event_id.clone(), e.clone()))
            .collect();
        let mut batch = self.storage.batch();
        let mut position = first;
        let mut added = 0;
        for pdu in events {
            let known = self.stored_pdu(pdu.event_id.as_str())?;
            let in_timeline = known
                .as_ref()
                .is_some_and(|k| !k.outlier || k.room_id != room);
            if in_timeline || !placed.insert(pdu.event_id.clone()) {
                continue;
            }
            if !self.auth_by_own_events(&pdu, &fetched)? {
                continue;
            }
            // Positions below the first one are free in this room's timeline.
            let Some(below) = position.checked_sub(1).filter(|p| *p > 0) else {
                break;
            };
            position = below;
            let (json, redacted_because) = match known {
                // A copy redacted here stays redacted.
                Some(known) if known.redacted_because.is_some() => {
                    (known.json, known.redacted_because)
                }
                _ => (pdu.json.clone(), None),
            };
            let record = StoredPdu {
                event_id: pdu.event_id.clone(),
                room_id: room.to_owned(),
                position,
                json,
                transaction: None,
                redacted_because,
                outlier: false,
                replaced: None,
            };
            batch.put(&catalog::EVENTID_PDU, &pdu.event_id.as_str(), &record)?;
            batch.put(
                &catalog::ROOMID_POSITION_EVENTID,
                &(room, position),
                &pdu.event_id.as_str(),
            )?;
            added += 1;
        }
        batch.persists_events(added);
        self.storage.commit(batch).await?;
        // Outliers placed in the timeline now hold the fetched copy.
        for id in &placed {
            self.auth_events.forget(id);
        }
        Ok(added)
    }

    /// Whether a historical event passes the auth rules against the auth events it names
    /// (stored here or fetched with it; the current state has nothing to say about the
    /// past).
    fn auth_by_own_events(
        &self,
        pdu: &kith_federation::Pdu,
        fetched: &HashMap<OwnedEventId, kith_federation::Pdu>,
    ) -> Result<bool> {
        let Some(room_id) = pdu.room_id.clone().or_else(|| pdu.derived_room_id().ok()) else {
            return Ok(false);
        };
        let Some(room) = self.room(&room_id)? else {
            return Ok(false);
        };
        let rules = kith_federation::pdu::rules(&room.version).map_err(Error::internal)?;
        let authz = &rules.authorization;
        let fetch = |id: &ruma::EventId| {
            fetched.get(id).cloned().or_else(|| {
                self.stored_pdu(id.as_str())
                    .ok()
                    .flatten()
                    .and_then(|s| s.pdu().ok())
            })
        };
        if ruma::state_res::check_state_independent_auth_rules(authz, pdu, fetch).is_err() {
            return Ok(false);
        }
        let create = self.state_event_id(&room_id, "m.room.create", "")?;
        let named: Vec<kith_federation::Pdu> = pdu
            .auth_events
            .iter()
            .chain(create.iter())
            .filter_map(|id| fetch(id))
            .collect();
        let by_auth_events = |kind: &ruma::events::StateEventType, key: &str| {
            named
                .iter()
                .find(|e| {
                    e.kind.to_string() == kind.to_string() && e.state_key.as_deref() == Some(key)
                })
                .cloned()
        };
        Ok(ruma::state_res::check_state_dependent_auth_rules(authz, pdu, by_auth_events).is_ok())
    }
}
