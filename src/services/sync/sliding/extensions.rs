//! A sliding sync's extensions: to-device messages, end-to-end encryption (device lists
//! and key counts), account data, receipts and typing, each for the rooms and lists it is
//! scoped to.

use std::collections::{BTreeMap, BTreeSet};

use ruma::api::client::sync::sync_events::v5::{request, response};
use ruma::{OneTimeKeyAlgorithm, OwnedRoomId, UInt};
use serde_json::json;

use super::lists::{Entry, Selection};
use crate::services::Services;
use crate::services::error::Result;
use crate::services::messaging::{Messaging, PUSH_RULES};
use crate::services::session::Session;
use crate::services::sync::{device_lists, raw};

/// What the extensions are computed against.
pub(super) struct Context<'a> {
    pub entries: &'a BTreeMap<OwnedRoomId, Entry>,
    pub selection: &'a Selection,
    pub subscriptions: &'a BTreeMap<OwnedRoomId, request::RoomSubscription>,
    /// Rooms sent whole in this response (their receipts and account data go whole too).
    pub whole: &'a BTreeSet<OwnedRoomId>,
    /// Rooms changed since the connection's position (`None`: unknown, so any may have).
    pub changed: Option<&'a BTreeSet<std::sync::Arc<str>>>,
    pub since: Option<u64>,
    pub upto: u64,
}

impl Context<'_> {
    /// The rooms an extension applies to: those in the windows of `lists` (all lists when
    /// not given) and those of `rooms` (all subscriptions when not given; `*` for them).
    fn scope(
        &self,
        lists: Option<&Vec<String>>,
        rooms: Option<&Vec<request::ExtensionRoomConfig>>,
    ) -> BTreeSet<OwnedRoomId> {
        let mut scope = BTreeSet::new();
        for (name, window) in &self.selection.windows {
            if lists.is_none_or(|named| named.contains(name)) {
                scope.extend(window.iter().cloned());
            }
        }
        let subscribed = self
            .subscriptions
            .keys()
            .filter(|room| self.entries.contains_key(*room));
        match rooms {
            None => scope.extend(subscribed.cloned()),
            Some(rooms) => {
                for room in rooms {
                    match room {
                        request::ExtensionRoomConfig::AllSubscribed => {
                            scope.extend(subscribed.clone().cloned())
                        }
                        request::ExtensionRoomConfig::Room(id) if self.entries.contains_key(id) => {
                            scope.insert(id.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        scope
    }

    /// The rooms of receipts and typing in scope, with where to read them from: joined
    /// ones only; whole (from the start) for a room sent whole, else from the connection's
    /// position, and not at all for a room nothing touched.
    fn ephemeral(
        &self,
        lists: Option<&Vec<String>>,
        rooms: Option<&Vec<request::ExtensionRoomConfig>>,
    ) -> Vec<(OwnedRoomId, Option<u64>)> {
        let joined = |room: &OwnedRoomId| {
            let entry = self.entries.get(room);
            entry.is_some_and(|e| e.membership.membership == "join")
        };
        let touched =
            |room: &OwnedRoomId| self.changed.is_none_or(|set| set.contains(room.as_str()));
        let mut out = Vec::new();
        for room in self.scope(lists, rooms) {
            let whole = self.whole.contains(&room);
            if joined(&room) && (whole || touched(&room)) {
                let since = if whole { None } else { self.since };
                out.push((room, since));
            }
        }
        out
    }
}

fn on(enabled: Option<bool>) -> bool {
    enabled == Some(true)
}

/// The extensions asked for, and whether they carry news (key counts alone do not).
pub(super) async fn extensions(
    services: &Services,
    session: &Session,
    asked: &request::Extensions,
    context: &Context<'_>,
) -> Result<(response::Extensions, bool)> {
    let mut out = response::Extensions::default();
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    let messaging = &services.messaging;
    let mut news = false;
    if on(asked.to_device.enabled) {
        // Its own token: what the device has up to it arrived, so it goes.
        let since = asked
            .to_device
            .since
            .as_deref()
            .and_then(|s| s.parse().ok());
        let since = since.filter(|s| *s <= context.upto);
        let events = services
            .e2ee
            .to_device_for_sync(user, device, since, context.upto)
            .await?;
        news |= !events.is_empty();
        let mut to_device = response::ToDevice::default();
        to_device.next_batch = context.upto.to_string();
        to_device.events = events.iter().map(raw).collect::<Result<_>>()?;
        out.to_device = Some(to_device);
    }
    // Only messages since the connection's position (the usual case): no key, device,
    // membership or account-data change is among them, so looking for those is skipped.
    let messages_only = context
        .since
        .is_some_and(|s| services.storage.only_room_events(s, context.upto));
    if on(asked.e2ee.enabled) {
        if let Some(since) = context.since.filter(|_| !messages_only) {
            let joined: Vec<OwnedRoomId> = context
                .entries
                .iter()
                .filter(|(_, e)| e.membership.membership == "join")
                .map(|(room, _)| room.clone())
                .collect();
            let (changed, left) =
                device_lists(services, &session.user_id, &joined, since, context.upto)?;
            news |= !changed.is_empty() || !left.is_empty();
            out.e2ee.device_lists.changed = changed.into_iter().collect();
            out.e2ee.device_lists.left = left.into_iter().collect();
        }
        // Always, even at zero: a missing count makes clients upload keys again.
        let counts = &mut out.e2ee.device_one_time_keys_count;
        counts.insert(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN);
        for (algorithm, count) in services.e2ee.one_time_key_counts(user, device)? {
            counts.insert(algorithm.into(), UInt::new_saturating(count));
        }
        let fallbacks = services.e2ee.unused_fallback_types(user, device)?;
        out.e2ee.device_unused_fallback_key_types =
            Some(fallbacks.into_iter().map(Into::into).collect());
    }
    let ask = &asked.account_data;
    if on(ask.enabled) {
        let scope = context.scope(ask.lists.as_ref(), ask.rooms.as_ref());
        let mut changes = match messages_only {
            true => Vec::new(),
            false => messaging.account_data_changes(user, context.since, context.upto)?,
        };
        if context.since.is_none()
            && !changes
                .iter()
                .any(|(r, k, _)| r.is_none() && k == PUSH_RULES)
        {
            let rules = messaging.push_rules(&session.user_id)?;
            changes.push((
                None,
                PUSH_RULES.to_owned(),
                Messaging::push_rules_content(&rules),
            ));
        }
        // A room sent whole gets all its account data, however old.
        if context.since.is_some() && context.whole.iter().any(|r| scope.contains(r)) {
            let all = messaging.account_data_changes(user, None, context.upto)?;
            changes.extend(all.into_iter().filter(|(room, _, _)| {
                room.as_deref()
                    .is_some_and(|r| context.whole.iter().any(|w| w.as_str() == r))
            }));
        }
        let mut sent = BTreeSet::new();
        for (room, kind, content) in changes {
            if !sent.insert((room.clone(), kind.clone())) {
                continue;
            }
            let event = json!({ "type": kind, "content": content });
            match room {
                None => out.account_data.global.push(raw(&event)?),
                Some(room) => {
                    let Ok(room) = OwnedRoomId::try_from(room) else {
                        continue;
                    };
                    if scope.contains(&room) {
                        out.account_data
                            .rooms
                            .entry(room)
                            .or_default()
                            .push(raw(&event)?);
                    }
                }
            }
        }
        news |= !out.account_data.is_empty();
    }
    let ask = &asked.receipts;
    if on(ask.enabled) {
        for (room, since) in context.ephemeral(ask.lists.as_ref(), ask.rooms.as_ref()) {
            if let Some(event) =
                messaging.receipt_event(room.as_str(), user, since, context.upto)?
            {
                out.receipts.rooms.insert(room, raw(&event)?);
            }
        }
        news |= !out.receipts.is_empty();
    }
    let ask = &asked.typing;
    if on(ask.enabled) {
        for (room, since) in context.ephemeral(ask.lists.as_ref(), ask.rooms.as_ref()) {
            if let Some(event) = messaging.typing_event(room.as_str(), since, context.upto)? {
                out.typing.rooms.insert(room, raw(&event)?);
            }
        }
        news |= !out.typing.is_empty();
    }
    Ok((out, news))
}
