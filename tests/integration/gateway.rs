//! The gateway's rules: Matrix errors for unknown paths and methods, CORS, body limits,
//! malformed input, missing and garbage tokens; discovery endpoints; the server key.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Server, assert_error};

#[tokio::test]
async fn unknown_paths_and_methods_are_unrecognized() {
    let server = Server::start(&[]);
    assert_error(
        &server.get("/_matrix/client/v3/no/such/thing", None).await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server.get("/", None).await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    );
    let wrong_method = server
        .request(Method::DELETE, "/_matrix/client/v3/login", None, None)
        .await;
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn cors_on_every_response_and_options_answered() {
    let server = Server::start(&[]);
    let preflight = server
        .http
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/login", server.base),
        )
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let plain_options = server
        .http
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/anything", server.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(plain_options.status(), StatusCode::OK);

    for path in ["/_matrix/client/versions", "/_matrix/client/v3/nothing"] {
        let response = server
            .http
            .get(format!("{}{path}", server.base))
            .header("Origin", "https://x.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_get_matrix_errors_and_change_nothing() {
    let server = Server::start(&[("KITH_LIMITS__MAX_REQUEST_SIZE", "4096")]);
    let register = "/_matrix/client/v3/register";
    assert_error(
        &server
            .raw(Method::POST, register, None, b"{not json".to_vec())
            .await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &server
            .raw(Method::POST, register, None, b"[1,2]".to_vec())
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let wrong_types = json!({ "username": 42, "password": ["x"] })
        .to_string()
        .into_bytes();
    assert_error(
        &server.raw(Method::POST, register, None, wrong_types).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let login_wrong = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": 7 }, "password": "x" });
    assert_error(
        &server
            .post("/_matrix/client/v3/login", None, login_wrong)
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );

    let huge = json!({ "username": "big", "password": "x".repeat(10_000), "auth": { "type": "m.login.dummy" } });
    let result = server
        .raw(Method::POST, register, None, huge.to_string().into_bytes())
        .await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // Chunked, without a Content-Length, is cut off at the limit as well.
    assert_eq!(chunked_status(&server, register, 10, 1000).await, 413);

    // None of it created the user.
    assert_eq!(
        server
            .get("/_matrix/client/v3/register/available?username=big", None)
            .await
            .1["available"],
        true
    );
}

/// Sends `count` chunks of `size` spaces with chunked transfer encoding, over a raw socket,
/// and returns the response status.
async fn chunked_status(server: &Server, path: &str, count: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: kith\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..count {
        let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close before reading everything
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut response),
    )
    .await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn missing_and_garbage_tokens() {
    let server = Server::start(&[]);
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_error(
        &server.get(whoami, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.get(whoami, Some("garbage")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    // A JWT signed by someone else.
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJAYTpraXRoLnRlc3QiLCJkZXYiOiJEIiwiZ2VuIjowLCJpYXQiOjB9.c2lnbmF0dXJl";
    assert_error(
        &server.get(whoami, Some(forged)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    // The query-parameter fallback works.
    let alice = server.register("qp").await;
    let token = alice["access_token"].as_str().unwrap();
    assert_eq!(
        server
            .get(&format!("{whoami}?access_token={token}"), None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn discovery_endpoints() {
    let server = Server::start(&[("KITH_PUBLIC_BASEURL", "https://matrix.kith.test/")]);
    let (status, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        list.contains(&"v1.1") && list.contains(&"v1.11"),
        "{list:?}"
    );
    assert_eq!(versions["unstable_features"]["org.kith.contacts"], true);
    // Element Web sets up cross-signing at first login only where this is advertised.
    assert_eq!(
        versions["unstable_features"]["org.matrix.e2e_cross_signing"],
        true
    );
    // Element X signs in only where simplified sliding sync is advertised.
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );

    let (_, well_known) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(
        well_known["m.homeserver"]["base_url"],
        "https://matrix.kith.test"
    );
    assert_error(
        &server.get("/.well-known/matrix/server", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, flows) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(flows["flows"], json!([{ "type": "m.login.password" }]));

    let alice = server.register("cap").await;
    let (status, caps) = server
        .get(
            "/_matrix/client/v3/capabilities",
            alice["access_token"].as_str(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rooms = &caps["capabilities"]["m.room_versions"];
    assert_eq!(rooms["default"], "12");
    for version in ["10", "11", "12"] {
        assert_eq!(rooms["available"][version], "stable");
    }
    // Capabilities at their spec default are omitted (ruma does, clients read absence as the
    // default): password changes and profile writes are on, third-party IDs off.
    assert_ne!(caps["capabilities"]["m.change_password"]["enabled"], false);
    assert_ne!(caps["capabilities"]["m.set_displayname"]["enabled"], false);
    assert_eq!(caps["capabilities"]["m.profile_fields"]["enabled"], true);
    assert_eq!(caps["capabilities"]["m.3pid_changes"]["enabled"], false);
}

#[tokio::test]
async fn server_key_is_self_signed_and_stable_across_restarts() {
    let server = Server::start(&[("KITH_WELL_KNOWN__SERVER", "fed.kith.test:443")]);
    assert_eq!(
        server.get("/.well-known/matrix/server", None).await.1["m.server"],
        "fed.kith.test:443"
    );
    let (status, document) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["server_name"], "kith.test");
    let keys = document["verify_keys"].as_object().unwrap();
    let (key_id, key) = keys.iter().next().unwrap();
    let public = ruma::serde::Base64::parse(key["key"].as_str().unwrap()).unwrap();
    let key_map = BTreeMap::from([(
        "kith.test".to_owned(),
        BTreeMap::from([(key_id.clone(), public)]),
    )]);
    let object: ruma::CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
    ruma::signatures::verify_json(&key_map, &object).expect("valid self-signature");

    let server = server.restart();
    let (_, again) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(again["verify_keys"], document["verify_keys"]);
}

#[tokio::test]
async fn sigterm_stops_gracefully() {
    let mut server = Server::start(&[]);
    server.register("before_stop").await;
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    assert!(server.log().contains("kith stopped"));
}
