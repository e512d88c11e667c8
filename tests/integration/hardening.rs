//! Hardening for the open internet (issue 17): what an attacker, a hostile peer or another
//! local user could try against a real running kith.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::Server;

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
