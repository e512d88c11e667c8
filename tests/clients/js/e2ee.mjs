// End-to-end-encryption test for kith using the real matrix-js-sdk with its Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm, the WebAssembly build of matrix-sdk-crypto).
//
//   cd tests/clients/js && npm ci && node e2ee.mjs <alice_base_url> [<bob_base_url>]
//   e.g. node e2ee.mjs http://127.0.0.1:8008                        (one server)
//        node e2ee.mjs http://127.0.0.1:8008 http://127.0.0.1:8009  (two federating servers)
//
// Needs kith servers with open registration (KITH_REGISTRATION__MODE=open). With one base URL
// alice and bob are both users of that server. With two, alice (and everything her clients do)
// is on the first server and bob (and his later third device) on the second: the two servers
// must federate with each other (server names that resolve to their federation listeners,
// e.g. KITH_SERVER_NAME=127.0.0.1:P with KITH_LISTEN__FEDERATION=127.0.0.1:P, plus
// KITH_FEDERATION__VERIFY_CERTIFICATES=false and KITH_FEDERATION__DENIED_IP_RANGES='[]' on
// loopback), and every cross-user step then goes over federation: the contact request and
// its answer (org.kith.contacts federation API), the invite and bob's join (make_join /
// send_join through alice's server), the room events, the device keys (federation
// /user/keys/query, /user/keys/claim, /user/devices), the Olm-wrapped room keys
// (m.direct_to_device EDUs) and bob's new device (m.device_list_update EDU). Steps:
//   1. register alice-<rand> and bob-<rand> (each on their own server); alice sends bob (by
//      his full user ID) a contact request through the org.kith.contacts API and bob accepts
//      it (kith refuses direct chats between strangers). With two servers, bob first waits
//      for the request to reach his server's GET /requests?dir=incoming, and after his accept
//      alice waits until her server's GET /friends lists him (the answer travels through the
//      federation queue);
//   2. alice's and bob's clients each run initRustCrypto({ useIndexedDB: false }) (in-memory
//      crypto store) and startClient, and must reach sync state PREPARED; then both devices'
//      identity keys must be visible to the other side through POST /keys/query (the SDK
//      uploads them with POST /keys/upload after its first sync);
//   3. alice's client creates an encrypted DM (m.room.encryption in initial_state, is_direct,
//      trusted_private_chat) inviting bob's full user ID; bob's client sees the invite and
//      joins it by room ID;
//   4. alice's client.sendTextMessage (encrypted by the SDK: /keys/query, /keys/claim,
//      /sendToDevice with the Olm-wrapped room key, then an m.room.encrypted event); the
//      stored event must be m.room.encrypted without plaintext, and bob's client must decrypt
//      it to the same body; bob replies the same way and alice's client decrypts that;
//   5. bob logs in a third device (POST /login) that also runs Rust crypto; alice's raw
//      GET /sync from a token taken before that login must list bob in device_lists.changed
//      (and carry her device_one_time_keys_count / device_unused_fallback_key_types), and
//      alice's crypto (getUserDeviceInfo) must learn the new device; finally alice sends
//      again and bob's new device must decrypt it (the room key reaches the new device).
// The Rust crypto only *logs* many server faults (an unparsable /keys/upload answer, a failed
// outgoing request, a rejected to-device event) and carries on; such log lines are collected
// and fail the test even when the messages got through.
// Prints "js-sdk e2ee test passed" and exits 0, or says what failed and exits 1. Every wait
// is bounded and the whole run is bounded too; the waits poll, so the per-step timeout leaves
// plenty of room for events that take a second or two to cross between servers. Every HTTP
// request (SDK, crypto and fetch) is logged to stderr as `[http] who METHOD path?query ->
// status` (who is alice*, bob* or bob3*, which also says which server it went to), with the
// body of non-2xx answers; a per-endpoint summary is printed to stderr at the end.
//
// Rust crypto on Node: nothing special is needed beyond polyfill.mjs. The wasm package's
// "exports" map has a `node` condition (node.mjs) that loads the .wasm with fs.readFile, and
// `useIndexedDB: false` makes the SDK open an in-memory store (StoreHandle.open(null, null)),
// so no IndexedDB shim is required.
//
// Env: KITH_JS_SDK_LOG=trace|debug|info|warn|error (SDK + crypto log level, default warn; to
//      stderr), KITH_JS_TIMEOUT_MS (per-step timeout, default 60000),
//      KITH_JS_OVERALL_TIMEOUT_MS (whole run, default 240000 with one server, 360000 with
//      two).
//
// Node 20: the polyfill import MUST stay first (matrix-js-sdk needs Promise.withResolvers,
// which Node 20 lacks). See polyfill.mjs.
import "./polyfill.mjs";
import * as sdk from "matrix-js-sdk";
import { logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";

const STEP_TIMEOUT_MS = Number(process.env.KITH_JS_TIMEOUT_MS ?? 60000);
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"];
const SDK_LOG_LEVEL = LOG_LEVELS.includes(process.env.KITH_JS_SDK_LOG) ? process.env.KITH_JS_SDK_LOG : "warn";
const MEGOLM = "m.megolm.v1.aes-sha2";

// alice's server, and bob's (the same one unless a second base URL is given).
const aliceBaseUrl = (process.argv[2] ?? "").replace(/\/+$/, "");
const bobBaseUrl = (process.argv[3] ?? aliceBaseUrl).replace(/\/+$/, "");
if (![aliceBaseUrl, bobBaseUrl].every((u) => /^https?:\/\//.test(u)) || process.argv.length > 4) {
    console.error("usage: node e2ee.mjs <alice_base_url> [<bob_base_url>]   (e.g. http://127.0.0.1:8008 http://127.0.0.1:8009)");
    process.exit(2);
}
const federated = bobBaseUrl !== aliceBaseUrl;
const OVERALL_TIMEOUT_MS = Number(process.env.KITH_JS_OVERALL_TIMEOUT_MS ?? (federated ? 360000 : 240000));

// ---------------------------------------------------------------- logging

const err = (...a) => console.error(...a);
const step = (msg) => err(`[step] ${msg}`);

// The SDK's module-level loglevel logger defaults to DEBUG on stdout; route it to stderr at
// SDK_LOG_LEVEL (see chat.mjs). Each client gets its own stderr logger (makeLogger), which the
// Rust crypto also logs through (the OlmMachine is given the client's logger).
{
    const min = LOG_LEVELS.indexOf(SDK_LOG_LEVEL);
    sdkGlobalLogger.methodFactory = (method, _level, name) =>
        LOG_LEVELS.indexOf(method) >= min || (method === "log" && min <= 1)
            ? (...msg) => err(`[sdk ${method}] ${String(name ?? "")}:`, ...msg)
            : () => {};
    sdkGlobalLogger.rebuild?.();
}
// Problems the crypto layer only logs (it keeps going, so the test would not otherwise notice):
// a response it cannot parse, a failed outgoing request, a to-device event it rejects. Any of
// these fails the test at the end, and they are quoted when a wait times out.
const CRYPTO_PROBLEMS = [
    /Failed to process outgoing request/,
    /Uncaught error in outgoing request loop/,
    /deserialization failed/,
    /invalid to-device event/i,
    /Error processing outgoing requests/,
];
const cryptoProblems = [];
function noteCryptoProblem(prefix, msg) {
    const text = msg.map((m) => (m instanceof Error ? `${m.name}: ${m.message}` : typeof m === "string" ? m : "")).join(" ");
    if (!CRYPTO_PROBLEMS.some((re) => re.test(text))) return;
    const line = `${prefix}${text.split("\n")[0].slice(0, 300)}`;
    if (!cryptoProblems.includes(line)) cryptoProblems.push(line);
}
const problemNote = () => (cryptoProblems.length ? `; crypto problems logged: ${cryptoProblems.slice(-3).join(" | ")}` : "");

function makeLogger(prefix) {
    const min = LOG_LEVELS.indexOf(SDK_LOG_LEVEL);
    const log = {};
    const brief = (m) =>
        m instanceof Error && min > LOG_LEVELS.indexOf("debug")
            ? `${m.name}${m.httpStatus ? ` ${m.httpStatus}` : ""}${m.errcode && m.errcode !== m.name ? ` ${m.errcode}` : ""}: ${m.message}`
            : m;
    for (const [i, level] of LOG_LEVELS.entries()) {
        const show = i >= min ? (...msg) => err(`[sdk ${level}] ${prefix}`, ...msg.map(brief)) : () => {};
        log[level] = i >= LOG_LEVELS.indexOf("warn") ? (...msg) => (noteCryptoProblem(prefix, msg), show(...msg)) : show;
    }
    log.getChild = (ns) => makeLogger(`${prefix}${ns}`);
    return log;
}

// Per-endpoint tally for the summary: "METHOD /templated/path" -> Map(status -> count).
const tally = new Map();
/** /_matrix/client/v3/rooms/!r:s/send/m.room.encrypted/txn -> /rooms/{roomId}/send/m.room.encrypted/{txn} */
function templatePath(pathname) {
    const segs = pathname
        .replace(/^\/_matrix\/client\/(v3|r0|v1)\b/, "")
        .replace(/^\/_matrix\/client\/unstable\/([^/]+)/, "/unstable/$1")
        .split("/")
        .map((s) => {
            try {
                return decodeURIComponent(s);
            } catch {
                return s;
            }
        });
    const sigil = { "!": "{roomId}", "@": "{userId}", $: "{eventId}", "#": "{alias}" };
    const out = segs.map((s) => sigil[s[0]] ?? s);
    for (let i = 0; i < out.length; i++) {
        // the segment after send/<type> or sendToDevice/<type> is a transaction id
        if ((out[i] === "send" || out[i] === "sendToDevice") && i + 2 < out.length) out[i + 2] = "{txn}";
        if (out[i] === "requests" && out[i - 1] === "v1" && i + 1 < out.length) out[i + 1] = "{requestId}";
    }
    return out.join("/");
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
        const key = `${method} ${templatePath(url.pathname)}`;
        const count = (status) => {
            if (!tally.has(key)) tally.set(key, new Map());
            const m = tally.get(key);
            m.set(status, (m.get(status) ?? 0) + 1);
        };
        let res;
        try {
            res = await fetch(resource, options);
        } catch (e) {
            if (e?.name !== "AbortError") count("ERR");
            err(`${what} -> FAILED (${e?.name}: ${e?.cause?.message ?? e?.message})`);
            throw e;
        }
        count(res.status);
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

/** Resolves with what `setup(done)` resolves, or fails after `ms`. setup may return a cleanup. */
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
        const failNow = (e) => {
            clearTimeout(timer);
            cleanup();
            reject(e);
        };
        try {
            cleanup = setup(done, failNow) ?? (() => {});
        } catch (e) {
            clearTimeout(timer);
            reject(e);
        }
    });
}

/**
 * Polls `check()` (sync or async) every `everyMs` until it returns a truthy value, which is
 * resolved; `check` may throw to fail at once. Fails after `ms`, mentioning lastNote() if given.
 */
function poll(what, check, { everyMs = 250, ms = STEP_TIMEOUT_MS, lastNote } = {}) {
    return waitFor(
        what,
        (done, failNow) => {
            let stopped = false;
            let timer;
            const tick = async () => {
                if (stopped) return;
                try {
                    const v = await check();
                    if (stopped) return;
                    if (v) return done(v);
                } catch (e) {
                    return failNow(e);
                }
                timer = setTimeout(tick, everyMs);
            };
            tick();
            return () => {
                stopped = true;
                clearTimeout(timer);
            };
        },
        ms,
    ).catch((e) => {
        if (e instanceof TestFailure && e.message.startsWith("timed out")) {
            const note = lastNote?.();
            throw new TestFailure(`${e.message}${note ? ` (${note})` : ""}${problemNote()}`);
        }
        throw e;
    });
}

/** Races a promise against the step timeout. */
function bounded(what, promise, ms = STEP_TIMEOUT_MS) {
    return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new TestFailure(`timed out after ${ms} ms waiting for ${what}`)), ms).unref())]);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => Math.random().toString(36).slice(2, 10);
const enc = encodeURIComponent;

/** Plain client-server API call (registration, contacts, checks) to the server at `base`. */
async function api(base, who, method, path, { token, body, query, prefix = "/_matrix/client/v3" } = {}) {
    const url = new URL(`${base}${prefix}${path}`);
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
const brief = (r) => `HTTP ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`;

/** Registers `name`-<rand> on the server at `base`; the credentials remember `base`. */
async function register(name, base) {
    const username = `${name}-${rand()}`;
    const password = `pw-${rand()}${rand()}`;
    const body = { username, password, auth: { type: "m.login.dummy" }, initial_device_display_name: `kith e2ee ${name}` };
    let r = await api(base, name, "POST", "/register", { body });
    if (r.status === 401 && r.json.session) {
        // Server wanted a UIA round-trip first: complete the dummy stage in that session.
        r = await api(base, name, "POST", "/register", { body: { ...body, auth: { type: "m.login.dummy", session: r.json.session } } });
    }
    if (r.status !== 200 || !r.json.access_token || !r.json.user_id || !r.json.device_id) {
        fail(`register ${username}: ${brief(r)}`);
    }
    return { name, base, userId: r.json.user_id, accessToken: r.json.access_token, deviceId: r.json.device_id, password };
}

/** Logs `user` in again (a new device) on the user's own server. */
async function login(who, user) {
    const r = await api(user.base, who, "POST", "/login", {
        body: {
            type: "m.login.password",
            identifier: { type: "m.id.user", user: user.userId },
            password: user.password,
            initial_device_display_name: `kith e2ee ${who}`,
        },
    });
    if (r.status !== 200 || !r.json.access_token || !r.json.device_id) fail(`login ${user.userId}: ${brief(r)}`);
    if (r.json.user_id !== user.userId) fail(`login returned user_id ${r.json.user_id}, expected ${user.userId}`);
    return { name: who, base: user.base, userId: user.userId, accessToken: r.json.access_token, deviceId: r.json.device_id, password: user.password };
}

const clients = [];

/** createClient + initRustCrypto (in-memory store) + startClient, waiting for PREPARED. */
async function startCryptoClient(who, creds) {
    const client = sdk.createClient({
        baseUrl: creds.base,
        accessToken: creds.accessToken,
        userId: creds.userId,
        deviceId: creds.deviceId,
        fetchFn: loggingFetch(`${who}-sdk`),
        logger: makeLogger(`${who}: `),
    });
    clients.push(client);
    client.on(sdk.ClientEvent.Sync, (state, prev, data) => {
        const e = data?.error;
        if (state !== prev || e) {
            err(`[sync] ${who} ${prev ?? "-"} -> ${state}${e ? ` (error: ${e.httpStatus ?? ""} ${e.errcode ?? e.name ?? ""} ${e.message})` : ""}`);
        }
    });
    client.on(CryptoEvent.DevicesUpdated, (users, initialFetch) => {
        err(`  [crypto] ${who}: devices updated for ${users.join(", ")}${initialFetch ? " (initial fetch)" : ""}`);
    });
    await bounded(`${who}: initRustCrypto`, client.initRustCrypto({ useIndexedDB: false }));
    const crypto = client.getCrypto();
    if (!crypto) fail(`${who}: getCrypto() is empty after initRustCrypto`);
    const keys = await crypto.getOwnDeviceKeys();
    err(`  ${who}: ${crypto.getVersion()}; device ${creds.deviceId} ed25519=${keys.ed25519} curve25519=${keys.curve25519}`);
    const prepared = waitFor(`${who}'s sync state PREPARED`, (done) => {
        const onSync = (state) => {
            if (state === sdk.SyncState.Prepared) done();
        };
        client.on(sdk.ClientEvent.Sync, onSync);
        return () => client.off(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 10 });
    await prepared;
    return { client, crypto, keys, ...creds };
}

/** Waits until `observer` sees `device`'s identity keys (as the device published them) via raw POST /keys/query. */
async function waitForDeviceKeysOnServer(observer, device) {
    let last = "";
    const got = await poll(
        `${device.name}'s device keys (${device.userId} ${device.deviceId}) in ${observer.name}'s POST /keys/query — the SDK uploads them with POST /keys/upload after its first sync`,
        async () => {
            const r = await api(observer.base, observer.name, "POST", "/keys/query", {
                token: observer.accessToken,
                body: { device_keys: { [device.userId]: [] }, timeout: 10000 },
            });
            if (r.status !== 200) {
                last = `last answer ${brief(r)}`;
                return null;
            }
            const dk = r.json.device_keys?.[device.userId]?.[device.deviceId];
            if (!dk) {
                last = `last device_keys for ${device.userId}: ${JSON.stringify(Object.keys(r.json.device_keys?.[device.userId] ?? {}))}`;
                return null;
            }
            return dk;
        },
        { everyMs: 500, lastNote: () => last },
    );
    // What the server hands out must be what the device signed (the Rust crypto checks the
    // self-signature, so re-serialising with lost fields would make the device unusable).
    const problems = [];
    if (got.user_id !== device.userId) problems.push(`user_id ${got.user_id}`);
    if (got.device_id !== device.deviceId) problems.push(`device_id ${got.device_id}`);
    if (got.keys?.[`ed25519:${device.deviceId}`] !== device.keys.ed25519) problems.push("ed25519 key differs");
    if (got.keys?.[`curve25519:${device.deviceId}`] !== device.keys.curve25519) problems.push("curve25519 key differs");
    if (!got.algorithms?.includes(MEGOLM)) problems.push(`algorithms ${JSON.stringify(got.algorithms)}`);
    if (!got.signatures?.[device.userId]?.[`ed25519:${device.deviceId}`]) problems.push("no self-signature");
    if (problems.length) fail(`${observer.name}'s /keys/query for ${device.name}'s device: ${problems.join(", ")}: ${JSON.stringify(got)}`);
    err(`  ${observer.name} sees ${device.name}'s device ${device.deviceId} keys (display name ${JSON.stringify(got.unsigned?.device_display_name)})`);
}

/** Checks what the server stored for an event sent encrypted by the SDK. */
async function checkStoredEncrypted(viewer, roomId, eventId, plaintext) {
    const r = await api(viewer.base, viewer.name, "GET", `/rooms/${enc(roomId)}/event/${enc(eventId)}`, { token: viewer.accessToken });
    if (r.status !== 200) fail(`GET /rooms/{roomId}/event/${eventId}: ${brief(r)}`);
    const e = r.json;
    if (e.type !== "m.room.encrypted") fail(`stored event ${eventId} has type ${e.type}, expected m.room.encrypted (the SDK sent it unencrypted?): ${JSON.stringify(e)}`);
    if (e.content?.algorithm !== MEGOLM || typeof e.content?.ciphertext !== "string" || !e.content?.session_id) {
        fail(`stored event ${eventId} is not a megolm event: ${JSON.stringify(e.content)}`);
    }
    if (JSON.stringify(e).includes(plaintext)) fail(`stored event ${eventId} contains the plaintext: ${JSON.stringify(e)}`);
    err(`  stored ${eventId}: m.room.encrypted, ${MEGOLM}, session ${e.content.session_id}, device ${e.content.device_id ?? "-"}`);
}

/**
 * Waits until `receiver`'s client has event `eventId` in room `roomId`, decrypted (the SDK
 * decrypts as events arrive and retries when a room key turns up), and checks the clear body.
 */
async function waitForDecrypted(receiver, roomId, eventId, sender, body) {
    const client = receiver.client;
    let lastFailure = "";
    const onDecrypted = (ev, e) => {
        if (ev.getId() !== eventId) return;
        if (ev.isDecryptionFailure()) {
            const why = `${ev.decryptionFailureReason}${e ? `: ${e.message ?? e}` : ""}`;
            if (why !== lastFailure) err(`  ${receiver.name}: decryption of ${eventId} failed for now (${why}); waiting for the room key`);
            lastFailure = why;
        } else {
            err(`  ${receiver.name}: Event.decrypted for ${eventId} (${ev.getType()})`);
        }
    };
    client.on(sdk.MatrixEventEvent.Decrypted, onDecrypted);
    try {
        let seen = false;
        const ev = await poll(
            `${receiver.name}'s client to receive and decrypt ${eventId}`,
            () => {
                const room = client.getRoom(roomId);
                const ev = room?.findEventById(eventId);
                if (!ev) return null;
                if (!seen) {
                    seen = true;
                    err(`  ${receiver.name}'s client has ${eventId} (wire type ${ev.getWireType()})`);
                }
                if (ev.isBeingDecrypted() || ev.isDecryptionFailure() || !ev.getClearContent()) return null;
                return ev;
            },
            {
                lastNote: () => {
                    const ev = client.getRoom(roomId)?.findEventById(eventId);
                    if (!ev) return "the event never reached the client's timeline";
                    const why = ev.decryptionFailureReason ?? lastFailure;
                    return `event arrived but is not decrypted${why ? `: ${why}` : ""}${ev.isDecryptionFailure() ? ` (${ev.getContent()?.body})` : ""}`;
                },
            },
        );
        if (ev.getWireType() !== "m.room.encrypted") fail(`${eventId} arrived as ${ev.getWireType()}, not m.room.encrypted`);
        if (ev.getSender() !== sender) fail(`${eventId} sender ${ev.getSender()} != ${sender}`);
        if (ev.getType() !== "m.room.message") fail(`${eventId} decrypted to type ${ev.getType()}`);
        const content = ev.getContent();
        if (content?.body !== body || content?.msgtype !== "m.text") fail(`${eventId} decrypted to ${JSON.stringify(content)}, expected body ${JSON.stringify(body)}`);
        const info = await receiver.crypto.getEncryptionInfoForEvent(ev);
        err(`  ${receiver.name} decrypted ${eventId}: ${JSON.stringify(content.body)} (shield ${info?.shieldColour ?? "?"}${info?.shieldReason ? `/${info.shieldReason}` : ""})`);
        return ev;
    } finally {
        client.off(sdk.MatrixEventEvent.Decrypted, onDecrypted);
    }
}

async function sendEncrypted(sender, roomId, body) {
    const res = await bounded(`${sender.name}'s sendTextMessage`, sender.client.sendTextMessage(roomId, body));
    if (!res?.event_id) fail(`${sender.name}'s sendTextMessage returned ${JSON.stringify(res)}`);
    err(`  ${sender.name} sent ${res.event_id}`);
    return res.event_id;
}

// ---------------------------------------------------------------- the test

async function main() {
    step(federated ? `alice's server ${aliceBaseUrl}, bob's server ${bobBaseUrl} (federated)` : `server ${aliceBaseUrl}`);

    step(`1. register alice and bob; alice sends bob a contact request, bob accepts${federated ? " (over federation)" : ""}`);
    const aliceCreds = await register("alice", aliceBaseUrl);
    const bobCreds = await register("bob", bobBaseUrl);
    err(`  alice=${aliceCreds.userId} (${aliceCreds.deviceId})  bob=${bobCreds.userId} (${bobCreds.deviceId})`);
    const CONTACTS = "/_matrix/client/unstable/org.kith.contacts/v1";
    const asked = await api(aliceCreds.base, "alice", "POST", "/requests", { prefix: CONTACTS, token: aliceCreds.accessToken, body: { user_id: bobCreds.userId } });
    if (asked.status !== 200 || typeof asked.json.request_id !== "string") fail(`contact request: ${brief(asked)}`);
    const requestId = asked.json.request_id;
    if (federated) {
        // alice's server forwards the request to bob's server, which keeps it under the same ID.
        err(`  request ${requestId} sent (${asked.json.state ?? JSON.stringify(asked.json)}); waiting for it on bob's server`);
        let lastIncoming = "";
        await poll(
            `alice's contact request ${requestId} in bob's GET /requests?dir=incoming on his server`,
            async () => {
                const r = await api(bobCreds.base, "bob", "GET", "/requests", { prefix: CONTACTS, token: bobCreds.accessToken, query: { dir: "incoming" } });
                lastIncoming = `last answer ${brief(r)}`;
                if (r.status !== 200) return null;
                const req = r.json.requests?.find((q) => q.request_id === requestId);
                if (req && req.user_id !== aliceCreds.userId) fail(`bob's incoming request ${requestId} is from ${req.user_id}, expected ${aliceCreds.userId}`);
                return req;
            },
            { everyMs: 500, lastNote: () => lastIncoming },
        );
    }
    const accepted = await api(bobCreds.base, "bob", "POST", `/requests/${enc(requestId)}/accept`, { prefix: CONTACTS, token: bobCreds.accessToken, body: {} });
    if (accepted.status !== 200) fail(`accept contact request: ${brief(accepted)}`);
    err(`  request ${requestId} -> ${accepted.json.state ?? JSON.stringify(accepted.json)}`);
    if (federated) {
        // The accept reaches alice's server through its federation queue; her createRoom is
        // refused (403 M_INVITE_BLOCKED) until her server knows they are friends.
        let lastFriends = "";
        await poll(
            `bob in alice's GET /friends on her server (the accept crossing over federation)`,
            async () => {
                const r = await api(aliceCreds.base, "alice", "GET", "/friends", { prefix: CONTACTS, token: aliceCreds.accessToken });
                lastFriends = `last answer ${brief(r)}`;
                return r.status === 200 && r.json.friends?.some((f) => f.user_id === bobCreds.userId);
            },
            { everyMs: 500, lastNote: () => lastFriends },
        );
        err(`  alice's server lists bob as a friend`);
    }

    step("2. alice's and bob's clients: initRustCrypto (in-memory store), startClient, PREPARED");
    const alice = await startCryptoClient("alice", aliceCreds);
    const bob = await startCryptoClient("bob", bobCreds);

    step("2b. each device's identity keys reach the server (POST /keys/upload) and the other side (POST /keys/query)");
    if (federated) {
        // First each on its own server, so that a failure below is the federation key query's.
        await waitForDeviceKeysOnServer(alice, alice);
        await waitForDeviceKeysOnServer(bob, bob);
        err("  (the other side's keys now come through the observer's server: federation /user/keys/query)");
    }
    await waitForDeviceKeysOnServer(alice, bob);
    await waitForDeviceKeysOnServer(bob, alice);

    step("3. alice's client creates an encrypted DM inviting bob; bob's client joins");
    let roomId;
    const invited = poll(`bob's client to see the invite`, () => roomId && bob.client.getRoom(roomId)?.getMyMembership() === sdk.KnownMembership.Invite);
    const created = await bounded(
        "alice's createRoom",
        alice.client.createRoom({
            preset: sdk.Preset.TrustedPrivateChat,
            is_direct: true,
            invite: [bob.userId],
            name: "js-sdk e2ee test",
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
        }),
    );
    roomId = created?.room_id;
    if (!roomId) fail(`createRoom returned ${JSON.stringify(created)}`);
    err(`  room ${roomId}`);
    await invited;
    // joinRoom on an invite with crypto enabled also does POST /keys/query for the inviter
    // (MSC4268 key-bundle check) and rejects if that fails.
    await bounded("bob's joinRoom", bob.client.joinRoom(roomId));
    await poll("alice's client to see bob joined and the room encrypted", async () => {
        const room = alice.client.getRoom(roomId);
        if (room?.getMember(bob.userId)?.membership !== sdk.KnownMembership.Join) return false;
        return await alice.crypto.isEncryptionEnabledInRoom(roomId);
    });
    await poll("bob's client to see himself joined and the room encrypted", async () => {
        if (bob.client.getRoom(roomId)?.getMyMembership() !== sdk.KnownMembership.Join) return false;
        return await bob.crypto.isEncryptionEnabledInRoom(roomId);
    });

    step("4. alice sends an encrypted text; bob's client decrypts it");
    const aliceBody = `hello bob, secretly ${rand()}`;
    const aliceEventId = await sendEncrypted(alice, roomId, aliceBody);
    await checkStoredEncrypted(alice, roomId, aliceEventId, aliceBody);
    await waitForDecrypted(bob, roomId, aliceEventId, alice.userId, aliceBody);

    step("4b. bob replies encrypted; alice's client decrypts it");
    const bobBody = `hi alice, just as secretly ${rand()}`;
    const bobEventId = await sendEncrypted(bob, roomId, bobBody);
    await checkStoredEncrypted(bob, roomId, bobEventId, bobBody);
    await waitForDecrypted(alice, roomId, bobEventId, bob.userId, bobBody);

    step("5. bob logs in a new device; it shows up in alice's device_lists.changed");
    // Alice's SDK has completed a sync with this token: a raw /sync from here only shows what
    // is newer, and it acknowledges no to-device message her client has not received yet.
    const since = alice.client.store.getSyncToken();
    if (!since) fail("alice's client has no sync token");
    err(`  alice's raw /sync since ${since}`);
    const bob3Creds = await login("bob3", bobCreds);
    if (bob3Creds.deviceId === bob.deviceId) fail(`login gave bob the same device id ${bob.deviceId}`);
    err(`  bob's new device ${bob3Creds.deviceId}`);
    const bob3 = await startCryptoClient("bob3", bob3Creds);
    let lastSync = "";
    const changed = await poll(
        `${bob.userId} in device_lists.changed of alice's GET /sync?since=${since}`,
        async () => {
            const r = await api(alice.base, "alice", "GET", "/sync", { token: alice.accessToken, query: { since, timeout: "0" } });
            if (r.status !== 200) {
                lastSync = `last answer ${brief(r)}`;
                return null;
            }
            lastSync = `last device_lists ${JSON.stringify(r.json.device_lists ?? null)}`;
            return r.json.device_lists?.changed?.includes(bob.userId) ? r.json : null;
        },
        { everyMs: 500, lastNote: () => lastSync },
    );
    err(`  device_lists ${JSON.stringify(changed.device_lists)} (next_batch ${changed.next_batch})`);
    // The same response must carry alice's key counts: the Rust crypto uploads 50 signed_curve25519
    // one-time keys and a fallback key, and tops them up from these numbers (an absent count is
    // read as zero, so a server that leaves it out gets fresh keys uploaded after every sync).
    const otkCount = changed.device_one_time_keys_count?.signed_curve25519;
    const fallbackTypes = changed.device_unused_fallback_key_types;
    err(`  device_one_time_keys_count ${JSON.stringify(changed.device_one_time_keys_count)}, device_unused_fallback_key_types ${JSON.stringify(fallbackTypes)}`);
    if (!Number.isInteger(otkCount) || otkCount < 1 || otkCount > 100) {
        fail(`alice's /sync: device_one_time_keys_count.signed_curve25519 is ${JSON.stringify(otkCount)}, expected her unclaimed key count (about 50)`);
    }
    if (!Array.isArray(fallbackTypes) || !fallbackTypes.includes("signed_curve25519")) {
        fail(`alice's /sync: device_unused_fallback_key_types is ${JSON.stringify(fallbackTypes)}, expected ["signed_curve25519"] (her fallback key is unused)`);
    }
    // Informational only: the same change through GET /keys/changes.
    const keyChanges = await api(alice.base, "alice", "GET", "/keys/changes", {
        token: alice.accessToken,
        query: { from: since, to: changed.next_batch },
    });
    const inChanges = keyChanges.status === 200 && keyChanges.json.changed?.includes(bob.userId);
    err(`  (info) GET /keys/changes from ${since} to ${changed.next_batch}: ${brief(keyChanges)}${inChanges ? "" : " — bob NOT listed"}`);

    step("5b. alice's crypto learns bob's new device (getUserDeviceInfo)");
    let lastDevices = "";
    await poll(
        `alice's crypto to list bob's device ${bob3.deviceId}`,
        async () => {
            const devices = (await alice.crypto.getUserDeviceInfo([bob.userId], true)).get(bob.userId);
            lastDevices = `alice knows bob's devices ${JSON.stringify([...(devices?.keys() ?? [])])}`;
            const d = devices?.get(bob3.deviceId);
            return d && d.getIdentityKey() === bob3.keys.curve25519 ? d : null;
        },
        { everyMs: 500, lastNote: () => lastDevices },
    );
    err(`  ${lastDevices}`);

    step("5c. alice sends again; bob's new device decrypts it");
    await poll("bob3's client to have the room as joined", () => bob3.client.getRoom(roomId)?.getMyMembership() === sdk.KnownMembership.Join);
    const thirdBody = `welcome, bob's new device ${rand()}`;
    const thirdEventId = await sendEncrypted(alice, roomId, thirdBody);
    await waitForDecrypted(bob3, roomId, thirdEventId, alice.userId, thirdBody);
    await waitForDecrypted(bob, roomId, thirdEventId, alice.userId, thirdBody);

    if (cryptoProblems.length) {
        fail(`the messages got through, but the crypto layer logged problems:\n  ${cryptoProblems.join("\n  ")}`);
    }
}

function printSummary() {
    const rows = [...tally.entries()].sort(([a], [b]) => a.localeCompare(b));
    err("[summary] requests per endpoint (status x count):");
    for (const [key, statuses] of rows) {
        err(`  ${key.padEnd(60)} ${[...statuses.entries()].map(([s, n]) => `${s}x${n}`).join(" ")}`);
    }
}

const overall = setTimeout(() => {
    printSummary();
    console.log(`js-sdk e2ee test FAILED: overall timeout (${OVERALL_TIMEOUT_MS} ms)`);
    process.exit(1);
}, OVERALL_TIMEOUT_MS);

let code = 0;
try {
    await main();
    console.log("js-sdk e2ee test passed");
} catch (e) {
    code = 1;
    const detail =
        e instanceof TestFailure
            ? e.message
            : e?.httpStatus
              ? `${e.name} HTTP ${e.httpStatus}: ${e.message}` // MatrixError / HTTPError from the SDK
              : (e?.stack ?? String(e));
    console.log(`js-sdk e2ee test FAILED: ${detail}`);
    if (e?.httpStatus) err(e.stack);
} finally {
    for (const c of clients) {
        try {
            c.stopClient(); // also stops the Rust crypto (closes the OlmMachine)
        } catch (e) {
            err(`stopClient threw: ${e}`);
        }
    }
    clearTimeout(overall);
    printSummary();
}
// The SDK leaves retry/poll timers behind (capabilities, keep-alive); don't wait for them.
process.exit(code);
