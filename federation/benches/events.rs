//! Hot path of every local event: building it, hashing its content, signing it with the
//! server's key and deriving its ID (room version 12).

use criterion::{Criterion, criterion_group, criterion_main};
use kith_federation::{NewEvent, ServerKeys};
use kith_storage::Storage;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, RoomVersionId};

fn hash_and_sign(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&dir.path().join("db")).unwrap();
    let keys = ServerKeys::load_or_generate(&storage, "example.org").unwrap();
    let prev: OwnedEventId = "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
        .try_into()
        .unwrap();
    let event = || NewEvent {
        room_id: Some("!room:example.org".try_into().unwrap()),
        sender: "@alice:example.org".try_into().unwrap(),
        kind: TimelineEventType::RoomMessage,
        state_key: None,
        content: serde_json::json!({ "msgtype": "m.text", "body": "hello there, how are you?" }),
        prev_events: vec![prev.clone()],
        auth_events: vec![prev.clone(), prev.clone()],
        depth: 1000,
        origin_server_ts: 1_700_000_000_000,
        redacts: None,
    };
    c.bench_function("event: build + hash + sign + ID (v12 message)", |b| {
        b.iter(|| keys.build_pdu(&RoomVersionId::V12, event()).unwrap())
    });
}

criterion_group!(benches, hash_and_sign);
criterion_main!(benches);
