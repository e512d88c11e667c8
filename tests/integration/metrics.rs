//! `/metrics` on its own listener: valid Prometheus text (`promtool check metrics`, from
//! Debian's `prometheus` package, which `.ci/run` installs), counting what the server did,
//! and scraped by a real Prometheus.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, free_port, urlencode};
use crate::federation::room_on_a;

/// Kills a helper process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("metrics answer");
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_accepts(text: &str) {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `bash .ci/run` installs it)");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A user registers, makes a room and talks in it, long-polls and asks for a path that
/// does not exist: `/metrics` counts each by route template (never the path a client
/// chose), shows the long-poll while it waits, the events persisted and the storage's
/// and process's figures, and passes `promtool check metrics`. It is not on the client
/// listener. A real Prometheus then scrapes it.
#[tokio::test]
async fn metrics_count_what_happened_and_prometheus_scrapes_them() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(&[("KITH_METRICS__LISTEN", &listen)]);
    let url = format!("http://{listen}/metrics");
    let http = reqwest::Client::new();

    let (_, token) = server.user("alice").await;
    let room = server
        .create_room(&token, json!({ "preset": "private_chat" }))
        .await;
    for n in 0..3 {
        server.say(&token, &room, &format!("message {n}")).await;
    }
    let (status, _) = server
        .get("/_matrix/client/v3/no/such/thing-secret", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/metrics", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "metrics stay off the client listener"
    );

    // A long-poll shows while it waits.
    let since = server.sync(&token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = server.sync(&token, Some(&since), 3_000);
    let watching = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let text = scrape(&http, &url).await;
            if sample(&text, "kith_sync_requests_in_flight{api=\"v2\"}") == Some(1.0) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (_, seen) = tokio::join!(waiting, watching);
    assert!(
        seen,
        "the long-poll never showed in kith_sync_requests_in_flight"
    );

    let text = scrape(&http, &url).await;
    let route = "route=\"/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}\"";
    let send = format!("kith_http_requests_total{{{route},method=\"PUT\",status=\"200\"}}");
    assert_eq!(sample(&text, &send), Some(3.0), "{text}");
    let unmatched = "kith_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
    assert!(sample(&text, unmatched) >= Some(2.0), "{text}");
    assert!(
        !text.contains("thing-secret"),
        "a client's path became a label"
    );
    let sends = format!("kith_http_request_duration_seconds_count{{{route},method=\"PUT\"}}");
    assert_eq!(sample(&text, &sends), Some(3.0));
    assert_eq!(
        sample(&text, "kith_sync_requests_in_flight{api=\"v2\"}"),
        Some(0.0)
    );
    // createRoom's events and the three messages.
    let events = sample(&text, "kith_room_events_persisted_total").unwrap();
    assert!(events >= 8.0, "{events} events persisted");
    let commits = sample(&text, "kith_storage_commit_duration_seconds_count").unwrap();
    assert!(commits >= 4.0, "{commits} commits");
    assert!(sample(&text, "kith_rocksdb_memtable_bytes").unwrap() > 0.0);
    let hits = sample(
        &text,
        "kith_rocksdb_block_cache_lookups_total{result=\"hit\"}",
    );
    assert!(
        hits.is_some(),
        "block cache lookups are counted with metrics on"
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "process_open_fds").unwrap() > 3.0);
    assert_eq!(sample(&text, "kith_federation_queued_items"), Some(0.0));
    promtool_accepts(&text);

    // A real Prometheus scrapes it and can be queried for kith's figures.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let scrape_config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: kith\n    static_configs:\n      - targets: ['{listen}']\n"
    );
    std::fs::write(&config, scrape_config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package; `bash .ci/run` installs it)");
    let _prometheus = Reaped(prometheus);
    let asked = "kith_room_events_persisted_total and on() up{job=\"kith\"} == 1";
    let query = format!("http://{web}/api/v1/query?query={}", urlencode(asked));
    let deadline = Instant::now() + Duration::from_secs(60);
    let persisted = loop {
        let answer = http.get(&query).send().await;
        if let Ok(answer) = answer
            && let Ok(body) = answer.json::<Value>().await
            && let Some(value) = body["data"]["result"][0]["value"][1].as_str()
        {
            break value.parse::<f64>().unwrap();
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped kith");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        persisted >= events,
        "Prometheus read {persisted}, kith said {events}"
    );
}

/// With a peer down, its queue shows: the items waiting for it, the oldest one's age, the
/// failed sends; once it is back and has everything, nothing waits. Inbound transactions
/// are counted on the receiving side.
#[tokio::test]
async fn a_peer_down_shows_in_the_federation_queue_figures() {
    let metrics_a = format!("127.0.0.1:{}", free_port());
    let metrics_b = format!("127.0.0.1:{}", free_port());
    let (a, _) = Server::federated(&[("KITH_METRICS__LISTEN", &metrics_a)]);
    let (mut b, b_name) = Server::federated(&[("KITH_METRICS__LISTEN", &metrics_b)]);
    let (_, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;
    let room = room_on_a(&a, &alice_token, (&b, &bob, &bob_token), "private_chat").await;
    let http = reqwest::Client::new();
    let url = format!("http://{metrics_a}/metrics");

    b.kill();
    for n in 0..3 {
        a.say(&alice_token, &room, &format!("while B was down {n}"))
            .await;
    }
    let items = format!("kith_federation_destination_queued_items{{destination=\"{b_name}\"}}");
    let failures =
        format!("kith_federation_destination_send_failures_total{{destination=\"{b_name}\"}}");
    let age =
        format!("kith_federation_destination_oldest_item_age_seconds{{destination=\"{b_name}\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(&http, &url).await;
        if sample(&text, &failures).is_some_and(|f| f >= 1.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no failed send to B counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(sample(&text, &items).is_some_and(|n| n >= 3.0), "{text}");
    assert!(sample(&text, "kith_federation_queued_items").is_some_and(|n| n >= 3.0));
    assert_eq!(
        sample(&text, "kith_federation_destinations_waiting"),
        Some(1.0)
    );
    let oldest = sample(&text, &age).unwrap();
    assert!(oldest > 0.0 && oldest < 60.0, "oldest item {oldest} s old");
    promtool_accepts(&text);

    let b = b.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&http, &url).await;
        if sample(&text, "kith_federation_queued_items") == Some(0.0) {
            assert_eq!(sample(&text, &items), None, "an empty queue is not listed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue to B never emptied:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (B's metrics listener came back with it.)
    let text = scrape(&http, &format!("http://{metrics_b}/metrics")).await;
    let received = sample(&text, "kith_federation_inbound_pdus_total").unwrap();
    assert!(
        received >= 3.0,
        "B counted {received} PDUs received since its restart"
    );
    drop(b);
}
