//! Requests by route template, method and status, with their latency per route and method.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kith_storage::stats::{Histogram, LATENCY_BOUNDS};

use super::text::Exposition;

/// The route label of a request no route matched (its path is the client's to choose, so
/// never a label).
const UNMATCHED: &str = "unmatched";

#[derive(Default)]
pub struct HttpStats {
    /// `(route, method)`: the latencies, and the count per status. Routes are the API's
    /// path templates, so the map stays small.
    routes: Mutex<BTreeMap<(String, String), Route>>,
}

struct Route {
    latency: Histogram,
    statuses: BTreeMap<u16, u64>,
}

impl HttpStats {
    pub fn observe(&self, route: Option<&str>, method: &str, status: u16, took: Duration) {
        // Any token is a method to hyper: only the standard ones become labels.
        let standard = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
        let method = standard
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("other");
        let key = (route.unwrap_or(UNMATCHED).to_owned(), method.to_owned());
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = routes.entry(key).or_insert_with(|| Route {
            latency: Histogram::new(LATENCY_BOUNDS),
            statuses: BTreeMap::new(),
        });
        entry.latency.observe(took);
        *entry.statuses.entry(status).or_default() += 1;
    }

    pub fn render(&self, out: &mut Exposition) {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        out.family(
            "kith_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for ((route, method), stats) in routes.iter() {
            for (status, count) in &stats.statuses {
                let status = status.to_string();
                let labels = [
                    ("route", route.as_str()),
                    ("method", method),
                    ("status", &status),
                ];
                out.sample("kith_http_requests_total", &labels, *count as f64);
            }
        }
        let name = "kith_http_request_duration_seconds";
        out.family(
            name,
            "histogram",
            "Time to answer HTTP requests (long-polls included), by route template and method.",
        );
        for ((route, method), stats) in routes.iter() {
            let labels = [("route", route.as_str()), ("method", method.as_str())];
            out.histogram_samples(name, &labels, &stats.latency.snapshot());
        }
    }
}
