//! Upgrades: a data directory the previous release wrote
//! (`tests/fixtures/previous-release.tar.gz`, made by `make-previous-release.sh` with kith
//! at 32bce72) opens in this one with everything in it, and takes new writes; a data
//! directory stamped with a schema newer than this build's is refused, clearly, and left
//! as it was.

use std::process::Command;
use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server};

/// A fresh copy of the previous release's data directory, as `dir/data`.
fn previous_release() -> Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/previous-release.tar.gz"
    );
    let unpacked = Command::new("tar")
        .args(["-xzf", fixture, "-C"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success());
    Arc::new(dir)
}

async fn token(server: &Server, user: &str) -> String {
    let (status, login) = server.login(user, PASSWORD, json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{user} signs in with the old password: {login}"
    );
    login["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_previous_releases_data_opens_and_a_newer_schema_is_refused() {
    let dir = previous_release();
    let server = Server::start_in(Arc::clone(&dir), &[]);
    let alice = token(&server, "alice").await;
    let bob = token(&server, "bob").await;

    let (status, joined) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let room = joined["joined_rooms"][0].as_str().unwrap().to_owned();
    let state = |kind: &str| format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
    let (_, name) = server.get(&state("m.room.name"), Some(&bob)).await;
    assert_eq!(name["name"], "Old room");
    let (_, topic) = server.get(&state("m.room.topic"), Some(&bob)).await;
    assert_eq!(topic["topic"], "kept across versions");
    let (_, profile) = server
        .get("/_matrix/client/v3/profile/@alice:kith.test", None)
        .await;
    assert_eq!(profile["displayname"], "Alice of old");
    let data = "/_matrix/client/v3/user/@alice:kith.test/account_data/org.example.settings";
    assert_eq!(
        server.get(data, Some(&alice)).await.1,
        json!({ "kept": true })
    );

    // The history, in order, with the edit applied, the reaction counted and the
    // redaction kept.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let (status, page) = server.get(&path, Some(&bob)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let messages: Vec<&Value> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    let bodies: Vec<&str> = messages
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        bodies,
        [
            "first words",
            "an answer",
            "* first words, edited",
            "",
            "old.txt",
            "last words before the upgrade"
        ]
    );
    let first = messages[0];
    let relations = &first["unsigned"]["m.relations"];
    assert_eq!(
        relations["m.replace"]["content"]["m.new_content"]["body"], "first words, edited",
        "{first}"
    );
    let redacted = messages[3];
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    assert!(
        redacted["unsigned"]["redacted_because"].is_object(),
        "{redacted}"
    );
    let first_id = first["event_id"].as_str().unwrap();
    let reactions = format!("/_matrix/client/v1/rooms/{room}/relations/{first_id}/m.annotation");
    let (_, reactions) = server.get(&reactions, Some(&alice)).await;
    assert_eq!(
        reactions["chunk"].as_array().unwrap().len(),
        1,
        "{reactions}"
    );

    // The file uploaded before.
    let mxc = messages[4]["content"]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://");
    let download = server
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{mxc}",
            server.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(
        &download.bytes().await.unwrap()[..],
        b"bytes from an older kith"
    );

    // Both syncs serve the old room; new writes go on from the old state.
    let synced = server.sync(&bob, None, 0).await;
    let timeline = &synced["rooms"]["join"][&room]["timeline"]["events"];
    assert!(
        timeline.as_array().is_some_and(|t| !t.is_empty()),
        "{synced}"
    );
    let sliding = json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1,
        "required_state": [["m.room.name", ""]] } } });
    let sliding_path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let (status, slid) = server.post(sliding_path, Some(&bob), sliding).await;
    assert_eq!(status, StatusCode::OK, "{slid}");
    assert_eq!(slid["rooms"][&room]["name"], "Old room", "{slid}");
    let since = synced["next_batch"].as_str().unwrap().to_owned();
    let topic = json!({ "topic": "changed after the upgrade" });
    let (status, _) = server
        .put(&state("m.room.topic"), Some(&alice), topic)
        .await;
    assert_eq!(status, StatusCode::OK);
    server
        .say(&bob, &room, "the first words after the upgrade")
        .await;
    let next = server.sync(&bob, Some(&since), 5_000).await;
    let events = next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let changed = events
        .iter()
        .find(|e| e["type"] == "m.room.topic")
        .expect("the new topic");
    assert_eq!(
        changed["unsigned"]["prev_content"]["topic"], "kept across versions",
        "{changed}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["content"]["body"] == "the first words after the upgrade")
    );
    server.assert_events_verify();

    // A data directory from a newer kith: refused, with the reason, and left untouched.
    let mut server = server;
    server.terminate();
    let db = dir.path().join("data").join("db");
    {
        let storage = kith_storage::Storage::open(&db).unwrap();
        let mut batch = storage.batch();
        let newer = kith_storage::schema::CURRENT + 1;
        batch
            .put(
                &kith_storage::catalog::GLOBAL_VALUE,
                &kith_storage::schema::VERSION_KEY,
                &newer,
            )
            .unwrap();
        storage.commit_blocking(batch).unwrap();
    }
    let refused = Server::try_start_in(Arc::clone(&dir), &[])
        .err()
        .expect("a newer schema is refused");
    assert!(refused.contains("is newer than this kith"), "{refused}");
    let storage = kith_storage::Storage::open(&db);
    assert!(storage.is_err(), "the newer data directory was not changed");
}
