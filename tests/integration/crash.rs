//! Crash safety: kill -9 the server while registrations and logins are in flight, restart
//! on the same data, and check every acknowledged account and session is intact and every
//! account is whole (can log in, has its profile, refreshes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{PASSWORD, Server};

/// One worker: registers and logs in users until the server goes away, recording what was
/// acknowledged.
async fn worker(
    base: String,
    worker: usize,
    acked: Arc<Mutex<Vec<(String, Value, Value)>>>,
    count: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..1000 {
        let name = format!("crash_{worker}_{i}");
        let body =
            json!({ "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
        let Ok(response) = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&body)
            .send()
            .await
        else {
            return;
        };
        if response.status() != StatusCode::OK {
            return;
        }
        let Ok(registered) = response.json::<Value>().await else {
            return;
        };
        let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name },
            "password": PASSWORD, "refresh_token": true });
        let Ok(response) = http
            .post(format!("{base}/_matrix/client/v3/login"))
            .json(&login)
            .send()
            .await
        else {
            return;
        };
        if response.status() != StatusCode::OK {
            return;
        }
        let Ok(session) = response.json::<Value>().await else {
            return;
        };
        acked.lock().await.push((name, registered, session));
        count.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn acknowledged_accounts_and_sessions_survive_kill_9() {
    let mut server = Server::start(&[]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(worker(
                server.base.clone(),
                w,
                Arc::clone(&acked),
                Arc::clone(&count),
            ))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < 24 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too slow to register 24 users"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill(); // mid-flight: other registrations and logins are under way
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(20), w).await;
    }
    let server = server.restart();
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 24);

    for (name, registered, session) in &acked {
        for token in [&registered["access_token"], &session["access_token"]] {
            let (status, me) = server.whoami(token.as_str().unwrap()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{name}: acknowledged token lost: {me}"
            );
        }
        let (status, refreshed) = server
            .post(
                "/_matrix/client/v3/refresh",
                None,
                json!({ "refresh_token": session["refresh_token"] }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{name}: refresh token lost: {refreshed}"
        );
    }

    // Every account that exists, acknowledged or caught mid-flight, is whole.
    for w in 0..6 {
        for i in 0.. {
            let name = format!("crash_{w}_{i}");
            let (_, available) = server
                .get(
                    &format!("/_matrix/client/v3/register/available?username={name}"),
                    None,
                )
                .await;
            if available["available"] == true {
                break;
            }
            let (status, login) = server.login(&name, PASSWORD, json!({})).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{name} exists but cannot log in: {login}"
            );
            let mut profile = None;
            for _ in 0..100 {
                let (status, body) = server
                    .get(
                        &format!("/_matrix/client/v3/profile/@{name}:kith.test"),
                        None,
                    )
                    .await;
                if status == StatusCode::OK {
                    profile = Some(body);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                profile.expect("profile created after restart")["displayname"],
                name.as_str()
            );
        }
    }
}
