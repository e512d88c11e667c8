//! Paging through a room's timeline, both ways, between stream-position tokens. A token is
//! inclusive ("everything up to here"), the same kind `/sync` hands out.

use ruma::api::Direction;

use super::{Messaging, StoredPdu};
use crate::services::error::Result;

/// Events read per storage scan while paging.
const CHUNK: usize = 64;
/// The most events one page looks at, so a filter that matches little cannot make a
/// request read a whole room; the page then ends early with a token to go on from.
const MAX_SCANNED: usize = 2000;

pub struct Page {
    /// In the order of the direction: newest first going backwards.
    pub events: Vec<StoredPdu>,
    /// Where to go on from, or `None` once the room's start (or end, or `to`) is reached.
    pub end: Option<u64>,
}

impl Messaging {
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
                return Ok(Page { events, end: None });
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
