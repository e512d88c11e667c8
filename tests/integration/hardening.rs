//! Hardening for the open internet (issue 17): what a client or another local user could
//! try against a real running kith (hostile peers: `hostile_peers.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server};

/// Every file and directory below `dir`.
fn everything_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(everything_below(&path));
        }
        found.push(path);
    }
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The data directory holds the access-token secret, the signing key and the admin
/// secret: it and everything in it are their owner's alone. A data directory others may
/// read is named in a warning at start.
#[tokio::test]
async fn the_data_directory_and_its_secrets_are_private() {
    let server = Server::start(&[]);
    server.user("alice").await;
    assert_eq!(mode(&server.data), 0o700);
    let below = everything_below(&server.data);
    assert!(
        below.iter().any(|p| p.ends_with("admin.secret")),
        "{below:?}"
    );
    for path in below {
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
    assert!(!server.log().contains("open to other users"));

    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&[("KITH_DATABASE__PATH", open.to_str().unwrap())]);
    assert!(
        server.log().contains("open to other users"),
        "{}",
        server.log()
    );
}

/// Sign-ins that race a password change: a login that checked the old password before
/// the change and makes its session after it must not keep that session. Afterwards, no
/// token from an old-password login works; the changing device's own does.
#[tokio::test]
async fn logins_racing_a_password_change_keep_no_session() {
    let server = &Server::start(&[("KITH_LIMITS__LOGIN_FAILURE_BURST", "1000")]);
    let (user, token) = server.user("racer").await;
    let auth = json!({ "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user }, "password": PASSWORD });
    let change = json!({ "new_password": "a new secret", "auth": auth, "logout_devices": true });
    // Logins start every 50 ms until the change is answered, so some are checking the old
    // password when it changes (bounded: 200 logins at most, 8 at a time).
    let done = AtomicBool::new(false);
    let changing = async {
        let path = "/_matrix/client/v3/account/password";
        let answer = server.post(path, Some(&token), change).await;
        done.store(true, Ordering::SeqCst);
        answer
    };
    let logging = async {
        let mut running = FuturesUnordered::new();
        let mut finished = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut started = 0;
        loop {
            tokio::select! {
                _ = tick.tick(), if !done.load(Ordering::SeqCst) && started < 200 && running.len() < 8 => {
                    running.push(server.login("racer", PASSWORD, json!({})));
                    started += 1;
                }
                Some(result) = running.next(), if !running.is_empty() => finished.push(result),
                else => break,
            }
        }
        finished
    };
    let (logins, (status, changed)) = tokio::join!(logging, changing);
    assert_eq!(status, StatusCode::OK, "{changed}");
    let mut kept = 0;
    for (status, login) in logins {
        let Some(old) = login["access_token"]
            .as_str()
            .filter(|_| status == StatusCode::OK)
        else {
            continue;
        };
        kept += usize::from(server.whoami(old).await.0 == StatusCode::OK);
    }
    assert_eq!(
        kept, 0,
        "sessions from the old password outlived the change"
    );
    assert_eq!(server.whoami(&token).await.0, StatusCode::OK);
}

/// Registers `user` from `forwarded_for` (an `X-Forwarded-For`, as a proxy would add).
async fn register_from(
    server: &Server,
    user: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Value) {
    let body =
        json!({ "username": user, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let mut request = server
        .http
        .post(format!("{}/_matrix/client/v3/register", server.base))
        .json(&body);
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

fn assert_limited(result: &(StatusCode, Value)) {
    assert_eq!(result.0, StatusCode::TOO_MANY_REQUESTS, "{}", result.1);
    assert_eq!(result.1["errcode"], "M_LIMIT_EXCEEDED", "{}", result.1);
    assert!(
        result.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{}",
        result.1
    );
}

/// Registration is limited per client address (3, then 10 a minute, as Synapse's
/// `rc_registration`); behind a trusted proxy the address is the one the proxy forwarded
/// for, and from anyone else (by default, anyone) `X-Forwarded-For` changes nothing.
#[tokio::test]
async fn registration_is_limited_per_client_address_behind_a_trusted_proxy() {
    let defaults = [("KITH_RATE_LIMITS__REGISTRATION__BURST", "3")];
    let mut proxied = defaults.to_vec();
    proxied.push(("KITH_LISTEN__TRUSTED_PROXIES", r#"["127.0.0.1"]"#));
    let server = Server::start(&proxied);
    for i in 0..3 {
        let result = register_from(&server, &format!("direct{i}"), None).await;
        assert_eq!(result.0, StatusCode::OK, "{}", result.1);
    }
    let refused = register_from(&server, "direct3", None).await;
    assert_limited(&refused);
    assert_eq!(
        server
            .get(
                "/_matrix/client/v3/register/available?username=direct3",
                None
            )
            .await
            .1["available"],
        true,
        "a refused registration made no account"
    );
    // Through the proxy, each client has its own allowance; a client cannot borrow
    // another's by writing its own X-Forwarded-For before the proxy's.
    for i in 0..3 {
        let result = register_from(&server, &format!("far{i}"), Some("203.0.113.7")).await;
        assert_eq!(result.0, StatusCode::OK, "{}", result.1);
    }
    assert_limited(&register_from(&server, "far3", Some("203.0.113.7")).await);
    assert_limited(&register_from(&server, "far4", Some("198.51.100.1, 203.0.113.7")).await);
    let other = register_from(&server, "other", Some("203.0.113.8")).await;
    assert_eq!(other.0, StatusCode::OK, "{}", other.1);

    // With no trusted proxy (the default), the header is the client's own claim and is
    // ignored.
    let direct = Server::start(&defaults);
    for i in 0..3 {
        let claimed = format!("203.0.113.{i}");
        let result = register_from(&direct, &format!("u{i}"), Some(&claimed)).await;
        assert_eq!(result.0, StatusCode::OK, "{}", result.1);
    }
    assert_limited(&register_from(&direct, "u3", Some("203.0.113.99")).await);
}

/// Sends, uploads and to-device messages are limited per user: past the burst a 429 with
/// `retry_after_ms`; a replayed transaction is an answer, not a new send, so it passes;
/// another user is not held back.
#[tokio::test]
async fn sends_uploads_and_to_device_are_limited_per_user() {
    let server = Server::start(&[
        ("KITH_RATE_LIMITS__MESSAGES__BURST", "10"),
        ("KITH_RATE_LIMITS__UPLOADS__BURST", "3"),
        ("KITH_RATE_LIMITS__TO_DEVICE__BURST", "2"),
    ]);
    let (_, alice) = server.user("alice").await;
    let (bob_id, bob) = server.user("bob").await;
    // createRoom and the join are not sends.
    let room = server.shared_room(&alice, (&bob_id, &bob)).await;
    let send = |token: String, txn: String| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let server = &server;
        async move {
            let body = json!({ "msgtype": "m.text", "body": txn });
            server.put(&path, Some(&token), body).await
        }
    };
    let first = send(alice.clone(), "t0".into()).await;
    for i in 1..10 {
        assert_eq!(send(alice.clone(), format!("t{i}")).await.0, StatusCode::OK);
    }
    assert_limited(&send(alice.clone(), "t10".into()).await);
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    assert_limited(
        &server
            .put(&path, Some(&alice), json!({ "topic": "x" }))
            .await,
    );
    assert_eq!(
        send(alice.clone(), "t0".into()).await,
        first,
        "a replay answers as before"
    );
    assert_eq!(send(bob.clone(), "b0".into()).await.0, StatusCode::OK);

    let upload = || {
        server
            .http
            .post(format!("{}/_matrix/media/v3/upload", server.base))
            .bearer_auth(&alice)
            .body("hello")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(upload().await.unwrap().status(), StatusCode::OK);
    }
    let refused = upload().await.unwrap();
    let status = refused.status();
    assert_limited(&(status, refused.json().await.unwrap()));
    let (status, _) = server
        .post("/_matrix/media/v1/create", Some(&alice), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "a reserved ID counts as an upload"
    );

    let to_device = |txn: &str| {
        let path = format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
        let body = json!({ "messages": { bob_id.clone(): { "*": { "n": txn } } } });
        let (server, alice) = (&server, &alice);
        async move { server.put(&path, Some(alice), body).await }
    };
    for txn in ["d0", "d1"] {
        assert_eq!(to_device(txn).await.0, StatusCode::OK);
    }
    assert_limited(&to_device("d2").await);
    assert_eq!(to_device("d0").await.0, StatusCode::OK, "a replay passes");
}

/// What the fuzzing found: a login body without a `type` made ruma's parser panic (a 500),
/// and IDs or server names that no server could have made kith try other servers (a 502).
/// Each is a client's mistake: 400, with a Matrix error, and nothing is asked of anyone.
#[tokio::test]
async fn malformed_bodies_ids_and_server_names_are_400() {
    let server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    for body in [
        json!({}),
        json!({ "type": 7 }),
        json!({ "identifier": { "user": "alice" } }),
    ] {
        let (status, answer) = server
            .post("/_matrix/client/v3/login", None, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["errcode"].is_string(), "{answer}");
    }
    let (status, answer) = server
        .raw(
            reqwest::Method::POST,
            "/_matrix/client/v3/login",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no body: {answer}");

    for path in [
        "/_matrix/client/v3/join/%21?via=elsewhere.example",
        "/_matrix/client/v3/join/%21x%27y?via=elsewhere.example",
        "/_matrix/client/v3/rooms/%21short/join",
        "/_matrix/client/v3/join/%21x:a..b?via=elsewhere.example",
        "/_matrix/client/v3/join/%21x:elsewhere.example?via=0&via=elsewhere.example",
    ] {
        let (status, answer) = server.post(path, Some(&token), json!({})).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
            "{path}: {answer}"
        );
    }
    for path in [
        "/_matrix/client/v1/media/download/0/abc",
        "/_matrix/client/v1/media/download/kith.example:0/abc",
        "/_matrix/client/v3/profile/@a:0",
        "/_matrix/client/v3/profile/@a:1.2.3/displayname",
        "/_matrix/client/v3/directory/room/%23a:123",
    ] {
        let (status, answer) = server.get(path, Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert!(answer["errcode"].is_string(), "{answer}");
    }
    let (status, answer) = server
        .get("/_matrix/client/v3/login/sso/redirect/%FF", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["errcode"].is_string(), "{answer}");
    assert!(
        !server.log().contains("panicked"),
        "a request made kith panic"
    );
}

/// The token secret and the signing key can live in files of their own: kith moves them
/// there from the database and uses them across restarts; without the file it will not
/// start, and another secret there voids the old tokens — it is not in the database.
#[tokio::test]
async fn secrets_can_live_in_files_of_their_own() {
    let mut server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (_, document) = server.get("/_matrix/key/v2/server", None).await;
    server.terminate();
    let secrets = server.data.parent().unwrap().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let (token_file, key_file) = (secrets.join("token.secret"), secrets.join("signing.key"));
    server.env.push((
        "KITH_AUTH__TOKEN_SECRET_PATH".into(),
        token_file.display().to_string(),
    ));
    server.env.push((
        "KITH_FEDERATION__SIGNING_KEY_PATH".into(),
        key_file.display().to_string(),
    ));
    let mut server = server.restart();
    assert_eq!(
        server.whoami(&token).await.0,
        StatusCode::OK,
        "the database's secret moved"
    );
    let (_, moved) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(
        moved["verify_keys"], document["verify_keys"],
        "the database's key moved"
    );
    let key_id = document["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let line = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        line.starts_with(&format!("ed25519 {} ", &key_id[8..])),
        "Synapse's format: {line}"
    );

    // A missing file (a secrets volume not mounted) stops kith rather than sign everyone
    // out; another secret put there voids the tokens made with the old one.
    server.terminate();
    std::fs::remove_file(&token_file).unwrap();
    let refused = server.try_again().err().expect("kith refuses to start");
    assert!(refused.contains("token_secret_path: missing"), "{refused}");
    std::fs::write(&token_file, "x".repeat(40)).unwrap();
    let server = server.restart();
    let (status, body) = server.whoami(&token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token made with the old secret: {body}"
    );
}

/// A debug-level log holds no password, access token or refresh token, however they were
/// sent (a body, the `Authorization` header, `?access_token=`), and each request's lines
/// carry its ID, in text and in JSON (`[log] format`), where every line is an object.
#[tokio::test]
async fn a_debug_log_holds_no_secrets() {
    for format in ["text", "json"] {
        let server = Server::start(&[("RUST_LOG", "debug"), ("KITH_LOG__FORMAT", format)]);
        server.user("alice").await;
        let body = json!({ "refresh_token": true });
        let (status, login) = server.login("alice", PASSWORD, body).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        let token = login["access_token"].as_str().unwrap().to_owned();
        let refresh = login["refresh_token"].as_str().unwrap().to_owned();
        let path = format!("/_matrix/client/v3/account/whoami?access_token={token}");
        let (status, _) = server.get(&path, None).await;
        assert_eq!(status, StatusCode::OK);
        let room = server.create_room(&token, json!({})).await;
        server.say(&token, &room, "hello").await;
        let refreshed = json!({ "refresh_token": refresh });
        let (status, _) = server
            .post("/_matrix/client/v3/refresh", None, refreshed)
            .await;
        assert_eq!(status, StatusCode::OK);
        let log = server.log();
        assert!(log.contains("DEBUG"), "a debug-level run");
        for secret in [PASSWORD, token.as_str(), refresh.as_str()] {
            assert!(
                !log.contains(secret),
                "{format}: {secret} is in the log:\n{log}"
            );
        }
        let whoami = log
            .lines()
            .find(|l| l.contains("/account/whoami"))
            .unwrap_or_else(|| panic!("{format}: no line for whoami:\n{log}"));
        match format {
            "text" => assert!(whoami.contains("request{id="), "{whoami}"),
            _ => {
                for line in log.lines() {
                    let object: Value = serde_json::from_str(line)
                        .unwrap_or_else(|_| panic!("not a JSON line: {line}"));
                    assert!(object["level"].is_string(), "{line}");
                }
                let object: Value = serde_json::from_str(whoami).unwrap();
                assert!(object["span"]["id"].is_u64(), "{whoami}");
            }
        }
    }
}
