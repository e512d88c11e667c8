//! The catalog: every column family kith has, with its key and value layout.
//!
//! Names follow `keyparts_valueparts`. Keys are encoded with [`crate::codec`] (strings end in
//! 0xFF, integers are 8 big-endian bytes); values are JSON unless said otherwise. Adding a
//! table here is enough for it to be created on the next start.

/// One column family: its name and its documented layout.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static str,
    pub value: &'static str,
}

/// Server-wide singletons (schema version, stream reservation, secrets).
pub const GLOBAL_VALUE: Table = Table {
    name: "global_value",
    key: "name (str), one of the constants in `schema` and the services' own",
    value: "JSON, shape fixed per name",
};

/// The event log (transactional outbox): every domain event, in commit order.
pub const STREAM_EVENT: Table = Table {
    name: "stream_event",
    key: "stream position (u64)",
    value: "DomainEvent JSON",
};

/// Where each event-log subscriber has got to.
pub const SUBSCRIBER_CURSOR: Table = Table {
    name: "subscriber_cursor",
    key: "subscriber name (str)",
    value: "last handled stream position (u64 JSON)",
};

/// Accounts (auth-service).
pub const USERID_ACCOUNT: Table = Table {
    name: "userid_account",
    key: "user ID (str)",
    value: "Account JSON: password hash, admin flag, deactivation, creation time",
};

/// Devices and their token state (session-service).
pub const USERID_DEVICEID_DEVICE: Table = Table {
    name: "userid_deviceid_device",
    key: "(user ID, device ID)",
    value: "Device JSON: display name, last seen, token generation, refresh-token state",
};

/// Refresh tokens by hash, to find the device a presented refresh token belongs to.
pub const REFRESHHASH_USERID_DEVICEID: Table = Table {
    name: "refreshhash_userid_deviceid",
    key: "SHA-256 of the refresh token, unpadded base64 (str)",
    value: "[user ID, device ID] JSON",
};

/// Registration tokens (registration mode `token`).
pub const REGTOKEN_INFO: Table = Table {
    name: "regtoken_info",
    key: "token (str)",
    value: "RegistrationToken JSON: uses allowed, pending, completed, expiry",
};

/// Public profiles (profile-service), created from `user.created`.
pub const USERID_PROFILE: Table = Table {
    name: "userid_profile",
    key: "user ID (str)",
    value: "Profile JSON: displayname, avatar_url",
};

/// Rooms (messaging-service): version, forward extremities, depth.
pub const ROOMID_ROOM: Table = Table {
    name: "roomid_room",
    key: "room ID (str)",
    value: "Room JSON: room version, forward extremities (event IDs), depth of the newest event",
};

/// Every event kept, by ID.
pub const EVENTID_PDU: Table = Table {
    name: "eventid_pdu",
    key: "event ID (str)",
    value: "StoredPdu JSON: room ID, stream position, the signed PDU as sent over federation",
};

/// Each room's timeline in stream order.
pub const ROOMID_POSITION_EVENTID: Table = Table {
    name: "roomid_position_eventid",
    key: "(room ID, stream position)",
    value: "event ID (JSON string)",
};

/// Events that relate to another (`m.relates_to`: reactions, edits, thread replies,
/// references), under the event they relate to; a redacted one is taken out.
pub const EVENTID_RELTYPE_POSITION_RELATION: Table = Table {
    name: "eventid_reltype_position_relation",
    key: "(related-to event ID, rel_type, stream position)",
    value: "Relation JSON: event ID, room, sender, type, origin_server_ts",
};

/// The words of each room's messages, names and topics (normalized as the user directory
/// does), for server-side search; encrypted rooms have none.
pub const ROOMID_WORD_POSITION_HIT: Table = Table {
    name: "roomid_word_position_hit",
    key: "(room ID, word, stream position)",
    value: "Hit JSON: event ID, the key it is in (content.body, content.name, content.topic)",
};

/// Where each user's pushes go (`/pushers`).
pub const USERID_APPID_PUSHKEY_PUSHER: Table = Table {
    name: "userid_appid_pushkey_pusher",
    key: "(user ID, app ID, pushkey)",
    value: "Pusher JSON, as the client set it",
};

/// Pushes not yet delivered to a push gateway, written with the event that causes them.
pub const POSITION_USERID_PUSH: Table = Table {
    name: "position_userid_push",
    key: "(event's stream position, user ID)",
    value: "PushJob JSON: room, event, highlight, attempts, when to try next",
};

/// Each user's notifications (`/notifications`), newest last; the oldest are dropped.
pub const USERID_POSITION_NOTIFIED: Table = Table {
    name: "userid_position_notified",
    key: "(user ID, event's stream position)",
    value: "Notified JSON: room, event, actions, highlight, when",
};

/// Rooms published in the public room directory.
pub const ROOMID_PUBLISHED: Table = Table {
    name: "roomid_published",
    key: "room ID",
    value: "when it was published (ms)",
};

/// Reports of events, rooms and users, for the server's admins, oldest first.
pub const TS_REPORTID_REPORT: Table = Table {
    name: "ts_reportid_report",
    key: "(received ms, report ID)",
    value: "Report JSON: reporter, what (event, room or user), reason, score",
};

/// Each room's threads, by root: where the thread last had an event (for `/threads`).
pub const ROOMID_ROOTID_THREADPOSITION: Table = Table {
    name: "roomid_rootid_threadposition",
    key: "(room ID, thread root event ID)",
    value: "stream position of the thread's latest event",
};

/// Each room's current state.
pub const ROOMID_TYPE_STATEKEY_EVENTID: Table = Table {
    name: "roomid_type_statekey_eventid",
    key: "(room ID, event type, state key)",
    value: "event ID (JSON string)",
};

/// Every user's membership in every room they were ever in, for joined rooms and sync.
pub const USERID_ROOMID_MEMBERSHIP: Table = Table {
    name: "userid_roomid_membership",
    key: "(user ID, room ID)",
    value: "Membership JSON: membership, event ID, stream position",
};

/// Transaction IDs of sends, per device, so a replay returns the first answer.
pub const USERID_DEVICEID_TXNID_EVENTID: Table = Table {
    name: "userid_deviceid_txnid_eventid",
    key: "(user ID, device ID, request scope: `send/<room>/<type>/<transaction ID>`, `redact/…`, `sendToDevice/<type>/<transaction ID>`)",
    value: "event ID (JSON string); null for to-device sends",
};

/// Each room's members, the mirror of `userid_roomid_membership`, for member lists and
/// counts without reading state events.
pub const ROOMID_USERID_MEMBERSHIP: Table = Table {
    name: "roomid_userid_membership",
    key: "(room ID, user ID)",
    value: "Membership JSON, as in `userid_roomid_membership`",
};

/// Account data, global (room ID empty) and per room, each at the stream position of its
/// last change so incremental syncs find what changed.
pub const USERID_ROOMID_TYPE_ACCOUNTDATA: Table = Table {
    name: "userid_roomid_type_accountdata",
    key: "(user ID, room ID or empty for global, event type)",
    value: "AccountData JSON: stream position, content as the client sent it",
};

/// Sync filters, as the client sent them.
pub const USERID_FILTERID_FILTER: Table = Table {
    name: "userid_filterid_filter",
    key: "(user ID, filter ID)",
    value: "the filter JSON, verbatim",
};

/// Read receipts (public and private), the newest per user, type and thread.
pub const ROOMID_USERID_TYPE_THREAD_RECEIPT: Table = Table {
    name: "roomid_userid_type_thread_receipt",
    key: "(room ID, user ID, receipt type, thread ID or empty for unthreaded)",
    value: "Receipt JSON: event ID, timestamp, stream position",
};

/// Who is typing in a room, each until an expiry time.
pub const ROOMID_TYPING: Table = Table {
    name: "roomid_typing",
    key: "room ID (str)",
    value: "Typing JSON: user ID to expiry (ms), stream position of the last change",
};

/// Presence (profile-service): what each user last set.
pub const USERID_PRESENCE: Table = Table {
    name: "userid_presence",
    key: "user ID (str)",
    value: "Presence JSON: state, status message, last change (ms), stream position",
};

/// Unread counts per user and room: notifying events after the user's read receipt.
pub const USERID_ROOMID_UNREAD: Table = Table {
    name: "userid_roomid_unread",
    key: "(user ID, room ID)",
    value: "UnreadCounts JSON: notifications, highlights",
};

/// The events that notified a user and are not yet read, so a receipt can recount.
pub const USERID_ROOMID_POSITION_NOTIFICATION: Table = Table {
    name: "userid_roomid_position_notification",
    key: "(user ID, room ID, stream position of the event)",
    value: "whether it highlights (bool JSON)",
};

/// Room aliases of this server.
pub const ALIAS_ROOMID: Table = Table {
    name: "alias_roomid",
    key: "room alias (str), `#name:server`",
    value: "Alias JSON: room ID, creator",
};

/// The user directory (profile-service): every word of each local user's ID and display
/// name, normalized (lower case, accents removed), for word-prefix search.
pub const WORD_USERID: Table = Table {
    name: "word_userid",
    key: "(normalized word, user ID)",
    value: "null",
};

/// Each user's contacts record (contact-service), created from `user.created`.
pub const USERID_CONTACTS: Table = Table {
    name: "userid_contacts",
    key: "user ID (str)",
    value: "ContactsRecord JSON: creation time",
};

/// Friendships, written both ways in one batch.
pub const USERID_OTHERID_FRIENDSHIP: Table = Table {
    name: "userid_otherid_friendship",
    key: "(user ID, friend's user ID)",
    value: "Friendship JSON: since (ms)",
};

/// Open friend requests.
pub const REQUESTID_REQUEST: Table = Table {
    name: "requestid_request",
    key: "request ID (str)",
    value: "FriendRequest JSON: from, to, message, creation time, hidden (sender ignored)",
};

/// Each user's open requests by the other user: outgoing for the sender, incoming for the
/// recipient (none for a recipient who ignores the sender).
pub const USERID_OTHERID_REQUEST: Table = Table {
    name: "userid_otherid_request",
    key: "(user ID, other user ID)",
    value: "RequestRef JSON: request ID, direction (incoming | outgoing)",
};

/// Each local user's direct chat with another user, as the last friend request between
/// them made or named it; kept after an unfriending, so a later request reuses the room.
pub const USERID_OTHERID_DMROOM: Table = Table {
    name: "userid_otherid_dmroom",
    key: "(user ID, other user ID)",
    value: "room ID",
};

/// Media metadata; the files themselves are on disk, named by their SHA-256.
pub const MEDIAID_MEDIA: Table = Table {
    name: "mediaid_media",
    key: "(server name, media ID)",
    value: "MediaRecord JSON: SHA-256 (none while awaiting an upload), content type, file name, size, uploader, creation time",
};

/// Thumbnails made, by size and method, so each is made once.
pub const MEDIAID_SIZE_THUMBNAIL: Table = Table {
    name: "mediaid_size_thumbnail",
    key: "(server name, media ID, width, height, method `crop` | `scale`)",
    value: "ThumbnailRecord JSON: SHA-256 of the thumbnail file, content type",
};

/// Device keys (E2EE relay), as the device signed them, with signatures others added.
pub const USERID_DEVICEID_KEYS: Table = Table {
    name: "userid_deviceid_keys",
    key: "(user ID, device ID)",
    value: "DeviceKeys JSON, verbatim plus uploaded signatures",
};

/// One-time keys, each handed out once.
pub const USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY: Table = Table {
    name: "userid_deviceid_algorithm_keyid_onetimekey",
    key: "(user ID, device ID, algorithm, key ID)",
    value: "the one-time key JSON",
};

/// Fallback keys, handed out when a device's one-time keys run out.
pub const USERID_DEVICEID_ALGORITHM_FALLBACKKEY: Table = Table {
    name: "userid_deviceid_algorithm_fallbackkey",
    key: "(user ID, device ID, algorithm)",
    value: "FallbackKey JSON: key ID, key, whether it was handed out",
};

/// Cross-signing keys: `master`, `self_signing`, `user_signing`.
pub const USERID_KIND_CROSSSIGNINGKEY: Table = Table {
    name: "userid_kind_crosssigningkey",
    key: "(user ID, key kind)",
    value: "CrossSigningKey JSON, plus uploaded signatures",
};

/// Where each user's keys or devices last changed, for `device_lists` and `/keys/changes`.
pub const USERID_KEYCHANGE: Table = Table {
    name: "userid_keychange",
    key: "user ID (str)",
    value: "stream position (u64 JSON)",
};

/// Send-to-device messages waiting for their device's next sync.
pub const USERID_DEVICEID_POSITION_TODEVICE: Table = Table {
    name: "userid_deviceid_position_todevice",
    key: "(user ID, device ID, stream position)",
    value: "ToDevice JSON: sender, type, content",
};

/// Server-side key backups, one per version; the newest not deleted is current.
pub const USERID_VERSION_BACKUP: Table = Table {
    name: "userid_version_backup",
    key: "(user ID, version (u64))",
    value: "Backup JSON: algorithm, auth_data, etag counter, deleted",
};

/// The room keys in each backup version.
pub const USERID_VERSION_ROOMID_SESSIONID_KEY: Table = Table {
    name: "userid_version_roomid_sessionid_key",
    key: "(user ID, version (u64), room ID, session ID)",
    value: "KeyBackupData JSON, as uploaded",
};

/// The room state after each event, as a change from the state after an earlier one (or
/// whole, every so often): what state resolution starts from when histories fork.
pub const EVENTID_STATE: Table = Table {
    name: "eventid_state",
    key: "event ID (str)",
    value: "Snapshot JSON: base event ID (none for a whole one), changes [(type, state key, event ID)], hops",
};

/// Other servers' signing keys, as fetched and verified (federation).
pub const SERVERNAME_KEYID_VERIFYKEY: Table = Table {
    name: "servername_keyid_verifykey",
    key: "(server name, key ID)",
    value: "RemoteKey JSON: public key, valid until (capped at 7 days), expired at for old keys",
};

/// The outbound federation queue: PDUs and EDUs per destination, in commit order.
pub const DESTINATION_POSITION_OUTGOING: Table = Table {
    name: "destination_position_outgoing",
    key: "(destination server name, stream position (u64))",
    value: "Outgoing JSON: a PDU's event ID or an EDU",
};

/// Per destination: failed attempts and when to retry, so backoff survives restarts.
pub const DESTINATION_BACKOFF: Table = Table {
    name: "destination_backoff",
    key: "destination server name (str)",
    value: "Backoff JSON: consecutive failures, retry-at time (ms)",
};

/// Inbound transactions already handled, so a retried one is answered, not re-applied.
pub const ORIGIN_TXNID_RESPONSE: Table = Table {
    name: "origin_txnid_response",
    key: "(origin server name, transaction ID)",
    value: "Handled JSON: when, and the per-PDU results sent (kept a day)",
};

/// Email validation sessions (auth-service), from `requestToken` until used or expired.
pub const SID_EMAILVALIDATION: Table = Table {
    name: "sid_emailvalidation",
    key: "session ID (str)",
    value: "EmailValidation JSON: purpose, address, client secret, SHA-256 of the mailed token, \
            send attempt, next link, expiries, when validated",
};

/// Finds the session a repeated `requestToken` continues.
pub const CLIENTSECRET_ADDRESS_SID: Table = Table {
    name: "clientsecret_address_sid",
    key: "(client secret, email address)",
    value: "session ID (str JSON)",
};

/// Verified email addresses and whose they are (one account per address).
pub const ADDRESS_USERID: Table = Table {
    name: "address_userid",
    key: "email address, lower case (str)",
    value: "user ID (str JSON)",
};

/// Each user's verified email addresses.
pub const USERID_ADDRESS_THREEPID: Table = Table {
    name: "userid_address_threepid",
    key: "(user ID, email address)",
    value: "ThreePid JSON: when validated, when added",
};

/// Mail waiting to be sent, in the order it was queued; deleted once the SMTP server takes it.
pub const POSITION_MAIL: Table = Table {
    name: "position_mail",
    key: "stream position (u64)",
    value: "Mail JSON: recipient, subject, text, when queued",
};

/// Who a provider's user is here: identity links made at the first SSO sign-in.
pub const PROVIDER_SUBJECT_USERID: Table = Table {
    name: "provider_subject_userid",
    key: "(SSO provider ID, subject at the provider)",
    value: "user ID (str JSON)",
};

/// Each user's identity links, for UIA and the admin CLI.
pub const USERID_PROVIDER_SUBJECT: Table = Table {
    name: "userid_provider_subject",
    key: "(user ID, SSO provider ID, subject at the provider)",
    value: "IdentityLink JSON: when linked",
};

/// Login tokens from SSO, single-use and short-lived, by hash.
pub const TOKENHASH_LOGINTOKEN: Table = Table {
    name: "tokenhash_logintoken",
    key: "SHA-256 of the login token, unpadded base64 (str)",
    value: "LoginToken JSON: user ID, expiry",
};

/// Sliding-sync connections (MSC4186): what each of a device's connections has been sent,
/// as of the `pos` it was given. The latest two generations are kept: the one the client
/// last used (its request may be retried) and the one last answered.
pub const USERID_DEVICEID_CONNID_GENERATION_CONNECTION: Table = Table {
    name: "userid_deviceid_connid_generation_connection",
    key: "(user ID, device ID, conn_id, generation (u64))",
    value: "Connection JSON: stream position, rooms sent and how, list counts",
};

/// Rooms a server admin blocked: no user of this server may join one, be invited or knock,
/// and no other server's user may join or knock through this server.
pub const ROOMID_BLOCKED: Table = Table {
    name: "roomid_blocked",
    key: "room ID (str)",
    value: "Blocked JSON: by (the admin's user ID), when (ms)",
};

/// Room deletions server admins asked for (shut down, block, purge), with their progress:
/// one not finished when kith stopped is resumed at the next start.
pub const DELETEID_ROOMDELETION: Table = Table {
    name: "deleteid_roomdeletion",
    key: "delete ID (str)",
    value: "RoomDeletion JSON: room, what was asked, status, what the shutdown did, error",
};

/// Every table, in the order they are created.
pub const ALL: &[&Table] = &[
    &GLOBAL_VALUE,
    &STREAM_EVENT,
    &SUBSCRIBER_CURSOR,
    &USERID_ACCOUNT,
    &USERID_DEVICEID_DEVICE,
    &REFRESHHASH_USERID_DEVICEID,
    &REGTOKEN_INFO,
    &USERID_PROFILE,
    &ROOMID_ROOM,
    &EVENTID_PDU,
    &ROOMID_POSITION_EVENTID,
    &EVENTID_RELTYPE_POSITION_RELATION,
    &ROOMID_ROOTID_THREADPOSITION,
    &TS_REPORTID_REPORT,
    &ROOMID_PUBLISHED,
    &USERID_APPID_PUSHKEY_PUSHER,
    &POSITION_USERID_PUSH,
    &USERID_POSITION_NOTIFIED,
    &ROOMID_WORD_POSITION_HIT,
    &ROOMID_TYPE_STATEKEY_EVENTID,
    &USERID_ROOMID_MEMBERSHIP,
    &USERID_DEVICEID_TXNID_EVENTID,
    &ROOMID_USERID_MEMBERSHIP,
    &USERID_ROOMID_TYPE_ACCOUNTDATA,
    &USERID_FILTERID_FILTER,
    &ROOMID_USERID_TYPE_THREAD_RECEIPT,
    &ROOMID_TYPING,
    &USERID_PRESENCE,
    &USERID_ROOMID_UNREAD,
    &USERID_ROOMID_POSITION_NOTIFICATION,
    &ALIAS_ROOMID,
    &WORD_USERID,
    &USERID_CONTACTS,
    &USERID_OTHERID_FRIENDSHIP,
    &REQUESTID_REQUEST,
    &USERID_OTHERID_REQUEST,
    &USERID_OTHERID_DMROOM,
    &MEDIAID_MEDIA,
    &MEDIAID_SIZE_THUMBNAIL,
    &USERID_DEVICEID_KEYS,
    &USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY,
    &USERID_DEVICEID_ALGORITHM_FALLBACKKEY,
    &USERID_KIND_CROSSSIGNINGKEY,
    &USERID_KEYCHANGE,
    &USERID_DEVICEID_POSITION_TODEVICE,
    &USERID_VERSION_BACKUP,
    &USERID_VERSION_ROOMID_SESSIONID_KEY,
    &SERVERNAME_KEYID_VERIFYKEY,
    &EVENTID_STATE,
    &DESTINATION_POSITION_OUTGOING,
    &DESTINATION_BACKOFF,
    &ORIGIN_TXNID_RESPONSE,
    &SID_EMAILVALIDATION,
    &CLIENTSECRET_ADDRESS_SID,
    &ADDRESS_USERID,
    &USERID_ADDRESS_THREEPID,
    &POSITION_MAIL,
    &PROVIDER_SUBJECT_USERID,
    &USERID_PROVIDER_SUBJECT,
    &TOKENHASH_LOGINTOKEN,
    &USERID_DEVICEID_CONNID_GENERATION_CONNECTION,
    &ROOMID_BLOCKED,
    &DELETEID_ROOMDELETION,
];

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names: Vec<_> = super::ALL.iter().map(|t| t.name).collect();
        for name in &names {
            assert!(name.contains('_'), "{name} is not keyparts_valueparts");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), super::ALL.len());
    }
}
