//! Hostile peers (issue 17): servers on loopback TLS that answer kith without end, drip,
//! garble or have no keys, while requests claiming to come from them arrive many at a
//! time. kith's memory stays bounded, its clients keep being answered, and it asks such a
//! server as little as it can.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::Server;

/// A server on loopback TLS whose key answer never ends (a chunked body, forever).
async fn endless_key_server() -> String {
    let endless = || async {
        let chunk = axum::body::Bytes::from(vec![b' '; 64 << 10]);
        let chunks = futures_util::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
        axum::body::Body::from_stream(chunks)
    };
    let router = axum::Router::new().route("/_matrix/key/v2/server", axum::routing::get(endless));
    crate::common::serve_tls_on_loopback(router).await
}

/// A peer that answers kith's key request with an endless body, while requests claiming
/// to come from it arrive 8 at a time for 5 s: each is refused, kith's memory stays
/// bounded, and it keeps answering its clients.
#[tokio::test]
async fn a_peer_with_endless_answers_cannot_exhaust_kith() {
    let (kith, name) = Server::federated(&[]);
    let hostile = endless_key_server().await;
    let idle = kith.rss_kib();
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let sig = "a".repeat(86);
    let authorization =
        format!(r#"X-Matrix origin="{hostile}",destination="{name}",key="ed25519:a",sig="{sig}""#);
    let attack = |http: reqwest::Client, authorization: String, name: String| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut refused = 0;
        while tokio::time::Instant::now() < deadline {
            let response = http
                .get(format!(
                    "https://{name}/_matrix/federation/v1/query/profile?user_id=@a:{name}"
                ))
                .header("authorization", &authorization)
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED) {
                refused += 1;
            }
        }
        refused
    };
    let attackers = (0..8).map(|_| attack(http.clone(), authorization.clone(), name.clone()));
    let watching = async {
        let mut peak = idle;
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(kith.rss_kib());
            let asked = std::time::Instant::now();
            let (status, _) = kith.get("/_matrix/client/versions", None).await;
            assert_eq!(status, StatusCode::OK);
            slowest = slowest.max(asked.elapsed());
        }
        (peak, slowest)
    };
    let (refused, (peak, slowest)) =
        tokio::join!(futures_util::future::join_all(attackers), watching);
    let refused: usize = refused.iter().sum();
    eprintln!(
        "endless key answers: {refused} requests refused; RSS {} MiB idle, {} MiB at most; \
         /versions at most {slowest:?}",
        idle / 1024,
        peak / 1024
    );
    assert!(refused > 0, "the requests were refused as unauthorized");
    assert!(
        peak.saturating_sub(idle) < 100 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB"
    );
    let (status, _) = kith.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Requests that claim to come from a server whose keys cannot be had — many at once,
/// each naming another key — make kith ask that server for its keys once, not once each:
/// concurrent askers wait for one fetch, and a failure is remembered (with backoff).
#[tokio::test]
async fn made_up_requests_do_not_make_kith_fetch_keys_again_and_again() {
    let (_kith, name) = Server::federated(&[]);
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&asked);
    let keys = move || async move {
        counter.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        StatusCode::NOT_FOUND
    };
    let router = axum::Router::new().route("/_matrix/key/v2/server", axum::routing::get(keys));
    let peer = crate::common::serve_tls_on_loopback(router).await;

    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let sig = "a".repeat(86);
    let requests: FuturesUnordered<_> = (0..40)
        .map(|i| {
            let key = if i % 10 == 9 { "curve25519" } else { "ed25519" };
            let authorization = format!(
                r#"X-Matrix origin="{peer}",destination="{name}",key="{key}:k{i}",sig="{sig}""#
            );
            http.get(format!(
                "https://{name}/_matrix/federation/v1/query/profile?user_id=@a:{name}"
            ))
            .header("authorization", authorization)
            .send()
        })
        .collect();
    let statuses: Vec<_> = requests.map(|r| r.map(|r| r.status()).ok()).collect().await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == Some(StatusCode::UNAUTHORIZED)),
        "{statuses:?}"
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "40 requests from a server without keys made kith fetch its keys more than once"
    );
}

/// A server on loopback TLS that answers everything badly: its key answer drips a byte a
/// second, its media comes with a 50,000-character multipart boundary around 8 MiB of
/// boundary-like bytes, its profile answers are garbage JSON.
async fn hostile_server() -> String {
    let drip = || async {
        let bytes = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{")),
                (),
            ))
        });
        axum::body::Body::from_stream(bytes)
    };
    let boundary = "b".repeat(50_000);
    let media = move || {
        let boundary = boundary.clone();
        async move {
            let mut body = Vec::new();
            for _ in 0..160 {
                body.extend_from_slice(b"--");
                body.extend_from_slice(&boundary.as_bytes()[..49_999]);
                body.extend_from_slice(b"\r\n");
            }
            let kind = format!("multipart/mixed; boundary={boundary}");
            ([(http::header::CONTENT_TYPE, kind)], body)
        }
    };
    let garbage = || async {
        let body = "{\"displayname\": [[[[[[[[ \u{0}\u{1} not json at all";
        ([(http::header::CONTENT_TYPE, "application/json")], body)
    };
    let router = axum::Router::new()
        .route("/_matrix/key/v2/server", axum::routing::get(drip))
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(media),
        )
        .route(
            "/_matrix/federation/v1/query/profile",
            axum::routing::get(garbage),
        );
    crate::common::serve_tls_on_loopback(router).await
}

/// The hostile peer trial of issue 17: while a peer drips its key answer, sends media with
/// an enormous boundary and answers profile queries with garbage — asked for by a user of
/// kith, and by requests claiming to come from it, 8 at a time for 5 s — kith stays
/// within bounds, keeps answering its clients, refuses each bad answer with a Matrix error
/// and is healthy afterwards.
#[tokio::test]
async fn a_hostile_peer_cannot_stall_or_exhaust_kith() {
    let (kith, name) = Server::federated(&[]);
    let hostile = hostile_server().await;
    let (_, token) = kith.user("alice").await;
    let idle = kith.rss_kib();
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let sig = "a".repeat(86);
    let claimed =
        format!(r#"X-Matrix origin="{hostile}",destination="{name}",key="ed25519:a",sig="{sig}""#);
    let requests = |i: usize| {
        let (http, base, token) = (http.clone(), kith.base.clone(), token.clone());
        let (name, hostile, claimed) = (name.clone(), hostile.clone(), claimed.clone());
        async move {
            let request = match i % 3 {
                0 => http
                    .get(format!(
                        "{base}/_matrix/client/v1/media/download/{hostile}/m{i}"
                    ))
                    .bearer_auth(&token),
                1 => http
                    .get(format!("{base}/_matrix/client/v3/profile/@x{i}:{hostile}"))
                    .bearer_auth(&token),
                _ => http
                    .get(format!(
                        "https://{name}/_matrix/federation/v1/query/profile?user_id=@a:{name}"
                    ))
                    .header("authorization", &claimed),
            };
            let response = request.send().await.expect("kith answers");
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON answer");
            assert!(body["errcode"].is_string(), "{i}: {status} {body}");
            status
        }
    };
    let attack = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut statuses = Vec::new();
        let mut next = 0;
        let mut in_flight = FuturesUnordered::new();
        while tokio::time::Instant::now() < deadline || !in_flight.is_empty() {
            while in_flight.len() < 8 && tokio::time::Instant::now() < deadline {
                in_flight.push(requests(next));
                next += 1;
            }
            if let Some(status) = in_flight.next().await {
                statuses.push(status);
            }
        }
        statuses
    };
    let watching = async {
        let (mut peak, mut slowest) = (idle, Duration::ZERO);
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(kith.rss_kib());
            let asked = std::time::Instant::now();
            let (status, _) = kith.get("/_matrix/client/versions", None).await;
            assert_eq!(status, StatusCode::OK);
            slowest = slowest.max(asked.elapsed());
        }
        (peak, slowest)
    };
    let (statuses, (peak, slowest)) = tokio::join!(attack, watching);
    let count = |code: u16| statuses.iter().filter(|s| s.as_u16() == code).count();
    eprintln!(
        "hostile peer: {} requests ({} 502, {} 401, {} 404); RSS {} MiB idle, {} MiB at most; \
         /versions at most {slowest:?}",
        statuses.len(),
        count(502),
        count(401),
        count(404),
        idle / 1024,
        peak / 1024
    );
    assert!(
        statuses
            .iter()
            .all(|s| [401, 404, 502, 504].contains(&s.as_u16())),
        "{statuses:?}"
    );
    assert!(
        peak.saturating_sub(idle) < 100 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "/versions took {slowest:?}"
    );
    let (status, _) = kith
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
}
