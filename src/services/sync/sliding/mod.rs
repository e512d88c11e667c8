//! Simplified sliding sync (MSC4186), as Element X and every app on matrix-rust-sdk sync:
//! lists of the user's rooms ordered by recency and cut by ranges, room subscriptions,
//! and extensions, over connections that remember what their client holds.
//!
//! A request continues from its `pos`: a stored generation of its connection (which rooms
//! the client has, and how) and a stream position. The response sends each room in a
//! window or subscription whole the first time, and afterwards only what changed; rooms
//! that nothing touched since the position are not read at all (the stream remembers which
//! rooms recent positions changed).

mod connection;
mod extensions;
mod lists;
mod room;
mod rooms;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ruma::api::client::sync::sync_events::v5;
use ruma::{OwnedRoomId, UInt};

pub use connection::forget_device_into;
use connection::{Connection, Pos, Sent};
use lists::Entry;

use crate::services::Services;
use crate::services::error::{Error, Result};
use crate::services::session::Session;
use crate::util::KeyedLocks;

/// The longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `conn_id` kept.
const MAX_CONN_ID: usize = 100;
/// The longest wait for a membership committed under a position not yet visible (its
/// writer holds a lower one for milliseconds).
const AHEAD_WAIT: Duration = Duration::from_secs(1);

/// Sliding sync's own state beside the stored connections.
#[derive(Default)]
pub struct SlidingSync {
    /// Per connection, held while a request reads and writes it.
    connections: KeyedLocks,
    /// Each connection's rooms as last read.
    rooms: rooms::Kept,
}

/// What a request comes to: an answer, or a position to wait for first.
enum Step {
    Answer(Box<Answer>),
    WaitFor(u64),
}

/// One answer and what it would make of the connection.
struct Answer {
    response: v5::Response,
    connection: Connection,
    /// Whether it tells the client anything new.
    news: bool,
    /// The user's rooms, whose changes concern this connection (for the long-poll).
    watched: BTreeMap<OwnedRoomId, Entry>,
}

/// The device's next sliding sync on one connection: at once if anything is new since
/// `pos` (or there is no `pos`), else once something concerning the user commits, or
/// empty at the timeout. `presence` is what syncing sets (`None`: leave it as it is).
pub async fn sliding_sync(
    services: &Services,
    session: &Session,
    request: &v5::Request,
    presence: Option<&'static str>,
) -> Result<v5::Response> {
    let conn_id = request.conn_id.as_deref().unwrap_or("");
    if conn_id.len() > MAX_CONN_ID {
        return Err(Error::invalid_param("conn_id is too long"));
    }
    let storage = &services.storage;
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    if let Some(presence) = presence {
        services.presence.set(user, presence, None).await?;
    }
    let key = (user, device, conn_id);
    let lock_key = format!("{user}\u{0}{device}\u{0}{conn_id}");
    let timeout = request.timeout.unwrap_or(Duration::ZERO).min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut patient = true;
    loop {
        services.messaging.own_sends_answered(user, device).await;
        let guard = services.sliding_sync.connections.lock(&lock_key).await;
        let upto = storage.position();
        let base = match &request.pos {
            Some(pos) => {
                let pos = Pos::parse(pos, upto)?;
                Some((pos, connection::load(storage, key, pos.generation)?))
            }
            None => None,
        };
        let asked = (request, lock_key.as_str(), patient);
        let answer = match answer(services, session, asked, base.as_ref(), upto).await? {
            Step::Answer(answer) => *answer,
            Step::WaitFor(position) => {
                drop(guard);
                let mut visible = storage.subscribe();
                let seen = visible.wait_for(|at| *at >= position);
                let _ = tokio::time::timeout(AHEAD_WAIT, seen).await;
                // Once only: a writer that stalls delays this answer, never withholds it.
                patient = false;
                continue;
            }
        };
        let Some((_, previous)) = &base else {
            return respond(services, key, base.as_ref(), answer, upto).await;
        };
        if answer.news || answer.connection.counts != previous.counts || timeout.is_zero() {
            return respond(services, key, base.as_ref(), answer, upto).await;
        }
        drop(guard);
        // Nothing yet: wait for a commit that may concern this connection's rooms or the
        // user, or the deadline.
        let waiter = storage.waiter(answer.watched.keys().map(|room| room.as_str()));
        let mut seen = upto;
        loop {
            let now = storage.position();
            if !storage.only_other_rooms(seen, now, |room| answer.watched.contains_key(room)) {
                break;
            }
            seen = now;
            if tokio::time::timeout_at(deadline, waiter.woken())
                .await
                .is_err()
            {
                let _guard = services.sliding_sync.connections.lock(&lock_key).await;
                return respond(services, key, base.as_ref(), answer, seen).await;
            }
        }
    }
}

/// Sends an answer at `upto`: as a new generation if what the client holds changed, else
/// on the one it came from.
async fn respond(
    services: &Services,
    key: connection::Key<'_>,
    base: Option<&(Pos, Connection)>,
    mut answer: Answer,
    upto: u64,
) -> Result<v5::Response> {
    let generation = match base {
        Some((pos, held)) if *held == answer.connection => pos.generation,
        _ => {
            let base = base.map(|(p, _)| p.generation);
            connection::save(&services.storage, key, base, &answer.connection).await?
        }
    };
    answer.response.pos = Pos {
        generation,
        position: upto,
    }
    .token();
    Ok(answer.response)
}

/// The response to `request` from `base` (none: a new connection) up to `upto`.
async fn answer(
    services: &Services,
    session: &Session,
    (request, connection_key, patient): (&v5::Request, &str, bool),
    base: Option<&(Pos, Connection)>,
    upto: u64,
) -> Result<Step> {
    let since = base.map(|(pos, _)| pos.position);
    let nothing = BTreeMap::new();
    let held = base.map_or(&nothing, |(_, c)| &c.rooms);
    let asked = (connection_key, patient);
    let (entries, later) = match rooms::entries(services, session, asked, (since, upto), held)? {
        rooms::Rooms::Entries(entries, later) => (entries, later),
        rooms::Rooms::Ahead(position) => return Ok(Step::WaitFor(position)),
    };
    let selection = lists::select(
        services,
        &entries,
        &request.lists,
        &request.room_subscriptions,
    )?;
    let changed = since.and_then(|s| services.storage.rooms_changed(s, upto));
    let mut response = v5::Response::new(String::new());
    response.txn_id = request.txn_id.clone();
    for (name, count) in &selection.counts {
        let mut list = v5::response::List::default();
        list.count = UInt::new_saturating(*count);
        response.lists.insert(name.clone(), list);
    }
    let mut connection = Connection {
        rooms: BTreeMap::new(),
        counts: selection.counts.clone(),
    };
    let mut whole = BTreeSet::new();
    for (room_id, config) in &selection.rooms {
        let entry = &entries[room_id];
        let membership = entry.membership.membership.as_str();
        let previous = held.get(room_id.as_str());
        let is_whole =
            since.is_none() || previous.is_none_or(|p| !p.live || p.membership != membership);
        let digest = config.digest();
        let resend_state = previous.is_some_and(|p| p.config != digest);
        let known_changed = changed
            .as_ref()
            .is_some_and(|set| set.contains(room_id.as_str()))
            || since.is_some_and(|s| entry.membership.changed_at > s);
        let touched = known_changed || changed.is_none();
        if !matches!(membership, "leave" | "ban") {
            connection
                .rooms
                .insert(room_id.to_string(), sent(membership, digest));
        }
        if !is_whole && !resend_state && !touched {
            continue;
        }
        let wanted = room::Wanted {
            room_id,
            entry,
            config,
            since: if is_whole { None } else { since },
            live_after: since,
            resend_state,
            known_changed,
            upto,
        };
        if let Some(out) = room::room(services, session, &wanted)? {
            response.rooms.insert(room_id.clone(), out);
        }
        if is_whole && !matches!(membership, "leave" | "ban") {
            whole.insert(room_id.clone());
        }
    }
    // Rooms the client holds outside every window: kept (not live) while the user is in
    // them; a leave or removal goes out at once, whatever the window.
    for (room, previous) in held {
        let Some((room_id, entry)) = entries.get_key_value(room.as_str()) else {
            // A membership not visible yet: kept as it was, so its change still goes out
            // once seen. (Otherwise the user left long ago and was told.)
            if later.iter().any(|r| r.as_str() == room) {
                connection.rooms.insert(room.clone(), previous.clone());
            }
            continue;
        };
        if selection.rooms.contains_key(room_id) {
            continue;
        }
        if matches!(entry.membership.membership.as_str(), "leave" | "ban") {
            let config = lists::RoomConfig {
                timeline_limit: 1,
                ..Default::default()
            };
            let wanted = room::Wanted {
                room_id,
                entry,
                config: &config,
                since,
                live_after: since,
                resend_state: false,
                known_changed: true,
                upto,
            };
            if let Some(out) = room::room(services, session, &wanted)? {
                response.rooms.insert(room_id.clone(), out);
            }
            continue;
        }
        let mut kept = previous.clone();
        kept.live = false;
        connection.rooms.insert(room.clone(), kept);
    }
    let context = extensions::Context {
        entries: &entries,
        selection: &selection,
        subscriptions: &request.room_subscriptions,
        whole: &whole,
        changed: changed.as_ref(),
        since,
        upto,
    };
    let (extensions, news) =
        extensions::extensions(services, session, &request.extensions, &context).await?;
    response.extensions = extensions;
    Ok(Step::Answer(Box::new(Answer {
        news: news || !response.rooms.is_empty(),
        response,
        connection,
        watched: entries,
    })))
}

fn sent(membership: &str, config: u64) -> Sent {
    Sent {
        membership: membership.to_owned(),
        config,
        live: true,
    }
}
