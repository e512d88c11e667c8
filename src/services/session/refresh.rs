//! A device's refresh-token state. Tokens are kept only as hashes; every hash listed here
//! is also in the `refreshhash_userid_deviceid` index, so a presented token leads to its
//! device, and a retired one is recognised as a replay rather than as garbage.

use kith_storage::{Batch, catalog};
use serde::{Deserialize, Serialize};

/// How many retired hashes a device remembers for replay detection.
const RETIRED_KEPT: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshState {
    /// The newest refresh token.
    pub current: String,
    /// The token `current` replaced; valid until the `current` pair is first used.
    pub previous: Option<String>,
    /// Tokens that must never be presented again.
    pub retired: Vec<String>,
    /// Whether the `current` pair has been used yet.
    pub current_used: bool,
    pub expires_ts: Option<u64>,
}

/// What a presented refresh token is to its device.
pub enum Presented {
    Current,
    /// The token before `current`, while `current` has not been used: a retry after a lost
    /// response.
    UnusedPredecessor,
    /// Anything older: a stolen or replayed token.
    Replayed,
}

impl RefreshState {
    pub fn new(hash: String, expires_ts: Option<u64>) -> RefreshState {
        RefreshState {
            current: hash,
            previous: None,
            retired: Vec::new(),
            current_used: false,
            expires_ts,
        }
    }

    pub fn classify(&self, hash: &str) -> Presented {
        if self.current == hash {
            Presented::Current
        } else if self.previous.as_deref() == Some(hash) {
            Presented::UnusedPredecessor
        } else {
            Presented::Replayed
        }
    }

    /// The `current` pair has been used: its predecessor retires.
    pub fn mark_current_used(&mut self, batch: &mut Batch) -> kith_storage::Result<()> {
        if let Some(previous) = self.previous.take() {
            self.retire(previous, batch)?;
        }
        self.current_used = true;
        Ok(())
    }

    /// Readies the state for [`RefreshState::rotate_to`] after `presented` was accepted.
    pub fn prepare_rotation(
        &mut self,
        presented: &str,
        batch: &mut Batch,
    ) -> kith_storage::Result<()> {
        if self.current == presented {
            self.mark_current_used(batch)?;
            self.previous = Some(self.current.clone());
        } else {
            // A retry with the predecessor: the pair we issued last was never received.
            let unreceived = self.current.clone();
            self.retire(unreceived, batch)?;
        }
        Ok(())
    }

    pub fn rotate_to(&mut self, hash: String, expires_ts: Option<u64>) {
        self.current = hash;
        self.current_used = false;
        self.expires_ts = expires_ts;
    }

    fn retire(&mut self, hash: String, batch: &mut Batch) -> kith_storage::Result<()> {
        self.retired.push(hash);
        if self.retired.len() > RETIRED_KEPT {
            let forgotten = self.retired.remove(0);
            batch.delete(&catalog::REFRESHHASH_USERID_DEVICEID, &forgotten.as_str())?;
        }
        Ok(())
    }

    /// Every hash this state has put in the index.
    pub fn all_hashes(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .chain(self.retired.iter())
    }
}
