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
enum Side<'a> {
    Kith(&'a Server),
    Synapse(&'a Synapse),
}

impl Side<'_> {
    async fn request(
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

    fn log(&self) -> String {
        match self {
            Side::Kith(server) => server.log(),
            Side::Synapse(synapse) => synapse.log(),
        }
    }

    /// Syncs until `found` holds (30 s at most).
    async fn sync_until(
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

    async fn say(&self, token: &str, room: &str, body: &str) -> String {
        let txn = format!("t{}", crate::common::rand_suffix());
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let content = json!({ "msgtype": "m.text", "body": body });
        let (status, sent) = self.request(Method::PUT, &path, token, Some(content)).await;
        assert_eq!(status, StatusCode::OK, "{sent}\nlog:\n{}", self.log());
        sent["event_id"].as_str().unwrap().to_owned()
    }

    /// Starts typing and sends a read receipt for `event`.
    async fn type_and_read(&self, token: &str, user: &str, room: &str, event: &str) {
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

    async fn join(&self, token: &str, room: &str) {
        let path = format!("/_matrix/client/v3/join/{room}");
        let (status, joined) = self
            .request(Method::POST, &path, token, Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{joined}\nlog:\n{}", self.log());
    }
}

fn has_message(sync: &Value, room: &str, body: &str) -> bool {
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
async fn chat(
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

/// Under `dm_only`: a kith user may invite a Synapse user into a direct chat (Synapse
/// users cannot ask to be friends; the invite is the kith user's own consent), and a
/// Synapse user's direct-chat invite reaches the kith user as a friend request, the invite
/// shown only once it is accepted.
#[tokio::test]
async fn kith_and_synapse_users_start_direct_chats_under_dm_only() {
    use crate::federation::{CONTACTS, contacts_view, lists};
    let (kith, kith_name) = Server::federated(&[(crate::common::POLICY, "dm_only")]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    chat((&k, &alice_token, &alice), (&s, &bob_token, &bob)).await;

    let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [alice] });
    let (status, created) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            &bob_token,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", synapse.log());
    let room = created["room_id"].as_str().unwrap().to_owned();
    let asked = k
        .sync_until(&alice_token, "the friend request", |s| {
            contacts_view(s).is_some_and(|v| lists(&v, "incoming", &bob))
        })
        .await;
    assert!(asked["rooms"]["invite"].get(&room).is_none(), "{asked}");
    let (_, requests) = kith
        .get(
            &format!("{CONTACTS}/requests?dir=incoming"),
            Some(&alice_token),
        )
        .await;
    let request_id = requests["requests"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{CONTACTS}/requests/{request_id}/accept");
    let (status, accepted) = kith.post(&path, Some(&alice_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    k.sync_until(&alice_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    k.join(&alice_token, &room).await;
    s.say(&bob_token, &room, "glad you accepted").await;
    k.sync_until(&alice_token, "bob's message", |s| {
        has_message(s, &room, "glad you accepted")
    })
    .await;
}

/// Under `request` (the default): a Synapse user's direct-chat invite reaches the kith
/// user at once and is a friend request, which joining accepts; a kith user's invites to
/// Synapse users are requests the kith side answers from their joining (friends) or
/// rejecting (declined).
#[tokio::test]
async fn kith_and_synapse_users_befriend_by_direct_chat_invites() {
    use crate::dm_requests::{friends, requests};
    let (kith, kith_name) = Server::federated(&[(crate::common::POLICY, "request")]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (carol, carol_token) = synapse.user("carol").await;
    let (dave, dave_token) = synapse.user("dave").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let direct = |invitee: &str| json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [invitee] });
    let create = |side: &'static str, token: String, body: Value| {
        let side = match side {
            "kith" => &k,
            _ => &s,
        };
        async move {
            let path = "/_matrix/client/v3/createRoom";
            let (status, created) = side.request(Method::POST, path, &token, Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", side.log());
            created["room_id"].as_str().unwrap().to_owned()
        }
    };

    // Synapse → kith: an ordinary invite, shown at once, and an incoming request.
    let room = create("synapse", bob_token.clone(), direct(&alice)).await;
    k.sync_until(&alice_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    let incoming = requests(&kith, &alice_token).await;
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    assert_eq!(incoming[0]["user_id"], bob);
    assert_eq!(incoming[0]["dm_room_id"], room);
    k.join(&alice_token, &room).await;
    let friends_now = friends(&kith, &alice_token).await;
    assert_eq!(friends_now[0]["user_id"], bob, "{friends_now:?}");
    assert_eq!(friends_now[0]["dm_room_id"], room);
    s.say(&bob_token, &room, "friends now").await;
    k.sync_until(&alice_token, "bob's message", |s| {
        has_message(s, &room, "friends now")
    })
    .await;

    // kith → Synapse: a request kith answers from the Synapse user's join...
    let room = create("kith", alice_token.clone(), direct(&carol)).await;
    let outgoing = requests(&kith, &alice_token).await;
    assert_eq!(outgoing[0]["user_id"], carol, "{outgoing:?}");
    assert_eq!(outgoing[0]["dm_room_id"], room);
    s.sync_until(&carol_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    s.join(&carol_token, &room).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !friends(&kith, &alice_token)
        .await
        .iter()
        .any(|f| f["user_id"] == carol)
    {
        assert!(
            Instant::now() < deadline,
            "carol's join not seen:\n{}",
            kith.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(requests(&kith, &alice_token).await.is_empty());

    // ...or from their rejecting it.
    let room = create("kith", alice_token.clone(), direct(&dave)).await;
    s.sync_until(&dave_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/leave");
    let (status, left) = s
        .request(Method::POST, &path, &dave_token, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{left}\nlog:\n{}", synapse.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !requests(&kith, &alice_token).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "dave's rejection not seen:\n{}",
            kith.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let friends_now = friends(&kith, &alice_token).await;
    assert!(
        !friends_now.iter().any(|f| f["user_id"] == dave),
        "{friends_now:?}"
    );
}

/// Each server's public room directory, asked by the other's user over federation.
#[tokio::test]
async fn kith_and_synapse_users_read_each_others_room_directory() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (_, alice_token) = kith.user("alice").await;
    let (_, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let mut rooms = Vec::new();
    for (side, token, name) in [
        (&k, &alice_token, "kithroom"),
        (&s, &bob_token, "synapseroom"),
    ] {
        let body = json!({ "visibility": "public", "preset": "public_chat", "name": name });
        let path = "/_matrix/client/v3/createRoom";
        let (status, created) = side.request(Method::POST, path, token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", side.log());
        rooms.push(created["room_id"].as_str().unwrap().to_owned());
    }
    let asks = [
        (&s, &bob_token, kith_name.clone(), &rooms[0], "kithroom"),
        (
            &k,
            &alice_token,
            synapse.name.clone(),
            &rooms[1],
            "synapseroom",
        ),
    ];
    for (side, token, server, room, name) in asks {
        let path = format!("/_matrix/client/v3/publicRooms?server={server}");
        let body = json!({ "limit": 10, "filter": { "generic_search_term": name } });
        let (status, page) = side.request(Method::POST, &path, token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{page}\nlog:\n{}", side.log());
        let listed = page["chunk"].as_array().unwrap();
        assert!(
            listed
                .iter()
                .any(|r| r["room_id"] == *room && r["name"] == name),
            "{name} room not in {page}"
        );
    }
}

/// Spaces across kith and Synapse, both ways: each walks the other's space
/// (`/hierarchy` through federation) and joins its restricted room as a member of the
/// space, vouched for by the room's server.
#[tokio::test]
async fn kith_and_synapse_users_walk_each_others_spaces_and_join_restricted_rooms() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (_, alice_token) = kith.user("alice").await;
    let (_, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let sides = [
        (&k, &alice_token, kith_name.clone(), &s, &bob_token),
        (&s, &bob_token, synapse.name.clone(), &k, &alice_token),
    ];
    for (host, host_token, host_name, guest, guest_token) in sides {
        let create = |body: Value| {
            let path = "/_matrix/client/v3/createRoom";
            async move {
                let (status, created) = host
                    .request(Method::POST, path, host_token, Some(body))
                    .await;
                assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", host.log());
                created["room_id"].as_str().unwrap().to_owned()
            }
        };
        let space = create(json!({ "preset": "public_chat", "name": "Space", "creation_content": { "type": "m.space" } })).await;
        let rules = json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] });
        let room = create(json!({
            "preset": "private_chat", "name": "Members", "room_version": "10",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rules }],
        }))
        .await;
        let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{room}");
        let (status, added) = host
            .request(
                Method::PUT,
                &path,
                host_token,
                Some(json!({ "via": [host_name] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{added}");
        let join = |room: &str| format!("/_matrix/client/v3/join/{room}?server_name={host_name}");
        let (status, joined) = guest
            .request(Method::POST, &join(&space), guest_token, Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{joined}\nlog:\n{}", guest.log());
        let path = format!("/_matrix/client/v1/rooms/{space}/hierarchy");
        let (status, listed) = guest.request(Method::GET, &path, guest_token, None).await;
        assert_eq!(status, StatusCode::OK, "{listed}\nlog:\n{}", guest.log());
        let names: Vec<&Value> = listed["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["room_id"])
            .collect();
        assert!(
            names.contains(&&json!(room)),
            "{listed}\nhost log:\n{}\nguest log:\n{}",
            host.log(),
            guest.log()
        );
        let (status, joined) = guest
            .request(Method::POST, &join(&room), guest_token, Some(json!({})))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{joined}\nhost log:\n{}\nguest log:\n{}",
            host.log(),
            guest.log()
        );
    }
}

/// Knocking across kith and Synapse, both ways: the knock reaches the room's server, its
/// member sees it and invites, and the knocker joins.
#[tokio::test]
async fn kith_and_synapse_users_knock_on_each_others_rooms() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let sides = [
        (&k, &alice_token, kith_name.clone(), &s, &bob_token, &bob),
        (
            &s,
            &bob_token,
            synapse.name.clone(),
            &k,
            &alice_token,
            &alice,
        ),
    ];
    for (host, host_token, host_name, guest, guest_token, guest_user) in sides {
        let rules = json!({ "join_rule": "knock" });
        let body = json!({
            "preset": "private_chat", "room_version": "10",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rules }],
        });
        let path = "/_matrix/client/v3/createRoom";
        let (status, created) = host
            .request(Method::POST, path, host_token, Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let room = created["room_id"].as_str().unwrap().to_owned();
        let knock = format!("/_matrix/client/v3/knock/{room}?server_name={host_name}");
        let (status, knocked) = guest
            .request(
                Method::POST,
                &knock,
                guest_token,
                Some(json!({ "reason": "hi" })),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{knocked}\nguest log:\n{}\nhost log:\n{}",
            guest.log(),
            host.log()
        );
        host.sync_until(host_token, "the knock", |sync| {
            let events = sync["rooms"]["join"][&room]["timeline"]["events"].as_array();
            events.is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["state_key"] == *guest_user && e["content"]["membership"] == "knock")
            })
        })
        .await;
        guest
            .sync_until(guest_token, "the knock in the knocker's sync", |sync| {
                sync["rooms"]["knock"][&room].is_object()
            })
            .await;
        let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
        let (status, invited) = host
            .request(
                Method::POST,
                &invite,
                host_token,
                Some(json!({ "user_id": guest_user })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{invited}");
        guest
            .sync_until(guest_token, "the invite", |sync| {
                sync["rooms"]["invite"][&room].is_object()
            })
            .await;
        guest.join(guest_token, &room).await;
    }
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
