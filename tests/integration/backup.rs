//! `kith admin backup` while kith serves writes, and `kith admin restore` into a new data
//! directory: every event acknowledged before the backup began is there, signatures
//! verify, media and secrets (kept in files of their own here) come along.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::common::{SERVER_NAME, Server, free_port, kith_admin};
use crate::media::upload;

/// Sends messages into `room` one after another until `stop`; each acknowledged event's ID
/// is pushed to `acked` as its answer arrives.
fn keep_writing(
    server: &Server,
    token: &str,
    room: &str,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (http, base, token, room) = (
        server.http.clone(),
        server.base.clone(),
        token.to_owned(),
        room.to_owned(),
    );
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let path = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/w{n}");
            let body = json!({ "msgtype": "m.text", "body": format!("under load {n}") });
            let answer = http.put(path).bearer_auth(&token).json(&body).send().await;
            let sent: Value = answer.expect("send").json().await.expect("JSON");
            acked
                .lock()
                .unwrap()
                .push(sent["event_id"].as_str().unwrap().to_owned());
        }
    })
}

/// Every event ID in the room's history, as `token`'s user pages it.
async fn history(server: &Server, token: &str, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from = String::new();
    loop {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100{from}");
        let (status, page) = server.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let chunk = page["chunk"].as_array().unwrap();
        ids.extend(
            chunk
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = format!("&from={end}"),
            _ => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_event() {
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("signing.key");
    let token_secret = secrets.path().join("token.secret");
    let (key, token_secret) = (key.to_str().unwrap(), token_secret.to_str().unwrap());
    let server = Server::start(&[
        ("KITH_FEDERATION__SIGNING_KEY_PATH", key),
        ("KITH_AUTH__TOKEN_SECRET_PATH", token_secret),
    ]);
    let (_, alice) = server.user("alice").await;
    let room = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let picture = b"not really a picture, but bytes all the same".to_vec();
    let (status, uploaded) = upload(&server, &alice, picture.clone(), "image/png", "p.png").await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let media = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(
        &server,
        &alice,
        &room,
        Arc::clone(&acked),
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The backup, while the writer goes on.
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b1");
    let before: Vec<String> = acked.lock().unwrap().clone();
    let (ok, output) =
        tokio::task::block_in_place(|| server.admin(&["backup", target.to_str().unwrap()]));
    assert!(ok, "backup: {output}");
    let during = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let manifest: Value = serde_json::from_str(&output).expect("the manifest, as JSON");
    assert_eq!(manifest["server_name"], SERVER_NAME);
    assert_eq!(manifest["media_files"], 1, "{manifest}");
    assert_eq!(
        manifest["secret_files"],
        json!(["token_secret", "signing_key"])
    );
    assert!(
        before.len() >= 3,
        "the writer wrote {} before the backup",
        before.len()
    );
    assert!(
        acked.lock().unwrap().len() > during,
        "writes went on after the backup"
    );

    // Backing up over a backup is refused.
    let (ok, output) = server.admin(&["backup", target.to_str().unwrap()]);
    assert!(!ok && output.contains("not empty"), "{output}");

    // Restore into a new data directory, with its own places for the secret files.
    let restored_dir = Arc::new(tempfile::tempdir().unwrap());
    let data = restored_dir.path().join("data");
    let new_key = restored_dir.path().join("signing.key");
    let new_secret = restored_dir.path().join("token.secret");
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [
        ("KITH_DATABASE__PATH", data.to_str().unwrap()),
        ("KITH_LISTEN__CLIENT", listen.as_str()),
        (
            "KITH_FEDERATION__SIGNING_KEY_PATH",
            new_key.to_str().unwrap(),
        ),
        ("KITH_AUTH__TOKEN_SECRET_PATH", new_secret.to_str().unwrap()),
    ];
    let renamed = [env[0], env[1], ("KITH_SERVER_NAME", "elsewhere.test")];
    let (ok, output) = kith_admin(&renamed, &["restore", target.to_str().unwrap()]);
    assert!(!ok && output.contains("cannot change"), "{output}");
    assert!(!data.exists(), "a refused restore made {}", data.display());
    let (ok, output) = kith_admin(&env, &["restore", target.to_str().unwrap()]);
    assert!(ok, "restore: {output}");
    let (ok, output) = kith_admin(&env, &["restore", target.to_str().unwrap()]);
    assert!(!ok && output.contains("not empty"), "{output}");
    assert_eq!(
        std::fs::read(&new_key).unwrap(),
        std::fs::read(key).unwrap()
    );

    let restored = Server::start_in(restored_dir, &[env[2], env[3]]);
    // The token secret came along: alice's token still works.
    let (status, me) = restored.whoami(&alice).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let kept = history(&restored, &alice, &room).await;
    let lost: Vec<&String> = before.iter().filter(|id| !kept.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged before the backup, missing after: {lost:?}"
    );
    let response = restored
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{media}",
            restored.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().to_vec(), picture);
    // Writing goes on in the restored copy, and every event verifies.
    restored.say(&alice, &room, "after the restore").await;
    let verified = restored.assert_events_verify();
    assert!(
        verified as usize >= before.len(),
        "{verified} events verified"
    );
}
