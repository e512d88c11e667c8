//! `GET /metrics` on the metrics listener: Prometheus's text format, no token (the listener
//! is the operator's to keep private).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::services::AppState;

/// `GET /metrics`
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Reading RocksDB's figures and the federation queue's keys blocks.
    match tokio::task::spawn_blocking(move || crate::metrics::render(&state)).await {
        Ok(text) => {
            let kind = "text/plain; version=0.0.4; charset=utf-8";
            ([(header::CONTENT_TYPE, kind)], text).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
