//! Hardening for the open internet (issue 17): what an attacker, a hostile peer or another
//! local user could try against a real running kith.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, Server};

/// Every file and directory below `dir`.
fn everything_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(everything_below(&path));
        }
        found.push(path);
    }
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The data directory holds the access-token secret, the signing key and the admin
/// secret: it and everything in it are their owner's alone. A data directory others may
/// read is named in a warning at start.
#[tokio::test]
async fn the_data_directory_and_its_secrets_are_private() {
    let server = Server::start(&[]);
    server.user("alice").await;
    assert_eq!(mode(&server.data), 0o700);
    let below = everything_below(&server.data);
    assert!(
        below.iter().any(|p| p.ends_with("admin.secret")),
        "{below:?}"
    );
    for path in below {
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
    assert!(!server.log().contains("open to other users"));

    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&[("KITH_DATABASE__PATH", open.to_str().unwrap())]);
    assert!(
        server.log().contains("open to other users"),
        "{}",
        server.log()
    );
}

/// Sign-ins that race a password change: a login that checked the old password before
/// the change and makes its session after it must not keep that session. Afterwards, no
/// token from an old-password login works; the changing device's own does.
#[tokio::test]
async fn logins_racing_a_password_change_keep_no_session() {
    let server = &Server::start(&[("KITH_LIMITS__LOGIN_FAILURE_BURST", "1000")]);
    let (user, token) = server.user("racer").await;
    let auth = json!({ "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user }, "password": PASSWORD });
    let change = json!({ "new_password": "a new secret", "auth": auth, "logout_devices": true });
    // Logins start every 50 ms until the change is answered, so some are checking the old
    // password when it changes (bounded: 200 logins at most).
    let done = AtomicBool::new(false);
    let changing = async {
        let path = "/_matrix/client/v3/account/password";
        let answer = server.post(path, Some(&token), change).await;
        done.store(true, Ordering::SeqCst);
        answer
    };
    let logging = async {
        let mut running = FuturesUnordered::new();
        let mut finished = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut started = 0;
        loop {
            tokio::select! {
                _ = tick.tick(), if !done.load(Ordering::SeqCst) && started < 200 => {
                    running.push(server.login("racer", PASSWORD, json!({})));
                    started += 1;
                }
                Some(result) = running.next(), if !running.is_empty() => finished.push(result),
                else => break,
            }
        }
        finished
    };
    let (logins, (status, changed)) = tokio::join!(logging, changing);
    assert_eq!(status, StatusCode::OK, "{changed}");
    let mut kept = 0;
    for (status, login) in logins {
        let Some(old) = login["access_token"]
            .as_str()
            .filter(|_| status == StatusCode::OK)
        else {
            continue;
        };
        kept += usize::from(server.whoami(old).await.0 == StatusCode::OK);
    }
    assert_eq!(
        kept, 0,
        "sessions from the old password outlived the change"
    );
    assert_eq!(server.whoami(&token).await.0, StatusCode::OK);
}
