//! Inbound transactions: the PDUs and EDUs another server pushes to us, applied by
//! [`crate::services::transactions`].

use axum::extract::State;
use ruma::api::federation::transactions::send_transaction_message;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::transactions::{self, MAX_EDUS, MAX_PDUS};

/// `PUT /_matrix/federation/v1/send/{txnId}`: each PDU's result in the answer; a
/// transaction ID seen before from the same origin gets the same answer again.
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
    let pdus: Vec<&str> = body.pdus.iter().map(|pdu| pdu.get()).collect();
    let edus: Vec<&str> = body.edus.iter().map(|edu| edu.json().get()).collect();
    let txn_id = body.transaction_id.as_str();
    (state.metrics).inbound_transaction(pdus.len(), edus.len());
    let outcomes = transactions::receive(&state, &origin, txn_id, &pdus, &edus).await?;
    Ok(RumaResponse(send_transaction_message::v1::Response::new(
        outcomes,
    )))
}
