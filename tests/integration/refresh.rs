//! Refresh tokens, expiry with soft logout, replay detection, device-ID reuse.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server, assert_error};

const REFRESH: &str = "/_matrix/client/v3/refresh";

async fn refresh(server: &Server, token: &str) -> (StatusCode, Value) {
    server
        .post(REFRESH, None, json!({ "refresh_token": token }))
        .await
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

#[tokio::test]
async fn rotation_keeps_the_old_token_until_the_new_pair_is_used() {
    let server = Server::start(&[]);
    server.register("rita").await;
    let (status, login) = server
        .login("rita", PASSWORD, json!({ "refresh_token": true }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(login["expires_in_ms"].as_u64().unwrap() > 0);
    let first = str_of(&login, "refresh_token").to_owned();

    // A lost response: the same refresh token works twice while its successor is unused.
    let (status, lost) = refresh(&server, &first).await;
    assert_eq!(status, StatusCode::OK, "{lost}");
    let (status, retried) = refresh(&server, &first).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_ne!(
        str_of(&lost, "refresh_token"),
        str_of(&retried, "refresh_token")
    );
    // The pair that was never received is gone.
    assert_error(
        &server.whoami(str_of(&lost, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );

    // Using the new pair retires the old refresh token...
    let (status, me) = server.whoami(str_of(&retried, "access_token")).await;
    assert_eq!(
        (status, str_of(&me, "device_id")),
        (StatusCode::OK, str_of(&login, "device_id"))
    );
    // ...and presenting it now is theft: 401, and the whole session ends.
    assert_error(
        &refresh(&server, &first).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.whoami(str_of(&retried, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &refresh(&server, str_of(&retried, "refresh_token")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn refresh_chains_and_the_old_access_token_dies() {
    let server = Server::start(&[]);
    server.register("sam").await;
    let (_, login) = server
        .login("sam", PASSWORD, json!({ "refresh_token": true }))
        .await;
    let mut pair = login.clone();
    for _ in 0..3 {
        let (status, next) = refresh(&server, str_of(&pair, "refresh_token")).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        assert_eq!(
            server.whoami(str_of(&next, "access_token")).await.0,
            StatusCode::OK
        );
        assert_error(
            &server.whoami(str_of(&pair, "access_token")).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
        pair = next;
    }
    // Garbage and unknown refresh tokens.
    assert_error(
        &refresh(&server, "kith_r_unknown").await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server
            .post(REFRESH, None, json!({ "refresh_token": 5 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // Logging out kills the refresh token too.
    assert_eq!(
        server
            .post(
                "/_matrix/client/v3/logout",
                Some(str_of(&pair, "access_token")),
                json!({})
            )
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &refresh(&server, str_of(&pair, "refresh_token")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn expired_access_tokens_are_soft_logouts() {
    let server = Server::start(&[("KITH_AUTH__ACCESS_TOKEN_TTL", "1")]);
    let registered = server.register("tess").await;
    let (_, login) = server
        .login("tess", PASSWORD, json!({ "refresh_token": true }))
        .await;
    assert_eq!(login["expires_in_ms"], 1000);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = server.whoami(str_of(&login, "access_token")).await;
    assert_error(&expired, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true);
    // Tokens issued without a refresh token do not expire.
    assert_eq!(
        server.whoami(str_of(&registered, "access_token")).await.0,
        StatusCode::OK
    );
    // Refreshing brings the session back on the same device.
    let (status, next) = refresh(&server, str_of(&login, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.whoami(str_of(&next, "access_token")).await.1["device_id"],
        login["device_id"]
    );
}

#[tokio::test]
async fn reusing_a_device_id_revokes_its_old_tokens() {
    let server = Server::start(&[]);
    server.register("uma").await;
    let (_, first) = server
        .login(
            "uma",
            PASSWORD,
            json!({ "device_id": "LAPTOP", "refresh_token": true }),
        )
        .await;
    let (_, second) = server
        .login("uma", PASSWORD, json!({ "device_id": "LAPTOP" }))
        .await;
    assert_eq!(second["device_id"], "LAPTOP");
    let revoked = server.whoami(str_of(&first, "access_token")).await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert!(
        revoked.1.get("soft_logout").is_none(),
        "revoked, not expired: {}",
        revoked.1
    );
    assert_error(
        &refresh(&server, str_of(&first, "refresh_token")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        server.whoami(str_of(&second, "access_token")).await.0,
        StatusCode::OK
    );
    let (_, devices) = server
        .get(
            "/_matrix/client/v3/devices",
            Some(str_of(&second, "access_token")),
        )
        .await;
    assert_eq!(
        devices["devices"].as_array().unwrap().len(),
        2,
        "register device + LAPTOP: {devices}"
    );

    // After a logout, a new login on the same device ID does not bring old tokens back.
    let (_, third) = server
        .login("uma", PASSWORD, json!({ "device_id": "LAPTOP" }))
        .await;
    let third_token = str_of(&third, "access_token");
    let logout = server
        .post("/_matrix/client/v3/logout", Some(third_token), json!({}))
        .await;
    assert_eq!(logout.0, StatusCode::OK);
    let (status, _) = server
        .login("uma", PASSWORD, json!({ "device_id": "LAPTOP" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    for old in [&first, &second, &third] {
        let result = server.whoami(str_of(old, "access_token")).await;
        assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    }
}
