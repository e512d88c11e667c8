//! Synapse's Admin API on kith: the same calls against a real Synapse (from PyPI) and kith,
//! and the answers compared field by field (the same keys, the same JSON types where both
//! give a value), with the same errors for a non-admin and an unknown user.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server};
use crate::synapse::Synapse;

const SHARED_SECRET: &str = "kith-test-registration-secret";

/// Where two answers differ in shape: keys one has and the other lacks, values of other
/// JSON types (a `null` on either side matches anything). Arrays compare their first items.
fn differences(kith: &Value, synapse: &Value, at: &str, found: &mut Vec<String>) {
    match (kith, synapse) {
        (Value::Object(k), Value::Object(s)) => {
            for key in k.keys().filter(|key| !s.contains_key(*key)) {
                found.push(format!("{at}.{key}: only kith has it"));
            }
            for key in s.keys().filter(|key| !k.contains_key(*key)) {
                found.push(format!("{at}.{key}: only Synapse has it"));
            }
            for (key, value) in k {
                if let Some(other) = s.get(key) {
                    differences(value, other, &format!("{at}.{key}"), found);
                }
            }
        }
        (Value::Array(k), Value::Array(s)) => {
            if let (Some(k), Some(s)) = (k.first(), s.first()) {
                differences(k, s, &format!("{at}[0]"), found);
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        (k, s) => found.push(format!("{at}: kith gives {k}, Synapse {s}")),
    }
}

/// One call on both servers: the same status, and answers of the same shape.
pub(crate) struct Both<'a> {
    pub kith: &'a Server,
    pub synapse: &'a Synapse,
    pub kith_token: String,
    pub synapse_token: String,
}

impl Both<'_> {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (Value, Value) {
        let (ks, k) = (self.kith)
            .request(method.clone(), path, Some(&self.kith_token), body.clone())
            .await;
        let (ss, s) = (self.synapse)
            .request(method, path, Some(&self.synapse_token), body)
            .await;
        compare(path, (ks, k), (ss, s))
    }
}

/// The same status (and `errcode`, for an error), and answers of the same shape.
pub(crate) fn compare(
    what: &str,
    kith: (StatusCode, Value),
    synapse: (StatusCode, Value),
) -> (Value, Value) {
    let ((ks, k), (ss, s)) = (kith, synapse);
    assert_eq!(ks, ss, "{what}: status (kith {k}, Synapse {s})");
    assert_eq!(k["errcode"], s["errcode"], "{what}: kith {k}, Synapse {s}");
    let mut found = Vec::new();
    differences(&k, &s, "", &mut found);
    assert!(
        found.is_empty(),
        "{what}:\n{}\nkith: {k}\nSynapse: {s}",
        found.join("\n")
    );
    (k, s)
}

/// An admin on Synapse, registered with the shared secret (`/_synapse/admin/v1/register`,
/// its MAC computed by Synapse's own Python).
pub(crate) async fn synapse_admin(synapse: &Synapse) -> String {
    let (_, nonce) = (synapse)
        .request(Method::GET, "/_synapse/admin/v1/register", None, None)
        .await;
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let python = std::env::var("KITH_SYNAPSE_PYTHON").unwrap();
    let script = "import hmac, hashlib, sys; \
        key, nonce, user, password = sys.argv[1:]; \
        message = '\\x00'.join([nonce, user, password, 'admin']).encode(); \
        print(hmac.new(key.encode(), message, hashlib.sha1).hexdigest())";
    let output = Command::new(python)
        .args(["-c", script, SHARED_SECRET, &nonce, "boss", PASSWORD])
        .output()
        .unwrap();
    let mac = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let body = json!({
        "nonce": nonce, "username": "boss", "password": PASSWORD, "admin": true, "mac": mac,
    });
    let (status, registered) = (synapse)
        .request(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    registered["access_token"].as_str().unwrap().to_owned()
}

/// Uploads three files as `user` (whose token it is) at `base`: a picture sent into
/// `room`, an avatar set on the profile, and one nothing names; their `mxc://` URIs.
async fn images(
    http: &reqwest::Client,
    (base, token, room): (&str, &str, &str),
    user: &str,
) -> (String, String, String) {
    let upload = async |bytes: &'static [u8]| {
        let url = format!("{base}/_matrix/media/v3/upload?filename=f");
        let request = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "text/plain");
        let answer: Value = request
            .body(bytes)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["content_uri"].as_str().unwrap().to_owned()
    };
    let picture = upload(b"a picture").await;
    let avatar = upload(b"an avatar").await;
    let old = upload(b"nothing names this").await;
    let content = json!({ "msgtype": "m.image", "body": "p", "url": picture });
    let send = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/img");
    let sent = http
        .put(send)
        .bearer_auth(token)
        .json(&content)
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success());
    let profile = format!("{base}/_matrix/client/v3/profile/{user}/avatar_url");
    let body = json!({ "avatar_url": avatar });
    let set = http
        .put(profile)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    (picture, avatar, old)
}

#[tokio::test]
async fn synapse_admin_api_answers_as_synapse_does() {
    let Some(synapse) = Synapse::start(&[]).await else {
        panic!("KITH_SYNAPSE_PYTHON is not set: run `bash .ci/run`, which installs Synapse");
    };
    let kith = Server::start(&[]);
    let (ok, output) = kith.admin(&["create-user", "boss", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{output}");
    let (status, login) = kith.login("boss", PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let both = Both {
        kith: &kith,
        synapse: &synapse,
        kith_token: login["access_token"].as_str().unwrap().to_owned(),
        synapse_token: synapse_admin(&synapse).await,
    };
    let carol_kith = kith.user("carol").await;
    let carol_synapse = synapse.user("carol").await;
    kith.user("dave").await;
    synapse.user("dave").await;
    let carol = |name: &str| format!("@carol:{name}");
    let kith_name = crate::common::SERVER_NAME;

    // Paths name the user on each server; everything else is the same call.
    async fn user_call(
        both: &Both<'_>,
        method: Method,
        path: impl Fn(&str) -> String,
        body: Option<Value>,
    ) -> (Value, Value) {
        let (ks, k) = (both.kith)
            .request(
                method.clone(),
                &path(crate::common::SERVER_NAME),
                Some(&both.kith_token),
                body.clone(),
            )
            .await;
        let (ss, s) = (both.synapse)
            .request(
                method,
                &path(&both.synapse.name),
                Some(&both.synapse_token),
                body,
            )
            .await;
        compare(&path("…"), (ks, k), (ss, s))
    }

    both.call(Method::GET, "/_synapse/admin/v1/server_version", None)
        .await;
    let (users, _) = both
        .call(Method::GET, "/_synapse/admin/v2/users?limit=2", None)
        .await;
    assert_eq!(users["total"], 3, "{users}");
    assert_eq!(users["next_token"], "2", "{users}");
    let (named, _) = both
        .call(Method::GET, "/_synapse/admin/v2/users?name=caro", None)
        .await;
    assert_eq!(named["users"][0]["name"], carol(kith_name));
    user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v2/users/@carol:{s}"),
        None,
    )
    .await;

    // Create, then modify.
    let erin = json!({ "password": "erin's password", "displayname": "Erin", "admin": false });
    let (made, _) = user_call(
        &both,
        Method::PUT,
        |s| format!("/_synapse/admin/v2/users/@erin:{s}"),
        Some(erin),
    )
    .await;
    assert_eq!(made["displayname"], "Erin");
    let email = json!([{ "medium": "email", "address": "erin@example.org" }]);
    let changes = json!({ "displayname": "Erin E.", "admin": true, "threepids": email });
    let (changed, _) = user_call(
        &both,
        Method::PUT,
        |s| format!("/_synapse/admin/v2/users/@erin:{s}"),
        Some(changes),
    )
    .await;
    assert_eq!(
        (changed["displayname"].as_str(), changed["admin"].as_bool()),
        (Some("Erin E."), Some(true))
    );
    assert_eq!(changed["threepids"][0]["address"], "erin@example.org");

    // Carol's sessions, rooms and password.
    let room = json!({ "preset": "private_chat", "name": "Carol's" });
    let kith_room = kith.create_room(&carol_kith.1, room.clone()).await;
    let (status, synapse_room) = synapse
        .request(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&carol_synapse.1),
            Some(room),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let synapse_room = synapse_room["room_id"].as_str().unwrap().to_owned();
    let room_of = |server: &str| match server {
        crate::common::SERVER_NAME => kith_room.clone(),
        _ => synapse_room.clone(),
    };
    let (rooms, _) = both
        .call(Method::GET, "/_synapse/admin/v1/rooms", None)
        .await;
    assert_eq!(rooms["rooms"][0]["name"], "Carol's");
    both.call(
        Method::GET,
        "/_synapse/admin/v1/rooms?search_term=carol&order_by=joined_members&dir=b",
        None,
    )
    .await;
    both.call(Method::GET, "/_synapse/admin/v1/rooms?search_term=", None)
        .await;
    let (room, _) = user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v1/rooms/{}", room_of(s)),
        None,
    )
    .await;
    assert_eq!(room["joined_local_members"], 1);
    let (members, _) = user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v1/rooms/{}/members", room_of(s)),
        None,
    )
    .await;
    assert_eq!(members["total"], 1);
    user_call(
        &both,
        Method::GET,
        |s| {
            format!(
                "/_synapse/admin/v1/rooms/{}/state?type=m.room.name",
                room_of(s)
            )
        },
        None,
    )
    .await;
    both.call(
        Method::GET,
        "/_synapse/admin/v1/rooms/!nowhere:elsewhere.example",
        None,
    )
    .await;
    user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v2/users/@carol:{s}/devices"),
        None,
    )
    .await;
    user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v1/whois/@carol:{s}"),
        None,
    )
    .await;
    let (joined, _) = user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v1/users/@carol:{s}/joined_rooms"),
        None,
    )
    .await;
    assert_eq!(joined["total"], 1);
    let password = json!({ "new_password": "a new one", "logout_devices": false });
    user_call(
        &both,
        Method::POST,
        |s| format!("/_synapse/admin/v1/reset_password/@carol:{s}"),
        Some(password),
    )
    .await;
    let (status, _) = kith.login("carol", "a new one", json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "carol signs in with the password the admin set"
    );
    user_call(
        &both,
        Method::POST,
        |s| format!("/_synapse/admin/v1/deactivate/@dave:{s}"),
        Some(json!({ "erase": false })),
    )
    .await;
    let (all, _) = both
        .call(
            Method::GET,
            "/_synapse/admin/v2/users?deactivated=true",
            None,
        )
        .await;
    assert_eq!(
        all["total"], 4,
        "dave is listed with deactivated=true: {all}"
    );

    // Registration tokens.
    let (token, _) = both
        .call(
            Method::POST,
            "/_synapse/admin/v1/registration_tokens/new",
            Some(json!({ "token": "for-friends", "uses_allowed": 2 })),
        )
        .await;
    assert_eq!(token["uses_allowed"], 2);
    both.call(Method::GET, "/_synapse/admin/v1/registration_tokens", None)
        .await;
    both.call(
        Method::GET,
        "/_synapse/admin/v1/registration_tokens?valid=true",
        None,
    )
    .await;
    both.call(
        Method::GET,
        "/_synapse/admin/v1/registration_tokens/for-friends",
        None,
    )
    .await;
    let (changed, _) = both
        .call(
            Method::PUT,
            "/_synapse/admin/v1/registration_tokens/for-friends",
            Some(json!({ "uses_allowed": null })),
        )
        .await;
    assert_eq!(changed["uses_allowed"], Value::Null);
    both.call(
        Method::DELETE,
        "/_synapse/admin/v1/registration_tokens/for-friends",
        None,
    )
    .await;
    both.call(
        Method::GET,
        "/_synapse/admin/v1/registration_tokens/for-friends",
        None,
    )
    .await;

    // Reports and the media cache.
    both.call(Method::GET, "/_synapse/admin/v1/event_reports", None)
        .await;
    both.call(
        Method::POST,
        "/_synapse/admin/v1/purge_media_cache?before_ts=1700000000000",
        None,
    )
    .await;
    // Seconds for milliseconds: refused, as Synapse does.
    both.call(
        Method::POST,
        "/_synapse/admin/v1/purge_media_cache?before_ts=1700000000",
        None,
    )
    .await;

    // A room's media; deleting one file, then all but avatars older than a moment.
    let synapse_base = format!("https://{}", synapse.name);
    let http = &synapse.http;
    let carol_on_kith = carol(crate::common::SERVER_NAME);
    let on_kith = (
        kith.base.as_str(),
        carol_kith.1.as_str(),
        kith_room.as_str(),
    );
    let (kith_picture, kith_avatar, kith_old) = images(http, on_kith, &carol_on_kith).await;
    let on_synapse = (
        synapse_base.as_str(),
        carol_synapse.1.as_str(),
        synapse_room.as_str(),
    );
    let (synapse_picture, _, _) = images(http, on_synapse, &carol(&synapse.name)).await;
    let (media, _) = user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v1/room/{}/media", room_of(s)),
        None,
    )
    .await;
    assert_eq!(media["local"], json!([kith_picture]));
    let media_id = |uri: &str| uri.rsplit('/').next().unwrap().to_owned();
    let (kith_id, synapse_id) = (media_id(&kith_picture), media_id(&synapse_picture));
    let picture_of = |s: &str| match s {
        crate::common::SERVER_NAME => kith_id.clone(),
        _ => synapse_id.clone(),
    };
    user_call(
        &both,
        Method::DELETE,
        |s| format!("/_synapse/admin/v1/media/{s}/{}", picture_of(s)),
        None,
    )
    .await;
    let gone = kith
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}",
            kith.base,
            kith_picture.trim_start_matches("mxc://")
        ))
        .bearer_auth(&carol_kith.1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        gone.status(),
        StatusCode::NOT_FOUND,
        "a deleted file is gone"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1000;
    let (deleted, _) = user_call(
        &both,
        Method::POST,
        |s| format!("/_synapse/admin/v1/media/{s}/delete?before_ts={now}"),
        None,
    )
    .await;
    let deleted = deleted["deleted_media"].as_array().unwrap().clone();
    assert!(deleted.contains(&json!(media_id(&kith_old))), "{deleted:?}");
    assert!(
        !deleted.contains(&json!(media_id(&kith_avatar))),
        "an avatar is kept: {deleted:?}"
    );
    both.call(
        Method::DELETE,
        "/_synapse/admin/v1/media/elsewhere.example/abc",
        None,
    )
    .await;

    // Refusals: an unknown user, another server's user, bad paging, a non-admin.
    user_call(
        &both,
        Method::GET,
        |s| format!("/_synapse/admin/v2/users/@nobody:{s}"),
        None,
    )
    .await;
    for path in [
        "/_synapse/admin/v2/users/@someone:elsewhere.example",
        "/_synapse/admin/v2/users?limit=-1",
        "/_synapse/admin/v2/users?deactivated=maybe",
        "/_synapse/admin/v1/registration_tokens?valid=maybe",
    ] {
        both.call(Method::GET, path, None).await;
    }
    // Changes refused before anything is written: a display name of null, an admin
    // demoting themselves.
    let null_name = json!({ "displayname": null, "admin": true });
    user_call(
        &both,
        Method::PUT,
        |s| format!("/_synapse/admin/v2/users/@erin:{s}"),
        Some(null_name),
    )
    .await;
    let demote = json!({ "admin": false });
    user_call(
        &both,
        Method::PUT,
        |s| format!("/_synapse/admin/v2/users/@boss:{s}"),
        Some(demote),
    )
    .await;

    let outsider = Both {
        kith_token: carol_kith.1.clone(),
        synapse_token: carol_synapse.1.clone(),
        ..both
    };
    for (method, path) in [
        (Method::GET, "/_synapse/admin/v2/users"),
        (Method::GET, "/_synapse/admin/v1/rooms"),
        (Method::GET, "/_synapse/admin/v1/registration_tokens"),
        (Method::POST, "/_synapse/admin/v1/registration_tokens/new"),
        (Method::GET, "/_synapse/admin/v1/event_reports"),
        (
            Method::POST,
            "/_synapse/admin/v1/purge_media_cache?before_ts=1700000000000",
        ),
    ] {
        let (refused, _) = outsider.call(method, path, Some(json!({}))).await;
        assert_eq!(refused["errcode"], "M_FORBIDDEN", "{path}");
    }
}
