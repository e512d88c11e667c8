//! Whose device lists changed for a user between two stream positions (`/sync`'s
//! `device_lists`, and `/keys/changes`).

use std::collections::BTreeSet;

use ruma::{OwnedRoomId, OwnedUserId, UserId};

use crate::services::Services;
use crate::services::error::Result;

/// Whose device lists the client should refresh after `since` (`changed`: keys changed,
/// or newly sharing a room) and stop tracking (`left`: no room shared any more).
pub fn device_lists(
    services: &Services,
    user: &UserId,
    joined_rooms: &[OwnedRoomId],
    since: u64,
    upto: u64,
) -> Result<(BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>)> {
    let in_range = |p: u64| p > since && p <= upto;
    let mut shared = BTreeSet::from([user.to_owned()]);
    let mut changed = BTreeSet::new();
    // Who stopped sharing some room with the user in the range: `left` unless they still
    // share another.
    let mut parted = BTreeSet::new();
    for room in joined_rooms {
        let members = services.messaging.members(room)?;
        let i_joined = members
            .iter()
            .any(|(u, m)| u == user && in_range(m.changed_at));
        for (member, membership) in members {
            if membership.membership != "join" {
                // Only someone who was joined can have stopped sharing the room.
                let before = membership.changed_at.saturating_sub(1);
                if in_range(membership.changed_at)
                    && services
                        .messaging
                        .member_event_at(member.as_str(), &membership, before)?
                        .is_some_and(|e| e.membership() == "join")
                {
                    parted.insert(member);
                }
                continue;
            }
            if i_joined || in_range(membership.changed_at) {
                changed.insert(member.clone());
            }
            shared.insert(member);
        }
    }
    for (room, mine) in services.messaging.memberships(user)? {
        if mine.membership != "join" && in_range(mine.changed_at) {
            parted.extend(services.messaging.joined_members(&room)?);
        }
    }
    for other in &shared {
        if services
            .e2ee
            .last_change(other.as_str())?
            .is_some_and(in_range)
        {
            changed.insert(other.clone());
        }
    }
    let left = parted.difference(&shared).cloned().collect();
    changed.remove(user);
    if services
        .e2ee
        .last_change(user.as_str())?
        .is_some_and(in_range)
    {
        changed.insert(user.to_owned());
    }
    Ok((changed, left))
}
