//! Inbound federation transactions, a use case across services: each PDU goes to
//! messaging (checked and stored on its own, its result in the answer), each EDU to the
//! service that owns its kind (typing and receipts to messaging, presence, to-device
//! messages and device-list changes to e2ee). A transaction ID seen before from the same
//! origin gets the same answer again without being applied twice, even when the retry
//! comes while the first is being applied (`origin_txnid_response`, pruned after a day by
//! the federation crate).

use std::collections::BTreeMap;
use std::sync::Arc;

use kith_federation::inbound::Handled;
use kith_storage::catalog;
use ruma::{OwnedEventId, RoomId, ServerName};
use serde_json::{Value, json};

use crate::services::Services;
use crate::services::error::Result;

/// The most PDUs and EDUs one transaction may hold (the spec's limits).
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;

/// Each PDU's outcome: stored, or refused with why.
pub type Outcomes = BTreeMap<OwnedEventId, std::result::Result<(), String>>;

/// Applies transaction `txn_id` from `origin` (already authenticated as its sender) once.
/// PDUs and EDUs that are not JSON objects are skipped.
pub async fn receive(
    services: &Arc<Services>,
    origin: &ServerName,
    txn_id: &str,
    pdus: &[&str],
    edus: &[&str],
) -> Result<Outcomes> {
    let key = (origin.as_str(), txn_id);
    // One transaction per server at a time, as servers send them (and Synapse takes them).
    let _applying = services.inbound_transactions.lock(origin.as_str()).await;
    let done: Option<Handled> = services
        .storage
        .get(&catalog::ORIGIN_TXNID_RESPONSE, &key)?;
    if let Some(done) = done {
        return Ok(outcomes(done.pdus));
    }
    let mut results = BTreeMap::new();
    for raw in pdus {
        let Ok(json) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        match services.messaging.receive_pdu(origin, &json).await {
            Ok(event_id) => {
                results.insert(event_id.to_string(), json!({}));
            }
            Err(e) => {
                tracing::info!(%origin, "refused a PDU: {}", e.message());
                if let Some(event_id) = event_id_of(services, &json) {
                    results.insert(event_id, json!({ "error": e.message() }));
                }
            }
        }
    }
    for edu in edus {
        let Ok(edu) = serde_json::from_str::<Value>(edu) else {
            continue;
        };
        if let Err(e) = receive_edu(services, origin, &edu).await {
            tracing::info!(%origin, "ignored an EDU: {}", e.message());
        }
    }
    let mut batch = services.storage.batch();
    let handled = Handled::new(results.clone());
    batch.put(&catalog::ORIGIN_TXNID_RESPONSE, &key, &handled)?;
    services.storage.commit(batch).await?;
    Ok(outcomes(results))
}

/// One EDU, by type; unknown types are ignored, as the spec asks.
async fn receive_edu(services: &Arc<Services>, origin: &ServerName, edu: &Value) -> Result<()> {
    let content = &edu["content"];
    match edu["edu_type"].as_str().unwrap_or_default() {
        "m.typing" => services.messaging.receive_typing(origin, content).await?,
        "m.receipt" => services.messaging.receive_receipts(origin, content).await?,
        "m.presence" => services.presence.receive(origin, content).await?,
        "m.device_list_update" | "m.signing_key_update" => {
            let user = content["user_id"].as_str().unwrap_or_default();
            services.e2ee.note_remote_change(origin, user).await?;
        }
        "m.direct_to_device" => {
            let own = format!(":{}", services.config.server_name);
            let local = |user: &str| user.ends_with(&own);
            let devices_of = |user: &str| services.sessions.device_ids(user);
            services
                .e2ee
                .receive_to_device(origin, content, devices_of, local)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// The ID a refused PDU would have had, for its error entry (none if unparseable).
fn event_id_of(services: &Services, json: &Value) -> Option<String> {
    let room_id = RoomId::parse(json.get("room_id")?.as_str()?).ok()?;
    let room = services.messaging.room(&room_id).ok()??;
    let object = serde_json::from_value(json.clone()).ok()?;
    let pdu = kith_federation::Pdu::received(&room.version, object).ok()?;
    Some(pdu.event_id.to_string())
}

fn outcomes(results: BTreeMap<String, Value>) -> Outcomes {
    results
        .into_iter()
        .filter_map(|(id, result)| {
            let id = OwnedEventId::try_from(id).ok()?;
            let outcome = match result.get("error").and_then(Value::as_str) {
                Some(error) => Err(error.to_owned()),
                None => Ok(()),
            };
            Some((id, outcome))
        })
        .collect()
}
