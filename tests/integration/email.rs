//! Email verification against a real SMTP server (`aiosmtpd` from PyPI, started per test
//! on a loopback port): registering with an emailed link, logging in by email, adding and
//! removing an address, resetting a forgotten password, being found by email, and the
//! failures (reused, expired and wrong links, addresses in use or denied, phone numbers,
//! rate limits). Mail asked for while the SMTP server is down goes out once it is back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, LOCATION};
use serde_json::{Value, json};

use crate::clients::python;
use crate::common::{PASSWORD, SERVER_NAME, Server, assert_error, free_port};

/// An SMTP server that keeps every mail it receives in a maildir.
struct Smtp {
    child: Child,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smtp {
    fn start(port: u16) -> Smtp {
        let dir = tempfile::tempdir().expect("tempdir");
        // aiosmtpd makes the maildir itself and refuses one that exists.
        let maildir = dir.path().join("mail");
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Smtp {
            child,
            maildir,
            _dir: dir,
        }
    }

    /// Every mail received for `address`, oldest first.
    fn mails_to(&self, address: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut mails: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, text))
            })
            .filter(|(_, text)| {
                text.lines()
                    .any(|l| l.starts_with("To:") && l.contains(address))
            })
            .collect();
        mails.sort();
        mails.into_iter().map(|(_, text)| text).collect()
    }

    /// Waits (at most a minute) for mail number `n` (from 1) to `address`.
    async fn mail(&self, address: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(mail) = self.mails_to(address).into_iter().nth(n - 1) {
                return mail;
            }
            assert!(Instant::now() < deadline, "no mail {n} to {address}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kith on a known port (its links name it), sending mail to `smtp_port`.
fn server_with_email(smtp_port: u16, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let baseurl = format!("http://{listen}/");
    let smtp_port = smtp_port.to_string();
    let mut all = vec![
        ("KITH_LISTEN__CLIENT", listen.as_str()),
        ("KITH_SERVER__PUBLIC_BASEURL", baseurl.as_str()),
        ("KITH_EMAIL__ENABLED", "true"),
        ("KITH_EMAIL__SMTP_HOST", "127.0.0.1"),
        ("KITH_EMAIL__SMTP_PORT", smtp_port.as_str()),
        ("KITH_EMAIL__SMTP_SECURITY", "none"),
        ("KITH_EMAIL__FROM", "kith <noreply@kith.test>"),
        ("KITH_LIMITS__EMAIL_REQUEST_BURST", "50"),
    ];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// The validation link in a mail.
fn link_in(mail: &str) -> String {
    let start = mail
        .find("http://")
        .unwrap_or_else(|| panic!("no link in {mail}"));
    let link: String = mail[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(link.contains("/_kith/client/email/validate?"), "{link}");
    link
}

/// Opens a link as a browser would, without following a redirect.
async fn open(link: &str) -> (StatusCode, Option<String>, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = client
        .get(link)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .expect("open link");
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_owned());
    (status, location, response.text().await.unwrap())
}

/// `link` with one query parameter changed.
fn with_param(link: &str, name: &str, value: &str) -> String {
    let mut url = url::Url::parse(link).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| match k == name {
            true => (k.into_owned(), value.to_owned()),
            false => (k.into_owned(), v.into_owned()),
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

async fn request_token(
    server: &Server,
    kind: &str,
    secret: &str,
    email: &str,
    attempt: u64,
) -> (StatusCode, Value) {
    let body = json!({ "client_secret": secret, "email": email, "send_attempt": attempt });
    let path = format!("/_matrix/client/v3/{kind}/email/requestToken");
    server.post(&path, None, body).await
}

fn creds(sid: &str, secret: &str) -> Value {
    json!({ "sid": sid, "client_secret": secret })
}

async fn login_by_email(server: &Server, email: &str, password: &str) -> (StatusCode, Value) {
    let identifier = json!({ "type": "m.id.thirdparty", "medium": "email", "address": email });
    let body =
        json!({ "type": "m.login.password", "identifier": identifier, "password": password });
    server.post("/_matrix/client/v3/login", None, body).await
}

#[tokio::test]
async fn a_new_user_registers_with_an_emailed_link_then_logs_in_by_email() {
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let server = server_with_email(
        smtp_port,
        &[
            ("KITH_REGISTRATION__REQUIRE_EMAIL", "true"),
            ("KITH_EMAIL__ALLOWED_DOMAINS", "[\"example.org\"]"),
        ],
    );
    let register = |auth: Value| {
        let body = json!({ "username": "alice", "password": PASSWORD, "auth": auth });
        server.post("/_matrix/client/v3/register", None, body)
    };

    // Only the email flow is offered.
    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.email.identity"] }])
    );
    let session = challenge["session"].as_str().unwrap().to_owned();
    let dummy = register(json!({ "type": "m.login.dummy", "session": session })).await;
    assert_error(&dummy, StatusCode::BAD_REQUEST, "M_UNRECOGNIZED");

    // The mail: a link to kith's page, which then leads to the client's next_link.
    let body = json!({
        "client_secret": "s3cret", "email": "Alice@Example.org", "send_attempt": 1,
        "next_link": "https://app.example.org/verified",
    });
    let (status, sent) = server
        .post(
            "/_matrix/client/v3/register/email/requestToken",
            None,
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let sid = sent["sid"].as_str().unwrap().to_owned();
    let mail = smtp.mail("alice@example.org", 1).await;
    assert!(mail.contains(&format!("[{SERVER_NAME}]")), "{mail}");
    let link = link_in(&mail);

    // The same attempt again: the same session, no second mail (mail goes out in order, so
    // once a later mail has arrived, a second one to alice would have too).
    let (_, again) = server
        .post("/_matrix/client/v3/register/email/requestToken", None, body)
        .await;
    assert_eq!(again["sid"], sid.as_str());
    request_token(&server, "register", "other", "marker@example.org", 1).await;
    smtp.mail("marker@example.org", 1).await;
    assert_eq!(smtp.mails_to("alice@example.org").len(), 1);

    // Until the link is opened the stage fails, and the challenge stays (Element polls).
    let email_auth = json!({
        "type": "m.login.email.identity", "session": session, "threepid_creds": creds(&sid, "s3cret"),
    });
    let (status, pending) = register(email_auth.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{pending}");
    assert_eq!(pending["errcode"], "M_THREEPID_AUTH_FAILED");
    assert_eq!(pending["session"], session.as_str());

    // A wrong client secret or token does nothing; the right link works once.
    let (status, _, page) = open(&with_param(&link, "client_secret", "guess")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    let (status, _, _) = open(&with_param(&link, "token", "guess")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let program = server
        .http
        .get(with_param(&link, "token", "guess"))
        .send()
        .await
        .unwrap();
    let error: Value = program.json().await.unwrap();
    assert_eq!(error["errcode"], "M_THREEPID_AUTH_FAILED");
    let (status, location, _) = open(&link).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some("https://app.example.org/verified")
    );
    let (status, _, page) = open(&link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("already been used"), "{page}");

    // A wrong client secret in the stage is still refused; the right one registers.
    let mut forged = email_auth.clone();
    forged["threepid_creds"]["client_secret"] = "guess".into();
    let (status, refused) = register(forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    let (status, registered) = register(email_auth.clone()).await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    let alice = registered["user_id"].as_str().unwrap().to_owned();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let (_, listed) = server
        .get("/_matrix/client/v3/account/3pid", Some(&token))
        .await;
    assert_eq!(listed["threepids"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["threepids"][0]["medium"], "email");
    assert_eq!(listed["threepids"][0]["address"], "alice@example.org");
    // The proof was used up.
    let reused =
        json!({ "type": "m.login.email.identity", "threepid_creds": creds(&sid, "s3cret") });
    let bob = json!({ "username": "bob", "password": PASSWORD, "auth": reused });
    let (status, refused) = server.post("/_matrix/client/v3/register", None, bob).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["errcode"], "M_THREEPID_AUTH_FAILED");

    // Login by email, any case; a wrong password or unknown address is the same refusal.
    let (status, login) = login_by_email(&server, "ALICE@example.org", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_eq!(login["user_id"], alice.as_str());
    let wrong = login_by_email(&server, "alice@example.org", "wrong").await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown = login_by_email(&server, "nobody@example.org", PASSWORD).await;
    assert_error(&unknown, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Failures of requestToken.
    let in_use = request_token(&server, "register", "s2", "alice@example.org", 1).await;
    assert_error(&in_use, StatusCode::BAD_REQUEST, "M_THREEPID_IN_USE");
    let denied = request_token(&server, "register", "s2", "eve@elsewhere.net", 1).await;
    assert_error(&denied, StatusCode::FORBIDDEN, "M_THREEPID_DENIED");
    let invalid = request_token(&server, "register", "s2", "not an address", 1).await;
    assert_error(&invalid, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let body = json!({
        "client_secret": "s2", "email": "carol@example.org", "send_attempt": 1,
        "next_link": "javascript:alert(1)",
    });
    let path = "/_matrix/client/v3/register/email/requestToken";
    let bad_link = server.post(path, None, body).await;
    assert_error(&bad_link, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let body = json!({ "client_secret": "s2", "country": "GB", "phone_number": "7700900000", "send_attempt": 1 });
    let path = "/_matrix/client/v3/register/msisdn/requestToken";
    let phone = server.post(path, None, body).await;
    assert_error(
        &phone,
        StatusCode::BAD_REQUEST,
        "M_THREEPID_MEDIUM_NOT_SUPPORTED",
    );
    let body = json!({ "client_secret": 5, "email": "carol@example.org", "send_attempt": 1 });
    let path = "/_matrix/client/v3/register/email/requestToken";
    let wrong_type = server.post(path, None, body).await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let not_found = request_token(&server, "account/password", "s2", "carol@example.org", 1).await;
    assert_error(&not_found, StatusCode::BAD_REQUEST, "M_THREEPID_NOT_FOUND");
    assert!(smtp.mails_to("carol@example.org").is_empty());
}

#[tokio::test]
async fn an_address_is_added_found_by_friends_and_resets_a_forgotten_password() {
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let server = server_with_email(smtp_port, &[]);
    let (bob, bob_token) = server.user("bob").await;
    let (_, carol_token) = server.user("carol").await;

    // Registration offers email as an option, beside the dummy stage.
    let (_, challenge) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "password": PASSWORD }),
        )
        .await;
    let flows = &challenge["flows"];
    assert!(
        flows
            .as_array()
            .unwrap()
            .contains(&json!({ "stages": ["m.login.dummy"] }))
    );
    let email_flow = json!({ "stages": ["m.login.email.identity"] });
    assert!(flows.as_array().unwrap().contains(&email_flow), "{flows}");
    let (_, capabilities) = server
        .get("/_matrix/client/v3/capabilities", Some(&bob_token))
        .await;
    // Absent means enabled (ruma leaves out the default); a server without mail says false.
    let changes = &capabilities["capabilities"]["m.3pid_changes"];
    assert!(changes.is_null() || changes["enabled"] == true, "{changes}");

    // Adding: a validated session (checked first), then the password again.
    let (status, sent) = request_token(&server, "account/3pid", "add1", "bob@example.org", 1).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let sid = sent["sid"].as_str().unwrap().to_owned();
    let add = |auth: Option<Value>| {
        let mut body = json!({ "sid": sid, "client_secret": "add1" });
        if let Some(auth) = auth {
            body["auth"] = auth;
        }
        server.post(
            "/_matrix/client/v3/account/3pid/add",
            Some(&bob_token),
            body,
        )
    };
    let early = add(None).await;
    assert_error(&early, StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED");
    let (status, _, page) = open(&link_in(&smtp.mail("bob@example.org", 1).await)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("verified"), "{page}");
    let (status, challenge) = add(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let password_auth = json!({
        "type": "m.login.password", "session": challenge["session"],
        "identifier": { "type": "m.id.user", "user": bob }, "password": PASSWORD,
    });
    let (status, added) = add(Some(password_auth.clone())).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    // The completed UIA session and the proof each served once.
    let replay = add(Some(password_auth)).await;
    assert_error(&replay, StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED");
    let body =
        json!({ "sid": sid, "client_secret": "add1", "auth": { "session": challenge["session"] } });
    let (status, _) = server
        .post(
            "/_matrix/client/v3/account/3pid/add",
            Some(&bob_token),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, listed) = server
        .get("/_matrix/client/v3/account/3pid", Some(&bob_token))
        .await;
    assert_eq!(listed["threepids"][0]["address"], "bob@example.org");
    // carol cannot take it.
    let taken = request_token(&server, "account/3pid", "c", "bob@example.org", 1).await;
    assert_error(&taken, StatusCode::BAD_REQUEST, "M_THREEPID_IN_USE");

    // Friends find bob by his whole address only once he allows it.
    let search = |term: &str| {
        let body = json!({ "search_term": term });
        let path = "/_matrix/client/unstable/org.kith.contacts/v1/search";
        server.post(path, Some(&carol_token), body)
    };
    let found = |result: &Value| {
        result["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user_id"] == bob.as_str())
    };
    assert!(!found(&search("bob@example.org").await.1));
    let settings = "/_matrix/client/unstable/org.kith.contacts/v1/settings";
    let (_, before) = server.get(settings, Some(&bob_token)).await;
    assert_eq!(before, json!({ "discoverable_by_email": false }));
    let bad = server
        .put(
            settings,
            Some(&bob_token),
            json!({ "discoverable_by_email": "yes" }),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let (status, _) = server
        .put(
            settings,
            Some(&bob_token),
            json!({ "discoverable_by_email": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(found(&search("Bob@Example.org").await.1));
    assert!(!found(&search("bob@example").await.1));
    let body = json!({ "search_term": "bob@example.org" });
    let (_, directory) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&carol_token),
            body,
        )
        .await;
    assert!(found(&directory), "{directory}");

    // A forgotten password: the mailed link, then the new password without logging in.
    let (status, sent) =
        request_token(&server, "account/password", "reset1", "bob@example.org", 1).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let sid = sent["sid"].as_str().unwrap().to_owned();
    let reset = |secret: &str| {
        let body = json!({
            "new_password": "a brand new one",
            "auth": { "type": "m.login.email.identity", "threepid_creds": creds(&sid, secret) },
        });
        server.post("/_matrix/client/v3/account/password", None, body)
    };
    let (status, early) = reset("reset1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{early}");
    assert_eq!(early["errcode"], "M_THREEPID_AUTH_FAILED");
    open(&link_in(&smtp.mail("bob@example.org", 2).await)).await;
    let (status, _) = reset("not-the-secret").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, done) = reset("reset1").await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let replay = reset("reset1").await;
    assert_eq!(replay.0, StatusCode::UNAUTHORIZED, "{}", replay.1);
    // Every session ended; only the new password works.
    let (status, _) = server.whoami(&bob_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login_by_email(&server, "bob@example.org", PASSWORD).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, login) = login_by_email(&server, "bob@example.org", "a brand new one").await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let bob_token = login["access_token"].as_str().unwrap().to_owned();

    // Removing: gone from the list, from login and from search.
    let path = "/_matrix/client/v3/account/3pid/delete";
    let body = json!({ "medium": "email", "address": "bob@example.org" });
    let (status, removed) = server.post(path, Some(&bob_token), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["id_server_unbind_result"], "no-support");
    let again = server.post(path, Some(&bob_token), body).await;
    assert_error(&again, StatusCode::NOT_FOUND, "M_THREEPID_NOT_FOUND");
    let (_, listed) = server
        .get("/_matrix/client/v3/account/3pid", Some(&bob_token))
        .await;
    assert_eq!(listed["threepids"], json!([]));
    let (status, _) = login_by_email(&server, "bob@example.org", "a brand new one").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!found(&search("bob@example.org").await.1));
}

#[tokio::test]
async fn mail_asked_for_while_smtp_is_down_goes_out_when_it_returns_and_links_expire() {
    let smtp_port = free_port();
    let server = server_with_email(
        smtp_port,
        &[
            ("KITH_EMAIL__TOKEN_LIFETIME", "20"),
            ("KITH_LIMITS__EMAIL_REQUEST_BURST", "3"),
            ("KITH_LIMITS__EMAIL_REQUESTS_PER_MINUTE", "0"),
        ],
    );
    // Nothing listens on the SMTP port: the request is still answered, and the mail is
    // kept across a crash of kith.
    let (status, sent) = request_token(&server, "register", "s", "dave@example.org", 1).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let sid = sent["sid"].as_str().unwrap().to_owned();
    let server = server.restart();
    let smtp = Smtp::start(smtp_port);
    let mail = smtp.mail("dave@example.org", 1).await;
    let link = link_in(&mail);
    assert!(link.contains(&sid), "{link}");

    // A newer attempt sends a new link; the old one no longer works.
    let (_, sent) = request_token(&server, "register", "s", "dave@example.org", 2).await;
    assert_eq!(sent["sid"], sid.as_str());
    let newer = link_in(&smtp.mail("dave@example.org", 2).await);
    let (status, _, _) = open(&link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Three requests in a burst per address and per client address, then 429. (Since the
    // restart 127.0.0.1 asked once, for dave.)
    let ask = |from: [u8; 4], email: &'static str| {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(from))
            .build()
            .unwrap();
        let url = format!(
            "{}/_matrix/client/v3/register/email/requestToken",
            server.base
        );
        let body = json!({ "client_secret": "e", "email": email, "send_attempt": 1 });
        async move { client.post(url).json(&body).send().await.unwrap().status() }
    };
    for _ in 0..2 {
        assert_eq!(
            ask([127, 0, 0, 1], "erin@example.org").await,
            StatusCode::OK
        );
    }
    // erin's address: one left, used from another client address, then refused.
    assert_eq!(
        ask([127, 0, 0, 2], "erin@example.org").await,
        StatusCode::OK
    );
    let by_address = ask([127, 0, 0, 2], "erin@example.org").await;
    assert_eq!(by_address, StatusCode::TOO_MANY_REQUESTS);
    // 127.0.0.1 spent its three: refused for any address; 127.0.0.2 still may ask.
    let by_client = ask([127, 0, 0, 1], "frank@example.org").await;
    assert_eq!(by_client, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        ask([127, 0, 0, 2], "frank@example.org").await,
        StatusCode::OK
    );

    // The newer link expires after its lifetime.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let (status, _, page) = open(&newer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("expired"), "{page}");
}
