//! What kith does with bad federation input, sent by a peer made of real parts: its own
//! signing key (served over TLS at `/_matrix/key/v2/server`, as kith fetches it) and
//! kith's own federation client, so its requests are properly signed and only their
//! content is wrong.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kith_federation::{FederationClient, FederationError, NewEvent, ServerKeys, Settings};
use kith_storage::Storage;
use reqwest::StatusCode;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, RoomVersionId, ServerName};
use serde_json::{Value, json};

use crate::common::Server;

/// A homeserver in name only: it signs with its key and serves that key, and keeps the
/// transactions sent to it (unchecked), nothing else.
struct Peer {
    name: String,
    keys: Arc<ServerKeys>,
    client: FederationClient,
    received: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

impl Peer {
    async fn start() -> Peer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("db")).unwrap();
        let keys = Arc::new(ServerKeys::load_or_generate(&storage, &name).unwrap());
        let served = Arc::clone(&keys);
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        let router = axum::Router::new()
            .route(
                "/_matrix/key/v2/server",
                axum::routing::get(move || async move { axum::Json(served.key_document()) }),
            )
            .route(
                "/_matrix/federation/v1/send/{txn}",
                axum::routing::put(move |axum::Json(body): axum::Json<Value>| async move {
                    kept.lock().unwrap().push(body);
                    axum::Json(json!({ "pdus": {} }))
                }),
            );
        crate::common::serve_tls(listener, router).await;
        let settings = Settings {
            verify_certificates: false,
            ..Settings::default()
        };
        let client = FederationClient::new(storage, Arc::clone(&keys), settings).unwrap();
        Peer {
            name,
            keys,
            client,
            received,
            _dir: dir,
        }
    }

    async fn put(&self, to: &str, path: &str, body: &Value) -> Result<Value, FederationError> {
        let to = ServerName::parse(to).unwrap();
        self.client
            .send_json(&to, http::Method::PUT, path, Some(body))
            .await
    }

    /// `make_join` for `@mallory:<peer>` into the v12 `room` on `to`: the answer.
    async fn make_join(&self, to: &str, room: &str) -> Value {
        let to = ServerName::parse(to).unwrap();
        let user = format!("@mallory:{}", self.name);
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{user}?ver=12",
            encoded(room)
        );
        self.client
            .send_json(&to, http::Method::GET, &path, None)
            .await
            .unwrap()
    }

    /// `send_join` of the signed `join` into `room` on `to`: the answer.
    async fn send_join(&self, to: &str, room: &str, join: &kith_federation::Pdu) -> Value {
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            encoded(room),
            encoded(join.event_id.as_str())
        );
        self.put(to, &path, &serde_json::to_value(&join.json).unwrap())
            .await
            .unwrap()
    }

    /// `@mallory:<peer>` joins `room` on `to`: the join and `send_join`'s answer.
    async fn join(&self, to: &str, room: &str) -> (kith_federation::Pdu, Value) {
        let made = self.make_join(to, room).await;
        assert_eq!(made["room_version"], "12", "{made}");
        let mut template: ruma::CanonicalJsonObject =
            serde_json::from_value(made["event"].clone()).unwrap();
        template.insert(
            "origin_server_ts".into(),
            ruma::UInt::from(1_800_000_000u32).into(),
        );
        let join = self
            .keys
            .sign_new_pdu(&RoomVersionId::V12, template)
            .unwrap();
        let joined = self.send_join(to, room, &join).await;
        (join, joined)
    }

    /// A transaction of these PDUs under `txn`.
    async fn send(&self, to: &str, txn: &str, pdus: Vec<Value>) -> Result<Value, FederationError> {
        let body = json!({ "origin": self.name, "origin_server_ts": 1, "pdus": pdus });
        self.put(to, &format!("/_matrix/federation/v1/send/{txn}"), &body)
            .await
    }

    /// A message from `@mallory:<peer>` into the room, built on `prev` with `auth`.
    fn message(&self, room: &str, prev: &str, auth: &[&str], body: &str) -> (OwnedEventId, Value) {
        let event = NewEvent {
            room_id: Some(room.try_into().unwrap()),
            sender: format!("@mallory:{}", self.name).try_into().unwrap(),
            kind: TimelineEventType::RoomMessage,
            state_key: None,
            content: json!({ "msgtype": "m.text", "body": body }),
            prev_events: vec![prev.try_into().unwrap()],
            auth_events: auth.iter().map(|id| (*id).try_into().unwrap()).collect(),
            depth: 10,
            origin_server_ts: 1_800_000_000_000,
            redacts: None,
        };
        let pdu = self.keys.build_pdu(&RoomVersionId::V12, event).unwrap();
        (pdu.event_id, serde_json::to_value(&pdu.json).unwrap())
    }
}

fn status(result: &Result<Value, FederationError>) -> (StatusCode, String) {
    match result {
        Err(FederationError::Remote {
            status,
            errcode,
            error,
            ..
        }) => {
            eprintln!("{status} {errcode}: {error}");
            (
                StatusCode::from_u16(status.as_u16()).unwrap(),
                errcode.clone(),
            )
        }
        Ok(_) => (StatusCode::OK, String::new()),
        Err(other) => panic!("{other}"),
    }
}

/// A public v12 room alice made on `kith`: (room ID, the events to build on and cite).
async fn room(kith: &Server, token: &str) -> (String, String, Vec<String>) {
    let body = json!({ "preset": "public_chat", "room_version": "12" });
    let (status, created) = kith
        .post("/_matrix/client/v3/createRoom", Some(token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (_, state) = kith
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(token),
        )
        .await;
    let id_of = |kind: &str| {
        state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let auth = vec![id_of("m.room.power_levels"), id_of("m.room.join_rules")];
    let (_, page) = kith
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            Some(token),
        )
        .await;
    let head = page["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    (room, head, auth)
}

async fn bodies(kith: &Server, token: &str, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
    let (_, page) = kith.get(&path, Some(token)).await;
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn bad_events_and_transactions_are_refused_and_change_nothing() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, head, auth) = (room(&kith, &token)).await;
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();

    // Someone who never joined cannot speak: the PDU fails the auth rules.
    let (intruder, pdu) = peer.message(&room, &head, &auth, "not a member");
    let answer = peer.send(&name, "t1", vec![pdu.clone()]).await.unwrap();
    let error = &answer["pdus"][intruder.as_str()]["error"];
    assert!(error.is_string(), "{answer}");

    // A replayed transaction gets the same answer and is not applied again.
    let again = peer.send(&name, "t1", vec![]).await.unwrap();
    assert_eq!(again, answer);

    // A signature that does not hold: refused.
    let (forged, mut pdu) = peer.message(&room, &head, &auth, "forged");
    let signatures = pdu["signatures"][&peer.name].as_object_mut().unwrap();
    for sig in signatures.values_mut() {
        *sig = json!("a".repeat(86));
    }
    let answer = peer.send(&name, "t2", vec![pdu]).await.unwrap();
    assert!(
        answer["pdus"][forged.as_str()]["error"].is_string(),
        "{answer}"
    );

    // More than 50 PDUs in one transaction: 400, nothing applied.
    let many: Vec<Value> = (0..51).map(|_| json!({})).collect();
    let (code, errcode) = status(&peer.send(&name, "t3", many).await);
    assert_eq!(
        (code, errcode.as_str()),
        (StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );

    // A transaction claiming another origin than its signer: 403.
    let body = json!({ "origin": "elsewhere.example", "origin_server_ts": 1, "pdus": [] });
    let result = peer
        .put(&name, "/_matrix/federation/v1/send/t4", &body)
        .await;
    assert_eq!(status(&result).0, StatusCode::FORBIDDEN);

    // An invite in a room version kith does not speak.
    let (invite_id, mut invite) = peer.message(&room, &head, &auth, "invite");
    invite["type"] = json!("m.room.member");
    invite["state_key"] = json!(format!("@alice:{name}"));
    let body = json!({ "room_version": "1", "event": invite, "invite_room_state": [] });
    let path = format!("/_matrix/federation/v2/invite/{room}/{invite_id}");
    let (code, errcode) = status(&peer.put(&name, &path, &body).await);
    assert_eq!(
        (code, errcode.as_str()),
        (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION")
    );

    // A server with no one in the room reads nothing of it.
    let to = ServerName::parse(name.as_str()).unwrap();
    for (method, path, body) in [
        (
            http::Method::GET,
            format!("/_matrix/federation/v1/event/{head}"),
            None,
        ),
        (
            http::Method::GET,
            format!("/_matrix/federation/v1/event_auth/{room}/{head}"),
            None,
        ),
        (
            http::Method::GET,
            format!("/_matrix/federation/v1/backfill/{room}?v={head}&limit=10"),
            None,
        ),
        (
            http::Method::POST,
            format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({ "earliest_events": [], "latest_events": [head], "limit": 10 })),
        ),
    ] {
        let result = peer
            .client
            .send_json(
                &to,
                method,
                &path.replace('$', "%24").replace('!', "%21"),
                body.as_ref(),
            )
            .await;
        let (code, _) = status(&result);
        assert!(matches!(code.as_u16(), 403 | 404), "{path}: {code}");
    }

    // Nothing of it reached the room.
    let seen = bodies(&kith, &token, &room).await;
    assert!(seen.is_empty(), "{seen:?}");
    kith.assert_events_verify();
}

/// Percent-encodes the sigils of IDs for a path.
fn encoded(id: &str) -> String {
    id.replace('$', "%24")
        .replace('!', "%21")
        .replace('#', "%23")
}

/// A server that joins a public room (make_join, sign, send_join) reads its state before
/// any event (`/state_ids`, `/state`, the join not included), its auth chains and its
/// history.
#[tokio::test]
async fn a_server_that_joined_reads_state_and_history() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _head, _) = room(&kith, &token).await;
    let to = ServerName::parse(name.as_str()).unwrap();
    let user = format!("@mallory:{}", peer.name);
    let (join, joined) = peer.join(&name, &room).await;
    let state = joined["state"].as_array().unwrap();
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "{joined}"
    );

    let event = encoded(join.event_id.as_str());
    let path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={event}",
        encoded(&room)
    );
    let ids = peer
        .client
        .send_json(&to, http::Method::GET, &path, None)
        .await
        .unwrap();
    let pdu_ids = ids["pdu_ids"].as_array().unwrap();
    assert_eq!(pdu_ids.len(), state.len(), "{ids}");
    assert!(!pdu_ids.contains(&json!(join.event_id)), "{ids}");
    assert!(
        !ids["auth_chain_ids"].as_array().unwrap().is_empty(),
        "{ids}"
    );
    let path = format!(
        "/_matrix/federation/v1/state/{}?event_id={event}",
        encoded(&room)
    );
    let whole = peer
        .client
        .send_json(&to, http::Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(
        whole["pdus"].as_array().unwrap().len(),
        pdu_ids.len(),
        "{whole}"
    );
    for path in [
        format!("/_matrix/federation/v1/event/{event}"),
        format!(
            "/_matrix/federation/v1/event_auth/{}/{event}",
            encoded(&room)
        ),
        format!(
            "/_matrix/federation/v1/backfill/{}?v={event}&limit=5",
            encoded(&room)
        ),
    ] {
        let found = peer
            .client
            .send_json(&to, http::Method::GET, &path, None)
            .await;
        assert!(found.is_ok(), "{path}: {found:?}");
    }

    // alice bans mallory; a message mallory's server then builds on the history from
    // before the ban passes against the state before it, but not against the room's
    // state now: soft-failed, so kept and answered without error, but never shown.
    let path = format!("/_matrix/client/v3/rooms/{room}/ban");
    let (status, banned) = kith
        .post(&path, Some(&token), json!({ "user_id": user }))
        .await;
    assert_eq!(status, StatusCode::OK, "{banned}");
    let power_levels = state
        .iter()
        .find(|e| e["type"] == "m.room.power_levels")
        .map(|e| {
            let object = serde_json::from_value(e.clone()).unwrap();
            kith_federation::Pdu::received(&RoomVersionId::V12, object)
                .unwrap()
                .event_id
        })
        .unwrap();
    let late = NewEvent {
        room_id: Some(room.as_str().try_into().unwrap()),
        sender: user.as_str().try_into().unwrap(),
        kind: TimelineEventType::RoomMessage,
        state_key: None,
        content: json!({ "msgtype": "m.text", "body": "sent before I knew" }),
        prev_events: vec![join.event_id.clone()],
        auth_events: vec![power_levels, join.event_id.clone()],
        depth: u64::from(join.depth) + 1,
        origin_server_ts: 1_800_000_000_001,
        redacts: None,
    };
    let late = peer.keys.build_pdu(&RoomVersionId::V12, late).unwrap();
    let pdu = serde_json::to_value(&late.json).unwrap();
    let answer = peer.send(&name, "late1", vec![pdu]).await.unwrap();
    assert_eq!(
        answer["pdus"][late.event_id.as_str()],
        json!({}),
        "{answer}"
    );
    let seen = bodies(&kith, &token, &room).await;
    assert!(!seen.contains(&"sent before I knew".to_owned()), "{seen:?}");
    kith.assert_events_verify();
}

/// A message alice sends while mallory's server is joining (after `make_join`, before
/// `send_join`) is named by no event that server gets: kith sends it along with the join,
/// or mallory would never see it (Element's first message of a direct chat, racing the
/// invitee's acceptance).
#[tokio::test]
async fn a_message_sent_while_a_server_joins_reaches_it() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _head, _) = room(&kith, &token).await;
    let made = peer.make_join(&name, &room).await;
    let racing = kith.say(&token, &room, "said while you joined").await;
    let template: ruma::CanonicalJsonObject =
        serde_json::from_value(made["event"].clone()).unwrap();
    let join = peer
        .keys
        .sign_new_pdu(&RoomVersionId::V12, template)
        .unwrap();
    assert!(
        !join.prev_events.iter().any(|p| p.as_str() == racing),
        "the join was made before the message"
    );
    peer.send_join(&name, &room, &join).await;
    let sent_to_peer = |id: &str| {
        peer.received.lock().unwrap().iter().any(|txn| {
            txn["pdus"].as_array().is_some_and(|pdus| {
                pdus.iter().any(|pdu| {
                    let object = serde_json::from_value(pdu.clone()).unwrap();
                    kith_federation::Pdu::received(&RoomVersionId::V12, object)
                        .is_ok_and(|p| p.event_id == id)
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sent_to_peer(&racing) {
        assert!(
            Instant::now() < deadline,
            "the racing message never reached the peer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And what follows reaches it as usual.
    let after = kith.say(&token, &room, "and after").await;
    while !sent_to_peer(&after) {
        assert!(
            Instant::now() < deadline,
            "the next message never reached the peer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A transaction retried while the first try is still being applied (a peer that timed
/// out and sent it again) is applied once: its to-device message reaches the device once.
#[tokio::test]
async fn a_transaction_sent_twice_at_once_is_applied_once() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (bob, token) = kith.user("bob").await;
    let edu = |i: usize| {
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": format!("@mallory:{}", peer.name), "type": "m.test",
            "message_id": format!("m{i}"),
            "messages": { bob.clone(): { "*": { "n": i } } },
        }})
    };
    // Many EDUs make the first try take a while, so the retries come while it runs.
    let body = json!({
        "origin": peer.name, "origin_server_ts": 1, "pdus": [],
        "edus": (0..100).map(edu).collect::<Vec<_>>(),
    });
    let tries = (0..4).map(|_| peer.put(&name, "/_matrix/federation/v1/send/once", &body));
    for answer in futures_util::future::join_all(tries).await {
        answer.expect("each try is answered");
    }
    let synced = kith.sync(&token, None, 0).await;
    let events = synced["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen: Vec<u64> = events
        .iter()
        .filter_map(|e| e["content"]["n"].as_u64())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<u64>>(), "each message once");
}

/// A room's `m.room.server_acl` shuts a server out: its events are refused, it reads
/// nothing more of the room, and it cannot join again; other servers are not affected.
#[tokio::test]
async fn a_server_the_room_acl_denies_is_shut_out() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _, auth) = room(&kith, &token).await;
    let (join, _) = peer.join(&name, &room).await;
    let get = |path: String| {
        let to = ServerName::parse(name.as_str()).unwrap();
        let client = &peer.client;
        async move { client.send_json(&to, http::Method::GET, &path, None).await }
    };
    let event = encoded(join.event_id.as_str());
    let reads = || {
        [
            format!("/_matrix/federation/v1/event/{event}"),
            format!(
                "/_matrix/federation/v1/backfill/{}?v={event}&limit=5",
                encoded(&room)
            ),
            format!(
                "/_matrix/federation/v1/state_ids/{}?event_id={event}",
                encoded(&room)
            ),
        ]
    };
    for path in reads() {
        assert!(get(path.clone()).await.is_ok(), "{path} before the ACL");
    }

    // The peer is 127.0.0.1:<port>: an IP literal, which this ACL refuses.
    let acl = json!({ "allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": false });
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/");
    let (code, set) = kith.put(&path, Some(&token), acl).await;
    assert_eq!(code, StatusCode::OK, "{set}");

    for path in reads() {
        let refused = get(path.clone()).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.answered()),
            "{path}: {refused:?}"
        );
    }
    let mut auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    auth.push(join.event_id.as_str());
    let (id, pdu) = peer.message(&room, join.event_id.as_str(), &auth, "after the ACL");
    let answer = peer.send(&name, "acl1", vec![pdu]).await.unwrap();
    assert!(answer["pdus"][id.as_str()]["error"].is_string(), "{answer}");
    assert!(
        !bodies(&kith, &token, &room)
            .await
            .contains(&"after the ACL".to_owned())
    );
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/@mallory:{}?ver=12",
        encoded(&room),
        peer.name
    );
    assert_eq!(status(&get(path).await).0, StatusCode::FORBIDDEN);
}

/// Under `dm_only`, a direct-chat invite from a server without friend requests is held as
/// one, which counts against the inviter's and the server's friend-request allowance —
/// but only once it is checked: invites that fail their signature check take nothing, so
/// forged ones cannot use up the allowance a real one needs.
#[tokio::test]
async fn forged_invites_take_no_friend_request_allowance() {
    let (kith, name) = Server::federated(&[(crate::common::POLICY, "dm_only")]);
    let peer = Peer::start().await;
    let (bob, _) = kith.user("bob").await;
    let invite = |n: u32| {
        let event = NewEvent {
            room_id: Some(format!("!room{n}").as_str().try_into().unwrap()),
            sender: format!("@mallory:{}", peer.name).try_into().unwrap(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(bob.clone()),
            content: json!({ "membership": "invite", "is_direct": true }),
            prev_events: vec![],
            auth_events: vec![],
            depth: 3,
            origin_server_ts: 1_800_000_000_000,
            redacts: None,
        };
        peer.keys.build_pdu(&RoomVersionId::V12, event).unwrap()
    };
    let send = |pdu: kith_federation::Pdu, json: Value| {
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encoded(pdu.room_id.as_deref().unwrap().as_str()),
            encoded(pdu.event_id.as_str())
        );
        let body = json!({ "room_version": "12", "event": json, "invite_room_state": [] });
        let (peer, name) = (&peer, &name);
        async move { status(&peer.put(name, &path, &body).await) }
    };
    for n in 0..25 {
        let pdu = invite(n);
        let mut forged = serde_json::to_value(&pdu.json).unwrap();
        forged["origin_server_ts"] = json!(1_800_000_000_001u64 + u64::from(n));
        assert_eq!(
            send(pdu, forged).await.0,
            StatusCode::FORBIDDEN,
            "forged invite {n}"
        );
    }
    let real = invite(100);
    let json = serde_json::to_value(&real.json).unwrap();
    assert_eq!(
        send(real, json).await.0,
        StatusCode::OK,
        "the real invite is held"
    );
}

/// Another server reads history as its users could: in a room whose history is visible
/// only to those joined, what was said before its user joined comes redacted (the room's
/// history stays whole, its content does not leak), what came after comes whole.
#[tokio::test]
async fn a_server_reads_only_the_history_its_users_could() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _, _) = room(&kith, &token).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/");
    let (code, _) = kith
        .put(
            &path,
            Some(&token),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let before = kith.say(&token, &room, "before the peer").await;
    let (join, _) = peer.join(&name, &room).await;
    let after = kith.say(&token, &room, "after the peer").await;
    let to = ServerName::parse(name.as_str()).unwrap();
    let get = |path: String| {
        let (client, to) = (&peer.client, &to);
        async move {
            client
                .send_json(to, http::Method::GET, &path, None)
                .await
                .unwrap()
        }
    };
    let body_of = |pdu: &Value| pdu["content"]["body"].as_str().map(str::to_owned);
    let event = get(format!("/_matrix/federation/v1/event/{}", encoded(&before))).await;
    assert_eq!(body_of(&event["pdus"][0]), None, "redacted: {event}");
    assert_eq!(event["pdus"][0]["type"], "m.room.message");
    let event = get(format!("/_matrix/federation/v1/event/{}", encoded(&after))).await;
    assert_eq!(
        body_of(&event["pdus"][0]).as_deref(),
        Some("after the peer")
    );
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
        encoded(&room),
        encoded(&after)
    );
    let pdus = get(path).await["pdus"].as_array().cloned().unwrap();
    let bodies: Vec<_> = pdus
        .iter()
        .filter(|p| p["type"] == "m.room.message")
        .map(body_of)
        .collect();
    assert_eq!(
        bodies,
        [Some("after the peer".to_owned()), None],
        "{pdus:?}"
    );
    assert!(
        pdus.iter()
            .any(|p| p["type"] == "m.room.member" && p["state_key"] == join.sender.as_str())
    );
}

/// Federation input as a fuzzer would send it, all properly signed: malformed and
/// oversized transactions, a PDU whose content does not match its hash, EDUs about users
/// of other servers, an invite for a user who does not exist. Each is refused with the
/// right error, or (as the spec says for a bad content hash) taken in redacted, and nothing
/// else is stored.
#[tokio::test]
async fn fuzzed_federation_input_is_refused_and_stores_nothing() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (alice, token) = kith.user("alice").await;
    let (room, _, auth) = room(&kith, &token).await;
    let (join, _) = peer.join(&name, &room).await;
    let mallory = join.sender.to_string();

    let send = |txn: &str, body: Value| {
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let (peer, name) = (&peer, &name);
        async move { status(&peer.put(name, &path, &body).await) }
    };
    let wrong_types = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": "not a list" });
    assert_eq!(
        send("f1", wrong_types).await,
        (StatusCode::BAD_REQUEST, "M_BAD_JSON".into())
    );
    let wrong_ts = json!({ "origin": peer.name, "origin_server_ts": "yesterday", "pdus": [] });
    assert_eq!(send("f2", wrong_ts).await.0, StatusCode::BAD_REQUEST);
    let huge = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": [],
        "edus": [{ "edu_type": "m.x", "content": { "pad": "x".repeat(9 << 20) } }] });
    assert_eq!(
        send("f3", huge).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE".into())
    );

    // A message whose content was changed after it was signed: kept redacted, as the spec
    // says of a content hash that does not match, so what was changed is never shown.
    let mut auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    auth.push(join.event_id.as_str());
    let (id, mut pdu) = peer.message(&room, join.event_id.as_str(), &auth, "as signed");
    pdu["content"]["body"] = json!("tampered");
    let answer = peer.send(&name, "f4", vec![pdu]).await.unwrap();
    assert!(answer["pdus"][id.as_str()].is_object(), "{answer}");
    let shown = bodies(&kith, &token, &room).await;
    assert!(
        !shown.iter().any(|b| b == "tampered" || b == "as signed"),
        "{shown:?}"
    );

    // EDUs about users of another server are ignored; the same about the peer's own user
    // (joined to the room) are taken, which shows the ignored ones were not lost by chance.
    let typing = |user: &str| {
        json!({ "edu_type": "m.typing",
        "content": { "room_id": room, "user_id": user, "typing": true } })
    };
    let to_device = |sender: &str, n: u32| {
        json!({ "edu_type": "m.direct_to_device", "content": {
        "sender": sender, "type": "m.test", "message_id": format!("m{n}"),
        "messages": { alice.clone(): { "*": { "n": n } } } } })
    };
    let other = "@someone:elsewhere.example";
    let edus = vec![
        typing(other),
        to_device(other, 1),
        typing(&mallory),
        to_device(&mallory, 2),
    ];
    let body = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": [], "edus": edus });
    assert_eq!(send("f5", body).await.0, StatusCode::OK);
    let synced = kith.sync(&token, None, 0).await;
    let typing_now = &synced["rooms"]["join"][&room]["ephemeral"]["events"];
    let typers = typing_now
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "m.typing")
        .map(|e| e["content"]["user_ids"].clone());
    assert_eq!(typers, Some(json!([mallory])), "{typing_now}");
    let messages: Vec<_> = synced["to_device"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["sender"].clone(), e["content"]["n"].clone()))
        .collect();
    assert_eq!(messages, [(json!(mallory), json!(2))]);

    // An invite for someone who has no account here: 404, nothing kept.
    let stored_before = kith.assert_events_verify();
    let ghost = format!("@ghost:{name}");
    let event = NewEvent {
        room_id: Some("!elsewhere".try_into().unwrap()),
        sender: mallory.as_str().try_into().unwrap(),
        kind: TimelineEventType::RoomMember,
        state_key: Some(ghost.clone()),
        content: json!({ "membership": "invite" }),
        prev_events: vec![],
        auth_events: vec![],
        depth: 3,
        origin_server_ts: 1_800_000_000_000,
        redacts: None,
    };
    let invite = peer.keys.build_pdu(&RoomVersionId::V12, event).unwrap();
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        encoded("!elsewhere"),
        encoded(invite.event_id.as_str())
    );
    let body = json!({ "room_version": "12", "event": invite.json, "invite_room_state": [] });
    assert_eq!(
        status(&peer.put(&name, &path, &body).await).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        kith.assert_events_verify(),
        stored_before,
        "the refused invite was kept"
    );
}
