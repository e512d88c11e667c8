//! The user's rooms as a connection's lists see them. Their memberships (with whether each
//! is a direct chat, and whether an invite comes from someone ignored) are read once and
//! kept per connection for as long as only messages commit: an incremental request with
//! nothing new reads no room's rows. Bump stamps come from memory each time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use ruma::OwnedRoomId;

use super::connection::Sent;
use super::lists::Entry;
use crate::services::Services;
use crate::services::error::Result;
use crate::services::messaging::Membership;
use crate::services::session::Session;

/// Connections whose rooms are kept; past it the keeping starts over.
const KEPT: usize = 4096;

/// One of the user's rooms as read from storage.
#[derive(Clone)]
struct Read {
    room_id: OwnedRoomId,
    membership: Membership,
    is_dm: bool,
    /// An invite from a user the syncing user ignores: never listed.
    ignored: bool,
}

/// A connection's rooms as read at a stream position.
type ReadAt = (u64, Arc<Vec<Read>>);

/// The user's rooms at a position, or the position to wait for first.
pub(super) enum Rooms {
    /// The entries, and the rooms whose membership changed after `upto` (not shown yet).
    Entries(BTreeMap<OwnedRoomId, Entry>, HashSet<OwnedRoomId>),
    /// A membership committed with a position readers cannot see yet (one below it is
    /// still in flight): answering without it would lose the room, so wait until then.
    Ahead(u64),
}

/// Every connection's rooms as last read.
#[derive(Default)]
pub(super) struct Kept {
    connections: Mutex<HashMap<String, ReadAt>>,
}

impl Kept {
    /// The rooms of `connection` at `upto`: kept ones if only messages committed since
    /// they were read, else read again.
    fn rooms(
        &self,
        services: &Services,
        session: &Session,
        connection: &str,
        upto: u64,
    ) -> Result<Arc<Vec<Read>>> {
        let lock = || {
            self.connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some((at, rooms)) = lock().get(connection).cloned()
            && at <= upto
            && services.storage.only_room_events(at, upto)
        {
            return Ok(rooms);
        }
        let rooms = Arc::new(read(services, session)?);
        let mut connections = lock();
        if connections.len() >= KEPT {
            connections.clear();
        }
        connections.insert(connection.to_owned(), (upto, Arc::clone(&rooms)));
        Ok(rooms)
    }
}

/// The user's memberships, with what lists need to know of each.
fn read(services: &Services, session: &Session) -> Result<Vec<Read>> {
    let messaging = &services.messaging;
    let user = session.user_id.as_str();
    let direct = messaging.direct_rooms(user)?;
    // Invites from users this one ignores are not shown, as in `/sync`.
    let ignored = messaging.ignored_users(user)?;
    let mut rooms = Vec::new();
    for (room_id, membership) in messaging.memberships(&session.user_id)? {
        // A forgotten room stays, as a leave: a connection that holds it hears of the
        // leave once.
        if membership.held {
            continue;
        }
        let mut is_dm = direct.contains(room_id.as_str());
        let mut from_ignored = false;
        if matches!(membership.membership.as_str(), "invite" | "knock") {
            let event = messaging.stored_pdu(membership.event_id.as_str())?;
            let json = event.as_ref().map(|e| e.client_event());
            let inviter = json.as_ref().and_then(|e| e["sender"].as_str());
            from_ignored = inviter.is_some_and(|i| ignored.contains(i));
            is_dm |= json.is_some_and(|e| e["content"]["is_direct"] == true);
        }
        rooms.push(Read {
            room_id,
            membership,
            is_dm,
            ignored: from_ignored,
        });
    }
    Ok(rooms)
}

/// The user's rooms as lists see them: joined, invited and knocked, and, on an
/// incremental sync, rooms the client holds that the user left since its position; each
/// with its bump stamp (for a joined room at least its join, for others the membership).
/// With `patient`, a membership not yet visible at `upto` is waited for
/// ([`Rooms::Ahead`]); without, it has not happened yet.
pub(super) fn entries(
    services: &Services,
    session: &Session,
    (connection, patient): (&str, bool),
    (since, upto): (Option<u64>, u64),
    held: &BTreeMap<String, Sent>,
) -> Result<Rooms> {
    let kept = &services.sliding_sync.rooms;
    let rooms = kept.rooms(services, session, connection, upto)?;
    let ahead = rooms.iter().map(|r| r.membership.changed_at).max();
    if let Some(ahead) = ahead.filter(|a| patient && *a > upto) {
        return Ok(Rooms::Ahead(ahead));
    }
    let later = rooms
        .iter()
        .filter(|r| r.membership.changed_at > upto)
        .map(|r| r.room_id.clone())
        .collect();
    let mut entries = BTreeMap::new();
    for read in rooms.iter().filter(|r| r.membership.changed_at <= upto) {
        let membership = &read.membership;
        let room = read.room_id.as_str();
        let bump = match membership.membership.as_str() {
            "join" => {
                let last = services.messaging.bump_stamp(room)?.unwrap_or_default();
                last.max(membership.changed_at)
            }
            "invite" | "knock" if !read.ignored => membership.changed_at,
            "leave" | "ban" => {
                let newly = since.is_some_and(|s| membership.changed_at > s);
                if !newly || !held.contains_key(room) {
                    continue;
                }
                membership.changed_at
            }
            _ => continue,
        };
        let entry = Entry {
            membership: membership.clone(),
            bump,
            is_dm: read.is_dm,
        };
        entries.insert(read.room_id.clone(), entry);
    }
    Ok(Rooms::Entries(entries, later))
}
