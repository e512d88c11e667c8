//! Room state at each event, and state resolution (v2, and v2.1 for room version 12)
//! where histories fork: two servers' events built on different heads each carry the state
//! their server saw, and every server must settle on the same state from them.
//!
//! The state after an event is kept as a snapshot: the change from the state after an
//! event before it (usually its one `prev_event`), or whole every [`MAX_HOPS`] changes and
//! wherever histories join.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kith_federation::Pdu;
use kith_storage::catalog;
use ruma::events::StateEventType;
use ruma::room_version_rules::{RoomVersionRules, StateResolutionVersion};
use ruma::state_res::StateMap;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};
use serde::{Deserialize, Serialize};

use super::Messaging;
use crate::services::error::{Error, Result};

/// The longest chain of changes before a snapshot is kept whole.
pub(super) const MAX_HOPS: u32 = 100;

/// A room's state as event IDs, by (type, state key).
pub type StateIds = HashMap<(String, String), OwnedEventId>;

/// The state after one event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The event whose state this changes; `None`: `changes` is the whole state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<OwnedEventId>,
    pub changes: Vec<(String, String, OwnedEventId)>,
    #[serde(default)]
    pub hops: u32,
}

impl Snapshot {
    pub fn whole(state: &StateIds) -> Snapshot {
        let changes = state
            .iter()
            .map(|((kind, key), id)| (kind.clone(), key.clone(), id.clone()))
            .collect();
        Snapshot {
            base: None,
            changes,
            hops: 0,
        }
    }

    /// `base`'s state with `pdu`'s own entry (if a state event) on top (the caller keeps
    /// chains under [`MAX_HOPS`]).
    pub fn after(base: &OwnedEventId, base_hops: u32, pdu: &Pdu) -> Snapshot {
        let changes = pdu
            .state_key
            .iter()
            .map(|key| (pdu.kind.to_string(), key.clone(), pdu.event_id.clone()))
            .collect();
        Snapshot {
            base: Some(base.clone()),
            changes,
            hops: base_hops + 1,
        }
    }
}

/// Puts a state event's own entry into `state`.
pub fn add_own(state: &mut StateIds, pdu: &Pdu) {
    if let Some(key) = &pdu.state_key {
        state.insert((pdu.kind.to_string(), key.clone()), pdu.event_id.clone());
    }
}

impl Messaging {
    /// The snapshot of `event_id`: from `pending` (not yet written), else stored.
    pub(super) fn snapshot(
        &self,
        event_id: &EventId,
        pending: &HashMap<OwnedEventId, Snapshot>,
    ) -> Result<Option<Snapshot>> {
        if let Some(found) = pending.get(event_id) {
            return Ok(Some(found.clone()));
        }
        Ok(self
            .storage
            .get(&catalog::EVENTID_STATE, &event_id.as_str())?)
    }

    /// The state after `event_id`, if this server knows it.
    pub(super) fn state_after(
        &self,
        event_id: &EventId,
        pending: &HashMap<OwnedEventId, Snapshot>,
    ) -> Result<Option<StateIds>> {
        let mut chain = Vec::new();
        let mut next = Some(event_id.to_owned());
        while let Some(id) = next.take() {
            let Some(snapshot) = self.snapshot(&id, pending)? else {
                return Ok(None);
            };
            next = snapshot.base.clone();
            chain.push(snapshot);
            if chain.len() > MAX_HOPS as usize + 1 {
                return Err(Error::internal("a state snapshot chain is too long"));
            }
        }
        let mut state = StateIds::new();
        for snapshot in chain.into_iter().rev() {
            for (kind, key, id) in snapshot.changes {
                state.insert((kind, key), id);
            }
        }
        Ok(Some(state))
    }

    /// The room's state before `event_id` (not including it), as `/state` and `/state_ids`
    /// answer a server in the room; 404 where it is not known here (an outlier, or history
    /// from before this server kept states).
    pub fn state_before_event(
        &self,
        origin: &ruma::ServerName,
        room_id: &ruma::RoomId,
        event_id: &EventId,
    ) -> Result<Vec<super::StoredPdu>> {
        let unknown = || Error::not_found("State not known at that event");
        let event = self.event_for(origin, event_id.as_str())?;
        if event.room_id != room_id.as_str() || event.outlier {
            return Err(unknown());
        }
        let room = self.room(room_id)?.ok_or_else(unknown)?;
        let rules = kith_federation::pdu::rules(&room.version).map_err(Error::internal)?;
        let pdu = event.pdu().map_err(Error::internal)?;
        let pending = HashMap::new();
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            states.push(self.state_after(prev, &pending)?.ok_or_else(unknown)?);
        }
        let fetch = |id: &EventId| {
            self.stored_pdu(id.as_str())
                .ok()
                .flatten()
                .and_then(|s| s.pdu().ok())
                .map(Arc::new)
        };
        let state = match states.len() {
            0 => StateIds::new(),
            1 => states.pop().unwrap_or_default(),
            _ => self.resolve_states(&rules, &states, &fetch)?,
        };
        let mut events = Vec::new();
        for id in state.values() {
            events.extend(self.stored_pdu(id.as_str())?);
        }
        Ok(events)
    }

    /// Resolves several states of one room into one, as every server does.
    pub(super) fn resolve_states(
        &self,
        rules: &RoomVersionRules,
        states: &[StateIds],
        fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
    ) -> Result<StateIds> {
        // Nothing conflicted (every state has the same entry for every key): nothing to
        // resolve, and no auth chains to walk.
        if let Some((first, rest)) = states.split_first()
            && rest.iter().all(|state| state == first)
        {
            return Ok(first.clone());
        }
        let StateResolutionVersion::V2(resolution) = &rules.state_res else {
            return Err(Error::internal("state resolution v1 is not spoken"));
        };
        let maps: Vec<StateMap<OwnedEventId>> = states
            .iter()
            .map(|state| {
                state
                    .iter()
                    .map(|((kind, key), id)| {
                        (
                            (StateEventType::from(kind.as_str()), key.clone()),
                            id.clone(),
                        )
                    })
                    .collect()
            })
            .collect();
        let auth_chains: Vec<EventIdSet<OwnedEventId>> = states
            .iter()
            .map(|state| {
                auth_chain(state.values().cloned(), fetch)
                    .into_iter()
                    .collect()
            })
            .collect();
        let subgraph = |conflicted: &StateMap<Vec<OwnedEventId>>| {
            let conflicted: HashSet<OwnedEventId> =
                conflicted.values().flatten().cloned().collect();
            Some(
                conflicted_subgraph(&conflicted, fetch)
                    .into_iter()
                    .collect(),
            )
        };
        let resolved = ruma::state_res::resolve(
            &rules.authorization,
            resolution,
            maps.iter(),
            auth_chains,
            |id| fetch(id),
            subgraph,
        )
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
        Ok(resolved
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id))
            .collect())
    }
}

/// Every event the given ones' auth events lead to (not the events themselves).
fn auth_chain(
    from: impl Iterator<Item = OwnedEventId>,
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let mut seen = HashSet::new();
    let mut todo: Vec<OwnedEventId> = from
        .filter_map(|id| fetch(&id))
        .flat_map(|pdu| pdu.auth_events.clone())
        .collect();
    while let Some(id) = todo.pop() {
        if seen.insert(id.clone())
            && let Some(pdu) = fetch(&id)
        {
            todo.extend(pdu.auth_events.iter().cloned());
        }
    }
    seen
}

/// The conflicted state subgraph (v2.1): the events on auth paths from one conflicted
/// event to another, the conflicted ones included. Each event's "reaches a conflicted
/// event" is worked out once, depth first without recursion.
fn conflicted_subgraph(
    conflicted: &HashSet<OwnedEventId>,
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    let mut parents: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut stack: Vec<(OwnedEventId, bool)> =
        conflicted.iter().map(|id| (id.clone(), false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if reaches.contains_key(&id) {
            continue;
        }
        if !expanded {
            let auth = fetch(&id)
                .map(|pdu| pdu.auth_events.clone())
                .unwrap_or_default();
            stack.push((id.clone(), true));
            for parent in &auth {
                if !reaches.contains_key(parent) {
                    stack.push((parent.clone(), false));
                }
            }
            parents.insert(id, auth);
            continue;
        }
        let found = parents.get(&id).is_some_and(|auth| {
            auth.iter()
                .any(|p| conflicted.contains(p) || reaches.get(p).copied().unwrap_or(false))
        });
        reaches.insert(id, found);
    }
    let mut out: HashSet<OwnedEventId> = conflicted.clone();
    out.extend(reaches.into_iter().filter(|(_, r)| *r).map(|(id, _)| id));
    out
}
