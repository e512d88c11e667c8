// What the matrix-js-sdk test scripts share: logging (every HTTP request to stderr, the
// SDK's own log at KITH_JS_SDK_LOG), bounded waits, plain API calls and registration.
// Call useServer(baseUrl) first.
//
// Node 20: import polyfill.mjs before this (matrix-js-sdk needs Promise.withResolvers).
import { logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";

export const STEP_TIMEOUT_MS = Number(process.env.KITH_JS_TIMEOUT_MS ?? 30000);
const settings = { baseUrl: "" };

/** The server the plain API calls go to. */
export function useServer(baseUrl) {
    settings.baseUrl = baseUrl.replace(/\/+$/, "");
    return settings.baseUrl;
}

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"];
const SDK_LOG_LEVEL = LOG_LEVELS.includes(process.env.KITH_JS_SDK_LOG) ? process.env.KITH_JS_SDK_LOG : "warn";


// ---------------------------------------------------------------- logging

export const err = (...a) => console.error(...a);
export const step = (msg) => err(`[step] ${msg}`);

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
export function makeLogger(prefix) {
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
export function loggingFetch(who) {
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

export class TestFailure extends Error {}
export const fail = (msg) => {
    throw new TestFailure(msg);
};

/** Resolves with what `setup(resolve)` resolves, or fails after `ms`. setup may return a cleanup. */
export function waitFor(what, setup, ms = STEP_TIMEOUT_MS) {
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const rand = () => Math.random().toString(36).slice(2, 10);

/** Plain client-server API call for alice / registration. */
export async function api(who, method, path, { token, body, query } = {}) {
    const url = new URL(`${settings.baseUrl}/_matrix/client/v3${path}`);
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

export async function register(name) {
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
    return { userId: r.json.user_id, accessToken: r.json.access_token, deviceId: r.json.device_id, password };
}

