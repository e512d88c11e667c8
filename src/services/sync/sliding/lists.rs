//! Which rooms a request's lists and subscriptions hold: the user's rooms, filtered,
//! ordered by `bump_stamp` (newest first), cut by each list's ranges, and with what each
//! room is to be sent (its `required_state` and timeline limit, merged where a room is in
//! several lists).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use ruma::api::client::sync::sync_events::v5::request;
use ruma::directory::RoomTypeFilter;
use ruma::{OwnedRoomId, UserId};

use crate::services::Services;
use crate::services::error::Result;
use crate::services::messaging::Membership;

/// The most timeline events one room is sent at once.
const MAX_TIMELINE: usize = 100;

/// One of the user's rooms, as the lists see it.
pub(super) struct Entry {
    pub membership: Membership,
    pub bump: u64,
    pub is_dm: bool,
}

/// What a room is to be sent with.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RoomConfig {
    /// (type, state key) pairs, with `*`, `$ME` and `$LAZY`.
    pub required_state: BTreeSet<(String, String)>,
    pub timeline_limit: usize,
}

impl RoomConfig {
    fn from_request(
        required: &[(ruma::events::StateEventType, String)],
        limit: ruma::UInt,
    ) -> Self {
        RoomConfig {
            required_state: required
                .iter()
                .map(|(kind, key)| (kind.to_string(), key.clone()))
                .collect(),
            timeline_limit: usize::try_from(u64::from(limit))
                .unwrap_or(MAX_TIMELINE)
                .min(MAX_TIMELINE),
        }
    }

    fn merge(&mut self, other: RoomConfig) {
        self.required_state.extend(other.required_state);
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
    }

    /// A digest of the required state, to tell when a room's client needs more of it.
    pub fn digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.required_state.hash(&mut hasher);
        hasher.finish()
    }

    /// Whether a state event of `kind` and `key` is wanted; `lazy` are the members whose
    /// events go with the timeline (`$LAZY`).
    pub fn wants(&self, kind: &str, key: &str, user: &UserId, lazy: &HashSet<&str>) -> bool {
        self.required_state.iter().any(|(k, wanted)| {
            (k == "*" || k == kind)
                && match wanted.as_str() {
                    "*" => true,
                    "$ME" => key == user.as_str(),
                    "$LAZY" => kind == "m.room.member" && lazy.contains(key),
                    exact => exact == key,
                }
        })
    }

    /// Whether every member event is wanted, so `$LAZY` adds none.
    pub fn wants_lazy(&self) -> bool {
        self.required_state.iter().any(|(_, key)| key == "$LAZY")
    }
}

/// The rooms of a request: each list's count and the rooms to send, with their configs
/// and the lists they are in.
#[derive(Default)]
pub(super) struct Selection {
    pub counts: BTreeMap<String, u64>,
    pub rooms: BTreeMap<OwnedRoomId, RoomConfig>,
    /// The rooms in each list's window.
    pub windows: BTreeMap<String, Vec<OwnedRoomId>>,
}

/// Whether the room passes a list's filters. `is_encrypted` and room types read the room's
/// state, so only when a filter asks.
fn passes(
    services: &Services,
    room: &OwnedRoomId,
    entry: &Entry,
    filters: Option<&request::ListFilters>,
) -> Result<bool> {
    let Some(filters) = filters else {
        return Ok(true);
    };
    let invite = entry.membership.membership == "invite";
    if filters.is_invite.is_some_and(|wanted| wanted != invite)
        || filters.is_dm.is_some_and(|wanted| wanted != entry.is_dm)
    {
        return Ok(false);
    }
    let messaging = &services.messaging;
    if let Some(wanted) = filters.is_encrypted {
        let encrypted = messaging
            .state_event_id(room, "m.room.encryption", "")?
            .is_some();
        if encrypted != wanted {
            return Ok(false);
        }
    }
    if !filters.room_types.is_empty() || !filters.not_room_types.is_empty() {
        let create = messaging.state_content(room, "m.room.create")?;
        let kind = create.as_ref().and_then(|c| c["type"].as_str());
        let filter = RoomTypeFilter::from(kind);
        if !filters.room_types.is_empty() && !filters.room_types.contains(&filter) {
            return Ok(false);
        }
        if filters.not_room_types.contains(&filter) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies the request's lists and subscriptions to the user's rooms.
pub(super) fn select(
    services: &Services,
    rooms: &BTreeMap<OwnedRoomId, Entry>,
    lists: &BTreeMap<String, request::List>,
    subscriptions: &BTreeMap<OwnedRoomId, request::RoomSubscription>,
) -> Result<Selection> {
    let mut selection = Selection::default();
    // Newest bump first; ties (rooms with no known bump) by ID, so windows are stable.
    let mut ordered: Vec<(&OwnedRoomId, &Entry)> = rooms.iter().collect();
    ordered.sort_by(|a, b| b.1.bump.cmp(&a.1.bump).then_with(|| a.0.cmp(b.0)));
    for (name, list) in lists {
        let mut members = Vec::new();
        for (room, entry) in &ordered {
            if passes(services, room, entry, list.filters.as_ref())? {
                members.push(*room);
            }
        }
        selection.counts.insert(name.clone(), members.len() as u64);
        let details = &list.room_details;
        let config = RoomConfig::from_request(&details.required_state, details.timeline_limit);
        let mut window = BTreeSet::new();
        for (start, end) in &list.ranges {
            let start = usize::try_from(u64::from(*start)).unwrap_or(usize::MAX);
            let end = usize::try_from(u64::from(*end)).unwrap_or(usize::MAX);
            for room in members
                .iter()
                .skip(start)
                .take(end.saturating_sub(start) + 1)
            {
                window.insert((*room).clone());
            }
        }
        for room in &window {
            match selection.rooms.get_mut(room) {
                Some(existing) => existing.merge(config.clone()),
                None => {
                    selection.rooms.insert(room.clone(), config.clone());
                }
            }
        }
        selection
            .windows
            .insert(name.clone(), window.into_iter().collect());
    }
    // Subscriptions only to rooms the user is in, invited to or just left.
    for (room, subscription) in subscriptions {
        if !rooms.contains_key(room) {
            continue;
        }
        let config =
            RoomConfig::from_request(&subscription.required_state, subscription.timeline_limit);
        match selection.rooms.get_mut(room) {
            Some(existing) => existing.merge(config),
            None => {
                selection.rooms.insert(room.clone(), config);
            }
        }
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_state_understands_wildcards_me_and_lazy() {
        let config = RoomConfig {
            required_state: [
                ("m.room.name", ""),
                ("m.room.member", "$LAZY"),
                ("m.room.member", "$ME"),
                ("m.space.child", "*"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            timeline_limit: 1,
        };
        let me = ruma::user_id!("@me:kith.test");
        let lazy: HashSet<&str> = ["@sender:kith.test"].into();
        assert!(config.wants("m.room.name", "", me, &lazy));
        assert!(!config.wants("m.room.name", "x", me, &lazy));
        assert!(config.wants("m.room.member", "@me:kith.test", me, &lazy));
        assert!(config.wants("m.room.member", "@sender:kith.test", me, &lazy));
        assert!(!config.wants("m.room.member", "@idle:kith.test", me, &lazy));
        assert!(config.wants("m.space.child", "!any:kith.test", me, &lazy));
        assert!(!config.wants("m.room.topic", "", me, &lazy));
        let all = RoomConfig {
            required_state: [("*".to_string(), "*".to_string())].into(),
            timeline_limit: 1,
        };
        assert!(all.wants("m.room.member", "@idle:kith.test", me, &lazy));
        assert_ne!(config.digest(), all.digest());
    }
}
