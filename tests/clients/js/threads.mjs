// Reactions, an edit and a thread with the real matrix-js-sdk (threadSupport on, as Element
// Web runs it) against kith:
//   1. alice and bob register; bob's and alice's clients start; alice makes a room, bob
//      joins it;
//   2. alice's client sends a message; bob's client reacts to it and alice's client edits
//      it; each client must show the edit (replacingEvent) and the reaction (relations);
//   3. bob's client replies in a thread twice, alice's once; each send must resolve (the
//      reply's copy may come down /sync before the PUT answers), and each client's Thread
//      must hold the three replies; bob sends a threaded read receipt;
//   4. a fresh client of alice's (new login, initial sync) must learn the thread from the
//      server alone: the bundled m.thread summary on the root, /threads, and the replies
//      through /relations, and the edit from the bundled m.replace.
// Prints "js-sdk threads test passed" and exits 0, or what failed and exits 1. Every wait is
// bounded.
import "./polyfill.mjs";
import * as sdk from "matrix-js-sdk";

import {
    STEP_TIMEOUT_MS, TestFailure, api, err, fail, loggingFetch, makeLogger, register, step, useServer,
    waitFor,
} from "./harness.mjs";

if (!/^https?:\/\//.test(process.argv[2] ?? "")) {
    console.error("usage: node threads.mjs <base_url>");
    process.exit(2);
}
const baseUrl = useServer(process.argv[2]);
const clients = [];

async function start(who, user) {
    const client = sdk.createClient({
        baseUrl,
        accessToken: user.accessToken,
        userId: user.userId,
        deviceId: user.deviceId,
        fetchFn: loggingFetch(who),
        logger: makeLogger(`${who}: `),
    });
    clients.push(client);
    const prepared = waitFor(`${who}'s sync state PREPARED`, (done) => {
        const onSync = (state) => state === sdk.SyncState.Prepared && done();
        client.on(sdk.ClientEvent.Sync, onSync);
        return () => client.off(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 20, threadSupport: true });
    await prepared;
    return client;
}

/** Polls `check` (every 100 ms, bounded) until it returns something truthy; `describe`
 * says what was seen instead, on failure. */
async function until(what, check, describe = () => "") {
    return waitFor(what, (done) => {
        const timer = setInterval(async () => {
            const found = await check();
            if (found) done(found);
        }, 100);
        return () => clearInterval(timer);
    }).catch(async (e) => {
        throw new TestFailure(`${e.message} ${await describe()}`);
    });
}

/** The promise, or a failure after the step timeout (a send the SDK never resolves). */
function bounded(what, promise) {
    return Promise.race([
        promise,
        new Promise((_, reject) =>
            setTimeout(() => reject(new TestFailure(`${what}: no answer in ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS),
        ),
    ]);
}

async function main() {
    const alice = await register("alice");
    const bob = await register("bob");
    step("start both clients; alice makes a room, bob joins");
    const aliceClient = await start("alice", alice);
    const bobClient = await start("bob", bob);
    const created = await api("alice", "POST", "/createRoom", {
        token: alice.accessToken,
        body: { preset: "private_chat", invite: [bob.userId] },
    });
    if (created.status !== 200) fail(`createRoom: ${JSON.stringify(created.json)}`);
    const roomId = created.json.room_id;
    await until("bob's invite", () => bobClient.getRoom(roomId));
    await bobClient.joinRoom(roomId);
    await until("bob joined in alice's client", () =>
        aliceClient.getRoom(roomId)?.getMember(bob.userId)?.membership === "join",
    );

    step("alice writes; bob reacts; alice edits");
    const { event_id: rootId } = await aliceClient.sendTextMessage(roomId, "the root");
    await until("the root in bob's client", () => bobClient.getRoom(roomId)?.findEventById(rootId));
    await bobClient.sendEvent(roomId, "m.reaction", {
        "m.relates_to": { rel_type: "m.annotation", event_id: rootId, key: "👍" },
    });
    const { event_id: editId } = await aliceClient.sendMessage(roomId, {
        msgtype: "m.text",
        body: "* the root, edited",
        "m.new_content": { msgtype: "m.text", body: "the root, edited" },
        "m.relates_to": { rel_type: "m.replace", event_id: rootId },
    });
    for (const [who, client] of [["alice", aliceClient], ["bob", bobClient]]) {
        const room = client.getRoom(roomId);
        await until(`${who} sees the edit`, () => room.findEventById(rootId)?.replacingEventId() === editId);
        await until(`${who} sees the reaction`, () => {
            const reactions = room.relations.getChildEventsForEvent(rootId, "m.annotation", "m.reaction");
            return reactions?.getRelations().length === 1;
        });
    }

    step("a thread: bob replies twice, alice once; every send resolves");
    const replies = [];
    for (const [who, client, body] of [
        ["bob", bobClient, "first reply"],
        ["alice", aliceClient, "second reply"],
        ["bob", bobClient, "third reply"],
    ]) {
        const sent = await bounded(`${who}'s thread reply`, client.sendTextMessage(roomId, rootId, body));
        replies.push(sent.event_id);
        // As people do, the next reply is written once this one shows in the other client. A
        // reply that arrives while a client is still setting up its Thread (fetching the root
        // and /relations) races inside matrix-js-sdk itself: it is counted twice (the root's
        // bundled count, then the live event) or placed out of order by timestamp. Only the
        // other client is awaited: a client makes no Thread of its own first reply alone.
        const [other, otherClient] = client === aliceClient ? ["bob", bobClient] : ["alice", aliceClient];
        await until(
            `${body} in ${other}'s thread`,
            () => {
                const thread = otherClient.getRoom(roomId)?.getThread(rootId);
                return thread?.initialEventsFetched && thread.has(sent.event_id);
            },
            () => {
                const thread = otherClient.getRoom(roomId)?.getThread(rootId);
                return `(thread fetched: ${thread?.initialEventsFetched}, events ${thread?.events.map((e) => e.getId())})`;
            },
        );
    }
    for (const [who, client] of [["alice", aliceClient], ["bob", bobClient]]) {
        const thread = await until(
            `${who}'s thread`,
            // The three replies, in order, the last one shown as the thread's latest. (Not
            // `thread.length`: the SDK counts live replies on top of the root's bundled
            // count it fetched, and under load counts one twice; the server's own count is
            // checked below, through a fresh client's bundled m.thread summary.)
            () => {
                const thread = client.getRoom(roomId)?.getThread(rootId);
                const ids = thread?.events.map((e) => e.getId()).filter((id) => id !== rootId);
                const inOrder = ids?.length === 3 && ids.every((id, i) => id === replies[i]);
                return inOrder && thread.replyToEvent?.getId() === replies[2] && thread;
            },
            () => {
                const thread = client.getRoom(roomId)?.getThread(rootId);
                const events = thread?.events.map((e) => `${e.getId()}:${e.getContent().body}`);
                return `(thread: length ${thread?.length}, last reply ${thread?.replyToEvent?.getId()}, events ${events}; replies ${replies})`;
            },
        );
        if (!thread.hasCurrentUserParticipated) fail(`${who} took part but the thread says not`);
    }
    const lastReply = bobClient.getRoom(roomId).findEventById(replies[2]);
    await bounded("bob's threaded read receipt", bobClient.sendReadReceipt(lastReply));

    step("a fresh client of alice's learns the thread and the edit from the server");
    const login = await api("alice2", "POST", "/login", {
        body: { type: "m.login.password", identifier: { type: "m.id.user", user: alice.userId }, password: alice.password },
    });
    if (login.status !== 200) fail(`login: ${JSON.stringify(login.json)}`);
    const fresh = await start("alice2", {
        userId: alice.userId,
        accessToken: login.json.access_token,
        deviceId: login.json.device_id,
    });
    const room = await until("the room in the fresh client", () => fresh.getRoom(roomId));
    const root = await until("the root in the fresh client", () => room.findEventById(rootId));
    const summary = root.getServerAggregatedRelation("m.thread");
    if (summary?.count !== 3) fail(`bundled m.thread: ${JSON.stringify(summary)}`);
    await until("the edit applied in the fresh client", () => root.getContent().body === "the root, edited");
    await room.fetchRoomThreads();
    const thread = await until("the thread in the fresh client", () => {
        const thread = room.getThread(rootId);
        return thread && thread.length === 3 && thread;
    });
    await thread.fetchInitialEvents?.();
    await until("the replies in the fresh client's thread", () => {
        const ids = thread.events.map((e) => e.getId());
        return replies.every((id) => ids.includes(id));
    });
    console.log("js-sdk threads test passed");
}

const overall = setTimeout(() => {
    err(`FAILED: the whole run took more than ${8 * STEP_TIMEOUT_MS} ms`);
    process.exit(1);
}, 8 * STEP_TIMEOUT_MS);
main()
    .then(() => {
        clearTimeout(overall);
        for (const client of clients) client.stopClient();
        process.exit(0);
    })
    .catch((e) => {
        err(`FAILED: ${e instanceof TestFailure ? e.message : e?.stack ?? e}`);
        process.exit(1);
    });
