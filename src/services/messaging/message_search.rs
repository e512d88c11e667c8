//! Server-side search (`POST /search`): a word index of each room's messages, names and
//! topics, written in the batch that stores the event and cleared when it is redacted, so a
//! search reads a few index ranges per room and never scans a timeline. Words are folded as
//! the user directory folds them ("Zoë" finds "zoe"). Encrypted rooms hold no plain text,
//! so nothing of them is found, as everywhere.

use std::collections::{BTreeSet, HashMap};

use kith_storage::{Batch, catalog};
use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::{Messaging, StoredPdu};
use crate::services::error::{Error, Result};
use crate::services::profile::directory::words_of;

/// The longest word indexed, in bytes; longer ones are not words anyone types.
const MAX_WORD_BYTES: usize = 64;
/// The most distinct words indexed per event.
const MAX_WORDS: usize = 256;
/// The most words of a search term looked up.
const MAX_TERMS: usize = 8;
/// The most hits one search gathers before ranking.
const MAX_HITS: usize = 1000;

/// Where an indexed word is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    pub event_id: String,
    /// `content.body`, `content.name` or `content.topic`.
    pub key: String,
}

/// The text an event offers to search: (key, text).
fn searchable(event: &StoredPdu) -> Option<(&'static str, String)> {
    let kind = event.json.get("type")?.as_str()?;
    let (key, field) = match kind {
        "m.room.message" => ("content.body", "body"),
        "m.room.name" => ("content.name", "name"),
        "m.room.topic" => ("content.topic", "topic"),
        _ => return None,
    };
    let content = event.json.get("content")?.as_object()?;
    let text = content.get(field)?.as_str()?;
    Some((key, text.to_owned()))
}

fn indexed_words(text: &str) -> BTreeSet<String> {
    words_of(text)
        .filter(|w| w.len() <= MAX_WORD_BYTES)
        .take(MAX_WORDS * 4)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_WORDS)
        .collect()
}

/// Indexes a newly stored event's words, in `batch`.
pub fn index_into(batch: &mut Batch, event: &StoredPdu) -> Result<()> {
    let Some((key, text)) = searchable(event) else {
        return Ok(());
    };
    let hit = Hit {
        event_id: event.event_id.to_string(),
        key: key.to_owned(),
    };
    for word in indexed_words(&text) {
        let row = (event.room_id.as_str(), word.as_str(), event.position);
        batch.put(&catalog::ROOMID_WORD_POSITION_HIT, &row, &hit)?;
    }
    Ok(())
}

/// Takes a redacted event's words (as it was before) out of the index, in `batch`.
pub fn unindex_into(batch: &mut Batch, event: &StoredPdu) -> Result<()> {
    let Some((_, text)) = searchable(event) else {
        return Ok(());
    };
    for word in indexed_words(&text) {
        let row = (event.room_id.as_str(), word.as_str(), event.position);
        batch.delete(&catalog::ROOMID_WORD_POSITION_HIT, &row)?;
    }
    Ok(())
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// The most occurrences of the search words first, then the newest.
    Rank,
    /// The newest first.
    Recent,
}

/// What one search asks.
pub struct SearchQuery<'a> {
    pub term: &'a str,
    /// `content.body`, `content.name`, `content.topic` (all three if empty).
    pub keys: Vec<String>,
    /// Only these rooms (of those the user is in), if given.
    pub rooms: Option<Vec<String>>,
    pub order: SearchOrder,
}

/// A result: the event and its rank.
pub struct Found {
    pub event: StoredPdu,
    pub rank: f64,
}

impl Messaging {
    /// Every event of the rooms `user` is joined to (or the `rooms` asked, of those) that
    /// holds every word of the term in one of the `keys`, that the user may see, ordered;
    /// with the normalized words, to highlight.
    pub fn search_messages(
        &self,
        user: &UserId,
        query: &SearchQuery<'_>,
    ) -> Result<(Vec<Found>, Vec<String>)> {
        let terms: Vec<String> = indexed_words(query.term)
            .into_iter()
            .take(MAX_TERMS)
            .collect();
        let Some(first) = terms.first() else {
            return Err(Error::invalid_param("Nothing to search for"));
        };
        let keys: Vec<&str> = match query.keys.is_empty() {
            true => vec!["content.body", "content.name", "content.topic"],
            false => query.keys.iter().map(String::as_str).collect(),
        };
        let mut found = Vec::new();
        for room in self.joined_rooms(user)? {
            if query
                .rooms
                .as_ref()
                .is_some_and(|r| !r.iter().any(|r| r == room.as_str()))
            {
                continue;
            }
            self.search_room(user, &room, (first, &terms), &keys, &mut found)?;
            if found.len() >= MAX_HITS {
                break;
            }
        }
        match query.order {
            SearchOrder::Rank => found.sort_by(|a, b| {
                b.rank
                    .total_cmp(&a.rank)
                    .then(b.event.position.cmp(&a.event.position))
            }),
            SearchOrder::Recent => found.sort_by_key(|f| std::cmp::Reverse(f.event.position)),
        }
        Ok((found, terms))
    }

    /// One room's hits for `terms`: the events indexed under the first word whose text
    /// holds the others too.
    fn search_room(
        &self,
        user: &UserId,
        room: &RoomId,
        (first, terms): (&str, &[String]),
        keys: &[&str],
        found: &mut Vec<Found>,
    ) -> Result<()> {
        // The newest hits first, and never more than a search gathers in all.
        let budget = MAX_HITS.saturating_sub(found.len());
        let rows: Vec<((String, String, u64), Hit)> = self.storage.scan_prefix_back(
            &catalog::ROOMID_WORD_POSITION_HIT,
            &(room.as_str(), first),
            &(room.as_str(), first, u64::MAX),
            budget,
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let visibility = self.visibility(room)?;
        for (_, hit) in rows {
            if !keys.contains(&hit.key.as_str()) {
                continue;
            }
            let Some(event) = self.stored_pdu(&hit.event_id)? else {
                continue;
            };
            let Some((_, text)) = searchable(&event) else {
                continue;
            };
            let mut counts: HashMap<String, usize> = HashMap::new();
            for word in words_of(&text) {
                *counts.entry(word).or_default() += 1;
            }
            if !terms.iter().all(|t| counts.contains_key(t)) {
                continue;
            }
            if !self.may_see(&visibility, user.as_str(), &event)? {
                continue;
            }
            let occurrences: usize = terms.iter().map(|t| counts[t]).sum();
            let rank = occurrences as f64 / (counts.values().sum::<usize>() as f64).sqrt();
            found.push(Found { event, rank });
        }
        Ok(())
    }
}
