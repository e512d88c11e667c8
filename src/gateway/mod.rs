//! The gateway: the single entry point. It owns the router, the Matrix error type, the
//! request extractor, CORS and the fallbacks that make unknown paths and methods look the
//! way Matrix clients feature-detect them.

mod answered;
mod authed;
mod client_ip;
mod error;
mod extract;
mod signed;
pub mod tls;

use std::collections::BTreeSet;

use axum::Extension;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use http::{Method, StatusCode, header};
use ruma::api::IncomingRequest;
use ruma::api::path_builder::PathBuilder;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::Instrument;

pub use answered::Answered;
pub use authed::{Authed, ServerAdmin};
pub use client_ip::{ClientIp, parse_range};
pub use error::{Error, Result};
pub use extract::{Ruma, RumaResponse};
pub use signed::Signed;

/// Marks a route whose last path parameter was given empty (see [`RumaRouter::ruma`]).
#[derive(Clone, Copy)]
struct EmptyLastParam;

use crate::services::AppState;

/// Adds routes for a ruma endpoint on every path its metadata names (stable, legacy and
/// unstable), for its method only.
pub trait RumaRouter {
    fn ruma<R, H, X>(self, handler: H) -> Self
    where
        R: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static;
}

impl RumaRouter for Router<AppState> {
    fn ruma<R, H, X>(mut self, handler: H) -> Self
    where
        R: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static,
    {
        let Ok(filter) = MethodFilter::try_from(R::METHOD) else {
            unreachable!("ruma endpoints use standard methods")
        };
        let paths: BTreeSet<&str> = R::PATH_BUILDER.all_paths().collect();
        for path in paths {
            self = self.route(path, on(filter, handler.clone()));
            // A path ending in a parameter (a state key) also takes that parameter empty,
            // written as a trailing slash: `/state/m.room.name/`.
            if let Some(prefix) = path.strip_suffix('}').and_then(|p| p.rsplit_once("/{")) {
                let marked = on(filter, handler.clone()).layer(Extension(EmptyLastParam));
                self = self.route(&format!("{}/", prefix.0), marked);
            }
        }
        self
    }
}

/// Wraps the API routes with what every response needs.
pub fn finish(router: Router<AppState>, state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ]);
    let listen = &state.config.listen;
    let proxies = client_ip::TrustedProxies::new(&listen.trusted_proxies, &listen.forwarded_header);
    router
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(middleware::from_fn(run_to_completion))
        // Outside the handler's task: a request whose handler panicked is counted too.
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .layer(middleware::from_fn(answer_options))
        .layer(middleware::from_fn_with_state(proxies, client_ip::resolve))
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// Each request's span, on every line it logs: a number to tell one request's lines from
/// another's, the method and the path. Never the query string, which may carry an access
/// token (`?access_token=`), a login token or an email link's secret.
fn request_span(request: &Request) -> tracing::Span {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (method, path) = (request.method(), request.uri().path());
    tracing::info_span!("request", id, %method, path)
}

/// Counts each answered request for `/metrics`, by the route template it matched.
async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let route = route.as_ref().map(MatchedPath::as_str);
    (state.metrics).observe_request(route, method.as_str(), status, started.elapsed());
    response
}

/// Runs the handler as its own task. A client that goes away mid-request then cannot cancel
/// a handler between its checks and its commit (locks stay held until the write lands), and
/// a panic becomes a Matrix 500 instead of a dropped connection.
async fn run_to_completion(request: Request, next: Next) -> Response {
    // The request's span goes with it, so the handler's lines carry its ID.
    match tokio::spawn(next.run(request).in_current_span()).await {
        Ok(response) => response,
        Err(e) => Error::internal(format!("handler failed: {e}")).into_response(),
    }
}

/// Any OPTIONS request is answered, as Synapse does, whether or not it is a CORS preflight.
async fn answer_options(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response();
    }
    next.run(request).await
}
