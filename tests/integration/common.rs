//! The test harness: a real kith process on `127.0.0.1:0`, its log captured, and small
//! HTTP helpers that return `(status, JSON body)`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const SERVER_NAME: &str = "kith.test";
pub const PASSWORD: &str = "correct horse battery";
/// The friendship policy's variable.
pub const POLICY: &str = "KITH_CONTACTS__DM_REQUIRES_FRIENDSHIP";

pub struct Server {
    child: Child,
    pub base: String,
    pub data: PathBuf,
    pub env: Vec<(String, String)>,
    log: Arc<Mutex<String>>,
    dir: Arc<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl Server {
    /// A fresh server with open registration and no friendship policy (the tests of rooms
    /// and sync are not about who may chat; `contacts.rs` and the nio chat test run the
    /// default `dm_only`), plus `env` overrides (`KITH_*`).
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::try_start(env)
            .unwrap_or_else(|log| panic!("kith did not start listening; log:\n{log}"))
    }

    /// [`Server::start`] on the data directory `dir/data` (as `kith admin restore` filled
    /// it, say).
    pub fn start_in(dir: Arc<tempfile::TempDir>, env: &[(&str, &str)]) -> Server {
        Server::try_start_in(dir, env)
            .unwrap_or_else(|log| panic!("kith did not start listening; log:\n{log}"))
    }

    /// [`Server::start`], or the log of a server that did not start.
    fn try_start(env: &[(&str, &str)]) -> Result<Server, String> {
        Server::try_start_in(Arc::new(tempfile::tempdir().expect("tempdir")), env)
    }

    /// [`Server::start_in`], or the log of a server that did not start.
    pub fn try_start_in(
        dir: Arc<tempfile::TempDir>,
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut all = vec![
            ("KITH_REGISTRATION__MODE".to_owned(), "open".to_owned()),
            (POLICY.to_owned(), "off".to_owned()),
        ];
        // Tests make many accounts from one address and send quickly; `hardening.rs`
        // tests the limits at their defaults.
        for limit in ["REGISTRATION", "MESSAGES", "UPLOADS", "TO_DEVICE"] {
            let key = format!("KITH_RATE_LIMITS__{limit}__BURST");
            all.push((key, "1000000".to_owned()));
        }
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Server::try_spawn(dir, all)
    }

    fn spawn(dir: Arc<tempfile::TempDir>, env: Vec<(String, String)>) -> Server {
        Server::try_spawn(dir, env)
            .unwrap_or_else(|log| panic!("kith did not start listening; log:\n{log}"))
    }

    fn try_spawn(
        dir: Arc<tempfile::TempDir>,
        env: Vec<(String, String)>,
    ) -> Result<Server, String> {
        let data = dir.path().join("data");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kith"));
        command
            .env("KITH_SERVER_NAME", SERVER_NAME)
            .env("KITH_LISTEN__CLIENT", "127.0.0.1:0")
            .env("KITH_LISTEN__FEDERATION", "127.0.0.1:0")
            .env("KITH_DATABASE__PATH", &data)
            .env("RUST_LOG", "info,tower_http=warn,ruma_state_res=warn")
            .env_remove("KITH_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in &env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start kith");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, port) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = field(&line, "client_api") {
                    let _ = found.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(addr) = port.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(log.lock().unwrap().clone());
        };
        Ok(Server {
            child,
            base: format!("http://{addr}"),
            data,
            env,
            log,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        })
    }

    /// The server's resident memory, in KiB (from `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Kills the process at once (SIGKILL): no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) and waits for it, bounded.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kith did not stop within 10 s of SIGTERM");
    }

    /// A server that federates on loopback: named `127.0.0.1:PORT` after its federation
    /// listener's port, trusting peers' self-signed certificates and loopback addresses.
    /// Its name's port is chosen before it starts, so another test may take it first:
    /// then it starts again on another.
    pub fn federated(env: &[(&str, &str)]) -> (Server, String) {
        let mut last_log = String::new();
        for _ in 0..5 {
            let name = format!("127.0.0.1:{}", free_port());
            let mut all = vec![
                ("KITH_SERVER_NAME", name.as_str()),
                ("KITH_LISTEN__FEDERATION", name.as_str()),
                ("KITH_FEDERATION__VERIFY_CERTIFICATES", "false"),
                ("KITH_FEDERATION__DENIED_IP_RANGES", "[]"),
            ];
            all.extend_from_slice(env);
            match Server::try_start(&all) {
                Ok(server) => return (server, name),
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("kith did not start listening; log:\n{log}"),
            }
        }
        panic!("kith found no free federation port; last log:\n{last_log}")
    }

    /// Starts another process on the same data directory and environment, or the log of
    /// one that did not start (this one is stopped first).
    pub fn try_again(&mut self) -> Result<Server, String> {
        self.kill();
        Server::try_spawn(Arc::clone(&self.dir), self.env.clone())
    }

    /// Starts a new process on the same data directory and environment.
    pub fn restart(mut self) -> Server {
        self.kill();
        Server::spawn(Arc::clone(&self.dir), self.env.clone())
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The registration token kith printed at first start, if it did.
    pub fn printed_token(&self) -> Option<String> {
        self.log()
            .lines()
            .find(|l| l.contains("registration needs a token"))
            .and_then(|l| field(l, "token"))
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: non-JSON body {text:?}"));
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Registers `user` and returns (user ID, access token).
    pub async fn user(&self, user: &str) -> (String, String) {
        let registered = self.register(user).await;
        let field = |key: &str| registered[key].as_str().unwrap().to_owned();
        (field("user_id"), field("access_token"))
    }

    /// A private room `owner` creates with `member` invited and joined; its ID.
    pub async fn shared_room(&self, owner: &str, member: (&str, &str)) -> String {
        let body = json!({ "preset": "private_chat", "invite": [member.0] });
        let (status, created) = self
            .post("/_matrix/client/v3/createRoom", Some(owner), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let room = created["room_id"].as_str().unwrap().to_owned();
        let path = format!("/_matrix/client/v3/rooms/{room}/join");
        let (status, joined) = self.post(&path, Some(member.1), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{joined}");
        room
    }

    /// Makes a room as `token`'s user with the `createRoom` body; its ID.
    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let (status, created) = self
            .post("/_matrix/client/v3/createRoom", Some(token), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        created["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends a text message; its event ID.
    pub async fn say(&self, token: &str, room: &str, body: &str) -> String {
        let txn = format!("t{}", rand_suffix());
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let content = json!({ "msgtype": "m.text", "body": body });
        let (status, sent) = self.put(&path, Some(token), content).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        sent["event_id"].as_str().unwrap().to_owned()
    }

    /// One `/sync` (`since` for an incremental one, long-polling up to `timeout_ms`) with a
    /// large timeline limit.
    pub async fn sync(&self, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A100%7D%7D%7D";
        let path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={filter}{since}");
        let (status, body) = self.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A request with a raw body and content type, for malformed input.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        request = request.header("content-type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON error body"))
    }

    /// Registers `user` (open mode) and returns the response: `user_id`, `access_token`,
    /// `device_id`.
    pub async fn register(&self, user: &str) -> Value {
        let body =
            json!({ "username": user, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
        let (status, value) = self.post("/_matrix/client/v3/register", None, body).await;
        assert_eq!(status, StatusCode::OK, "register {user}: {value}");
        value
    }

    pub async fn login(&self, user: &str, password: &str, extra: Value) -> (StatusCode, Value) {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.post("/_matrix/client/v3/login", None, body).await
    }

    pub async fn whoami(&self, token: &str) -> (StatusCode, Value) {
        self.get("/_matrix/client/v3/account/whoami", Some(token))
            .await
    }

    /// Runs `kith admin ...` against this server's configuration.
    pub fn admin(&self, args: &[&str]) -> (bool, String) {
        let data = self.data.to_str().expect("a UTF-8 path");
        let listen = self.base.trim_start_matches("http://");
        let env = [
            ("KITH_DATABASE__PATH", data),
            ("KITH_LISTEN__CLIENT", listen),
        ];
        kith_admin(&env, args)
    }
}

/// Runs `kith admin ...` with `env` (`KITH_*`) as its configuration; whether it succeeded,
/// and what it printed.
pub fn kith_admin(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kith"))
        .env("KITH_SERVER_NAME", SERVER_NAME)
        .env("RUST_LOG", "warn")
        .env_remove("KITH_CONFIG")
        .envs(env.iter().copied())
        .arg("admin")
        .args(args)
        .output()
        .expect("run kith admin");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

impl Server {
    /// Every event in the database re-verifies (hash and signatures; redacted events by
    /// signature), as `kith admin verify-events` checks them; returns how many did.
    pub fn assert_events_verify(&self) -> u64 {
        let (ok, output) = self.admin(&["verify-events"]);
        assert!(ok, "verify-events: {output}");
        let report: Value = serde_json::from_str(&output).expect("verify-events prints JSON");
        assert_eq!(report["failed"], json!([]), "{report}");
        report["verified"].as_u64().unwrap() + report["redacted"].as_u64().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `name=value` from a log line, the value up to the next space.
fn field(line: &str, name: &str) -> Option<String> {
    // `[log] format = "json"`: one object per line, the fields under `fields`.
    if let Ok(object) = serde_json::from_str::<Value>(line) {
        return object["fields"][name].as_str().map(str::to_owned);
    }
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}

/// A loopback port nothing listens on now, for a server whose address must be known before
/// it starts (its server name, links in its mail, its SSO callback): below Linux's
/// ephemeral range (32768–60999), so that no outgoing connection's source port takes it
/// before the server that is to listen on it.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..1000)
        .map(|_| rng.random_range(20_000..32_000))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port")
}

/// Asserts a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["errcode"], errcode, "{}", result.1);
    assert!(result.1["error"].is_string(), "{}", result.1);
}

/// A fresh suffix for transaction IDs and names.
pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Serves `router` over TLS on `listener` (non-blocking), with a self-signed certificate
/// for 127.0.0.1, in the background: a peer server for kith to talk to.
pub async fn serve_tls(listener: std::net::TcpListener, router: axum::Router) {
    let certificate = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        certificate.cert.pem().into_bytes(),
        certificate.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(server.serve(router.into_make_service()));
}

/// A server on loopback TLS (a self-signed certificate) answering with `router`; its
/// server name, `127.0.0.1:PORT`.
pub async fn serve_tls_on_loopback(router: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    serve_tls(listener, router).await;
    name
}

/// `text` percent-encoded for a query parameter.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An event (or anything holding events) without the `unsigned.age` each serving stamps,
/// to compare what two readings served.
pub fn ageless(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, inner)| !(key.as_str() == "age" && inner.is_u64()))
                .map(|(key, inner)| (key.clone(), ageless(inner)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(ageless).collect()),
        other => other.clone(),
    }
}
