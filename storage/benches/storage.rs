//! Hot paths of the storage layer: the key codec, and an event-log append committed with
//! a table write (what every sent message does), synced to disk as in production.

use criterion::{Criterion, criterion_group, criterion_main};
use kith_storage::{KeyCodec, Storage, catalog};

fn key_codec(c: &mut Criterion) {
    let key = ("!room:example.org", "@alice:example.org", 42u64);
    c.bench_function("key codec: encode (str, str, u64)", |b| {
        b.iter(|| std::hint::black_box(&key).encode())
    });
    let encoded = key.encode();
    c.bench_function("key codec: decode (String, String, u64)", |b| {
        b.iter(|| <(String, String, u64)>::decode(std::hint::black_box(&encoded)).unwrap())
    });
}

fn append_and_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&dir.path().join("db")).unwrap();
    let event = serde_json::json!({
        "type": "message.sent", "room_id": "!room:example.org",
        "event_id": "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "sender": "@alice:example.org",
    });
    let mut n = 0u64;
    c.bench_function("event log: append + table write, one synced commit", |b| {
        b.iter(|| {
            n += 1;
            let mut batch = storage.batch();
            let position = batch.append_event(&event).unwrap();
            batch
                .put(
                    &catalog::ROOMID_POSITION_EVENTID,
                    &("!room:example.org", position),
                    &n,
                )
                .unwrap();
            storage.commit_blocking(batch).unwrap();
        })
    });
}

criterion_group!(benches, key_codec, append_and_commit);
criterion_main!(benches);
