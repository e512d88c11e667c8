//! The friendship policy messaging asks about: who may be invited, and who may still write
//! into a direct chat (`[contacts] dm_requires_friendship`).

use super::Contacts;
use crate::config::DmPolicy;
use crate::services::error::{Error, ErrorKind, Result};

/// How many members make a room a direct chat at most, when not marked `is_direct`.
pub const DIRECT_MAX_MEMBERS: usize = 2;

impl Contacts {
    /// Whether `inviter` may invite `invitee` into a room that is (or would become) a
    /// direct chat (`direct`): 403 `M_INVITE_BLOCKED` if the policy needs friendship and they
    /// are not friends.
    pub fn check_invite(
        &self,
        policy: DmPolicy,
        inviter: &str,
        invitee: &str,
        direct: bool,
    ) -> Result<()> {
        let needed = match policy {
            DmPolicy::Off => false,
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
    pub fn check_send(&self, policy: DmPolicy, sender: &str, members: &[String]) -> Result<()> {
        if policy == DmPolicy::Off || members.len() != DIRECT_MAX_MEMBERS {
            return Ok(());
        }
        let Some(other) = members.iter().find(|m| m.as_str() != sender) else {
            return Ok(());
        };
        if !self.are_friends(sender, other)? {
            return Err(Error::forbidden(
                "This direct chat needs the two of you to be friends",
            ));
        }
        Ok(())
    }
}
