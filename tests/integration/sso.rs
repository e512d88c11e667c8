//! Sign-in with an OpenID Connect provider: a real one (npm `oidc-provider`, started per
//! test on loopback, `tests/peers/oidc_provider.mjs`), a browser played by `requests` and
//! matrix-nio redeeming the login token (`tests/clients/nio_sso.py`). The ID token checks
//! (signature, issuer, audience, expiry, nonce) are unit tests in `services/auth/oidc.rs`:
//! a real provider only signs good tokens.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::clients::{python, run_client};
use crate::common::{SERVER_NAME, Server, assert_error, free_port};

const CALLBACK: &str = "/_kith/client/oidc/callback";

struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// The provider, with kith's callback at `kith` registered for client `kith`.
    fn start(kith: &str) -> Provider {
        let port = free_port();
        let mut child = Command::new("node")
            .arg("tests/peers/oidc_provider.mjs")
            .args(["--port", &port.to_string()])
            .args(["--client-id", "kith", "--client-secret", "s3cret"])
            .args(["--redirect-uri", &format!("{kith}{CALLBACK}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OpenID provider (`bash .ci/run` installs it)");
        let stdout = child.stdout.take().unwrap();
        let (ready, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready.send(());
                }
            }
        });
        if said.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!("the OpenID provider did not start");
        }
        Provider {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kith on a known port with the provider as `test`, trusting clients at 127.0.0.1:9.
fn server_with_provider() -> (Server, Provider) {
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let provider = Provider::start(&base);
    let providers = format!(
        r#"[{{id="test", name="Test IdP", issuer="{}", client_id="kith", client_secret="s3cret", link_existing_by_email=true}}]"#,
        provider.issuer
    );
    let server = Server::start(&[
        ("KITH_LISTEN__CLIENT", listen.as_str()),
        ("KITH_SERVER__PUBLIC_BASEURL", &format!("{base}/")),
        ("KITH_SSO__PROVIDERS", providers.as_str()),
        (
            "KITH_SSO__ALLOWED_REDIRECT_URLS",
            r#"["http://127.0.0.1:9/"]"#,
        ),
    ]);
    (server, provider)
}

/// Runs `nio_sso.py args…` and returns its last line.
async fn nio_sso(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["tests/clients/nio_sso.py"];
    all.extend_from_slice(args);
    let stdout = run_client(server, &python(), &all, "{").await;
    let last = stdout.lines().last().expect("a result line");
    serde_json::from_str(last).expect("a JSON result")
}

#[tokio::test]
async fn a_provider_user_signs_in_without_a_password_and_reauthenticates_there() {
    let (server, _provider) = server_with_provider();
    let base = server.base.clone();

    // First sign-in: the account is made from the ID token's claims; nio logs in with the
    // login token, which then works no more.
    let first = nio_sso(&server, &[&base, "test", "alice"]).await;
    let alice = format!("@alice:{SERVER_NAME}");
    assert_eq!(first["user_id"], alice.as_str(), "{first}");
    assert_eq!(first["confirmed"], false, "a listed client is not asked");
    let token = first["access_token"].as_str().unwrap().to_owned();
    let (_, profile) = server
        .get(&format!("/_matrix/client/v3/profile/{alice}"), None)
        .await;
    assert_eq!(profile["displayname"], "Alice Test");
    let (_, threepids) = server
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(threepids["threepids"][0]["address"], "alice@example.org");
    let login_token = first["login_token"].as_str().unwrap();
    let replay = json!({ "type": "m.login.token", "token": login_token });
    let replayed = server.post("/_matrix/client/v3/login", None, replay).await;
    assert_error(&replayed, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // No password to log in with.
    let (status, _) = server.login("alice", "", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Second sign-in, from a client kith does not list: asked first, then the same account.
    let args = [
        &base,
        "test",
        "alice",
        "--redirect-url",
        "http://127.0.0.1:8/app",
    ];
    let second = nio_sso(&server, &args).await;
    assert_eq!(second["user_id"], alice.as_str(), "{second}");
    assert_eq!(
        second["confirmed"], true,
        "an unlisted client is confirmed first"
    );
    let token2 = second["access_token"].as_str().unwrap().to_owned();
    let (ok, shown) = server.admin(&["show-user", "alice"]);
    assert!(ok, "{shown}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["has_password"], false);
    assert_eq!(shown["sso_links"][0]["provider"], "test");
    assert_eq!(shown["sso_links"][0]["subject"], "alice");

    // Deleting the first device needs UIA: m.login.sso, done in the browser.
    let delete = |auth: Option<Value>| {
        let mut body = json!({ "devices": [first["device_id"]] });
        if let Some(auth) = auth {
            body["auth"] = auth;
        }
        server.post("/_matrix/client/v3/delete_devices", Some(&token2), body)
    };
    let (status, challenge) = delete(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.sso"] }]));
    let session = challenge["session"].as_str().unwrap().to_owned();
    let fallback =
        format!("{base}/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}");
    let page = server.http.get(&fallback).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("delete devices of your account") && page.contains(&alice),
        "{page}"
    );
    // A form posted without the page's cookie (from another site) starts nothing.
    let forged = server
        .http
        .post(&fallback)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("session={session}&idp=test&csrf=guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Someone else (bob, who has an account of his own) signing in at the provider does
    // not complete alice's stage.
    let bob = nio_sso(&server, &[&base, "test", "bob"]).await;
    assert_eq!(bob["user_id"], format!("@bob:{SERVER_NAME}"));
    let wrong = nio_sso(&server, &["--reauth", &fallback, &base, "bob"]).await;
    assert_eq!(wrong["status"], 403, "{wrong}");
    assert!(
        wrong["body"].as_str().unwrap().contains("someone other"),
        "{wrong}"
    );
    let (status, _) = delete(Some(json!({ "session": session }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let done = nio_sso(&server, &["--reauth", &fallback, &base, "alice"]).await;
    assert_eq!(done["status"], 200, "{done}");
    assert!(
        done["body"].as_str().unwrap().contains("authDone"),
        "{done}"
    );
    let (status, deleted) = delete(Some(json!({ "session": session }))).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    // The completed session authorised that one request.
    let (status, _) = delete(Some(json!({ "session": session }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.whoami(&token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the deleted device's token died"
    );
}

#[tokio::test]
async fn forged_stale_and_malformed_sign_ins_are_refused() {
    let (server, _provider) = server_with_provider();
    let base = server.base.clone();

    // Only with a provider configured are SSO and token logins offered (nio checks them).
    let (_, flows) = server.get("/_matrix/client/v3/login", None).await;
    let types: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert_eq!(types, ["m.login.password", "m.login.sso", "m.login.token"]);

    // A callback whose state was changed: refused, and nothing is signed in.
    let tampered = nio_sso(&server, &[&base, "test", "mallory", "--tamper-state"]).await;
    assert_eq!(tampered["status"], 403, "{tampered}");
    assert_eq!(tampered["body"]["errcode"], "M_FORBIDDEN", "{tampered}");
    // The real callback, opened by a browser that did not start the sign-in.
    let stolen = nio_sso(&server, &[&base, "test", "mallory", "--other-browser"]).await;
    assert_eq!(stolen["status"], 403, "{stolen}");
    assert_eq!(stolen["body"]["errcode"], "M_FORBIDDEN", "{stolen}");
    let (ok, _) = server.admin(&["show-user", "mallory"]);
    assert!(!ok, "no account for a refused sign-in");

    // A callback never started here, or without its parameters.
    let callback = format!("{CALLBACK}?code=abc&state=never-issued");
    let (status, body) = server.get(&callback, None).await;
    assert_error(&(status, body), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let missing = server.get(CALLBACK, None).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let denied = format!("{CALLBACK}?error=access_denied&state=never-issued");
    let denied = server.get(&denied, None).await;
    assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Redirects: an unknown provider, no redirectUrl, one that would run script.
    let path = "/_matrix/client/v3/login/sso/redirect";
    let unknown = server
        .get(
            &format!("{path}/nope?redirectUrl=http://127.0.0.1:9/"),
            None,
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let no_url = server.get(&format!("{path}/test"), None).await;
    assert_error(&no_url, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let script = server
        .get(
            &format!("{path}/test?redirectUrl=javascript:alert(1)"),
            None,
        )
        .await;
    assert_error(&script, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Login tokens that were never issued.
    let body = json!({ "type": "m.login.token", "token": "made-up" });
    let made_up = server.post("/_matrix/client/v3/login", None, body).await;
    assert_error(&made_up, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let body = json!({ "type": "m.login.token" });
    let malformed = server.post("/_matrix/client/v3/login", None, body).await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn without_providers_sso_is_not_offered() {
    let server = Server::start(&[]);
    let (_, flows) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(flows["flows"], json!([{ "type": "m.login.password" }]));
    let path = "/_matrix/client/v3/login/sso/redirect?redirectUrl=http://127.0.0.1:9/";
    let none = server.get(path, None).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let body = json!({ "type": "m.login.token", "token": "x" });
    let token = server.post("/_matrix/client/v3/login", None, body).await;
    assert_error(&token, StatusCode::BAD_REQUEST, "M_UNKNOWN");
}
