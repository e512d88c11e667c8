//! `m.room.server_acl`: the servers a room shuts out. Their events are refused, their
//! typing and receipts ignored, and they may not join, leave or read the room through
//! this server. As the spec says (and Synapse does): the name is matched without its port;
//! an IP literal is refused if `allow_ip_literals` is `false` (it is `true` when missing);
//! a `deny` glob wins over an `allow` one; a server no `allow` glob matches is refused.
//! Globs take `*` and `?` and ignore case.

use std::net::Ipv4Addr;

use ruma::{RoomId, ServerName};
use serde_json::Value;

use super::Messaging;
use crate::services::error::{Error, Result};

impl Messaging {
    /// Whether the room's ACL (if any) lets `server` take part.
    pub fn acl_allows(&self, room_id: &str, server: &ServerName) -> Result<bool> {
        let Ok(room_id) = RoomId::parse(room_id) else {
            return Ok(false);
        };
        Ok(match self.state_content(&room_id, "m.room.server_acl")? {
            Some(acl) => allows(&acl, server.as_str()),
            None => true,
        })
    }

    /// 403 `M_FORBIDDEN` for a server the room's ACL shuts out.
    pub fn require_acl_allows(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        match self.acl_allows(room_id.as_str(), server)? {
            true => Ok(()),
            false => Err(Error::forbidden("Server is banned from this room")),
        }
    }
}

/// Whether an ACL's content lets `server` (a server name, perhaps with a port) in.
pub fn allows(acl: &Value, server: &str) -> bool {
    let host = without_port(server);
    let literal = host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok();
    if literal && acl["allow_ip_literals"].as_bool() == Some(false) {
        return false;
    }
    let matches = |list: &str| {
        acl[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|pattern| glob(pattern, host))
    };
    !matches("deny") && matches("allow")
}

fn without_port(server: &str) -> &str {
    match server.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => server,
    }
}

/// `*` any run of characters, `?` any one; everything else itself, ignoring ASCII case.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // On a mismatch, retry from the last `*` one character later: at worst the product of
    // the lengths, which server names (at most 255 characters) keep small.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i].eq_ignore_ascii_case(&t[j])) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn globs_match_as_the_spec_says() {
        assert!(glob("*", "anything.example"));
        assert!(glob("*.example.org", "matrix.Example.org"));
        assert!(!glob("*.example.org", "example.org"));
        assert!(glob("ma?rix.org", "matrix.org"));
        assert!(!glob("matrix.org", "matrix.org.evil"));
        assert!(glob("a*b*c", "aXXbYYc") && !glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn deny_wins_no_allow_refuses_and_ip_literals_can_be_refused() {
        let acl = json!({ "allow": ["*"], "deny": ["evil.example", "*.bad.example"] });
        assert!(allows(&acl, "good.example:8448"));
        assert!(
            !allows(&acl, "evil.example:8448"),
            "the port is not part of the match"
        );
        assert!(!allows(&acl, "x.bad.example"));
        assert!(
            allows(&acl, "127.0.0.1:8448"),
            "IP literals are allowed unless said"
        );
        let literals = json!({ "allow": ["*"], "allow_ip_literals": false });
        assert!(!allows(&literals, "127.0.0.1:8448") && !allows(&literals, "[::1]:8448"));
        assert!(
            !allows(&json!({ "deny": [] }), "good.example"),
            "nothing allowed"
        );
        assert!(
            !allows(&json!({ "allow": "*" }), "good.example"),
            "a malformed list allows none"
        );
    }
}
