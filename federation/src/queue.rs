//! The outbound queue: what other servers must receive (PDUs and EDUs), kept in RocksDB per
//! destination in commit order, written in the same batch as the change that caused it.
//! One worker per destination sends transactions of at most 50 PDUs and 100 EDUs, one at
//! a time, and deletes what the peer acknowledged; on failure it backs off exponentially
//! (persisted, so a restart neither forgets nor hammers) and starts again when the peer
//! answers or sends to us. A restart resumes every non-empty queue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kith_storage::{Batch, Storage, catalog};
use ruma::{CanonicalJsonObject, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::client::{FederationClient, FederationError};
use crate::now_ms;

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// One queued item.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outgoing {
    /// A PDU, as signed.
    Pdu(CanonicalJsonObject),
    /// An EDU: `{edu_type, content}`.
    Edu(Value),
    /// A request of its own (kith's contacts endpoints): `PUT path` with `body`, sent
    /// alone, in its place in the order.
    Put { path: String, body: Value },
}

/// The queue as the services hold it: items are written into their batches from the
/// start; the queue that sends them is set once the runtime runs (never, with federation
/// off).
#[derive(Default)]
pub struct Outbox(OnceLock<Arc<Queue>>);

impl Outbox {
    pub fn set(&self, queue: Arc<Queue>) {
        let _ = self.0.set(queue);
    }

    /// Appends `item` for `destination` to `batch`; [`Outbox::wake`] it after the commit
    /// (or [`Outbox::wake_at`] its position before). Returns that position.
    pub fn push_into(
        batch: &mut Batch,
        destination: &str,
        item: &Outgoing,
    ) -> Result<u64, kith_storage::Error> {
        let position = batch.new_position()?;
        batch.put(
            &catalog::DESTINATION_POSITION_OUTGOING,
            &(destination, position),
            item,
        )?;
        Ok(position)
    }

    /// Has the queue send an item for `destination` once the write holding `position`
    /// is visible: safe to call before that write is committed.
    pub fn wake_at(&self, destination: &str, position: u64) {
        if let Some(queue) = self.0.get() {
            let _ = queue.wake.send((destination.to_owned(), position));
        }
    }

    /// Whether anything waits to be sent to `destination`.
    pub fn has_pending(&self, destination: &str) -> bool {
        self.0
            .get()
            .is_some_and(|queue| queue.has_items(destination))
    }

    /// Has the queue send what was just committed for these servers.
    pub fn wake(&self, destinations: &[String]) {
        if let Some(queue) = self.0.get() {
            for destination in destinations {
                queue.wake(destination);
            }
        }
    }

    /// Each destination with something queued or a failed send since the start (for
    /// `/metrics`); `None` with federation off.
    pub fn figures(&self) -> Option<Result<Vec<DestinationFigures>, kith_storage::Error>> {
        self.0.get().map(|queue| queue.figures())
    }

    /// A server just proved itself to us: whatever waits for it can go now.
    pub async fn peer_alive(&self, server: &str) {
        if let Some(queue) = self.0.get() {
            queue.peer_alive(server).await;
        }
    }
}

/// One destination's queue, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationFigures {
    pub destination: String,
    /// Items waiting to be sent.
    pub items: u64,
    /// The stream position of the oldest item waiting (see `Storage::time_of_position`).
    pub oldest_position: Option<u64>,
    /// Sends that failed (and were retried) since the process started.
    pub failures: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Backoff {
    failures: u32,
    retry_at: u64,
}

pub struct Queue {
    storage: Storage,
    client: Arc<FederationClient>,
    /// Destinations to look at, each once the stream position given is visible.
    wake: mpsc::UnboundedSender<(String, u64)>,
    /// Destinations with a running worker.
    active: Mutex<HashSet<String>>,
    /// Destinations currently backing off, each with what ends its wait early.
    backing_off: Mutex<HashMap<String, Arc<Notify>>>,
    /// Failed sends per destination since the start.
    failures: Mutex<HashMap<String, u64>>,
}

impl Queue {
    /// Starts the dispatcher and resumes every destination with queued items.
    pub fn start(storage: Storage, client: Arc<FederationClient>) -> Arc<Queue> {
        let (wake, mut woken) = mpsc::unbounded_channel::<(String, u64)>();
        let queue = Arc::new(Queue {
            storage,
            client,
            wake,
            active: Mutex::new(HashSet::new()),
            backing_off: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        });
        let dispatcher = Arc::clone(&queue);
        tokio::spawn(async move {
            let mut visible = dispatcher.storage.subscribe();
            while let Some((destination, position)) = woken.recv().await {
                // Written but not yet committed: wait, or the worker would find nothing.
                // (An uncommitted batch's positions become visible when it is dropped.)
                while *visible.borrow_and_update() < position {
                    if visible.changed().await.is_err() {
                        return;
                    }
                }
                let fresh = dispatcher
                    .active
                    .lock()
                    .is_ok_and(|mut active| active.insert(destination.clone()));
                if fresh {
                    let worker = Arc::clone(&dispatcher);
                    tokio::spawn(async move { worker.run(destination).await });
                }
            }
        });
        match queue.pending_destinations() {
            Ok(destinations) => {
                for destination in destinations {
                    queue.wake(&destination);
                }
            }
            Err(e) => tracing::error!("cannot read the federation queue: {e}"),
        }
        queue
    }

    /// Has the destination's worker look at its queue.
    pub fn wake(&self, destination: &str) {
        let _ = self.wake.send((destination.to_owned(), 0));
    }

    /// The peer is up (it sent us a request): end its backoff and send what waits.
    pub async fn peer_alive(&self, destination: &str) {
        let waiting = self
            .backing_off
            .lock()
            .ok()
            .and_then(|mut waiting| waiting.remove(destination));
        if let Some(waiting) = waiting {
            let mut batch = self.storage.batch();
            let deleted = batch.delete(&catalog::DESTINATION_BACKOFF, &destination);
            let cleared = match deleted {
                Ok(()) => self.storage.commit(batch).await,
                Err(e) => Err(e),
            };
            if let Err(e) = cleared {
                tracing::warn!(%destination, "cannot clear backoff: {e}");
            }
            waiting.notify_one();
        }
    }

    fn pending_destinations(&self) -> Result<Vec<String>, kith_storage::Error> {
        let rows: Vec<((String, u64), Outgoing)> = self
            .storage
            .scan_prefix(&catalog::DESTINATION_POSITION_OUTGOING, &())?;
        let mut destinations: Vec<String> = rows.into_iter().map(|((d, _), _)| d).collect();
        destinations.dedup();
        Ok(destinations)
    }

    fn figures(&self) -> Result<Vec<DestinationFigures>, kith_storage::Error> {
        // Keys only matter: the items are read but skipped, not kept.
        let rows: Vec<((String, u64), serde::de::IgnoredAny)> = self
            .storage
            .scan_prefix(&catalog::DESTINATION_POSITION_OUTGOING, &())?;
        let mut figures: Vec<DestinationFigures> = Vec::new();
        for ((destination, position), _) in rows {
            match figures.last_mut() {
                Some(last) if last.destination == destination => last.items += 1,
                _ => figures.push(DestinationFigures {
                    destination,
                    items: 1,
                    oldest_position: Some(position),
                    failures: 0,
                }),
            }
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        for (destination, count) in failures {
            match figures.iter_mut().find(|f| f.destination == destination) {
                Some(known) => known.failures = count,
                None => figures.push(DestinationFigures {
                    destination,
                    items: 0,
                    oldest_position: None,
                    failures: count,
                }),
            }
        }
        Ok(figures)
    }

    async fn run(self: Arc<Self>, destination: String) {
        loop {
            match self.send_next(&destination).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    if let Ok(mut failures) = self.failures.lock() {
                        *failures.entry(destination.clone()).or_default() += 1;
                    }
                    let delay = self.back_off(&destination).await;
                    tracing::info!(%destination, retry_in_s = delay.as_secs(), "federation send failed: {e}");
                }
            }
        }
        if let Ok(mut active) = self.active.lock() {
            active.remove(&destination);
        }
        // Anything queued between the last read and leaving `active` needs a worker.
        if self.has_items(&destination) {
            self.wake(&destination);
        }
    }

    fn has_items(&self, destination: &str) -> bool {
        let rows: Result<Vec<((String, u64), Outgoing)>, _> = self.storage.scan_prefix_after(
            &catalog::DESTINATION_POSITION_OUTGOING,
            &(destination,),
            &(destination, 0u64),
            1,
        );
        rows.is_ok_and(|rows| !rows.is_empty())
    }

    /// Sends the next transaction; `Ok(false)` when the queue is empty.
    async fn send_next(&self, destination: &str) -> Result<bool, String> {
        let backoff: Option<Backoff> = self
            .storage
            .get(&catalog::DESTINATION_BACKOFF, &destination)
            .map_err(|e| e.to_string())?;
        if let Some(backoff) = &backoff {
            let wait = backoff.retry_at.saturating_sub(now_ms());
            if wait > 0 {
                let notify = Arc::new(Notify::new());
                if let Ok(mut waiting) = self.backing_off.lock() {
                    waiting.insert(destination.to_owned(), Arc::clone(&notify));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = notify.notified() => {}
                }
            }
        }
        let rows: Vec<((String, u64), Outgoing)> = self
            .storage
            .scan_prefix_after(
                &catalog::DESTINATION_POSITION_OUTGOING,
                &(destination,),
                &(destination, 0u64),
                MAX_PDUS + MAX_EDUS,
            )
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(false);
        }
        let server = ServerName::parse(destination).map_err(|e| e.to_string())?;
        if let ((_, position), Outgoing::Put { path, body }) = &rows[0] {
            let result = self
                .client
                .send_json(&server, http::Method::PUT, path, Some(body))
                .await;
            self.settle(destination, &[*position], result, backoff.is_some())
                .await?;
            return Ok(true);
        }
        let (mut pdus, mut edus, mut sent) = (Vec::new(), Vec::new(), Vec::new());
        for ((_, position), item) in rows {
            match item {
                Outgoing::Pdu(pdu) if pdus.len() < MAX_PDUS => pdus.push(pdu),
                Outgoing::Edu(edu) if edus.len() < MAX_EDUS => edus.push(edu),
                // Keep the order: stop at the first item that does not fit.
                _ => break,
            }
            sent.push(position);
        }
        // The items name the transaction: a retry of the same items is the same
        // transaction to the peer, and one that carries more is a new one (had the first
        // reached the peer, its cached answer must not stand for the added items).
        let txn_id = format!("{}-{}", sent[0], sent.len());
        let body = json!({
            "origin": self.client.server_name(),
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        });
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        let result = self
            .client
            .send_json(&server, http::Method::PUT, &path, Some(&body))
            .await;
        self.settle(destination, &sent, result, backoff.is_some())
            .await?;
        tracing::debug!(%destination, pdus = pdus.len(), edus = edus.len(), "sent a transaction");
        Ok(true)
    }

    /// After a send: on success (or a refusal retrying cannot change) the items are done
    /// and any backoff ends; otherwise the error is passed on, to back off.
    async fn settle(
        &self,
        destination: &str,
        positions: &[u64],
        result: Result<Value, FederationError>,
        backing_off: bool,
    ) -> Result<(), String> {
        match result {
            Ok(_) => {}
            // A refusal that retrying cannot change (a server we may not talk to, a
            // malformed or unknown request) drops these items rather than block all
            // behind them.
            Err(e) if permanent(&e) => {
                tracing::warn!(%destination, "dropped what the peer refused: {e}");
            }
            Err(e) => return Err(e.to_string()),
        }
        let mut batch = self.storage.batch();
        for position in positions {
            batch
                .delete(
                    &catalog::DESTINATION_POSITION_OUTGOING,
                    &(destination, *position),
                )
                .map_err(|e| e.to_string())?;
        }
        if backing_off {
            batch
                .delete(&catalog::DESTINATION_BACKOFF, &destination)
                .map_err(|e| e.to_string())?;
        }
        self.storage
            .commit(batch)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut waiting) = self.backing_off.lock() {
            waiting.remove(destination);
        }
        Ok(())
    }

    /// Records one more failure; returns how long to wait.
    async fn back_off(&self, destination: &str) -> Duration {
        let previous: Option<Backoff> = self
            .storage
            .get(&catalog::DESTINATION_BACKOFF, &destination)
            .ok()
            .flatten();
        let failures = previous.map_or(0, |b| b.failures) + 1;
        let delay = FIRST_RETRY
            .saturating_mul(1 << failures.min(12).saturating_sub(1))
            .min(LONGEST_RETRY);
        let backoff = Backoff {
            failures,
            retry_at: now_ms() + delay.as_millis() as u64,
        };
        let mut batch = self.storage.batch();
        let stored = batch
            .put(&catalog::DESTINATION_BACKOFF, &destination, &backoff)
            .map(|()| batch);
        if let Ok(batch) = stored
            && let Err(e) = self.storage.commit(batch).await
        {
            tracing::warn!(%destination, "cannot record backoff: {e}");
        }
        delay
    }
}

fn permanent(error: &FederationError) -> bool {
    match error {
        FederationError::Denied(_) | FederationError::Request(_) => true,
        // Not 401/403 (the peer may not have our key yet) nor 429.
        FederationError::Remote { status, .. } => [400, 404, 405, 413].contains(&status.as_u16()),
        _ => false,
    }
}
