//! kith and Synapse (from PyPI, `tests/peers/synapse_peer.py`) federating on loopback:
//! rooms made on either side, invites and joins both ways, messages seen by each side.
//! Needs `KITH_SYNAPSE_PYTHON` (the Synapse venv `.ci/run` builds); without it the test
//! says so and passes nothing off as checked.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server};

/// A Synapse process on `127.0.0.1:PORT`, killed on drop.
pub struct Synapse {
    child: Child,
    pub name: String,
    dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    /// Starts Synapse federating with `peers`; `None` if no Synapse is installed.
    pub async fn start(peers: &[&str]) -> Option<Synapse> {
        let python = std::env::var("KITH_SYNAPSE_PYTHON").ok()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::common::free_port();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let mut command = Command::new(python);
        command
            .arg("tests/peers/synapse_peer.py")
            .args(["--dir", &dir.path().display().to_string()])
            .args(["--port", &port.to_string()]);
        for peer in peers {
            command.args(["--kith-name", peer]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"))
            .spawn()
            .expect("start Synapse");
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut synapse = Synapse {
            child,
            name: format!("127.0.0.1:{port}"),
            dir,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("https://{}/_matrix/client/versions", synapse.name);
            if let Ok(response) = synapse.http.get(url).send().await
                && response.status().is_success()
            {
                return Some(synapse);
            }
            if let Ok(Some(status)) = synapse.child.try_wait() {
                panic!("Synapse exited ({status}):\n{}", synapse.log());
            }
            assert!(
                Instant::now() < deadline,
                "Synapse not ready:\n{}",
                synapse.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let synapse_log = read("synapse.log");
        let tail: Vec<&str> = synapse_log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{}\n{}", read("stderr"), tail.join("\n"))
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("https://{}{path}", self.name));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to Synapse");
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    /// Registers `user`; (user ID, access token).
    pub async fn user(&self, user: &str) -> (String, String) {
        let body =
            json!({ "username": user, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
        let (status, registered) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{registered}");
        let field = |key: &str| registered[key].as_str().unwrap().to_owned();
        (field("user_id"), field("access_token"))
    }
}

/// Either homeserver, as a client sees it.
pub enum Side<'a> {
    Kith(&'a Server),
    Synapse(&'a Synapse),
}

impl Side<'_> {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        match self {
            Side::Kith(server) => server.request(method, path, Some(token), body).await,
            Side::Synapse(synapse) => synapse.request(method, path, Some(token), body).await,
        }
    }

    pub fn log(&self) -> String {
        match self {
            Side::Kith(server) => server.log(),
            Side::Synapse(synapse) => synapse.log(),
        }
    }

    /// Syncs until `found` holds (30 s at most).
    pub async fn sync_until(
        &self,
        token: &str,
        what: &str,
        mut found: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut since: Option<String> = None;
        loop {
            let since_param = since
                .as_ref()
                .map(|s| format!("&since={s}"))
                .unwrap_or_default();
            let path = format!("/_matrix/client/v3/sync?timeout=1000{since_param}");
            let (status, response) = self.request(Method::GET, &path, token, None).await;
            assert_eq!(status, StatusCode::OK, "{response}");
            if found(&response) {
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen in time; last sync: {response}\nlog:\n{}",
                self.log()
            );
            since = response["next_batch"].as_str().map(str::to_owned);
        }
    }

    pub async fn say(&self, token: &str, room: &str, body: &str) -> String {
        let txn = format!("t{}", crate::common::rand_suffix());
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let content = json!({ "msgtype": "m.text", "body": body });
        let (status, sent) = self.request(Method::PUT, &path, token, Some(content)).await;
        assert_eq!(status, StatusCode::OK, "{sent}\nlog:\n{}", self.log());
        sent["event_id"].as_str().unwrap().to_owned()
    }

    /// Starts typing and sends a read receipt for `event`.
    pub async fn type_and_read(&self, token: &str, user: &str, room: &str, event: &str) {
        let path = format!("/_matrix/client/v3/rooms/{room}/typing/{user}");
        let body = json!({ "typing": true, "timeout": 20000 });
        let (status, typed) = self.request(Method::PUT, &path, token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{typed}");
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}");
        let (status, read) = self
            .request(Method::POST, &path, token, Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{read}");
    }

    pub async fn join(&self, token: &str, room: &str) {
        let path = format!("/_matrix/client/v3/join/{room}");
        let (status, joined) = self
            .request(Method::POST, &path, token, Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{joined}\nlog:\n{}", self.log());
    }
}

pub fn has_message(sync: &Value, room: &str, body: &str) -> bool {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == body))
}

/// Whether the sync shows `user` typing in the room.
pub fn typing(sync: &Value, room: &str, user: &str) -> bool {
    ephemeral(sync, room, "m.typing").iter().any(|e| {
        e["content"]["user_ids"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u == user))
    })
}

/// Whether the sync shows `user`'s read receipt of `event` in the room.
pub fn read(sync: &Value, room: &str, event: &str, user: &str) -> bool {
    ephemeral(sync, room, "m.receipt")
        .iter()
        .any(|e| e["content"][event]["m.read"][user].is_object())
}

fn ephemeral(sync: &Value, room: &str, kind: &str) -> Vec<Value> {
    let events = sync["rooms"]["join"][room]["ephemeral"]["events"].as_array();
    events
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == kind)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// One side invites, the other joins, and both say something the other sees.
pub async fn chat(
    (host, host_token, host_user): (&Side<'_>, &str, &str),
    (guest, guest_token, guest_user): (&Side<'_>, &str, &str),
) -> String {
    let body =
        json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [guest_user] });
    let (status, created) = host
        .request(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            host_token,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", host.log());
    let room = created["room_id"].as_str().unwrap().to_owned();
    guest
        .sync_until(guest_token, "the invite", |s| {
            s["rooms"]["invite"][&room].is_object()
        })
        .await;
    guest.join(guest_token, &room).await;
    let hello = format!("hello from {host_user}");
    host.say(host_token, &room, &hello).await;
    guest
        .sync_until(guest_token, &hello, |s| has_message(s, &room, &hello))
        .await;
    let reply = format!("hello from {guest_user}");
    let reply_id = guest.say(guest_token, &room, &reply).await;
    host.sync_until(host_token, &reply, |s| has_message(s, &room, &reply))
        .await;
    // Typing and read receipts cross too, each way.
    for (from, from_token, user, to, to_token) in [
        (host, host_token, host_user, guest, guest_token),
        (guest, guest_token, guest_user, host, host_token),
    ] {
        from.type_and_read(from_token, user, &room, &reply_id).await;
        let (mut typed, mut seen) = (false, false);
        to.sync_until(to_token, "typing and receipt", |s| {
            typed |= typing(s, &room, user);
            seen |= read(s, &room, &reply_id, user);
            typed && seen
        })
        .await;
    }
    room
}

#[tokio::test]
async fn kith_and_synapse_users_chat_in_rooms_made_on_either_side() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));

    // Each side reads the other's profile through federation.
    let (status, profile) = kith
        .get(
            &format!("/_matrix/client/v3/profile/{bob}"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["displayname"], "bob", "{profile}");
    let path = format!("/_matrix/client/v3/profile/{alice}");
    let (status, profile) = s.request(Method::GET, &path, &bob_token, None).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["displayname"], "alice", "{profile}");

    // Media crosses both ways (authenticated federation media, multipart answers).
    let picture = crate::media::png(40, 30);
    let (status, uploaded) =
        crate::media::upload(&kith, &alice_token, picture.clone(), "image/png", "k.png").await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let kith_media = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://")
        .to_owned();
    let response = synapse
        .http
        .post(format!(
            "https://{}/_matrix/media/v3/upload?filename=s.png",
            synapse.name
        ))
        .bearer_auth(&bob_token)
        .header("content-type", "image/png")
        .body(picture.clone())
        .send()
        .await
        .unwrap();
    let uploaded: Value = response.json().await.unwrap();
    let synapse_media = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://")
        .to_owned();
    for (base, token, media) in [
        (kith.base.clone(), &alice_token, &synapse_media),
        (format!("https://{}", synapse.name), &bob_token, &kith_media),
    ] {
        let url = format!("{base}/_matrix/client/v1/media/download/{media}");
        let response = synapse
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{url}\n{}",
            synapse.log()
        );
        assert_eq!(response.bytes().await.unwrap().to_vec(), picture, "{url}");
    }

    // Synapse has no friend requests: kith says so plainly.
    let path = "/_matrix/client/unstable/org.kith.contacts/v1/requests";
    let (status, refused) = kith
        .post(path, Some(&alice_token), json!({ "user_id": bob }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(
        refused["errcode"], "ORG.KITH.CONTACTS_REMOTE_UNSUPPORTED",
        "{refused}"
    );

    // A room on kith, joined from Synapse; then one on Synapse (v12), joined from kith.
    chat((&k, &alice_token, &alice), (&s, &bob_token, &bob)).await;
    let room = chat((&s, &bob_token, &bob), (&k, &alice_token, &alice)).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/");
    let (status, create) = kith.get(&path, Some(&alice_token)).await;
    assert_eq!(status, StatusCode::OK, "{create}");
    assert_eq!(create["room_version"], "12", "{create}");
    // kith fetches the history from before its user joined from Synapse.
    let types = crate::federation::history_types(&kith, &alice_token, &room).await;
    assert_eq!(
        types.first().map(String::as_str),
        Some("m.room.create"),
        "{types:?}"
    );
    kith.assert_events_verify();
}

/// Real matrix-nio clients on each side, one on kith and one on Synapse: direct rooms made
/// on either side, invites, joins, messages, typing and receipts
/// (`tests/clients/nio_federated.py`).
#[tokio::test]
async fn matrix_nio_clients_chat_across_kith_and_synapse() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let synapse_base = format!("https://{}", synapse.name);
    let args = ["tests/clients/nio_federated.py", &kith.base, &synapse_base];
    let python = crate::clients::python();
    crate::clients::run_client(&kith, &python, &args, "nio federated test passed").await;
    kith.assert_events_verify();
}
