//! Inbound transactions: the PDUs and EDUs another server pushes to us.

use std::collections::BTreeMap;

use axum::extract::State;
use kith_federation::inbound::Handled;
use kith_storage::catalog;
use ruma::ServerName;
use ruma::api::federation::transactions::send_transaction_message;
use serde_json::Value;
use std::time::Duration;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::REMOTE_TYPING;

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// `PUT /_matrix/federation/v1/send/{txnId}`: each PDU checked and stored on its own (its
/// result in the answer); a transaction ID seen before from the same origin gets the same
/// answer again without being applied twice.
pub async fn send(
    State(state): State<AppState>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> Result<RumaResponse<send_transaction_message::v1::Response>> {
    let origin = request.origin()?.to_owned();
    let body = &request.body;
    if body.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the signing server",
        ));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!(
            "A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let key = (origin.as_str(), body.transaction_id.as_str());
    let done: Option<Handled> = state.storage.get(&catalog::ORIGIN_TXNID_RESPONSE, &key)?;
    if let Some(done) = done {
        return Ok(RumaResponse(response_of(done.pdus)));
    }
    let mut results = BTreeMap::new();
    for raw in &body.pdus {
        let json: Value = match serde_json::from_str(raw.get()) {
            Ok(json) => json,
            Err(_) => continue,
        };
        match state.messaging.receive_pdu(&origin, &json).await {
            Ok(event_id) => {
                results.insert(event_id.to_string(), serde_json::json!({}));
            }
            Err(e) => {
                tracing::info!(%origin, "refused a PDU: {}", e.message());
                if let Some(event_id) = event_id_of(&state, &json) {
                    results.insert(event_id, serde_json::json!({ "error": e.message() }));
                }
            }
        }
    }
    for edu in &body.edus {
        let Ok(edu) = serde_json::from_str::<Value>(edu.json().get()) else {
            continue;
        };
        if let Err(e) = receive_edu(&state, &origin, &edu).await {
            tracing::info!(%origin, "ignored an EDU: {}", e.message());
        }
    }
    let mut batch = state.storage.batch();
    batch.put(
        &catalog::ORIGIN_TXNID_RESPONSE,
        &key,
        &Handled::new(results.clone()),
    )?;
    state.storage.commit(batch).await?;
    Ok(RumaResponse(response_of(results)))
}

/// One EDU, by type; unknown types are ignored, as the spec asks.
async fn receive_edu(state: &AppState, origin: &ServerName, edu: &Value) -> Result<()> {
    let content = &edu["content"];
    match edu["edu_type"].as_str().unwrap_or_default() {
        "m.typing" => {
            if let Some(room) = state.messaging.receive_typing(origin, content).await? {
                // When the time is up, syncing clients hear that the user stopped.
                let state = state.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(REMOTE_TYPING + Duration::from_millis(10)).await;
                    if let Err(e) = state.messaging.expire_typing(&room).await {
                        tracing::warn!(%room, error = ?e, "typing expiry failed");
                    }
                });
            }
        }
        "m.receipt" => state.messaging.receive_receipts(origin, content).await?,
        "m.presence" => state.presence.receive(origin, content).await?,
        "m.device_list_update" | "m.signing_key_update" => {
            let user = content["user_id"].as_str().unwrap_or_default();
            state.e2ee.note_remote_change(origin, user).await?;
        }
        "m.direct_to_device" => {
            let own = format!(":{}", state.config.server_name);
            let local = |user: &str| user.ends_with(&own);
            let devices_of = |user: &str| -> crate::services::error::Result<Vec<String>> {
                Ok(state
                    .sessions
                    .devices(user)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect())
            };
            state
                .e2ee
                .receive_to_device(origin, content, devices_of, local)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// The ID a refused PDU would have had, for its error entry (none if unparseable).
fn event_id_of(state: &AppState, json: &Value) -> Option<String> {
    let room_id = json.get("room_id")?.as_str()?;
    let room = state
        .messaging
        .room(ruma::RoomId::parse(room_id).ok()?.as_ref())
        .ok()??;
    let object = serde_json::from_value(json.clone()).ok()?;
    let pdu = kith_federation::Pdu::received(&room.version, object).ok()?;
    Some(pdu.event_id.to_string())
}

fn response_of(results: BTreeMap<String, Value>) -> send_transaction_message::v1::Response {
    let pdus = results
        .into_iter()
        .filter_map(|(id, result)| {
            let id = ruma::OwnedEventId::try_from(id).ok()?;
            let outcome = match result.get("error").and_then(|e| e.as_str()) {
                Some(error) => Err(error.to_owned()),
                None => Ok(()),
            };
            Some((id, outcome))
        })
        .collect();
    send_transaction_message::v1::Response::new(pdus)
}
