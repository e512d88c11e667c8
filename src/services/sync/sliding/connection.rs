//! A sliding-sync connection as stored: what the client was sent, so that the next request
//! sends only what changed. Keyed by (user, device, `conn_id`) and a generation; a new
//! generation is written only when what the client holds changes shape (a room entering
//! or leaving its window, a list's count), not for every new event, so `pos` carries the
//! stream position beside the generation: `"{generation}_{position}"`.

use std::collections::BTreeMap;

use kith_storage::{Storage, catalog};
use serde::{Deserialize, Serialize};

use crate::services::error::{Error, ErrorKind, Result};

/// What one connection's client holds, as of a generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Connection {
    /// Rooms the client has been sent, by ID.
    pub rooms: BTreeMap<String, Sent>,
    /// Each list's room count as last sent.
    pub counts: BTreeMap<String, u64>,
}

/// How a room was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Sent {
    /// The user's membership as the client knows it.
    pub membership: String,
    /// The hash of the `required_state` it was sent with (see `RoomConfig::digest`).
    pub config: u64,
    /// Whether it is kept current (in a window or subscribed); a room that left every
    /// window is sent whole when it comes back.
    pub live: bool,
}

/// Where a request continues from: a stored generation at a stream position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pos {
    pub generation: u64,
    pub position: u64,
}

impl Pos {
    pub fn parse(pos: &str, upto: u64) -> Result<Pos> {
        let unknown = || Error::new(ErrorKind::UnknownPos, "Unknown position");
        let (generation, position) = pos.split_once('_').ok_or_else(unknown)?;
        let generation = generation.parse().map_err(|_| unknown())?;
        let position = position.parse().map_err(|_| unknown())?;
        if position > upto {
            return Err(unknown());
        }
        Ok(Pos {
            generation,
            position,
        })
    }

    pub fn token(&self) -> String {
        format!("{}_{}", self.generation, self.position)
    }
}

/// The stored key of a connection: (user, device, conn_id).
pub(super) type Key<'a> = (&'a str, &'a str, &'a str);

/// The connection as of `generation`, or `M_UNKNOWN_POS` when it is not (or no longer) kept.
pub(super) fn load(storage: &Storage, key: Key<'_>, generation: u64) -> Result<Connection> {
    let (user, device, conn) = key;
    let table = &catalog::USERID_DEVICEID_CONNID_GENERATION_CONNECTION;
    storage
        .get(table, &(user, device, conn, generation))?
        .ok_or_else(|| Error::new(ErrorKind::UnknownPos, "Unknown position"))
}

/// Stores `connection` as a new generation after every one kept, and keeps besides it only
/// `base` (the one the client answered from, in case it repeats that request) and the
/// newest two before it (a long-poll the client gave up on may answer from an older `base`
/// after the client moved on). Written without waiting for the disk: losing it in a
/// machine crash only makes the client start over (`M_UNKNOWN_POS`).
pub(super) async fn save(
    storage: &Storage,
    key: Key<'_>,
    base: Option<u64>,
    connection: &Connection,
) -> Result<u64> {
    let (user, device, conn) = key;
    let table = &catalog::USERID_DEVICEID_CONNID_GENERATION_CONNECTION;
    let kept: Vec<((String, String, String, u64), serde::de::IgnoredAny)> =
        storage.scan_prefix(table, &(user, device, conn))?;
    let generation = kept.last().map_or(1, |((_, _, _, g), _)| g + 1);
    let recent = kept.len().saturating_sub(2);
    let mut batch = storage.batch();
    for (index, ((_, _, _, old), _)) in kept.into_iter().enumerate() {
        if index < recent && Some(old) != base {
            batch.delete(table, &(user, device, conn, old))?;
        }
    }
    batch.put(table, &(user, device, conn, generation), connection)?;
    storage.commit_relaxed(batch).await?;
    Ok(generation)
}

/// Forgets every connection of a device (signed out or deleted), into `batch`.
pub fn forget_device_into(
    storage: &Storage,
    batch: &mut kith_storage::Batch,
    user: &str,
    device: &str,
) -> kith_storage::Result<()> {
    let table = &catalog::USERID_DEVICEID_CONNID_GENERATION_CONNECTION;
    let kept: Vec<((String, String, String, u64), serde::de::IgnoredAny)> =
        storage.scan_prefix(table, &(user, device))?;
    for ((_, _, conn, generation), _) in kept {
        batch.delete(table, &(user, device, conn.as_str(), generation))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_refuse_the_unknown() {
        let pos = Pos::parse("3_140", 200).unwrap();
        assert_eq!((pos.generation, pos.position), (3, 140));
        assert_eq!(pos.token(), "3_140");
        for bad in ["", "3", "x_1", "3_x", "3_201", "-1_5"] {
            let error = Pos::parse(bad, 200).unwrap_err();
            assert_eq!(error.kind(), &ErrorKind::UnknownPos, "{bad}");
        }
    }
}
