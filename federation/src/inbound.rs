//! Inbound transactions already handled, by (origin, transaction ID): a retried one gets
//! the same answer without being applied again. Kept a day (servers retry for minutes, not
//! days), then pruned.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::now_ms;
use kith_storage::{Storage, catalog};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a handled transaction is remembered.
const KEEP: Duration = Duration::from_secs(24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handled {
    pub ts: u64,
    /// The per-PDU results sent back: `{}` or `{error}` by event ID.
    pub pdus: BTreeMap<String, Value>,
}

impl Handled {
    pub fn new(pdus: BTreeMap<String, Value>) -> Handled {
        Handled { ts: now_ms(), pdus }
    }
}

/// Deletes handled transactions older than a day, now and every hour.
pub fn spawn_pruner(storage: Storage) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = prune(&storage).await {
                tracing::warn!("cannot prune handled transactions: {e}");
            }
            tokio::time::sleep(PRUNE_EVERY).await;
        }
    });
}

async fn prune(storage: &Storage) -> Result<(), kith_storage::Error> {
    let before = now_ms().saturating_sub(KEEP.as_millis() as u64);
    let rows: Vec<((String, String), Handled)> =
        storage.scan_prefix(&catalog::ORIGIN_TXNID_RESPONSE, &())?;
    let mut batch = storage.batch();
    let mut old = 0;
    for ((origin, txn), handled) in rows {
        if handled.ts < before {
            batch.delete(
                &catalog::ORIGIN_TXNID_RESPONSE,
                &(origin.as_str(), txn.as_str()),
            )?;
            old += 1;
        }
    }
    if old > 0 {
        storage.commit(batch).await?;
        tracing::debug!(old, "pruned handled transactions");
    }
    Ok(())
}
