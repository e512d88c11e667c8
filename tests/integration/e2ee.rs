//! The E2EE relay: device and one-time keys (signed for real), claims under concurrency,
//! cross-signing, signatures, send-to-device, and device-list changes in sync.

use reqwest::{Method, StatusCode};
use ruma::canonical_json::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server, assert_error};

/// An ed25519 key with its public half, signing as `ed25519:<id>`.
struct Signer {
    pair: Ed25519KeyPair,
    public: String,
}

impl Signer {
    fn new(id: &str) -> Signer {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, id.to_owned()).unwrap();
        let public =
            Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode();
        Signer { pair, public }
    }

    /// A cross-signing key, whose key ID is its own public key.
    fn cross() -> Signer {
        let der = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&der, String::new()).unwrap();
        let public =
            Base64::<ruma::serde::base64::Standard>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&der, public.clone()).unwrap();
        Signer { pair, public }
    }

    fn sign(&self, user: &str, mut object: Value) -> Value {
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
        sign_json(user, &self.pair, &mut canonical).unwrap();
        object["signatures"] = serde_json::to_value(&canonical["signatures"]).unwrap();
        object
    }
}

fn device_keys(user: &str, device: &str, signer: &Signer) -> Value {
    let keys = json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "curve", format!("ed25519:{device}"): signer.public },
    });
    signer.sign(user, keys)
}

async fn login_device(server: &Server, user: &str, device: &str) -> String {
    let (status, body) = server
        .login(user, PASSWORD, json!({ "device_id": device }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn keys_are_uploaded_signed_queried_and_claimed_once() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let bob_token = login_device(&server, "bob", "BOBPHONE").await;
    server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let device = Signer::new("BOBPHONE");

    // Bad uploads change nothing: another device's keys, a forged signature, an unsigned
    // key object.
    let upload = "/_matrix/client/v3/keys/upload";
    let other = device_keys(&bob, "OTHER", &device);
    let result = server
        .post(upload, Some(&bob_token), json!({ "device_keys": other }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut forged = device_keys(&bob, "BOBPHONE", &device);
    forged["keys"]["curve25519:BOBPHONE"] = "swapped".into();
    let result = server
        .post(upload, Some(&bob_token), json!({ "device_keys": forged }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut malformed = device_keys(&bob, "BOBPHONE", &device);
    malformed["unsigned"] = "not an object".into();
    let result = server
        .post(
            upload,
            Some(&bob_token),
            json!({ "device_keys": malformed }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let keys = device_keys(&bob, "BOBPHONE", &device);
    let bare = json!({ "device_keys": keys, "one_time_keys": { "signed_curve25519:X": "k" } });
    let result = server.post(upload, Some(&bob_token), bare).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unsigned =
        json!({ "device_keys": keys, "one_time_keys": { "signed_curve25519:X": { "key": "k" } } });
    let result = server.post(upload, Some(&bob_token), unsigned).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let query = json!({ "device_keys": { bob.clone(): [] } });
    let (_, none) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&alice_token),
            query.clone(),
        )
        .await;
    assert_eq!(none["device_keys"][&bob], json!({}));

    // Device keys, three signed one-time keys and a fallback key.
    let mut one_time = serde_json::Map::new();
    for i in 0..3 {
        let key = device.sign(&bob, json!({ "key": format!("otk{i}") }));
        one_time.insert(format!("signed_curve25519:K{i}"), key);
    }
    let fallback = device.sign(&bob, json!({ "key": "fallback", "fallback": true }));
    let body = json!({
        "device_keys": keys, "one_time_keys": one_time,
        "fallback_keys": { "signed_curve25519:F": fallback.clone() },
    });
    let (status, counts) = server.post(upload, Some(&bob_token), body).await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 3);
    let (_, found) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&alice_token),
            query.clone(),
        )
        .await;
    // Exactly what the device uploaded, its display name added under `unsigned` as the
    // spec says, and the same answer every time: clients compare what they get.
    let mut served = found["device_keys"][&bob]["BOBPHONE"].clone();
    let unsigned = served.as_object_mut().unwrap().remove("unsigned").unwrap();
    assert_eq!(served, keys);
    assert_eq!(unsigned, json!({}));
    let body = json!({ "display_name": "Bob's phone" });
    let path = "/_matrix/client/v3/devices/BOBPHONE";
    let (status, named) = server.put(path, Some(&bob_token), body).await;
    assert_eq!(status, StatusCode::OK, "{named}");
    let (_, found) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&alice_token),
            query.clone(),
        )
        .await;
    let name = &found["device_keys"][&bob]["BOBPHONE"]["unsigned"]["device_display_name"];
    assert_eq!(name, "Bob's phone");
    let (_, again) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&alice_token),
            query.clone(),
        )
        .await;
    assert_eq!(again["device_keys"], found["device_keys"]);

    // Ten claims at once: the three keys once each, then the fallback.
    let mut claims = Vec::new();
    for _ in 0..10 {
        let (http, base, token, bob) = (
            server.http.clone(),
            server.base.clone(),
            alice_token.clone(),
            bob.clone(),
        );
        claims.push(tokio::spawn(async move {
            let body =
                json!({ "one_time_keys": { bob.clone(): { "BOBPHONE": "signed_curve25519" } } });
            let response = http
                .post(format!("{base}/_matrix/client/v3/keys/claim"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let claimed: Value = response.json().await.unwrap();
            let keys = claimed["one_time_keys"][&bob]["BOBPHONE"]
                .as_object()
                .unwrap()
                .clone();
            keys.keys().next().unwrap().clone()
        }));
    }
    let mut ids = Vec::new();
    for claim in claims {
        ids.push(claim.await.unwrap());
    }
    ids.sort();
    let mut expected = vec![
        "signed_curve25519:K0",
        "signed_curve25519:K1",
        "signed_curve25519:K2",
    ];
    expected.extend(["signed_curve25519:F"; 7]);
    expected.sort();
    assert_eq!(ids, expected);
    let view = server.sync(&bob_token, None, 0).await;
    assert_eq!(view["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(view["device_unused_fallback_key_types"], json!([]));
    // The same fallback key uploaded again (a retry) is still used up.
    let again = json!({ "fallback_keys": { "signed_curve25519:F": fallback } });
    assert_eq!(
        server.post(upload, Some(&bob_token), again).await.0,
        StatusCode::OK
    );
    let view = server.sync(&bob_token, None, 0).await;
    assert_eq!(view["device_unused_fallback_key_types"], json!([]));
}

#[tokio::test]
async fn to_device_messages_arrive_once_and_device_lists_follow_changes() {
    // A small body limit, so the oversized payload below is small too.
    let server = Server::start(&[("KITH_LIMITS__MAX_REQUEST_SIZE", "65536")]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let bob_token = login_device(&server, "bob", "BOBPHONE").await;
    server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let bob_since = server.sync(&bob_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice_since = server.sync(&alice_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A message to Bob's phone and one to all his devices; the replay adds nothing; an
    // unknown device gets nothing.
    let send = |txn: &str| format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}");
    let messages =
        json!({ "messages": { bob.clone(): { "BOBPHONE": { "n": 1 }, "NOSUCH": { "n": 0 } } } });
    assert_eq!(
        server
            .put(&send("t1"), Some(&alice_token), messages.clone())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .put(&send("t1"), Some(&alice_token), messages)
            .await
            .0,
        StatusCode::OK
    );
    let all = json!({ "messages": { bob.clone(): { "*": { "n": 2 } } } });
    assert_eq!(
        server.put(&send("t2"), Some(&alice_token), all).await.0,
        StatusCode::OK
    );
    let got = server.sync(&bob_token, Some(&bob_since), 5000).await;
    let events = got["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let numbers: Vec<&Value> = events.iter().map(|e| &e["content"]["n"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2)], "{got}");
    assert_eq!(events[0]["sender"], alice.as_str());
    assert_eq!(events[0]["type"], "m.room_key_request");
    let again = server.sync(&bob_token, got["next_batch"].as_str(), 0).await;
    assert!(
        again["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{again}"
    );
    // Unknown users get nothing (and break nobody's batch); a huge payload is refused.
    let ghost = json!({ "messages": { "@ghost:kith.test": { "*": { "n": 3 } } } });
    assert_eq!(
        server.put(&send("t3"), Some(&alice_token), ghost).await.0,
        StatusCode::OK
    );
    let huge = json!({ "messages": { bob.clone(): { "*": { "pad": "x".repeat(70_000) } } } });
    let result = server.put(&send("t4"), Some(&alice_token), huge).await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    let quiet = server
        .sync(&bob_token, again["next_batch"].as_str(), 0)
        .await;
    assert!(
        quiet["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{quiet}"
    );

    // A new device of Bob's and new keys show in Alice's device lists; his logout too.
    let laptop = login_device(&server, "bob", "BOBLAPTOP").await;
    let changed = server.sync(&alice_token, Some(&alice_since), 5000).await;
    assert_eq!(
        changed["device_lists"]["changed"],
        json!([bob]),
        "{changed}"
    );
    let since = changed["next_batch"].as_str().unwrap().to_owned();
    let signer = Signer::new("BOBLAPTOP");
    let body = json!({ "device_keys": device_keys(&bob, "BOBLAPTOP", &signer) });
    assert_eq!(
        server
            .post("/_matrix/client/v3/keys/upload", Some(&laptop), body)
            .await
            .0,
        StatusCode::OK
    );
    let changed = server.sync(&alice_token, Some(&since), 5000).await;
    assert_eq!(changed["device_lists"]["changed"], json!([bob]));
    let since = changed["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some(&laptop),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = server.sync(&alice_token, Some(&since), 5000).await;
    assert_eq!(changed["device_lists"]["changed"], json!([bob]));
    let query = json!({ "device_keys": { bob.clone(): [] } });
    let (_, found) = server
        .post("/_matrix/client/v3/keys/query", Some(&alice_token), query)
        .await;
    assert!(
        found["device_keys"][&bob].get("BOBLAPTOP").is_none(),
        "{found}"
    );

    // Once Bob leaves their only room, Alice stops tracking him.
    let since = changed["next_batch"].as_str().unwrap().to_owned();
    let rooms = server
        .get("/_matrix/client/v3/joined_rooms", Some(&bob_token))
        .await
        .1;
    let room = rooms["joined_rooms"][0].as_str().unwrap().to_owned();
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    assert_eq!(
        server.post(&leave, Some(&bob_token), json!({})).await.0,
        StatusCode::OK
    );
    let left = server.sync(&alice_token, Some(&since), 5000).await;
    assert_eq!(left["device_lists"]["left"], json!([bob]), "{left}");
}

#[tokio::test]
async fn cross_signing_keys_and_signatures() {
    let server = Server::start(&[]);
    let (bob, _) = server.user("bob").await;
    let (_, alice_token) = server.user("alice").await;
    let bob_token = login_device(&server, "bob", "BOBPHONE").await;
    let device = Signer::new("BOBPHONE");
    let keys = device_keys(&bob, "BOBPHONE", &device);
    let body = json!({ "device_keys": keys });
    assert_eq!(
        server
            .post("/_matrix/client/v3/keys/upload", Some(&bob_token), body)
            .await
            .0,
        StatusCode::OK
    );

    let cross_key = |signer: &Signer, usage: &str| json!({ "user_id": bob, "usage": [usage], "keys": { format!("ed25519:{}", signer.public): signer.public } });
    let (master, self_signer) = (Signer::cross(), Signer::cross());
    let master_key = cross_key(&master, "master");
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    let unsigned = json!({ "master_key": master_key, "self_signing_key": cross_key(&self_signer, "self_signing") });
    let result = server.post(upload, Some(&bob_token), unsigned).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // The first upload needs no password.
    let self_signing = master.sign(&bob, cross_key(&self_signer, "self_signing"));
    let body = json!({ "master_key": master_key, "self_signing_key": self_signing });
    let (status, done) = server.post(upload, Some(&bob_token), body).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let query = json!({ "device_keys": { bob.clone(): [] } });
    let (_, found) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&alice_token),
            query.clone(),
        )
        .await;
    assert_eq!(found["master_keys"][&bob]["keys"], master_key["keys"]);
    assert_eq!(
        found["self_signing_keys"][&bob]["usage"],
        json!(["self_signing"])
    );

    // Bob's self-signing key signs his device; a forged signature is a failure.
    let signed = self_signer.sign(&bob, keys.clone());
    let body = json!({ bob.clone(): { "BOBPHONE": signed } });
    let (status, result) = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            Some(&bob_token),
            body,
        )
        .await;
    assert_eq!(
        (status, &result["failures"]),
        (StatusCode::OK, &json!({})),
        "{result}"
    );
    let (_, found) = server
        .post("/_matrix/client/v3/keys/query", Some(&alice_token), query)
        .await;
    let signer_id = format!("ed25519:{}", self_signer.public);
    assert!(
        found["device_keys"][&bob]["BOBPHONE"]["signatures"][&bob][&signer_id].is_string(),
        "{found}"
    );
    let mut forged = self_signer.sign(&bob, keys.clone());
    forged["signatures"][&bob][&signer_id] = "AAAA".into();
    let body = json!({ bob.clone(): { "BOBPHONE": forged } });
    let (_, result) = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            Some(&bob_token),
            body,
        )
        .await;
    assert_eq!(
        result["failures"][&bob]["BOBPHONE"]["errcode"], "M_INVALID_SIGNATURE",
        "{result}"
    );

    // Alice may not sign Bob's devices; the same keys again change nothing and need no
    // password; a new self-signing key does need it.
    let body = json!({ bob.clone(): { "BOBPHONE": keys.clone() } });
    let signatures = "/_matrix/client/v3/keys/signatures/upload";
    let (_, result) = server.post(signatures, Some(&alice_token), body).await;
    assert!(result["failures"][&bob]["BOBPHONE"].is_object(), "{result}");
    let same = json!({ "master_key": master_key, "self_signing_key": self_signing });
    assert_eq!(
        server.post(upload, Some(&bob_token), same).await.0,
        StatusCode::OK
    );
    let other_self = Signer::cross();
    let other = master.sign(&bob, cross_key(&other_self, "self_signing"));
    let (status, _) = server
        .post(
            upload,
            Some(&bob_token),
            json!({ "self_signing_key": other }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Replacing the master key needs the password (UIA).
    let new_master = Signer::cross();
    let body = json!({ "master_key": cross_key(&new_master, "master") });
    let (status, challenge) = server.post(upload, Some(&bob_token), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(challenge["flows"][0]["stages"], json!(["m.login.password"]));
    let mut with_auth = body;
    with_auth["auth"] = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": PASSWORD, "session": challenge["session"] });
    let (status, done) = server.post(upload, Some(&bob_token), with_auth).await;
    assert_eq!(status, StatusCode::OK, "{done}");
}

#[tokio::test]
async fn key_backup_keeps_the_better_key_in_the_current_version() {
    let server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (_, other) = server.user("bob").await;
    let versions = "/_matrix/client/v3/room_keys/version";
    assert_error(
        &server.get(versions, Some(&token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let algorithm = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "abc" } });
    let (status, created) = server.post(versions, Some(&token), algorithm.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let v1 = created["version"].as_str().unwrap().to_owned();

    let key = |index: u64, verified: bool| json!({ "first_message_index": index, "forwarded_count": 0, "is_verified": verified, "session_data": { "ciphertext": format!("c{index}{verified}") } });
    let path = |room: &str, session: &str, version: &str| {
        format!("/_matrix/client/v3/room_keys/keys/{room}/{session}?version={version}")
    };
    let (status, put) = server
        .put(
            &path("!r:kith.test", "s1", &v1),
            Some(&token),
            key(5, false),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["count"], 1);
    // A later index does not replace an earlier one; a verified key does.
    server
        .put(
            &path("!r:kith.test", "s1", &v1),
            Some(&token),
            key(9, false),
        )
        .await;
    let (_, stored) = server
        .get(&path("!r:kith.test", "s1", &v1), Some(&token))
        .await;
    assert_eq!(stored["first_message_index"], 5);
    server
        .put(&path("!r:kith.test", "s1", &v1), Some(&token), key(7, true))
        .await;
    let (_, stored) = server
        .get(&path("!r:kith.test", "s1", &v1), Some(&token))
        .await;
    assert_eq!(
        (
            stored["first_message_index"].clone(),
            stored["is_verified"].clone()
        ),
        (json!(7), json!(true))
    );
    let all = format!("/_matrix/client/v3/room_keys/keys?version={v1}");
    let body = json!({ "rooms": { "!q:kith.test": { "sessions": { "s2": key(0, false) } } } });
    let (_, put) = server.put(&all, Some(&token), body).await;
    assert_eq!(put["count"], 2);
    let (_, info) = server.get(versions, Some(&token)).await;
    assert_eq!(
        (info["version"].as_str(), info["count"].as_u64()),
        (Some(v1.as_str()), Some(2))
    );
    let (_, everything) = server.get(&all, Some(&token)).await;
    assert!(
        everything["rooms"]["!q:kith.test"]["sessions"]["s2"].is_object(),
        "{everything}"
    );

    // Another user sees none of it; a newer version takes over; the old one takes no keys.
    assert_error(
        &server.get(&all, Some(&other)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, created) = server.post(versions, Some(&token), algorithm).await;
    let v2 = created["version"].as_str().unwrap().to_owned();
    let result = server
        .put(
            &path("!r:kith.test", "s3", &v1),
            Some(&token),
            key(0, false),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(result.1["current_version"], v2.as_str());
    let missing = server
        .get(&path("!r:kith.test", "nope", &v1), Some(&token))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{versions}/{v2}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, info) = server.get(versions, Some(&token)).await;
    assert_eq!(info["version"], v1.as_str());
}
