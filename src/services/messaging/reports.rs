//! Reports of events, rooms and users (`/report`), kept for the server's admins
//! (`kith admin reports`). A reporter reports only what they can see: an event of a room
//! they may read, a room they are or were in. Counted against the sender's message
//! allowance, so a client cannot fill the table.

use kith_storage::catalog;
use ruma::{EventId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Messaging;
use crate::services::error::{Error, Result};
use crate::util::{now_ms, random_string};

/// The longest reason kept, in bytes.
const MAX_REASON_BYTES: usize = 2000;

/// What a report is about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reported {
    Event { room_id: String, event_id: String },
    Room { room_id: String },
    User { user_id: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub received_ts: u64,
    pub reporter: String,
    #[serde(flatten)]
    pub about: Reported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Messaging {
    /// Keeps a report by `reporter`; the event or room must be one they may read (404
    /// otherwise, as Synapse, so a report reveals nothing).
    pub async fn report(
        &self,
        reporter: &UserId,
        about: Reported,
        reason: Option<String>,
    ) -> Result<()> {
        if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(Error::invalid_param(format!(
                "A reason holds at most {MAX_REASON_BYTES} bytes"
            )));
        }
        let unknown = || Error::not_found("Nothing to report there, or not yours to see");
        match &about {
            Reported::Event { room_id, event_id } => {
                let room = RoomId::parse(room_id).map_err(|_| unknown())?;
                let event = EventId::parse(event_id).map_err(|_| unknown())?;
                self.room_event(reporter, &room, &event)
                    .map_err(|_| unknown())?;
            }
            Reported::Room { room_id } => {
                let room = RoomId::parse(room_id).map_err(|_| unknown())?;
                self.membership(reporter, &room)?.ok_or_else(unknown)?;
            }
            Reported::User { .. } => {}
        }
        (self.send_limiter)
            .take(reporter.as_str())
            .map_err(Error::limit_exceeded)?;
        let report = Report {
            id: random_string(16),
            received_ts: now_ms(),
            reporter: reporter.to_string(),
            about,
            reason,
        };
        let key = (report.received_ts, report.id.as_str());
        Ok(self
            .storage
            .put(&catalog::TS_REPORTID_REPORT, &key, &report)
            .await?)
    }

    /// Every report, oldest first.
    pub fn reports(&self) -> Result<Vec<Report>> {
        let rows: Vec<((u64, String), Report)> = self
            .storage
            .scan_prefix(&catalog::TS_REPORTID_REPORT, &())?;
        Ok(rows.into_iter().map(|(_, report)| report).collect())
    }
}
