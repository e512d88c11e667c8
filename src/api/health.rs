//! `GET /health`, as Synapse has it: `200 OK` while storage answers (for load balancers,
//! container health checks and monitoring), `503` when it does not. No token needed.

use axum::extract::State;
use http::StatusCode;

use crate::services::AppState;

/// `GET /health`
pub async fn health(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.storage_answers() {
        true => (StatusCode::OK, "OK"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "storage does not answer"),
    }
}
