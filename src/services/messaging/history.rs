//! Paging through a room's timeline, both ways, between stream-position tokens. A token is
//! inclusive ("everything up to here"), the same kind `/sync` hands out.

use ruma::api::Direction;
use ruma::api::client::filter::RoomEventFilter;
use ruma::{EventId, RoomId, UserId};

use super::visibility::Visibility;
use super::{Messaging, StoredPdu};
use crate::services::error::{Error, Result};

/// Events read per storage scan while paging.
const CHUNK: usize = 64;
/// The most events one page returns.
pub const MAX_LIMIT: usize = 100;
/// The most events one page looks at, so a filter that matches little cannot make a
/// request read a whole room; the page then ends early with a token to go on from.
const MAX_SCANNED: usize = 2000;

/// An event with what surrounds it (`/context`).
pub struct Context {
    pub event: StoredPdu,
    /// Newest first, and the token to page on backwards from.
    pub before: Vec<StoredPdu>,
    pub start: u64,
    /// Oldest first, and the token to page on forwards from.
    pub after: Vec<StoredPdu>,
    pub end: u64,
    /// The room's current state.
    pub state: Vec<StoredPdu>,
}

/// Whether an event passes a room event filter (`types`/`senders` with `*` wildcards).
fn matches(filter: &RoomEventFilter, event: &StoredPdu) -> bool {
    let field = |key: &str| event.json.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let (kind, sender) = (field("type"), field("sender"));
    let glob = |pattern: &String, value: &str| match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    };
    filter
        .types
        .as_ref()
        .is_none_or(|types| types.iter().any(|t| glob(t, kind)))
        && !filter.not_types.iter().any(|t| glob(t, kind))
        && filter
            .senders
            .as_ref()
            .is_none_or(|senders| senders.iter().any(|s| s == sender))
        && !filter.not_senders.iter().any(|s| s == sender)
}

pub struct Page {
    /// In the order of the direction: newest first going backwards.
    pub events: Vec<StoredPdu>,
    /// Where to go on from, or `None` once the room's start (or end, or `to`) is reached.
    pub end: Option<u64>,
}

impl Messaging {
    /// Whether a page shows `event` to `reader`: it passes the filter and history
    /// visibility lets them see it (one whose visibility cannot be read, a storage error,
    /// is not shown).
    fn shown(
        &self,
        visibility: &Visibility,
        reader: &UserId,
        filter: &RoomEventFilter,
        event: &StoredPdu,
    ) -> bool {
        matches(filter, event)
            && self
                .may_see(visibility, reader.as_str(), event)
                .unwrap_or(false)
    }

    /// An event of a room `reader` is joined to and may see (history visibility), else 404.
    pub fn room_event(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StoredPdu> {
        let left = self.require_reader(reader, room_id)?;
        let not_found = || Error::not_found("Event not found");
        let event = self
            .stored_pdu(event_id.as_str())?
            .filter(|s| s.room_id == room_id.as_str())
            .filter(|s| left.as_ref().is_none_or(|left| s.position <= left.position))
            .ok_or_else(not_found)?;
        let visibility = self.visibility(room_id)?;
        match self.may_see(&visibility, reader.as_str(), &event)? {
            true => Ok(event),
            false => Err(not_found()),
        }
    }

    /// A page of the history `reader` may see (`/messages`), from `from` (backwards: the
    /// newest, if `None`; forwards: the room's start) up to `to`, through `filter`. Paging
    /// back past the start of what this server holds of a room it joined from elsewhere
    /// fetches the earlier history from a server in the room, then reads again.
    pub async fn messages(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        (from, dir, to): (Option<u64>, Direction, Option<u64>),
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<(u64, Page)> {
        let left = self.require_reader(reader, room_id)?;
        let from = match (from, dir) {
            (Some(from), _) => from,
            (None, Direction::Backward) => self.storage.position(),
            (None, Direction::Forward) => 0,
        };
        // A former member reads as far as their leaving.
        let (from, to) = match (&left, dir) {
            (None, _) => (from, to),
            (Some(left), Direction::Backward) => (from.min(left.position), to),
            (Some(left), Direction::Forward) => (
                from,
                Some(to.map_or(left.position, |t| t.min(left.position))),
            ),
        };
        let visibility = self.visibility(room_id)?;
        let keep = |event: &StoredPdu| self.shown(&visibility, reader, filter, event);
        let limit = limit.clamp(1, MAX_LIMIT);
        let mut page = self.page(room_id.as_str(), from, dir, to, limit, keep)?;
        if dir == Direction::Backward
            && page.end.is_none()
            && to.is_none()
            && self.backfill(room_id).await? > 0
        {
            page = self.page(room_id.as_str(), from, dir, to, limit, keep)?;
        }
        Ok((from, page))
    }

    /// Up to `before` and `after` events `reader` may see around `event` (a search result's
    /// context), with the tokens to page on from each end.
    pub fn around(
        &self,
        reader: &UserId,
        event: &StoredPdu,
        (before, after): (usize, usize),
    ) -> Result<(Vec<StoredPdu>, u64, Vec<StoredPdu>, u64)> {
        let room_id = RoomId::parse(&event.room_id).map_err(Error::internal)?;
        let left = self.require_reader(reader, &room_id)?;
        let until = left.as_ref().map(|left| left.position);
        let visibility = self.visibility(&room_id)?;
        let keep = |e: &StoredPdu| {
            self.may_see(&visibility, reader.as_str(), e)
                .unwrap_or(false)
        };
        let room = room_id.as_str();
        let position = event.position;
        let back = position.saturating_sub(1);
        let earlier = match before {
            0 => Page {
                events: Vec::new(),
                end: Some(back),
            },
            n => self.page(
                room,
                back,
                Direction::Backward,
                None,
                n.min(MAX_LIMIT),
                keep,
            )?,
        };
        let later = match after {
            0 => Page {
                events: Vec::new(),
                end: Some(position),
            },
            n => self.page(
                room,
                position,
                Direction::Forward,
                until,
                n.min(MAX_LIMIT),
                keep,
            )?,
        };
        let end = later
            .end
            .unwrap_or_else(|| later.events.last().map_or(position, |e| e.position));
        Ok((earlier.events, earlier.end.unwrap_or(0), later.events, end))
    }

    /// The event `reader` may see that is closest to `ts` (ms) in `dir` (`timestamp_to_event`):
    /// going forwards, the first at or after it; backwards, the last at or before it. Looks
    /// at most `MAX_TIME_PAGES` pages' worth of events (10,000); 404 if none.
    pub fn event_at_time(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        ts: u64,
        dir: Direction,
    ) -> Result<StoredPdu> {
        const MAX_TIME_PAGES: usize = 5;
        let left = self.require_reader(reader, room_id)?;
        let visibility = self.visibility(room_id)?;
        let time_of = |e: &StoredPdu| {
            let ts = e.json.get("origin_server_ts").and_then(|t| t.as_integer());
            ts.and_then(|t| u64::try_from(i64::from(t)).ok())
                .unwrap_or(0)
        };
        let keep = |e: &StoredPdu| {
            let near = match dir {
                Direction::Backward => time_of(e) <= ts,
                Direction::Forward => time_of(e) >= ts,
            };
            near && self
                .may_see(&visibility, reader.as_str(), e)
                .unwrap_or(false)
        };
        let until = left.as_ref().map(|left| left.position);
        let (mut from, to) = match dir {
            Direction::Backward => (until.unwrap_or_else(|| self.storage.position()), None),
            Direction::Forward => (0, until),
        };
        for _ in 0..MAX_TIME_PAGES {
            let page = self.page(room_id.as_str(), from, dir, to, 1, keep)?;
            if let Some(event) = page.events.into_iter().next() {
                return Ok(event);
            }
            match page.end {
                Some(end) => from = end,
                None => break,
            }
        }
        Err(Error::not_found(
            "No event found in that direction from that time",
        ))
    }

    /// Up to `limit` events around an event `reader` may see (`/context`), half before and
    /// half after, through `filter`, with the room's state (for a former member: as of their
    /// leaving, and nothing after it).
    pub fn context(
        &self,
        reader: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<Context> {
        let left = self.require_reader(reader, room_id)?;
        let event = self.room_event(reader, room_id, event_id)?;
        let room = room_id.as_str();
        let until = left.as_ref().map(|left| left.position);
        let visibility = self.visibility(room_id)?;
        let keep = |e: &StoredPdu| self.shown(&visibility, reader, filter, e);
        let total = limit.min(MAX_LIMIT);
        let (before_limit, after_limit) = (total / 2, total - total / 2);
        let position = event.position;
        let (before, start) = match before_limit {
            0 => (Vec::new(), position.saturating_sub(1)),
            n => {
                let from = position.saturating_sub(1);
                let page = self.page(room, from, Direction::Backward, None, n, keep)?;
                (page.events, page.end.unwrap_or(0))
            }
        };
        let (after, end) = match after_limit {
            0 => (Vec::new(), position),
            n => {
                let page = self.page(room, position, Direction::Forward, until, n, keep)?;
                let last = page.events.last().map_or(position, |e| e.position);
                let end = page.end.unwrap_or(last);
                (page.events, end)
            }
        };
        Ok(Context {
            state: self.readable_state(room_id, left.as_ref())?,
            event,
            before,
            start,
            after,
            end,
        })
    }

    /// Up to `limit` events that `keep` accepts, from token `from` in direction `dir`,
    /// stopping at token `to`.
    pub fn page(
        &self,
        room_id: &str,
        from: u64,
        dir: Direction,
        to: Option<u64>,
        limit: usize,
        keep: impl Fn(&StoredPdu) -> bool,
    ) -> Result<Page> {
        let mut events = Vec::new();
        let mut cursor = from;
        let mut scanned = 0;
        loop {
            let rows = match dir {
                Direction::Backward => {
                    self.timeline_before(room_id, cursor.saturating_add(1), CHUNK)?
                }
                Direction::Forward => self.timeline_after(room_id, cursor, CHUNK)?,
            };
            if rows.is_empty() {
                // Forwards, more may come: the token to go on from, as Synapse gives it
                // (matrix-rust-sdk's timeline waits for one). Backwards, this is the start.
                let more = dir == Direction::Forward && to.is_none();
                return Ok(Page {
                    events,
                    end: more.then_some(cursor),
                });
            }
            for (position, event) in rows {
                let beyond = match dir {
                    Direction::Backward => to.is_some_and(|to| position <= to),
                    Direction::Forward => to.is_some_and(|to| position > to),
                };
                if beyond {
                    return Ok(Page { events, end: None });
                }
                // After this event, the page goes on from just past it.
                cursor = match dir {
                    Direction::Backward => position.saturating_sub(1),
                    Direction::Forward => position,
                };
                if keep(&event) {
                    events.push(event);
                }
                scanned += 1;
                if events.len() >= limit || scanned >= MAX_SCANNED {
                    return Ok(Page {
                        events,
                        end: Some(cursor),
                    });
                }
            }
        }
    }

    /// Events of a room's timeline after `after` (exclusive), oldest first.
    pub fn timeline_after(
        &self,
        room_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredPdu)>> {
        let rows = self.storage.scan_prefix_after(
            &kith_storage::catalog::ROOMID_POSITION_EVENTID,
            &(room_id,),
            &(room_id, after),
            limit,
        )?;
        self.timeline_events(rows)
    }
}
