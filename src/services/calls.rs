//! What clients need for calls: the TURN server (`/voip/turnServer`), with credentials as
//! coturn's REST API (`use-auth-secret`) expects them, and the MatrixRTC foci for Element
//! Call. Read from `[turn]` and `[well_known] rtc_foci`.

use aws_lc_rs::hmac;
use base64::Engine;
use ruma::UserId;
use serde_json::{Value, json};

use crate::config::Turn;
use crate::services::Services;

/// How long shared-secret credentials last unless `[turn] user_lifetime` says.
const DEFAULT_LIFETIME_SECS: u64 = 24 * 3600;

/// The TURN answer for `user` at `now_secs`: `{}` without a TURN server; with a shared
/// secret, `username` = "<expiry>:<user ID>" and `password` = base64(HMAC-SHA1(secret,
/// username)), as coturn checks them; else the fixed username and password.
pub fn turn_server(turn: &Turn, user: &UserId, now_secs: u64) -> Value {
    if turn.uris.is_empty() {
        return json!({});
    }
    let ttl = turn.user_lifetime.unwrap_or(DEFAULT_LIFETIME_SECS);
    let (username, password) = match (&turn.shared_secret, &turn.username, &turn.password) {
        (Some(secret), _, _) => {
            let username = format!("{}:{user}", now_secs + ttl);
            let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
            let tag = hmac::sign(&key, username.as_bytes());
            let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
            (username, password)
        }
        (None, Some(username), Some(password)) => (username.clone(), password.clone()),
        // URIs without credentials: servers that need none.
        _ => (String::new(), String::new()),
    };
    json!({ "uris": turn.uris, "username": username, "password": password, "ttl": ttl })
}

impl Services {
    /// `/voip/turnServer` for `user`, now.
    pub fn turn_server(&self, user: &UserId) -> Value {
        turn_server(&self.config.turn, user, crate::util::now_ms() / 1000)
    }

    /// The MatrixRTC foci clients are told of (Element Call).
    pub fn rtc_foci(&self) -> &[Value] {
        &self.config.well_known.rtc_foci
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials coturn computes for the same secret and username: RFC 2104
    /// HMAC-SHA1 of "1700086400:@alice:kith.test" under "coturn-secret", base64 (the value
    /// from Python's `hmac` module).
    #[test]
    fn shared_secret_credentials_are_coturns() {
        let turn = Turn {
            uris: vec!["turn:turn.example:3478?transport=udp".into()],
            shared_secret: Some("coturn-secret".into()),
            ..Turn::default()
        };
        let user = UserId::parse("@alice:kith.test").unwrap();
        let answer = turn_server(&turn, &user, 1_700_000_000);
        assert_eq!(answer["username"], "1700086400:@alice:kith.test");
        assert_eq!(answer["ttl"], 86400);
        assert_eq!(answer["password"], "THAUaeSwTLmPVrlQXiqTcYBmkWo=");
        assert_eq!(turn_server(&Turn::default(), &user, 0), json!({}));
    }
}
