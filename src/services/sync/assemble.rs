//! One `/sync` response for the stream range (since, upto]: account data, each room the
//! user is in, was invited to or left, presence, device lists and key counts.

use std::collections::{BTreeSet, HashMap};

use ruma::OneTimeKeyAlgorithm;
use ruma::api::client::sync::sync_events::UnreadNotificationsCount;
use ruma::api::client::sync::sync_events::v3::{
    self, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom,
    State as RoomState, StateEvents, Timeline,
};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, UInt, UserId};
use serde_json::{Value, json};

use super::device_lists::device_lists;
use super::raw;
use crate::services::Services;
use crate::services::error::Result;
use crate::services::messaging::{
    Bundler, JoinedSync, Messaging, PUSH_RULES, StoredPdu, UnreadCounts,
};
use crate::services::session::Session;

fn events<T>(events: &[StoredPdu], session: &Session) -> Result<Vec<Raw<T>>> {
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    events
        .iter()
        .map(|e| raw(&e.sync_event(user, device)))
        .collect()
}

/// How the client asked for its rooms: timeline events per room, all the state again, and
/// member events only for the timeline's senders (`lazy_load_members`).
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub limit: usize,
    pub full_state: bool,
    pub lazy_members: bool,
    pub thread_counts: bool,
}

/// The response for (since, upto], and whether it says nothing.
pub(super) fn assemble(
    services: &Services,
    session: &Session,
    since: Option<u64>,
    upto: u64,
    shape: &Shape,
) -> Result<(v3::Response, bool)> {
    let Shape {
        limit,
        full_state,
        lazy_members,
        thread_counts,
    } = *shape;
    let messaging = &services.messaging;
    let user = session.user_id.as_str();
    let mut response = v3::Response::new(upto.to_string());
    let after = since.unwrap_or(0);
    let mut room_data: HashMap<String, Vec<Value>> = HashMap::new();
    // Only room messages since the last sync (the usual case): no account data, membership
    // or key change is among them, so looking for those is skipped.
    let messages_only = since.is_some_and(|s| services.storage.only_room_events(s, upto));
    let mut changes = match messages_only {
        true => Vec::new(),
        false => messaging.account_data_changes(user, since, upto)?,
    };
    // Clients learn their push rules from the first sync, defaults included.
    if since.is_none()
        && !changes
            .iter()
            .any(|(r, k, _)| r.is_none() && k == PUSH_RULES)
    {
        let rules = messaging.push_rules(&session.user_id)?;
        let content = Messaging::push_rules_content(&rules);
        changes.push((None, PUSH_RULES.to_owned(), content));
    }
    for (room, kind, content) in changes {
        let event = json!({ "type": kind, "content": content });
        match room {
            Some(room) => room_data.entry(room).or_default().push(event),
            None => response.account_data.events.push(raw(&event)?),
        }
    }
    let mut joined_rooms = Vec::new();
    // Invites from users this one ignores are not shown, as Synapse drops them.
    let ignored = messaging.ignored_users(user)?;
    for (room_id, membership) in messaging.memberships(&session.user_id)? {
        let room = room_id.as_str();
        // A membership that changed after `upto` committed early (a lower position is still
        // in flight): it has not happened yet for this sync; the next one shows it.
        let changed = membership.changed_at > after;
        // A forgotten room's last leave still reaches the user's other devices once.
        let held = membership.held;
        if membership.changed_at > upto || (membership.forgotten && !changed) || held {
            continue;
        }
        match membership.membership.as_str() {
            "join" => {
                // A room joined since the last sync is sent whole.
                let full = full_state || (since.is_some() && changed);
                let room_since = if full { None } else { since };
                let mut out = JoinedRoom::new();
                let lazy = lazy_members.then_some(session.user_id.as_ref());
                if let Some(mut joined) =
                    messaging.joined_sync(room, room_since, upto, (limit, full), lazy)?
                {
                    let timeline = std::mem::take(&mut joined.timeline);
                    joined.timeline = messaging.visible_to_member(
                        user,
                        &room_id,
                        membership.changed_at,
                        timeline,
                    )?;
                    // Clients take a back-pagination token only from a limited timeline of
                    // a room they knew (as an invite, say); a room joined since the last
                    // sync is limited, as Synapse marks it, so that history before the join
                    // (on another server, after a remote join) can be paged in.
                    joined.limited |= since.is_some() && changed;
                    let bundler = messaging.bundler(&session.user_id, &room_id)?;
                    fill_joined(&mut out, &joined, session, &bundler)?;
                }
                let ephemeral = [
                    messaging.typing_event(room, room_since, upto)?,
                    messaging.receipt_event(room, user, room_since, upto)?,
                ];
                for event in ephemeral.iter().flatten() {
                    out.ephemeral.events.push(raw(event)?);
                }
                for event in room_data.remove(room).unwrap_or_default() {
                    out.account_data.events.push(raw(&event)?);
                }
                joined_rooms.push(room_id.clone());
                if out.is_empty() {
                    continue;
                }
                // The counts change only with new events or the user's own receipts, both
                // of which put the room in the response.
                let count = |unread: UnreadCounts| {
                    let mut counts = UnreadNotificationsCount::new();
                    counts.notification_count = Some(UInt::new_saturating(unread.notifications));
                    counts.highlight_count = Some(UInt::new_saturating(unread.highlights));
                    counts
                };
                if thread_counts {
                    let (main, threads) = messaging.unread_by_thread(user, room)?;
                    out.unread_notifications = count(main);
                    for (root, unread) in threads {
                        if let Ok(root) = ruma::OwnedEventId::try_from(root) {
                            out.unread_thread_notifications.insert(root, count(unread));
                        }
                    }
                } else {
                    out.unread_notifications = count(messaging.unread(user, room)?);
                }
                response.rooms.join.insert(room_id, out);
            }
            "invite" if changed || since.is_none() => {
                let stripped = messaging.invite_state(room, &membership)?;
                let inviter = stripped.last().and_then(|own| own["sender"].as_str());
                if inviter.is_some_and(|i| ignored.contains(i)) {
                    continue;
                }
                let mut invite_state = InviteState::new();
                invite_state.events = stripped.iter().map(raw).collect::<Result<_>>()?;
                let mut invited = InvitedRoom::new();
                invited.invite_state = invite_state;
                response.rooms.invite.insert(room_id, invited);
            }
            "knock" if changed || since.is_none() => {
                let mut stripped = messaging.invite_state(room, &membership)?;
                if membership.invite_state.is_empty() {
                    // A room this server is in: its state as a knocker may see it.
                    let own = stripped.pop();
                    stripped = messaging.knock_state(room)?;
                    stripped.extend(own);
                }
                let mut state = KnockState::new();
                state.events = stripped.iter().map(raw).collect::<Result<_>>()?;
                let mut knocked = KnockedRoom::new();
                knocked.knock_state = state;
                response.rooms.knock.insert(room_id, knocked);
            }
            "leave" | "ban" if changed && since.is_some() => {
                // Someone who was joined sees what happened between the last sync and their
                // leave, ending with it; someone only invited (or a stranger banned) sees
                // only the leave or ban itself, nothing of the room.
                let upto_leave = membership.changed_at;
                let before =
                    messaging.member_event_at(user, &membership, upto_leave.saturating_sub(1))?;
                let was_joined = before.is_some_and(|e| e.membership() == "join");
                let mut timeline = Timeline::new();
                if was_joined {
                    let gap =
                        messaging.joined_sync(room, since, upto_leave, (limit, false), None)?;
                    if let Some(gap) = gap {
                        timeline.limited = gap.limited;
                        timeline.events = events(&gap.timeline, session)?;
                    }
                } else if let Some(own) =
                    messaging.member_event_at(user, &membership, upto_leave)?
                {
                    timeline.events = events(&[own], session)?;
                }
                let mut left = LeftRoom::new();
                left.timeline = timeline;
                response.rooms.leave.insert(room_id, left);
            }
            _ => {}
        }
    }
    if since.is_none_or(|s| services.presence.changed_since(s)) {
        response.presence.events =
            presence_events(services, &session.user_id, &joined_rooms, since, upto)?;
    }
    if let Some(since) = since.filter(|_| !messages_only) {
        let (changed, left) = device_lists(services, &session.user_id, &joined_rooms, since, upto)?;
        response.device_lists.changed = changed.into_iter().collect();
        response.device_lists.left = left.into_iter().collect();
    }
    let empty = response.rooms.is_empty()
        && response.account_data.is_empty()
        && response.presence.is_empty()
        && response.device_lists.is_empty();
    // Always present, as clients rely on: signed_curve25519 even at zero.
    let device = session.device_id.as_str();
    response
        .device_one_time_keys_count
        .insert(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN);
    for (algorithm, count) in services.e2ee.one_time_key_counts(user, device)? {
        response
            .device_one_time_keys_count
            .insert(algorithm.into(), UInt::new_saturating(count));
    }
    let fallbacks = services.e2ee.unused_fallback_types(user, device)?;
    response.device_unused_fallback_key_types =
        Some(fallbacks.into_iter().map(Into::into).collect());
    Ok((response, empty))
}

fn fill_joined(
    out: &mut JoinedRoom,
    joined: &JoinedSync,
    session: &Session,
    bundler: &Bundler<'_>,
) -> Result<()> {
    let mut timeline = Timeline::new();
    timeline.limited = joined.limited;
    timeline.prev_batch = joined
        .timeline
        .first()
        .map(|e| e.position.saturating_sub(1).to_string());
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    for event in &joined.timeline {
        let mut served = event.sync_event(user, device);
        bundler.attach(event, &mut served)?;
        timeline.events.push(raw(&served)?);
    }
    out.timeline = timeline;
    let mut state_events = StateEvents::new();
    state_events.events = events(&joined.state, session)?;
    out.state = RoomState::Before(state_events);
    out.summary.joined_member_count = Some(UInt::new_saturating(joined.joined_count));
    out.summary.invited_member_count = Some(UInt::new_saturating(joined.invited_count));
    out.summary.heroes = joined
        .heroes
        .iter()
        .filter(|h| *h != session.user_id.as_str())
        .filter_map(|h| h.as_str().try_into().ok())
        .collect();
    Ok(())
}

/// Presence of the user and everyone sharing a joined room with them, changed in
/// (since, upto] (all known for an initial sync).
fn presence_events<T>(
    services: &Services,
    user: &UserId,
    joined_rooms: &[OwnedRoomId],
    since: Option<u64>,
    upto: u64,
) -> Result<Vec<Raw<T>>> {
    let mut users = BTreeSet::from([user.to_owned()]);
    for room in joined_rooms {
        users.extend(services.messaging.joined_members(room)?);
    }
    let mut out = Vec::new();
    for other in users {
        let Some(presence) = services.presence.get(other.as_str())? else {
            continue;
        };
        if presence.position <= upto && since.is_none_or(|s| presence.position > s) {
            let event =
                json!({ "type": "m.presence", "sender": other, "content": presence.content() });
            out.push(raw(&event)?);
        }
    }
    Ok(out)
}
