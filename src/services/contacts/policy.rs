//! The friendship policy messaging asks about: who may be invited, and who may still write
//! into a direct chat (`[contacts] dm_requires_friendship`).

use ruma::{OwnedUserId, UserId};

use super::Contacts;
use crate::config::DmPolicy;
use crate::services::error::{Error, ErrorKind, Result};

/// How many members make a room a direct chat at most, when not marked `is_direct`.
pub const DIRECT_MAX_MEMBERS: usize = 2;

impl Contacts {
    pub fn dm_policy(&self) -> DmPolicy {
        self.dm_policy
    }

    /// Whether the friendship policy applies to inviting `invitee`. Users of servers
    /// without friend requests cannot be asked to be friends: inviting them is the
    /// inviter's own consent, and their server decides for them. Finding out may take a
    /// request to their server, so callers ask before taking any lock.
    pub async fn policy_applies_to(&self, invitee: &UserId) -> bool {
        let server = invitee.server_name();
        server.as_str() == self.server_name || self.speaks_contacts(server).await
    }

    /// Whether `inviter` may invite `invitee` into a room that is (or would become) a
    /// direct chat (`direct`): 403 `M_INVITE_BLOCKED` if the policy needs friendship and they
    /// are not friends.
    pub fn check_invite(&self, inviter: &str, invitee: &str, direct: bool) -> Result<()> {
        let needed = match self.dm_policy {
            // Under `request`, such an invite is a friend request instead.
            DmPolicy::Off | DmPolicy::Request => false,
            DmPolicy::DmOnly => direct,
            DmPolicy::AllInvites => true,
        };
        if needed && !self.are_friends(inviter, invitee)? {
            return Err(Error::new(
                ErrorKind::InviteBlocked,
                format!("{invitee} accepts invitations only from friends"),
            ));
        }
        Ok(())
    }

    /// Whether `sender` may write into a direct chat whose joined members are `members`:
    /// under any policy but `off`, the two people in it must still be friends.
    pub fn check_send(&self, sender: &str, members: &[OwnedUserId]) -> Result<()> {
        if self.dm_policy == DmPolicy::Off || members.len() != DIRECT_MAX_MEMBERS {
            return Ok(());
        }
        let Some(other) = members.iter().find(|m| m.as_str() != sender) else {
            return Ok(());
        };
        if !self.are_friends(sender, other.as_str())? {
            return Err(Error::forbidden(
                "This direct chat needs the two of you to be friends",
            ));
        }
        Ok(())
    }
}
