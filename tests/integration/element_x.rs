//! Element X's engine, matrix-rust-sdk (`matrix-sdk` and `matrix-sdk-ui` from crates.io),
//! against kith: `tests/clients/element_x`, a program of its own workspace that `.ci/run`
//! builds, signs two users in and syncs them only through sliding sync, as the app does.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{PASSWORD, POLICY, Server, free_port};

/// The longest the whole run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The test client: `KITH_ELEMENT_X`, else where `.ci/run` builds it.
fn program() -> String {
    std::env::var("KITH_ELEMENT_X").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/kith-element-x-target/debug/kith-element-x")
    })
}

/// Two users sign in with passwords, bootstrap cross-signing and key backup, and under the
/// default friendship policy (`request`) one opens a direct chat with the other: the
/// invite shows in the room list, the other joins, they talk encrypted; the list orders by
/// recency and shows a new room live; unread counts rise and clear with a receipt; typing
/// shows; a reaction toggled three times ends as one; kith restarts mid-session and syncing
/// goes on; a kick takes the room out of the list.
#[tokio::test]
async fn element_x_engine_chats_through_sliding_sync() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start(&[("KITH_LISTEN__CLIENT", &listen), (POLICY, "request")]);
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let localpart = |id: &str| id[1..id.find(':').unwrap()].to_owned();
    let store = tempfile::tempdir().unwrap();
    let mut child = Command::new(program())
        .args([
            server.base.as_str(),
            &localpart(&alice),
            &localpart(&bob),
            PASSWORD,
            store.path().to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (`bash .ci/run` builds it)", program()));
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    let mut output = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match printed.recv_timeout(left) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if line == "RESTART" {
                    server = server.restart();
                    assert!(server.base.ends_with(&listen), "restarted on another port");
                    writeln!(stdin, "go").unwrap();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the Element X test ran over {RUN_TIMEOUT:?}:\n{output}");
            }
        }
    }
    println!("{output}");
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        status.success() && output.contains("element x test passed"),
        "the Element X test failed:\n{output}\n{errors}\nserver log:\n{}",
        server.log()
    );
}
