//! Registration, login, whoami, devices, password change, deactivation, logout.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, Server, assert_error};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn register_challenge_then_dummy_then_login() {
    let server = Server::start(&[]);
    // The first call without auth gets the UIA challenge with a session.
    let (status, challenge) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    let session = challenge["session"].as_str().expect("session");

    let body = json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } });
    let (status, registered) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    assert_eq!(registered["user_id"], "@alice:kith.test");
    assert!(
        registered.get("refresh_token").is_none(),
        "refresh tokens only when asked"
    );

    let (status, me) = server
        .whoami(registered["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user_id"], "@alice:kith.test");
    assert_eq!(me["device_id"], registered["device_id"]);

    // Full user ID and bare localpart both log in, and the deprecated `user` field too.
    for user in ["@alice:kith.test", "alice", "ALICE"] {
        let (status, login) = server.login(user, PASSWORD, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{user}: {login}");
        assert_eq!(login["user_id"], "@alice:kith.test");
    }
    let legacy = json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD });
    assert_eq!(
        server
            .post("/_matrix/client/v3/login", None, legacy)
            .await
            .0,
        StatusCode::OK
    );

    // The profile is created from `user.created` through the event log.
    let profile = wait_for_profile(&server, "@alice:kith.test").await;
    assert_eq!(profile["displayname"], "alice");
}

async fn wait_for_profile(server: &Server, user_id: &str) -> serde_json::Value {
    for _ in 0..100 {
        let (status, profile) = server
            .get(&format!("/_matrix/client/v3/profile/{user_id}"), None)
            .await;
        if status == StatusCode::OK {
            return profile;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no profile for {user_id} after 5 s");
}

#[tokio::test]
async fn nio_style_one_shot_dummy_and_empty_auth_are_accepted() {
    let server = Server::start(&[]);
    // matrix-nio's `register`: dummy auth without a session, in one call.
    let alice = server.register("nio1").await;
    assert_eq!(alice["user_id"], "@nio1:kith.test");
    // matrix-nio's token registration opens with an `auth` that has no type: a challenge.
    let body = json!({ "username": "nio2", "password": PASSWORD, "auth": { "initial_device_display_name": "x" } });
    let (status, challenge) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert!(challenge["session"].is_string());
}

#[tokio::test]
async fn token_mode_needs_a_valid_token_then_dummy() {
    let server = Server::start(&[
        ("KITH_REGISTRATION__MODE", "token"),
        ("KITH_REGISTRATION__TOKENS", "[\"from-config\"]"),
    ]);
    let printed = server
        .printed_token()
        .expect("a registration token printed at first start");

    let (status, challenge) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "bob", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.registration_token", "m.login.dummy"] }])
    );
    let session = challenge["session"].as_str().unwrap();

    // Dummy alone does not complete the flow; a bad token is refused; nothing is created.
    let dummy = json!({ "username": "bob", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } });
    let (status, partial) = server.post(REGISTER, None, dummy.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{partial}");
    assert_eq!(partial["completed"], json!(["m.login.dummy"]));
    let bad = json!({ "username": "bob", "password": PASSWORD,
        "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } });
    let (status, refused) = server.post(REGISTER, None, bad).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused["errcode"], "M_UNAUTHORIZED");
    assert_eq!(
        server
            .get("/_matrix/client/v3/register/available?username=bob", None)
            .await
            .1["available"],
        true
    );

    let good = json!({ "username": "bob", "password": PASSWORD,
        "auth": { "type": "m.login.registration_token", "token": printed, "session": session } });
    let (status, done) = server.post(REGISTER, None, good).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["user_id"], "@bob:kith.test");

    // Tokens from the config work too; validity is answered for clients that ask first.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(
        server
            .get(&format!("{validity}?token=from-config"), None)
            .await
            .1["valid"],
        true
    );
    assert_eq!(
        server
            .get(&format!("{validity}?token=unknown"), None)
            .await
            .1["valid"],
        false
    );
}

#[tokio::test]
async fn closed_registration_and_bad_names() {
    let closed = Server::start(&[("KITH_REGISTRATION__MODE", "closed")]);
    let result = closed
        .post(
            REGISTER,
            None,
            json!({ "username": "x", "password": PASSWORD }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let server = Server::start(&[]);
    server.register("taken").await;
    for (name, errcode) in [
        ("taken", "M_USER_IN_USE"),
        ("Upper", "M_INVALID_USERNAME"),
        ("sp ace", "M_INVALID_USERNAME"),
        ("", "M_INVALID_USERNAME"),
    ] {
        let body =
            json!({ "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
        assert_error(
            &server.post(REGISTER, None, body).await,
            StatusCode::BAD_REQUEST,
            errcode,
        );
    }
    let long = "a".repeat(260);
    let result = server
        .get(
            &format!("/_matrix/client/v3/register/available?username={long}"),
            None,
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    let result = server
        .get("/_matrix/client/v3/register/available?username=taken", None)
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    let guest = server
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_error(&guest, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn bad_logins_are_refused_and_rate_limited() {
    let server = Server::start(&[("KITH_LIMITS__LOGIN_FAILURE_BURST", "3")]);
    server.register("carol").await;
    assert_error(
        &server.login("carol", "wrong", json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("nobody", PASSWORD, json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .login("@carol:elsewhere.test", PASSWORD, json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let unknown_type = json!({ "type": "m.login.magic", "password": PASSWORD });
    let result = server
        .post("/_matrix/client/v3/login", None, unknown_type)
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    // Phone numbers are not a thing here (email logins are tested in `email.rs`).
    let phone = json!({ "type": "m.login.password", "identifier": { "type": "m.id.phone", "country": "GB", "phone": "7700900000" }, "password": PASSWORD });
    assert_error(
        &server.post("/_matrix/client/v3/login", None, phone).await,
        StatusCode::BAD_REQUEST,
        "M_THREEPID_MEDIUM_NOT_SUPPORTED",
    );

    // Three failures from this address used the burst: even the right password waits now.
    let limited = server.login("carol", PASSWORD, json!({})).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn devices_are_listed_renamed_and_deleted_with_the_password() {
    let server = Server::start(&[]);
    let alice = server.register("dora").await;
    let token = alice["access_token"].as_str().unwrap();
    let (_, second) = server
        .login(
            "dora",
            PASSWORD,
            json!({ "device_id": "PHONE", "initial_device_display_name": "Phone" }),
        )
        .await;
    let phone_token = second["access_token"].as_str().unwrap();

    let (status, list) = server.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["devices"].as_array().unwrap().len(), 2);
    let (_, phone) = server
        .get("/_matrix/client/v3/devices/PHONE", Some(token))
        .await;
    assert_eq!(phone["display_name"], "Phone");
    assert!(phone["last_seen_ts"].as_u64().is_some());

    let rename = server
        .request(
            reqwest::Method::PUT,
            "/_matrix/client/v3/devices/PHONE",
            Some(token),
            Some(json!({ "display_name": "Old phone" })),
        )
        .await;
    assert_eq!(rename.0, StatusCode::OK);
    assert_eq!(
        server
            .get("/_matrix/client/v3/devices/PHONE", Some(token))
            .await
            .1["display_name"],
        "Old phone"
    );
    // A PUT without a name leaves the name alone.
    let url = "/_matrix/client/v3/devices/PHONE";
    let keep = server
        .request(reqwest::Method::PUT, url, Some(token), Some(json!({})))
        .await;
    assert_eq!(keep.0, StatusCode::OK);
    assert_eq!(
        server.get(url, Some(token)).await.1["display_name"],
        "Old phone"
    );
    let missing = server
        .get("/_matrix/client/v3/devices/NOPE", Some(token))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Another user's device is not found, whoever asks.
    let eve = server.register("eve").await;
    let eve_token = eve["access_token"].as_str().unwrap();
    assert_error(
        &server
            .get("/_matrix/client/v3/devices/PHONE", Some(eve_token))
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Deleting needs UIA with the password.
    let delete = "/_matrix/client/v3/delete_devices";
    let (status, challenge) = server
        .post(delete, Some(token), json!({ "devices": ["PHONE"] }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = challenge["session"].as_str().unwrap();
    let wrong = json!({ "devices": ["PHONE"], "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "dora" }, "password": "wrong", "session": session } });
    let (status, refused) = server.post(delete, Some(token), wrong).await;
    assert_eq!(
        (status, refused["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_FORBIDDEN"))
    );
    assert_eq!(
        server.whoami(phone_token).await.0,
        StatusCode::OK,
        "a failed UIA deletes nothing"
    );
    // Eve cannot use Dora's UIA session.
    let stolen = json!({ "devices": ["PHONE"], "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "eve" }, "password": PASSWORD, "session": session } });
    assert_error(
        &server.post(delete, Some(eve_token), stolen).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );

    let right = json!({ "devices": ["PHONE", "UNKNOWN"], "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "dora" }, "password": PASSWORD, "session": session } });
    assert_eq!(
        server.post(delete, Some(token), right).await.0,
        StatusCode::OK
    );
    assert_error(
        &server.whoami(phone_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        server
            .get("/_matrix/client/v3/devices", Some(token))
            .await
            .1["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn password_change_logs_out_other_devices_and_deactivation_ends_everything() {
    let server = Server::start(&[]);
    let first = server.register("frank").await;
    let token = first["access_token"].as_str().unwrap();
    let (_, other) = server.login("frank", PASSWORD, json!({})).await;
    let other_token = other["access_token"].as_str().unwrap();

    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "@frank:kith.test" }, "password": PASSWORD });
    let change = json!({ "new_password": "new secret", "auth": auth });
    let (status, body) = server
        .post("/_matrix/client/v3/account/password", Some(token), change)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.whoami(token).await.0,
        StatusCode::OK,
        "this device stays logged in"
    );
    assert_error(
        &server.whoami(other_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.login("frank", PASSWORD, json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(
        server.login("frank", "new secret", json!({})).await.0,
        StatusCode::OK
    );

    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "frank" }, "password": "new secret" });
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(token),
            json!({ "auth": auth }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");
    assert_error(
        &server.whoami(token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.login("frank", "new secret", json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let again =
        json!({ "username": "frank", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    assert_error(
        &server.post(REGISTER, None, again).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
}

#[tokio::test]
async fn logout_and_logout_all() {
    let server = Server::start(&[]);
    let one = server.register("gina").await;
    let one_token = one["access_token"].as_str().unwrap();
    let (_, two) = server.login("gina", PASSWORD, json!({})).await;
    let two_token = two["access_token"].as_str().unwrap();
    let (_, three) = server.login("gina", PASSWORD, json!({})).await;
    let three_token = three["access_token"].as_str().unwrap();

    assert_eq!(
        server
            .post("/_matrix/client/v3/logout", Some(one_token), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &server.whoami(one_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(two_token).await.0, StatusCode::OK);

    assert_eq!(
        server
            .post("/_matrix/client/v3/logout/all", Some(two_token), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    for token in [two_token, three_token] {
        assert_error(
            &server.whoami(token).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    // A dead token cannot log out again.
    assert_error(
        &server
            .post("/_matrix/client/v3/logout", Some(one_token), json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
}
