//! Redactions in a draft: who may strip what, and the stripping.

use super::*;

/// How many later events are searched for the state event that replaced a redacted one.
const SUCCESSOR_SEARCH: usize = 500;

impl Draft<'_> {
    /// The auth rules let anyone who may send a redaction send one; which events it may
    /// strip is the server's check: one's own, or anyone's with the `redact` power level.
    /// Checked here, under the room's lock, whichever endpoint the redaction came through.
    pub(super) fn check_redaction(
        &self,
        spec: &EventSpec,
        top_level: Option<&EventId>,
    ) -> Result<()> {
        let in_content = spec.content.get("redacts").and_then(|r| r.as_str());
        let target = top_level.map(EventId::as_str).or(in_content);
        let (Some(target), Some(room_id)) = (target, self.room_id.as_deref()) else {
            return Ok(());
        };
        let Some(event) = self.messaging.stored_pdu(target)? else {
            return Ok(());
        };
        let theirs =
            event.json.get("sender").and_then(|s| s.as_str()) != Some(spec.sender.as_str());
        if event.room_id == room_id.as_str()
            && theirs
            && !self
                .messaging
                .may_redact_others(room_id, spec.sender.as_str())?
        {
            return Err(Error::forbidden(
                "You need the room's redact power level to redact others' events",
            ));
        }
        Ok(())
    }

    /// Whether a redaction strips its target here: a local one was checked when it was
    /// drafted; one from another server only strips its own sender's events, or anyone's
    /// if its sender has the `redact` power level (else it is kept, and does nothing).
    pub(super) fn may_apply_redaction(&self, redaction: &Pdu, target: &EventId) -> Result<bool> {
        if !self.received.contains(&redaction.event_id) {
            return Ok(true);
        }
        let Some(event) = self.messaging.stored_pdu(target.as_str())? else {
            return Ok(true);
        };
        let own =
            event.json.get("sender").and_then(|s| s.as_str()) == Some(redaction.sender.as_str());
        match (own, self.room_id.as_deref()) {
            (true, _) => Ok(true),
            (false, Some(room_id)) => self
                .messaging
                .may_redact_others(room_id, redaction.sender.as_str()),
            (false, None) => Ok(false),
        }
    }

    /// Strips the event a redaction names (in this room) to what its room version keeps,
    /// remembering the redaction for clients, and takes it out of unread counts. The
    /// hashes and signatures stay, so the event still verifies as the redacted form of a
    /// signed PDU.
    pub(super) fn redact(
        &self,
        batch: &mut Batch,
        unread: &mut HashMap<String, UnreadCounts>,
        members: &[OwnedUserId],
        target: &EventId,
        redaction: &StoredPdu,
    ) -> Result<()> {
        let Some(mut event) = self.messaging.stored_pdu(target.as_str())? else {
            return Ok(());
        };
        if event.room_id != redaction.room_id {
            return Ok(());
        }
        // A redacted edit or reply no longer counts among its event's relations.
        super::super::relations::unindex_into(batch, &event)?;
        // Nor can its words be found any more.
        super::super::message_search::unindex_into(batch, &event)?;
        event.json = ruma::canonical_json::redact(event.json, &self.rules.redaction, None)
            .map_err(Error::internal)?;
        event.redacted_because = Some(redaction.client_event());
        batch.put(&catalog::EVENTID_PDU, &target.as_str(), &event)?;
        if event.json.contains_key("state_key") {
            self.redact_copy_in_successor(batch, &event)?;
        }
        self.messaging
            .uncount_notification(batch, unread, members, &event)
    }

    /// The state event that replaced a redacted one keeps a copy of its content
    /// (`unsigned.prev_content`): that copy is redacted too. Looked for among the next
    /// [`SUCCESSOR_SEARCH`] events of the room; state is rarely redacted.
    fn redact_copy_in_successor(&self, batch: &mut Batch, redacted: &StoredPdu) -> Result<()> {
        let later = self.messaging.timeline_after(
            &redacted.room_id,
            redacted.position,
            SUCCESSOR_SEARCH,
        )?;
        for (_, mut successor) in later {
            let replaces = successor.replaced.as_ref().map(|r| &r.event_id);
            if replaces != Some(&redacted.event_id) {
                continue;
            }
            if let Some(replaced) = successor.replaced.as_mut() {
                replaced.content = redacted.client_event()["content"].take();
            }
            let id = successor.event_id.clone();
            batch.put(&catalog::EVENTID_PDU, &id.as_str(), &successor)?;
            break;
        }
        Ok(())
    }
}
