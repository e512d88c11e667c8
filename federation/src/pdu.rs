//! Room events as Matrix PDUs. A local event is built from its parts, content-hashed and
//! signed with the server key, and named by its reference hash, all as its room version
//! says (v10, v11, v12); a stored or received PDU is parsed back into the same type, which
//! is what ruma's state-res auth checks take.

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue, to_canonical_value};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Raw;
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use crate::ServerKeys;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("room version {0} is not supported")]
    UnsupportedVersion(RoomVersionId),
    #[error("event is malformed: {0}")]
    Format(String),
    #[error("event could not be signed: {0}")]
    Signing(String),
}

/// What a new local event is made of; the rest (hashes, signatures, ID) is derived.
pub struct NewEvent {
    /// `None` only for the create event of a v12 room, whose ID is derived from it.
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: serde_json::Value,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: u64,
    pub origin_server_ts: u64,
    /// Top-level `redacts`, for v10 redactions (v11 and later carry it in `content`).
    pub redacts: Option<OwnedEventId>,
}

/// A parsed PDU and its signed JSON.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: UInt,
    /// The event exactly as signed (no `event_id`, as room versions 3 and later send it).
    pub json: CanonicalJsonObject,
}

/// The fields read back out of the JSON.
#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

/// The room versions kith speaks, newest first.
pub const SUPPORTED_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V12, RoomVersionId::V11, RoomVersionId::V10];

/// The rules of a room version kith speaks (ruma knows older ones too; kith does not take
/// part in them).
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, PduError> {
    version
        .rules()
        .filter(|_| SUPPORTED_VERSIONS.contains(version))
        .ok_or_else(|| PduError::UnsupportedVersion(version.clone()))
}

impl ServerKeys {
    /// Builds, hashes, signs and names a local event, and checks its format.
    pub fn build_pdu(&self, version: &RoomVersionId, new: NewEvent) -> Result<Pdu, PduError> {
        let format = |e: &dyn std::fmt::Display| PduError::Format(e.to_string());
        let ids = |ids: &[OwnedEventId]| {
            CanonicalJsonValue::Array(ids.iter().map(|id| id.as_str().into()).collect())
        };
        let mut object = CanonicalJsonObject::new();
        object.insert("type".into(), new.kind.to_string().into());
        object.insert("sender".into(), new.sender.as_str().into());
        object.insert(
            "content".into(),
            to_canonical_value(&new.content).map_err(|e| format(&e))?,
        );
        let ts = UInt::try_from(new.origin_server_ts).map_err(|e| format(&e))?;
        object.insert("origin_server_ts".into(), ts.into());
        let depth = UInt::try_from(new.depth).map_err(|e| format(&e))?;
        object.insert("depth".into(), depth.into());
        object.insert("prev_events".into(), ids(&new.prev_events));
        object.insert("auth_events".into(), ids(&new.auth_events));
        if let Some(room_id) = &new.room_id {
            object.insert("room_id".into(), room_id.as_str().into());
        }
        if let Some(state_key) = new.state_key {
            object.insert("state_key".into(), state_key.into());
        }
        if let Some(redacts) = &new.redacts {
            object.insert("redacts".into(), redacts.as_str().into());
        }
        self.sign_new_pdu(version, object)
    }

    /// Hashes, signs and names an event whose fields are all set (a local event, or a
    /// join or leave built on a resident server's template).
    pub fn sign_new_pdu(
        &self,
        version: &RoomVersionId,
        mut object: CanonicalJsonObject,
    ) -> Result<Pdu, PduError> {
        let rules = rules(version)?;
        object.remove("signatures");
        object.remove("hashes");
        object.remove("event_id");
        ruma::signatures::hash_and_sign_event(
            self.server_name(),
            self.key_pair(),
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| PduError::Signing(e.to_string()))?;
        Pdu::received(version, object)
    }

    /// Adds this server's signature to another server's event (an invite for one of our
    /// users), leaving its ID as it is.
    pub fn countersign(
        &self,
        version: &RoomVersionId,
        object: &mut CanonicalJsonObject,
    ) -> Result<(), PduError> {
        let rules = rules(version)?;
        let redacted = ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
            .map_err(|e| PduError::Format(e.to_string()))?;
        let mut signed = redacted;
        ruma::signatures::sign_json(self.server_name(), self.key_pair(), &mut signed)
            .map_err(|e| PduError::Signing(e.to_string()))?;
        if let Some(signatures) = signed.remove("signatures") {
            object.insert("signatures".into(), signatures);
        }
        Ok(())
    }
}

impl Pdu {
    /// Parses an event as another server sends it: checks its format and names it by its
    /// reference hash (its signatures are checked separately, with [`Pdu::verify`]).
    pub fn received(
        version: &RoomVersionId,
        mut object: CanonicalJsonObject,
    ) -> Result<Pdu, PduError> {
        let rules = rules(version)?;
        let format = |e: &dyn std::fmt::Display| PduError::Format(e.to_string());
        object.remove("event_id");
        ruma::state_res::check_pdu_format(&object, &rules.event_format)
            .map_err(PduError::Format)?;
        let hash = ruma::signatures::reference_hash(&object, &rules).map_err(|e| format(&e))?;
        let event_id = EventId::new_v2_or_v3(&hash).map_err(|e| format(&e))?;
        Pdu::from_json(event_id, object)
    }

    /// The server the sender belongs to.
    pub fn origin(&self) -> &ruma::ServerName {
        self.sender.server_name()
    }
}

impl Pdu {
    /// Parses a signed PDU whose ID is already known (from its reference hash).
    pub fn from_json(event_id: OwnedEventId, json: CanonicalJsonObject) -> Result<Pdu, PduError> {
        let text = serde_json::to_string(&json).map_err(|e| PduError::Format(e.to_string()))?;
        let fields: Fields =
            serde_json::from_str(&text).map_err(|e| PduError::Format(e.to_string()))?;
        let redacts = match fields.redacts {
            Some(redacts) => Some(redacts),
            None if fields.kind == TimelineEventType::RoomRedaction => {
                let content: Option<RedactsInContent> =
                    serde_json::from_str(fields.content.get()).ok();
                content.and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Pdu {
            event_id,
            room_id: fields.room_id,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts,
            depth: fields.depth,
            json,
        })
    }

    /// The room ID of a v12 room: the create event's reference hash with a `!`.
    pub fn derived_room_id(&self) -> Result<OwnedRoomId, PduError> {
        let hash = self.event_id.as_str().trim_start_matches('$');
        RoomId::new_v2(hash).map_err(|e| PduError::Format(e.to_string()))
    }

    /// Checks the content hash and every signature, given the signers' keys.
    pub fn verify(&self, keys: &PublicKeyMap, version: &RoomVersionId) -> Result<Verified, String> {
        let rules = rules(version).map_err(|e| e.to_string())?;
        ruma::signatures::verify_event(keys, &self.json, &rules).map_err(|e| e.to_string())
    }

    /// The content, deserialized as `T`.
    pub fn content_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T, serde_json::Error> {
        Raw::<T>::from_json(self.content.clone()).deserialize()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use kith_storage::Storage;
    use ruma::events::StateEventType;
    use ruma::state_res::{check_state_dependent_auth_rules, check_state_independent_auth_rules};
    use serde_json::json;

    use super::*;

    fn key_map(keys: &ServerKeys) -> PublicKeyMap {
        let public = ruma::serde::Base64::parse(keys.public_key_base64()).unwrap();
        BTreeMap::from([(
            keys.server_name().to_owned(),
            BTreeMap::from([(keys.key_id(), public)]),
        )])
    }

    type State<'a> = HashMap<(StateEventType, String), &'a Pdu>;

    fn at<'a>(state: &'a State<'a>) -> impl Fn(&StateEventType, &str) -> Option<&'a Pdu> + 'a {
        move |kind, key| state.get(&(kind.clone(), key.to_owned())).copied()
    }

    fn event(room_id: Option<&OwnedRoomId>, sender: &str, kind: TimelineEventType) -> NewEvent {
        NewEvent {
            room_id: room_id.cloned(),
            sender: sender.try_into().unwrap(),
            kind,
            state_key: None,
            content: json!({}),
            prev_events: Vec::new(),
            auth_events: Vec::new(),
            depth: 1,
            origin_server_ts: 1_700_000_000_000,
            redacts: None,
        }
    }

    #[test]
    fn local_events_are_signed_pdus_that_pass_auth_in_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let keys = ServerKeys::load_or_generate(&storage, "kith.test").unwrap();
        let alice = "@alice:kith.test";
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            let rules = rules(&version).unwrap();
            let v12 = rules.authorization.room_create_event_id_as_room_id;
            let given_room: Option<OwnedRoomId> =
                (!v12).then(|| "!room:kith.test".try_into().unwrap());

            let mut create = event(given_room.as_ref(), alice, TimelineEventType::RoomCreate);
            create.state_key = Some(String::new());
            create.content = json!({ "room_version": version.as_str() });
            if !rules.authorization.use_room_create_sender {
                create.content["creator"] = alice.into();
            }
            let create = keys.build_pdu(&version, create).unwrap();
            assert_eq!(
                create.verify(&key_map(&keys), &version).unwrap(),
                Verified::All
            );
            assert!(!create.json.contains_key("event_id"));
            let reference = ruma::signatures::reference_hash(&create.json, &rules).unwrap();
            assert_eq!(create.event_id.as_str(), format!("${reference}"));
            let room_id = match given_room {
                Some(room_id) => room_id,
                None => create.derived_room_id().unwrap(),
            };

            let mut join = event(Some(&room_id), alice, TimelineEventType::RoomMember);
            join.state_key = Some(alice.to_owned());
            join.content = json!({ "membership": "join" });
            join.prev_events = vec![create.event_id.clone()];
            // v12 rooms name the create event by their ID, not in auth_events.
            join.auth_events = if v12 {
                vec![]
            } else {
                vec![create.event_id.clone()]
            };
            join.depth = 2;
            let join = keys.build_pdu(&version, join).unwrap();
            assert_eq!(
                join.verify(&key_map(&keys), &version).unwrap(),
                Verified::All
            );

            let events: HashMap<OwnedEventId, Pdu> = [
                (create.event_id.clone(), create.clone()),
                (join.event_id.clone(), join.clone()),
            ]
            .into_iter()
            .collect();
            let fetch = |id: &EventId| events.get(id);
            let mut state: State =
                HashMap::from([((StateEventType::RoomCreate, String::new()), &create)]);
            let authz = &rules.authorization;
            check_state_independent_auth_rules(authz, &create, fetch).unwrap();
            check_state_independent_auth_rules(authz, &join, fetch).unwrap();
            check_state_dependent_auth_rules(authz, &join, at(&state)).unwrap();
            state.insert((StateEventType::RoomMember, alice.to_owned()), &join);

            // Someone who never joined cannot speak in the room.
            let mut intruder = event(
                Some(&room_id),
                "@mallory:kith.test",
                TimelineEventType::RoomMessage,
            );
            intruder.content = json!({ "msgtype": "m.text", "body": "hi" });
            intruder.prev_events = vec![join.event_id.clone()];
            intruder.auth_events = if v12 {
                vec![]
            } else {
                vec![create.event_id.clone()]
            };
            intruder.depth = 3;
            let intruder = keys.build_pdu(&version, intruder).unwrap();
            assert!(
                check_state_dependent_auth_rules(authz, &intruder, at(&state)).is_err(),
                "{version}"
            );

            // Tampering is caught: a changed body fails the content hash.
            let mut tampered = join.clone();
            tampered.json.insert(
                "origin_server_ts".into(),
                CanonicalJsonValue::Integer(5u32.into()),
            );
            assert!(tampered.verify(&key_map(&keys), &version).is_err());
        }
    }
}
