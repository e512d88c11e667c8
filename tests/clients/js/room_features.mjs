// Room features Element's screens use, driven through the real matrix-js-sdk's own calls:
// the public room directory (publish, search, join from it), server-side search, room tags,
// a space's hierarchy, jumping to a date, reporting, pushers, and a room upgrade.
// Prints "js-sdk room features test passed" and exits 0, or what failed and exits 1.
import "./polyfill.mjs";
import * as sdk from "matrix-js-sdk";

import { STEP_TIMEOUT_MS, TestFailure, err, fail, loggingFetch, makeLogger, register, step, useServer } from "./harness.mjs";

if (!/^https?:\/\//.test(process.argv[2] ?? "")) {
    console.error("usage: node room_features.mjs <base_url>");
    process.exit(2);
}
const baseUrl = useServer(process.argv[2]);

function client(who, user) {
    return sdk.createClient({
        baseUrl,
        accessToken: user.accessToken,
        userId: user.userId,
        deviceId: user.deviceId,
        fetchFn: loggingFetch(who),
        logger: makeLogger(`${who}: `),
    });
}

const expect = (condition, what) => condition || fail(what);

async function main() {
    const alice = client("alice", await register("alice"));
    const bob = client("bob", await register("bob"));
    const server = alice.getUserId().split(":").slice(1).join(":");

    step("alice publishes a room; bob finds it in the directory and joins it");
    const { room_id: roomId } = await alice.createRoom({
        name: "Rust lovers",
        topic: "Crabs and friends",
        visibility: "private",
        preset: "public_chat",
        room_alias_name: `rust${Date.now()}`,
    });
    await alice.setRoomDirectoryVisibility(roomId, "public");
    const found = await bob.publicRooms({ filter: { generic_search_term: "rust lovers" } });
    expect(found.chunk.some((r) => r.room_id === roomId && r.name === "Rust lovers"), `directory: ${JSON.stringify(found)}`);
    await bob.joinRoom(roomId);

    step("messages are found by server-side search");
    const { event_id: ferrisId } = await alice.sendTextMessage(roomId, "Ferris is a crab");
    await alice.sendTextMessage(roomId, "nothing to see");
    const search = await bob.searchRoomEvents({ term: "ferris" });
    expect(search.results.length === 1, `search results: ${search.results.length}`);
    expect(search.results[0].context.getEvent().getId() === ferrisId, "search found another event");
    expect(search.highlights.includes("ferris"), `highlights: ${search.highlights}`);

    step("a favourite tag, a jump to a date, a report");
    await bob.setRoomTag(roomId, "m.favourite", { order: 0.5 });
    const tags = await bob.getRoomTags(roomId);
    expect(tags.tags["m.favourite"]?.order === 0.5, `tags: ${JSON.stringify(tags)}`);
    const jumped = await bob.timestampToEvent(roomId, Date.now() + 1000, sdk.Direction.Backward);
    expect(typeof jumped.event_id === "string" && jumped.origin_server_ts > 0, `timestamp_to_event: ${JSON.stringify(jumped)}`);
    await bob.reportEvent(roomId, ferrisId, -100, "crabs are off topic");

    step("a space lists its rooms; its member joins its restricted room");
    const { room_id: spaceId } = await alice.createRoom({
        name: "Crustacean club",
        preset: "public_chat",
        creation_content: { type: "m.space" },
    });
    await alice.sendStateEvent(spaceId, "m.space.child", { via: [server], suggested: true }, roomId);
    await bob.joinRoom(spaceId);
    const { room_id: membersOnly } = await alice.createRoom({
        name: "Members only",
        preset: "private_chat",
        room_version: "10",
        initial_state: [
            {
                type: "m.room.join_rules",
                state_key: "",
                content: { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: spaceId }] },
            },
        ],
    });
    await alice.sendStateEvent(spaceId, "m.space.child", { via: [server] }, membersOnly);
    const hierarchy = await bob.getRoomHierarchy(spaceId, 10, 2, false);
    const listed = hierarchy.rooms.map((r) => r.room_id);
    expect(listed[0] === spaceId && listed.includes(roomId), `hierarchy: ${JSON.stringify(hierarchy)}`);
    expect(listed.includes(membersOnly), `restricted room not listed: ${JSON.stringify(hierarchy)}`);
    // A member of the space joins its restricted room.
    await bob.joinRoom(membersOnly);

    step("a pusher is set and listed");
    await bob.setPusher({
        pushkey: "js-pushkey",
        kind: "http",
        app_id: "org.example.js",
        app_display_name: "Example",
        device_display_name: "Laptop",
        lang: "en",
        data: { url: "https://push.example.org/_matrix/push/v1/notify", format: "event_id_only" },
    });
    const pushers = await bob.getPushers();
    expect(pushers.pushers.some((p) => p.pushkey === "js-pushkey"), `pushers: ${JSON.stringify(pushers)}`);

    step("the room is upgraded; the old one points at the new one");
    const { replacement_room: newId } = await alice.upgradeRoom(roomId, "12");
    const tombstone = await bob.getStateEvent(roomId, "m.room.tombstone", "");
    expect(tombstone.replacement_room === newId, `tombstone: ${JSON.stringify(tombstone)}`);
    await bob.joinRoom(newId);
    const create = await bob.getStateEvent(newId, "m.room.create", "");
    expect(create.predecessor?.room_id === roomId, `create: ${JSON.stringify(create)}`);
    console.log("js-sdk room features test passed");
}

const overall = setTimeout(() => {
    err(`FAILED: the whole run took more than ${4 * STEP_TIMEOUT_MS} ms`);
    process.exit(1);
}, 4 * STEP_TIMEOUT_MS);
main()
    .then(() => {
        clearTimeout(overall);
        process.exit(0);
    })
    .catch((e) => {
        err(`FAILED: ${e instanceof TestFailure ? e.message : (e?.stack ?? e)}`);
        process.exit(1);
    });
