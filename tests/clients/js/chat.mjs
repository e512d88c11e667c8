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
import { logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";

const STEP_TIMEOUT_MS = Number(process.env.KITH_JS_TIMEOUT_MS ?? 30000);
const OVERALL_TIMEOUT_MS = 5 * STEP_TIMEOUT_MS + 30000;
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"];
const SDK_LOG_LEVEL = LOG_LEVELS.includes(process.env.KITH_JS_SDK_LOG) ? process.env.KITH_JS_SDK_LOG : "warn";

const baseUrl = (process.argv[2] ?? "").replace(/\/+$/, "");
if (!/^https?:\/\//.test(baseUrl)) {
    console.error("usage: node chat.mjs <base_url>   (e.g. http://127.0.0.1:8008)");
    process.exit(2);
}

// ---------------------------------------------------------------- logging

const err = (...a) => console.error(...a);
const step = (msg) => err(`[step] ${msg}`);

// The SDK's module-level loglevel logger (used by models, MatrixRTC...) defaults to DEBUG on
// stdout. Its child loggers are created later and forced to DEBUG, but inherit the parent's
// methodFactory, so the level filter (and the switch to stderr) lives there. Each client also
// gets its own stderr logger (makeLogger) at SDK_LOG_LEVEL.
{
    const min = LOG_LEVELS.indexOf(SDK_LOG_LEVEL);
    sdkGlobalLogger.methodFactory = (method, _level, name) =>
        LOG_LEVELS.indexOf(method) >= min || (method === "log" && min <= 1)
            ? (...msg) => err(`[sdk ${method}] ${String(name ?? "")}:`, ...msg)
            : () => {};
    sdkGlobalLogger.rebuild?.();
}
function makeLogger(prefix) {
    const min = LOG_LEVELS.indexOf(SDK_LOG_LEVEL);
    const log = {};
    // Errors are shown as one line (name, HTTP status, errcode, message) unless at debug/trace.
    const brief = (m) =>
        m instanceof Error && min > LOG_LEVELS.indexOf("debug")
            ? `${m.name}${m.httpStatus ? ` ${m.httpStatus}` : ""}${m.errcode && m.errcode !== m.name ? ` ${m.errcode}` : ""}: ${m.message}`
            : m;
    for (const [i, level] of LOG_LEVELS.entries()) {
        log[level] = i >= min ? (...msg) => err(`[sdk ${level}] ${prefix}`, ...msg.map(brief)) : () => {};
    }
    log.getChild = (ns) => makeLogger(`${prefix}${ns}`);
    return log;
}

// Wraps global fetch: logs method, path (+ decoded, truncated query) and status of every
// request, and the body of any non-2xx response.
function loggingFetch(who) {
    return async (resource, options = {}) => {
        const url = new URL(resource instanceof Request ? resource.url : String(resource));
        const method = (options.method ?? (resource instanceof Request ? resource.method : "GET")).toUpperCase();
        let query = decodeURIComponent(url.search);
        if (query.length > 160) query = query.slice(0, 160) + "…";
        const what = `[http] ${who} ${method} ${url.pathname}${query}`;
        let res;
        try {
            res = await fetch(resource, options);
        } catch (e) {
            err(`${what} -> FAILED (${e?.name}: ${e?.cause?.message ?? e?.message})`);
            throw e;
        }
        if (res.ok) {
            err(`${what} -> ${res.status}`);
        } else {
            let body = "";
            try {
                body = (await res.clone().text()).slice(0, 300);
            } catch {}
            err(`${what} -> ${res.status} ${body}`);
        }
        return res;
    };
}

// ---------------------------------------------------------------- helpers

class TestFailure extends Error {}
const fail = (msg) => {
    throw new TestFailure(msg);
};

/** Resolves with what `setup(resolve)` resolves, or fails after `ms`. setup may return a cleanup. */
function waitFor(what, setup, ms = STEP_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
        let cleanup = () => {};
        const timer = setTimeout(() => {
            cleanup();
            reject(new TestFailure(`timed out after ${ms} ms waiting for ${what}`));
        }, ms);
        const done = (value) => {
            clearTimeout(timer);
            cleanup();
            resolve(value);
        };
        try {
            cleanup = setup(done) ?? (() => {});
        } catch (e) {
            clearTimeout(timer);
            reject(e);
        }
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => Math.random().toString(36).slice(2, 10);

/** Plain client-server API call for alice / registration. */
async function api(who, method, path, { token, body, query } = {}) {
    const url = new URL(`${baseUrl}/_matrix/client/v3${path}`);
    for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v);
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await loggingFetch(who)(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
    });
    const text = await res.text();
    let json;
    try {
        json = text ? JSON.parse(text) : {};
    } catch {
        json = { raw: text };
    }
    return { status: res.status, json };
}

async function register(name) {
    const username = `${name}-${rand()}`;
    const password = `pw-${rand()}${rand()}`;
    const body = { username, password, auth: { type: "m.login.dummy" }, initial_device_display_name: "kith js-sdk test" };
    let r = await api(name, "POST", "/register", { body });
    if (r.status === 401 && r.json.session) {
        // Server wanted a UIA round-trip first: complete the dummy stage in that session.
        r = await api(name, "POST", "/register", { body: { ...body, auth: { type: "m.login.dummy", session: r.json.session } } });
    }
    if (r.status !== 200 || !r.json.access_token || !r.json.user_id || !r.json.device_id) {
        fail(`register ${username}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    }
    return { userId: r.json.user_id, accessToken: r.json.access_token, deviceId: r.json.device_id };
}

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
