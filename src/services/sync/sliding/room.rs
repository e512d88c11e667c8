//! One room of a sliding-sync response: whole (`initial`), or what changed since the
//! connection's position: new timeline events, the wanted state that changed, counts.

use std::collections::HashSet;

use ruma::api::client::sync::sync_events::v5::response;
use ruma::{JsOption, OwnedRoomId, RoomId, UInt, UserId};

use super::lists::{Entry, RoomConfig};
use crate::services::Services;
use crate::services::error::Result;
use crate::services::messaging::StoredPdu;
use crate::services::session::Session;
use crate::services::sync::raw;

/// How a room is to be sent.
pub(super) struct Wanted<'a> {
    pub room_id: &'a OwnedRoomId,
    pub entry: &'a Entry,
    pub config: &'a RoomConfig,
    /// `None`: whole; else what changed after this position.
    pub since: Option<u64>,
    /// The connection's position: timeline events after it are `num_live`.
    pub live_after: Option<u64>,
    /// The client's `required_state` grew: send all of it again.
    pub resend_state: bool,
    /// Whether the stream says the room changed since `since` (else it may have: after a
    /// restart, or a gap too long to remember).
    pub known_changed: bool,
    pub upto: u64,
}

fn text<'e>(event: &'e StoredPdu, key: &str) -> Option<&'e str> {
    event.json.get(key).and_then(|v| v.as_str())
}

fn count(n: u64) -> Option<UInt> {
    Some(UInt::new_saturating(n))
}

/// The room as the request wants it, or `None` when nothing is to be sent.
pub(super) fn room(
    services: &Services,
    session: &Session,
    wanted: &Wanted<'_>,
) -> Result<Option<response::Room>> {
    let membership = &wanted.entry.membership;
    let mut out = response::Room::new();
    out.bump_stamp = count(wanted.entry.bump);
    if wanted.entry.is_dm {
        out.is_dm = Some(true);
    }
    match membership.membership.as_str() {
        "join" => {}
        "invite" | "knock" if wanted.since.is_none() => {
            let messaging = &services.messaging;
            let room = wanted.room_id.as_str();
            let mut stripped = messaging.invite_state(room, membership)?;
            if membership.membership == "knock" && membership.invite_state.is_empty() {
                let own = stripped.pop();
                stripped = messaging.knock_state(room)?;
                stripped.extend(own);
            }
            out.initial = Some(true);
            out.invite_state = Some(stripped.iter().map(raw).collect::<Result<_>>()?);
            return Ok(Some(out));
        }
        "leave" | "ban" => return left(services, session, wanted, out).map(Some),
        _ => return Ok(None),
    }
    joined(services, session, wanted, out)
}

/// A joined room: its timeline, wanted state, name, heroes and counts.
fn joined(
    services: &Services,
    session: &Session,
    wanted: &Wanted<'_>,
    mut out: response::Room,
) -> Result<Option<response::Room>> {
    let messaging = &services.messaging;
    let (user, room) = (&session.user_id, wanted.room_id);
    let limit = wanted.config.timeline_limit;
    let after = wanted.since.unwrap_or(0);
    let page = messaging.timeline_between(room.as_str(), after, wanted.upto, limit + 1)?;
    let mut timeline: Vec<StoredPdu> = page.into_iter().map(|(_, e)| e).collect();
    let limited = timeline.len() > limit;
    timeline.truncate(limit);
    timeline.reverse();
    let joined_at = wanted.entry.membership.changed_at;
    let timeline = messaging.visible_to_member(user.as_str(), room, joined_at, timeline)?;
    let lazy: HashSet<&str> = timeline.iter().filter_map(|e| text(e, "sender")).collect();
    let state = required_state(services, wanted, user, (&timeline, limited), &lazy)?;
    if wanted.since.is_some() && timeline.is_empty() && state.is_empty() {
        // Only receipts (and so the counts) can have moved: the counts go out, if the
        // room is known to have changed at all.
        if !wanted.known_changed {
            return Ok(None);
        }
        out.unread_notifications = unread(services, session, room)?;
        return Ok(Some(out));
    }
    let (user_name, device) = (user.as_str(), session.device_id.as_str());
    let bundler = messaging.bundler(user, room)?;
    for event in &timeline {
        let mut served = event.sync_event(user_name, device);
        bundler.attach(event, &mut served)?;
        out.timeline.push(raw(&served)?);
    }
    out.num_live = wanted.live_after.map(|live| {
        UInt::new_saturating(timeline.iter().filter(|e| e.position > live).count() as u64)
    });
    out.prev_batch = timeline
        .first()
        .map(|e| e.position.saturating_sub(1).to_string());
    out.limited = limited;
    let whole = wanted.since.is_none();
    // The name, avatar and member summary go out whole, and again when they changed (in
    // the gap, which a limited timeline may not show), whatever `required_state` asks.
    let changed_since = |kind: &str| -> Result<bool> {
        let Some(since) = wanted.since else {
            return Ok(true);
        };
        if !limited {
            // The whole gap is in the timeline: a change would be there.
            let state =
                |e: &&StoredPdu| text(e, "type") == Some(kind) && text(e, "state_key") == Some("");
            return Ok(timeline.iter().any(|e| state(&e)));
        }
        let Some(id) = messaging.state_event_id(room, kind, "")? else {
            return Ok(false);
        };
        Ok(messaging
            .stored_pdu(id.as_str())?
            .is_some_and(|e| e.position > since))
    };
    if changed_since("m.room.name")? {
        let name = messaging.state_content(room, "m.room.name")?;
        out.name = name.and_then(|n| n["name"].as_str().map(str::to_owned));
    }
    if changed_since("m.room.avatar")? {
        let avatar = messaging.state_content(room, "m.room.avatar")?;
        let url = avatar.and_then(|a| a["url"].as_str().map(Into::into));
        out.avatar = match url {
            Some(url) => JsOption::Some(url),
            None if whole => JsOption::Undefined,
            None => JsOption::Null,
        };
    }
    let members_moved = limited
        || timeline
            .iter()
            .any(|e| text(e, "type") == Some("m.room.member"));
    if whole || members_moved {
        summary(services, session, room, &mut out)?;
    }
    for event in &state {
        out.required_state
            .push(raw(&event.sync_event(user_name, device))?);
    }
    if whole {
        out.initial = Some(true);
    }
    out.unread_notifications = unread(services, session, room)?;
    Ok(Some(out))
}

/// The wanted state: all of it for a whole room (or a grown `required_state`), else what
/// changed after `since`, with the member events of the timeline's senders (`$LAZY`).
fn required_state(
    services: &Services,
    wanted: &Wanted<'_>,
    me: &UserId,
    (timeline, limited): (&[StoredPdu], bool),
    lazy: &HashSet<&str>,
) -> Result<Vec<StoredPdu>> {
    let messaging = &services.messaging;
    let (room, config) = (wanted.room_id, wanted.config);
    let mut state = Vec::new();
    let whole = wanted.since.is_none() || wanted.resend_state;
    if whole || limited {
        // Every current state entry the client wants (changed ones only, unless whole).
        for ((kind, key), event_id) in messaging.state_ids(room)? {
            if !config.wants(&kind, &key, me, lazy) {
                continue;
            }
            if let Some(event) = messaging.stored_pdu(event_id.as_str())?
                && (whole || wanted.since.is_none_or(|s| event.position > s))
            {
                state.push(event);
            }
        }
    } else {
        // The whole gap is in the timeline: its state events that are still current are
        // what changed; nothing else is read.
        let mut seen = HashSet::new();
        for event in timeline.iter().rev() {
            let (Some(kind), Some(key)) = (text(event, "type"), text(event, "state_key")) else {
                continue;
            };
            if !seen.insert((kind, key)) || !config.wants(kind, key, me, lazy) {
                continue;
            }
            let current = messaging.state_event_id(room, kind, key)?;
            if current.as_ref() == Some(&event.event_id) {
                state.push(event.clone());
            }
        }
    }
    // The senders' member events, which the client may not have yet (sent again, as
    // `include_redundant_members` would).
    if !whole && config.wants_lazy() {
        let has = |state: &[StoredPdu], sender: &str| {
            state.iter().any(|e| {
                text(e, "type") == Some("m.room.member") && text(e, "state_key") == Some(sender)
            })
        };
        for sender in lazy {
            if has(&state, sender) {
                continue;
            }
            if let Some(id) = messaging.state_event_id(room, "m.room.member", sender)?
                && let Some(event) = messaging.stored_pdu(id.as_str())?
            {
                state.push(event);
            }
        }
    }
    Ok(state)
}

/// Member counts, and heroes for a room with no name (as clients name it after them).
fn summary(
    services: &Services,
    session: &Session,
    room: &RoomId,
    out: &mut response::Room,
) -> Result<()> {
    let members = services.messaging.members(room)?;
    let mut heroes = Vec::new();
    let (mut joined, mut invited) = (0, 0);
    for (member, membership) in &members {
        match membership.membership.as_str() {
            "join" => joined += 1,
            "invite" => invited += 1,
            _ => continue,
        }
        if heroes.len() < 5 && *member != session.user_id {
            let event = services
                .messaging
                .stored_pdu(membership.event_id.as_str())?;
            let content = event.map(|e| e.client_event()["content"].take());
            let mut hero = response::Hero::new(member.clone());
            hero.name = content
                .as_ref()
                .and_then(|c| c["displayname"].as_str().map(str::to_owned));
            hero.avatar = content
                .as_ref()
                .and_then(|c| c["avatar_url"].as_str().map(Into::into));
            heroes.push(hero);
        }
    }
    out.joined_count = count(joined);
    out.invited_count = count(invited);
    out.heroes = Some(heroes);
    Ok(())
}

fn unread(
    services: &Services,
    session: &Session,
    room: &RoomId,
) -> Result<ruma::api::client::sync::sync_events::UnreadNotificationsCount> {
    let unread = services
        .messaging
        .unread(session.user_id.as_str(), room.as_str())?;
    let mut counts = ruma::api::client::sync::sync_events::UnreadNotificationsCount::new();
    counts.notification_count = count(unread.notifications);
    counts.highlight_count = count(unread.highlights);
    Ok(counts)
}

/// A room the user just left or was removed from: what happened up to it, ending with
/// their own member event, which the client takes the room out of its list by.
fn left(
    services: &Services,
    session: &Session,
    wanted: &Wanted<'_>,
    mut out: response::Room,
) -> Result<response::Room> {
    let messaging = &services.messaging;
    let membership = &wanted.entry.membership;
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    let at = membership.changed_at;
    let before = messaging.member_event_at(user, membership, at.saturating_sub(1))?;
    let own = messaging.member_event_at(user, membership, at)?;
    let mut timeline = Vec::new();
    if before.is_some_and(|e| e.membership() == "join") {
        let limit = wanted.config.timeline_limit.max(1);
        // What the client missed since it last had the room (it held it joined then).
        let after = wanted.live_after.unwrap_or(0);
        let page = messaging.timeline_between(wanted.room_id.as_str(), after, at, limit + 1)?;
        out.limited = page.len() > limit;
        timeline = page.into_iter().take(limit).map(|(_, e)| e).collect();
        timeline.reverse();
    }
    if let Some(own) = own {
        if !timeline.iter().any(|e| e.event_id == own.event_id) {
            timeline.push(own.clone());
        }
        out.required_state.push(raw(&own.sync_event(user, device))?);
    }
    for event in &timeline {
        out.timeline.push(raw(&event.sync_event(user, device))?);
    }
    out.prev_batch = timeline
        .first()
        .map(|e| e.position.saturating_sub(1).to_string());
    Ok(out)
}
