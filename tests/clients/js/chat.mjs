// End-to-end chat test for kith using the real matrix-js-sdk.
//
//   cd tests/clients/js && npm ci && node chat.mjs http://127.0.0.1:PORT
//
// Needs a kith server with open registration (KITH_REGISTRATION__MODE=open). Alice is driven
// with plain fetch, bob with a matrix-js-sdk client (startClient + /sync loop):
//   1. register alice-<rand> and bob-<rand> (POST /register with a one-shot m.login.dummy);
//   2. bob's client starts and must reach sync state PREPARED;
//   3. alice creates a trusted_private_chat DM inviting bob; bob's client sees the invite,
//      joins with client.joinRoom; alice sends m.text; bob's client gets it as Room.timeline;
//      bob replies with client.sendTextMessage; alice finds it via GET /messages.
// Prints "js-sdk chat test passed" and exits 0, or says what failed and exits 1. Every wait
// is bounded. Every HTTP request (SDK and fetch) is logged to stderr as
// `[http] who METHOD path?query -> status`, with the body of non-2xx answers.
//
// Env: KITH_JS_SDK_LOG=debug|info|warn|error (SDK log level, default warn; to stderr),
//      KITH_JS_TIMEOUT_MS (per-step timeout, default 30000).
//
// Node 20: the polyfill import MUST stay first (matrix-js-sdk needs Promise.withResolvers,
// which Node 20 lacks). See polyfill.mjs.
import "./polyfill.mjs";
import * as sdk from "matrix-js-sdk";
import {
    STEP_TIMEOUT_MS, TestFailure, api, err, fail, loggingFetch, makeLogger, rand, register, sleep, step,
    useServer, waitFor,
} from "./harness.mjs";

const OVERALL_TIMEOUT_MS = 5 * STEP_TIMEOUT_MS + 30000;

if (!/^https?:\/\//.test(process.argv[2] ?? "")) {
    console.error("usage: node chat.mjs <base_url>   (e.g. http://127.0.0.1:8008)");
    process.exit(2);
}
const baseUrl = useServer(process.argv[2]);

// ---------------------------------------------------------------- the test

let bobClient;

async function main() {
    step(`server ${baseUrl}`);

    step("register alice and bob");
    const alice = await register("alice");
    const bob = await register("bob");
    err(`  alice=${alice.userId} (${alice.deviceId})  bob=${bob.userId} (${bob.deviceId})`);

    step("start bob's matrix-js-sdk client, wait for PREPARED");
    bobClient = sdk.createClient({
        baseUrl,
        accessToken: bob.accessToken,
        userId: bob.userId,
        deviceId: bob.deviceId,
        fetchFn: loggingFetch("bob-sdk"),
        logger: makeLogger("bob: "),
    });
    bobClient.on(sdk.ClientEvent.Sync, (state, prev, data) => {
        const e = data?.error;
        err(`[sync] bob ${prev ?? "-"} -> ${state}${e ? ` (error: ${e.httpStatus ?? ""} ${e.errcode ?? e.name ?? ""} ${e.message})` : ""}`);
    });
    const prepared = waitFor("bob's sync state PREPARED", (done) => {
        const onSync = (state) => {
            if (state === sdk.SyncState.Prepared) done();
        };
        bobClient.on(sdk.ClientEvent.Sync, onSync);
        return () => bobClient.off(sdk.ClientEvent.Sync, onSync);
    });
    await bobClient.startClient({ initialSyncLimit: 10 });
    await prepared;

    step("alice creates a DM room inviting bob");
    // Listen before the invite exists so it cannot be missed.
    let roomId;
    const invited = waitFor("bob's client to see the invite", (done) => {
        const check = () => {
            if (roomId && bobClient.getRoom(roomId)?.getMyMembership() === sdk.KnownMembership.Invite) done();
        };
        const onMember = (_ev, member) => {
            if (member.userId === bob.userId && member.membership === sdk.KnownMembership.Invite) {
                err(`  bob sees RoomMember.membership invite in ${member.roomId}`);
                check();
            }
        };
        const onMy = (room, membership) => {
            if (membership === sdk.KnownMembership.Invite) err(`  bob sees Room.myMembership invite in ${room.roomId}`);
            check();
        };
        bobClient.on(sdk.RoomMemberEvent.Membership, onMember);
        bobClient.on(sdk.RoomEvent.MyMembership, onMy);
        const poll = setInterval(check, 250);
        return () => {
            clearInterval(poll);
            bobClient.off(sdk.RoomMemberEvent.Membership, onMember);
            bobClient.off(sdk.RoomEvent.MyMembership, onMy);
        };
    });
    const created = await api("alice", "POST", "/createRoom", {
        token: alice.accessToken,
        body: { preset: "trusted_private_chat", is_direct: true, invite: [bob.userId], name: "js-sdk test" },
    });
    if (created.status !== 200 || !created.json.room_id) fail(`createRoom: HTTP ${created.status} ${JSON.stringify(created.json)}`);
    roomId = created.json.room_id;
    err(`  room ${roomId}`);
    await invited;

    step("bob joins via client.joinRoom");
    await bobClient.joinRoom(roomId);
    await waitFor("bob's membership to be join in his client", (done) => {
        const check = () => {
            if (bobClient.getRoom(roomId)?.getMyMembership() === sdk.KnownMembership.Join) done();
        };
        const t = setInterval(check, 250);
        check();
        return () => clearInterval(t);
    });

    step("alice sends m.text; bob's client must get it as Room.timeline");
    const aliceBody = `hello bob ${rand()}`;
    const gotIt = waitFor(`Room.timeline event with body "${aliceBody}" on bob's client`, (done) => {
        const onTimeline = (ev, room, toStart) => {
            if (room?.roomId !== roomId || toStart) return;
            if (ev.getType() === "m.room.message" && ev.getContent()?.body === aliceBody) done(ev);
        };
        bobClient.on(sdk.RoomEvent.Timeline, onTimeline);
        return () => bobClient.off(sdk.RoomEvent.Timeline, onTimeline);
    });
    const txn = `js${Date.now()}${rand()}`;
    const sent = await api("alice", "PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, {
        token: alice.accessToken,
        body: { msgtype: "m.text", body: aliceBody },
    });
    if (sent.status !== 200 || !sent.json.event_id) fail(`alice send: HTTP ${sent.status} ${JSON.stringify(sent.json)}`);
    const ev = await gotIt;
    err(`  bob got ${ev.getId()} (alice's send returned ${sent.json.event_id})`);
    if (ev.getSender() !== alice.userId) fail(`message sender ${ev.getSender()} != ${alice.userId}`);
    if (ev.getId() !== sent.json.event_id) fail(`event id mismatch: ${ev.getId()} != ${sent.json.event_id}`);

    step("bob replies with client.sendTextMessage; alice must see it via GET /messages");
    const bobBody = `hi alice ${rand()}`;
    const reply = await Promise.race([
        bobClient.sendTextMessage(roomId, bobBody),
        sleep(STEP_TIMEOUT_MS).then(() => fail("timed out waiting for sendTextMessage")),
    ]);
    if (!reply?.event_id) fail(`sendTextMessage returned ${JSON.stringify(reply)}`);
    await waitFor(`alice's /messages to contain "${bobBody}"`, (done) => {
        let stopped = false;
        (async () => {
            while (!stopped) {
                const r = await api("alice", "GET", `/rooms/${encodeURIComponent(roomId)}/messages`, {
                    token: alice.accessToken,
                    query: { dir: "b", limit: "20" },
                });
                if (r.status !== 200) {
                    err(`  /messages: HTTP ${r.status} ${JSON.stringify(r.json)}`);
                } else {
                    const hit = (r.json.chunk ?? []).find(
                        (e) => e.type === "m.room.message" && e.content?.body === bobBody && e.sender === bob.userId,
                    );
                    if (hit) {
                        if (hit.event_id !== reply.event_id) err(`  note: /messages id ${hit.event_id} != send id ${reply.event_id}`);
                        return done();
                    }
                }
                await sleep(500);
            }
        })().catch((e) => err(`  /messages poll error: ${e}`));
        return () => {
            stopped = true;
        };
    });
}

const overall = setTimeout(() => {
    err(`js-sdk chat test FAILED: overall timeout (${OVERALL_TIMEOUT_MS} ms)`);
    process.exit(1);
}, OVERALL_TIMEOUT_MS);

let code = 0;
try {
    await main();
    console.log("js-sdk chat test passed");
} catch (e) {
    code = 1;
    const detail =
        e instanceof TestFailure
            ? e.message
            : e?.httpStatus
              ? `${e.name} HTTP ${e.httpStatus}: ${e.message}` // MatrixError / HTTPError from the SDK
              : (e?.stack ?? String(e));
    console.log(`js-sdk chat test FAILED: ${detail}`);
    if (e?.httpStatus) err(e.stack);
} finally {
    try {
        bobClient?.stopClient();
    } catch (e) {
        err(`stopClient threw: ${e}`);
    }
    clearTimeout(overall);
}
// The SDK leaves retry/poll timers behind (capabilities, keep-alive); don't wait for them.
process.exit(code);
