//! `kith admin`: while the server runs (over its admin API) and while it is stopped (on the
//! database directly).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server, assert_error};

#[tokio::test]
async fn admin_commands_work_while_the_server_runs() {
    let server = Server::start(&[("KITH_REGISTRATION__MODE", "token")]);
    let (ok, out) = server.admin(&["create-user", "root", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{out}");
    assert!(out.contains("@root:kith.test"), "{out}");
    let (status, login) = server.login("root", PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let token = login["access_token"].as_str().unwrap().to_owned();

    let (ok, out) = server.admin(&["create-user", "root", "--password", "x"]);
    assert!(!ok && out.contains("M_USER_IN_USE"), "{out}");

    let (ok, out) = server.admin(&["tokens", "create", "--token", "invite-1", "--uses", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = server.admin(&["tokens", "list"]);
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(
        tokens.len(),
        2,
        "the printed first-start token and ours: {listed}"
    );
    assert!(
        tokens
            .iter()
            .any(|t| t["token"] == "invite-1" && t["uses_allowed"] == 1)
    );
    let printed = server.printed_token().expect("a first-start token");
    let first = tokens.iter().find(|t| t["token"] == printed.as_str());
    let first = first.expect("the printed token is listed");
    let week_ms = 7 * 24 * 3600 * 1000;
    let expires_in = first["expiry_time"].as_u64().expect("it expires") as i64
        - first["created_ts"].as_i64().unwrap();
    assert!(
        first["uses_allowed"] == 10 && (expires_in - week_ms).abs() < 60_000,
        "the first-start token lets in a few accounts for a week: {first}"
    );

    // Deleting the first-start token closes that door; an unknown token is a 404.
    let (ok, out) = server.admin(&["tokens", "delete", &printed]);
    assert!(ok, "{out}");
    let with_printed = json!({ "username": "late", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": printed } });
    let (_, refused) = server
        .post("/_matrix/client/v3/register", None, with_printed)
        .await;
    assert_eq!(refused["errcode"], "M_UNAUTHORIZED", "{refused}");
    let (ok, out) = server.admin(&["tokens", "delete", &printed]);
    assert!(!ok && out.contains("M_NOT_FOUND"), "{out}");

    // The one-use token registers one user, then is used up.
    let register = |user: &str| json!({ "username": user, "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "invite-1" } });
    let (status, challenge) = server
        .post("/_matrix/client/v3/register", None, register("first"))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token accepted, dummy still to do: {challenge}"
    );
    let session = challenge["session"].as_str().unwrap();
    let dummy = json!({ "username": "first", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } });
    assert_eq!(
        server
            .post("/_matrix/client/v3/register", None, dummy)
            .await
            .0,
        StatusCode::OK
    );
    let (_, refused) = server
        .post("/_matrix/client/v3/register", None, register("second"))
        .await;
    assert_eq!(refused["errcode"], "M_UNAUTHORIZED", "{refused}");

    let (ok, out) = server.admin(&[
        "reset-password",
        "@root:kith.test",
        "--password",
        "fresh password",
    ]);
    assert!(ok, "{out}");
    assert_error(
        &server.whoami(&token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        server.login("root", "fresh password", json!({})).await.0,
        StatusCode::OK
    );

    let (ok, out) = server.admin(&["deactivate", "root"]);
    assert!(ok, "{out}");
    assert_error(
        &server.login("root", "fresh password", json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // The admin API refuses anyone without the secret.
    let (status, _) = server
        .post(
            "/_kith/admin/v1/users",
            None,
            json!({ "user": "x", "password": "y" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = server
        .http
        .post(format!("{}/_kith/admin/v1/users", server.base))
        .bearer_auth("guess")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn admin_commands_work_on_a_stopped_server() {
    let mut server = Server::start(&[]);
    server.terminate();
    let (ok, out) = server.admin(&["create-user", "offline", "--password", PASSWORD]);
    assert!(ok, "{out}");
    let server = server.restart();
    assert_eq!(
        server.login("offline", PASSWORD, json!({})).await.0,
        StatusCode::OK
    );
}

/// `kith admin rotate-signing-key`, with kith stopped (refused while it runs): a new key
/// signs from the next start, the old one stays published as retired, and every event the
/// old key signed still verifies.
#[tokio::test]
async fn the_signing_key_rotates_and_old_events_still_verify() {
    let mut server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (status, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (_, before) = server.get("/_matrix/key/v2/server", None).await;
    let old_id = before["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let (ok, out) = server.admin(&["rotate-signing-key"]);
    assert!(!ok, "rotation while running must be refused: {out}");

    server.terminate();
    let (ok, out) = server.admin(&["rotate-signing-key"]);
    assert!(ok, "{out}");
    let server = server.restart();
    let (_, after) = server.get("/_matrix/key/v2/server", None).await;
    let new_id = after["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert_ne!(new_id, old_id, "{after}");
    assert_eq!(
        after["old_verify_keys"][&old_id]["key"], before["verify_keys"][&old_id]["key"],
        "{after}"
    );
    // New events are signed with the new key; all of them, old and new, verify.
    let room = created["room_id"].as_str().unwrap();
    let (_, token) = server.login("alice", PASSWORD, json!({})).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    server.say(&token, room, "signed with the new key").await;
    assert!(server.assert_events_verify() > 5);
}

/// `kith check-config` prints what a file resolves to, defaults and `KITH_*` variables
/// included, with no secret in it; a broken file is refused with the reason. `/health`
/// answers `OK` while storage does.
#[tokio::test]
async fn check_config_masks_secrets_and_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kith.toml");
    let written = r#"
server_name = "chat.example.org"
[registration]
mode = "token"
tokens = ["my-registration-token"]
[turn]
uris = ["turn:turn.example.org"]
shared_secret = "very-secret-turn-key"
"#;
    std::fs::write(&file, written).unwrap();
    let check = |file: &std::path::Path, extra: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kith"));
        command.arg("--config").arg(file).arg("check-config");
        for (key, value) in extra {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    let (ok, out, err) = check(&file, &[("KITH_MEDIA__MAX_UPLOAD_SIZE", "12345")]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("the configuration is valid"), "{out}");
    assert!(
        out.contains("chat.example.org") && out.contains("turn:turn.example.org"),
        "{out}"
    );
    assert!(
        out.contains("12345"),
        "a KITH_* variable is part of it: {out}"
    );
    assert!(
        out.contains("dm_requires_friendship"),
        "defaults are shown: {out}"
    );
    for secret in ["my-registration-token", "very-secret-turn-key"] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
    }
    std::fs::write(&file, "[registration]\nmodee = \"open\"\n").unwrap();
    let (ok, out, err) = check(&file, &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("modee"), "the reason: {err}");

    let server = Server::start(&[]);
    let response = server
        .http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "OK");
}
