//! Finding people, a use case across services: profile's directory (words of IDs and
//! display names), auth (verified email addresses, active accounts), contacts (who
//! lets themselves be found by email, and what each result is to the searcher), and
//! messaging (another server's users are found only while they share a room).

use ruma::UserId;

use crate::services::Services;
use crate::services::contacts::Relationship;
use crate::services::error::Result;
use crate::services::profile::directory::Hit;

/// One person found.
pub struct Found {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub relationship: Relationship,
}

/// The users matching `term`, best first: the owner of an email address, then more
/// whole-word matches, then friends, then those with a request either way; and whether
/// there were more than `limit`. Deactivated users are never found; the searcher only if
/// `include_self`.
pub fn find_users(
    services: &Services,
    me: &UserId,
    term: &str,
    limit: usize,
    include_self: bool,
) -> Result<(Vec<Found>, bool)> {
    let (mut hits, mut limited) = services.profiles.search(term)?;
    if let Some(owner) = email_match(services, term)? {
        hits.retain(|h| h.user_id != owner);
        let exact_words = usize::MAX;
        hits.insert(
            0,
            Hit {
                user_id: owner,
                exact_words,
            },
        );
    }
    let rank = |r: Relationship| match r {
        Relationship::Friend => 0,
        Relationship::Incoming => 1,
        Relationship::Outgoing => 2,
        Relationship::None => 3,
    };
    let mut found = Vec::new();
    for hit in hits {
        if hit.user_id == me.as_str() && !include_self {
            continue;
        }
        let Ok(user_id) = UserId::parse(hit.user_id.as_str()) else {
            continue;
        };
        let findable = match services.is_ours(user_id.server_name()) {
            true => services.auth.is_active(&user_id)?,
            false => shares_room(services, me, &user_id)?,
        };
        if findable {
            let relationship = services.contacts.relationship(me.as_str(), &hit.user_id)?;
            found.push((hit, relationship));
        }
    }
    found.sort_by(|(a, ra), (b, rb)| {
        b.exact_words
            .cmp(&a.exact_words)
            .then(rank(*ra).cmp(&rank(*rb)))
            .then(a.user_id.cmp(&b.user_id))
    });
    limited |= found.len() > limit;
    let mut results = Vec::new();
    for (hit, relationship) in found.into_iter().take(limit) {
        let profile = services.profiles.get(&hit.user_id)?.unwrap_or_default();
        results.push(Found {
            user_id: hit.user_id,
            display_name: profile.displayname,
            avatar_url: profile.avatar_url,
            relationship,
        });
    }
    Ok((results, limited))
}

/// Whether the two users are joined to a common room.
fn shares_room(services: &Services, me: &UserId, other: &UserId) -> Result<bool> {
    for room in services.messaging.joined_rooms(me)? {
        let theirs = services.messaging.membership(other, &room)?;
        if theirs.is_some_and(|m| m.membership == "join") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The user whose verified email address `term` is, if they let themselves be found by it.
/// Only the whole address finds them, so addresses cannot be guessed a letter at a time.
fn email_match(services: &Services, term: &str) -> Result<Option<String>> {
    let term = term.trim();
    if term.starts_with('@') || !term.contains('@') {
        return Ok(None);
    }
    let Some(owner) = services.auth.email_owner(term)? else {
        return Ok(None);
    };
    let record = services.contacts.record(owner.as_str())?;
    Ok(record
        .filter(|r| r.discoverable_by_email)
        .map(|_| owner.to_string()))
}
