//! Events other servers built, taken into a draft: checked against the state before them
//! (resolved where histories fork) and the current state, then placed, the room's state
//! resolved anew over its heads.

use super::*;

impl Draft<'_> {
    /// The state before a received event: after its one `prev_event`, or resolved from
    /// those after each; `None` if this server does not know them all.
    fn state_before(&self, pdu: &Pdu) -> Result<Option<StateIds>> {
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            match self.messaging.state_after(prev, &self.snapshots)? {
                Some(state) => states.push(state),
                None => return Ok(None),
            }
        }
        match states.len() {
            0 => Ok(None),
            1 => Ok(states.pop()),
            _ => Ok(self.resolve(&states)),
        }
    }

    /// The resolution of `states`; `None` (with a log line) where it cannot be made, say
    /// for an auth event this server lacks: the caller then goes by the current state.
    fn resolve(&self, states: &[StateIds]) -> Option<StateIds> {
        let fetch = |id: &EventId| self.fetch(id);
        match self.messaging.resolve_states(&self.rules, states, &fetch) {
            Ok(resolved) => Some(resolved),
            Err(e) => {
                tracing::warn!(room = ?self.room_id, "state resolution failed: {}", e.message());
                None
            }
        }
    }

    /// Queues for the server of a join it is accepting the room's newest events that the
    /// join does not name: those committed while that server's user was only invited, which
    /// no server sent it (it was not in the room yet) and which no event it will receive
    /// names, so it would not learn of them otherwise (a first message racing the invitee's
    /// acceptance of a direct chat).
    pub fn queue_heads_unseen_by(&self, batch: &mut Batch, join: &Pdu) -> Result<()> {
        let server = join.origin().as_str();
        for head in &self.room.extremities {
            if join.prev_events.contains(head) {
                continue;
            }
            if let Some(stored) = self.messaging.stored_pdu(head.as_str())? {
                Outbox::push_into(batch, server, &Outgoing::Pdu(stored.json))?;
            }
        }
        Ok(())
    }

    /// Takes in an event another server built (its signatures already checked): it must
    /// pass the auth rules against the auth events it names and against the room's current
    /// state (403 `M_FORBIDDEN` otherwise). `forward`: whether this server must send it on
    /// to the room's other servers, as the resident server does with a join it accepted.
    pub fn accept(&mut self, pdu: Pdu, forward: bool) -> Result<()> {
        let authz = &self.rules.authorization;
        check_state_independent_auth_rules(authz, &pdu, |id| self.fetch(id))
            .map_err(Error::forbidden)?;
        // From v12 the create event is implied by the room ID rather than named.
        let create = self.state_id("m.room.create", "");
        let named: HashMap<(String, String), Arc<Pdu>> = pdu
            .auth_events
            .iter()
            .chain(create.iter())
            .filter_map(|id| self.fetch(id))
            .filter_map(|e| Some(((e.kind.to_string(), e.state_key.clone()?), e)))
            .collect();
        let by_auth_events = |kind: &ruma::events::StateEventType, key: &str| {
            named.get(&(kind.to_string(), key.to_owned())).cloned()
        };
        check_state_dependent_auth_rules(authz, &pdu, by_auth_events).map_err(Error::forbidden)?;
        // Against the state before it (where its history forks from ours, resolved).
        let old_heads = self.room.extremities.clone();
        let known_before = self.state_before(&pdu)?;
        let before = match &known_before {
            Some(before) => before.clone(),
            None => self.state_map()?,
        };
        let by_state_before = |kind: &ruma::events::StateEventType, key: &str| {
            before
                .get(&(kind.to_string(), key.to_owned()))
                .and_then(|id| self.fetch(id))
        };
        check_state_dependent_auth_rules(authz, &pdu, by_state_before).map_err(Error::forbidden)?;
        // And against the current state: an event the room has moved past (its sender
        // banned since, say) is soft-failed: kept, so others may build on it, but not shown
        // and not made a head, and it changes no state.
        let by_current_state = |kind: &ruma::events::StateEventType, key: &str| {
            self.state_id(&kind.to_string(), key)
                .and_then(|id| self.fetch(&id))
        };
        if check_state_dependent_auth_rules(authz, &pdu, by_current_state).is_err() {
            tracing::info!(event_id = %pdu.event_id, "soft-failed an event");
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            self.soft_failed.push(pdu);
            return Ok(());
        }
        if !forward {
            self.received.insert(pdu.event_id.clone());
        }
        let event_id = pdu.event_id.clone();
        // Only a state this server knows is kept as the event's (a guess would later pass
        // for fact); its children then go by the current state, as it did.
        if let Some(before) = &known_before {
            let single = match pdu.prev_events.as_slice() {
                [prev] => self.messaging.snapshot(prev, &self.snapshots)?,
                _ => None,
            };
            let snapshot = match (pdu.prev_events.as_slice(), single) {
                ([prev], Some(base)) if base.hops + 1 < MAX_HOPS => {
                    Snapshot::after(prev, base.hops, &pdu)
                }
                _ => {
                    let mut after = before.clone();
                    add_own(&mut after, &pdu);
                    Snapshot::whole(&after)
                }
            };
            self.snapshots.insert(event_id.clone(), snapshot);
        }
        let linear = old_heads.len() == 1 && pdu.prev_events == old_heads;
        self.place(pdu, false);
        let own = || {
            let mut own = StateIds::new();
            if let Some(pdu) = self.events.get(&event_id) {
                add_own(&mut own, pdu);
            }
            own
        };
        // Built on our one head: the state moves by the event's own entry.
        if linear {
            let own = own();
            self.state.extend(own);
            return Ok(());
        }
        // Otherwise the room's state is the resolution of its heads' states (the same on
        // every server with the same heads); heads whose state this server never learnt,
        // or a resolution that cannot be made, leave the event's own entry to win.
        let heads = self.room.extremities.clone();
        let mut states = Vec::new();
        for head in &heads {
            if let Some(state) = self.messaging.state_after(head, &self.snapshots)? {
                states.push(state);
            }
        }
        let current = match states.len() == heads.len() {
            true if states.len() == 1 => states.pop(),
            true => self.resolve(&states),
            false => None,
        };
        match current {
            Some(current) => {
                let now = self.state_map()?;
                for key in now.keys().filter(|k| !current.contains_key(*k)) {
                    self.removed.insert(key.clone());
                }
                for (key, id) in current {
                    if now.get(&key) != Some(&id) {
                        self.removed.remove(&key);
                        self.state.insert(key, id);
                    }
                }
            }
            None => {
                let own = own();
                self.state.extend(own);
            }
        }
        Ok(())
    }

    /// A remote room's state and auth chain, from the server we joined it through: it
    /// becomes the draft's state, stored without entering the timeline.
    pub fn import_state(&mut self, events: Vec<Pdu>, state: &[OwnedEventId]) {
        for pdu in events {
            if let Some(key) = pdu
                .state_key
                .clone()
                .filter(|_| state.contains(&pdu.event_id))
            {
                self.state
                    .insert((pdu.kind.to_string(), key), pdu.event_id.clone());
            }
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            self.imported.push(pdu);
        }
    }
}
