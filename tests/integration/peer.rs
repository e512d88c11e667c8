//! A homeserver in name only, for the federation tests: its own signing key (served over
//! TLS at `/_matrix/key/v2/server`, as kith fetches it) and kith's own federation client,
//! so its requests are properly signed and only their content is wrong; and helpers to
//! make a room to aim it at.

use std::sync::{Arc, Mutex};

use kith_federation::{FederationClient, FederationError, NewEvent, ServerKeys, Settings};
use kith_storage::Storage;
use reqwest::StatusCode;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, RoomVersionId, ServerName};
use serde_json::{Value, json};

use crate::common::Server;

/// A homeserver in name only: it signs with its key and serves that key, and keeps the
/// transactions sent to it (unchecked), nothing else.
pub struct Peer {
    pub name: String,
    pub keys: Arc<ServerKeys>,
    pub client: FederationClient,
    pub received: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

impl Peer {
    pub async fn start() -> Peer {
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

    pub async fn put(&self, to: &str, path: &str, body: &Value) -> Result<Value, FederationError> {
        let to = ServerName::parse(to).unwrap();
        self.client
            .send_json(&to, http::Method::PUT, path, Some(body))
            .await
    }

    /// `make_join` for `@mallory:<peer>` into the v12 `room` on `to`: the answer.
    pub async fn make_join(&self, to: &str, room: &str) -> Value {
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
    pub async fn send_join(&self, to: &str, room: &str, join: &kith_federation::Pdu) -> Value {
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
    pub async fn join(&self, to: &str, room: &str) -> (kith_federation::Pdu, Value) {
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
    pub async fn send(
        &self,
        to: &str,
        txn: &str,
        pdus: Vec<Value>,
    ) -> Result<Value, FederationError> {
        let body = json!({ "origin": self.name, "origin_server_ts": 1, "pdus": pdus });
        self.put(to, &format!("/_matrix/federation/v1/send/{txn}"), &body)
            .await
    }

    /// A message from `@mallory:<peer>` into the room, built on `prev` with `auth`.
    pub fn message(
        &self,
        room: &str,
        prev: &str,
        auth: &[&str],
        body: &str,
    ) -> (OwnedEventId, Value) {
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

pub fn status(result: &Result<Value, FederationError>) -> (StatusCode, String) {
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
pub async fn room(kith: &Server, token: &str) -> (String, String, Vec<String>) {
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

pub async fn bodies(kith: &Server, token: &str, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
    let (_, page) = kith.get(&path, Some(token)).await;
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Percent-encodes the sigils of IDs for a path.
pub fn encoded(id: &str) -> String {
    id.replace('$', "%24")
        .replace('!', "%21")
        .replace('#', "%23")
}
