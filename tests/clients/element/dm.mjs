// The real Element Web (1.11.54, Rust crypto) in Chromium, as two people use it: alice and
// bob sign in on Element's own login screen, alice starts an encrypted direct chat with bob
// from the "Start chat" dialog, bob accepts the invite (shown under alice's name) from his
// room list, each writes, and each reads the other's message decrypted.
//
//   node dm.mjs '{"webapp": DIR, "serve": ".../serve.mjs", "shots": DIR,
//                 "alice": {"hs": URL, "user": "@alice:…", "password": …},
//                 "bob":   {"hs": URL, "user": "@bob:…",   "password": …}}'
//
// Every request the pages make is counted per endpoint (IDs replaced by placeholders);
// the run fails if one endpoint is called more than MAX_CALLS times or if any answer is
// 5xx. Screenshots of both pages are saved to `shots` on failure. Prints
// "element dm test passed" at the end.

import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
// "A few dozen" calls of one endpoint in a whole run; a client spinning on something makes
// hundreds in seconds.
const MAX_CALLS = 60;
const STEP = 60_000;

const { startServer } = await import(cfg.serve);
const servers = [];
async function webFor(hs) {
  const server = await startServer({ hs, port: 0, webapp: cfg.webapp });
  servers.push(server);
  return `http://127.0.0.1:${server.address().port}`;
}

const browser = await chromium.launch({
  executablePath: process.env.KITH_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});

const calls = new Map();
const failures = [];
function template(url) {
  const u = new URL(url);
  return u.pathname
    .split("/")
    .map((part) => {
      const p = decodeURIComponent(part);
      if (/^[!@#$]/.test(p) || /^[0-9]+$/.test(p) || /^m[0-9]+/.test(p) || p.length > 24) return "{id}";
      return part;
    })
    .join("/");
}

async function person(name) {
  const who = cfg[name];
  const web = await webFor(who.hs);
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  // Nothing leaves loopback.
  await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
  const page = await context.newPage();
  page.on("request", (request) => {
    if (!request.url().includes("/_matrix/")) return;
    const key = `${name} ${request.method()} ${template(request.url())}`;
    calls.set(key, (calls.get(key) || 0) + 1);
  });
  page.on("response", (response) => {
    if (response.status() >= 500) failures.push(`${name}: ${response.status()} ${response.request().method()} ${response.url()}`);
  });
  const log = [];
  page.on("console", (message) => log.push(`${name} ${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => log.push(`${name} pageerror: ${error.message}`));
  return { name, who, web, context, page, log };
}

async function login(p) {
  const { page, who, web } = p;
  await page.goto(`${web}/#/login`);
  await page.locator("#mx_LoginForm_username").fill(who.user.slice(1).split(":")[0], { timeout: STEP });
  await page.locator("#mx_LoginForm_password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  // Signed in once the room list is there.
  await page.getByRole("tree", { name: "Rooms" }).waitFor({ timeout: STEP });
}

// Toasts and first-run prompts that sit over the room view (notifications, backup);
// closing them is what a person does too.
async function dismissToasts(page) {
  for (const label of ["Dismiss", "Later", "Not now"]) {
    for (const button of await page.getByRole("button", { name: label, exact: true }).all()) {
      await button.click({ timeout: 2000 }).catch(() => {});
    }
  }
}

async function send(page, text) {
  // "Send a message…" in a DM not made yet (its first message makes it), "Send an
  // encrypted message…" once it is.
  const composer = page.getByRole("textbox", { name: /Send (an encrypted|a) message/ });
  await composer.click({ timeout: STEP });
  await composer.fill(text);
  await composer.press("Enter");
}

// The message shown in the timeline as text (decrypted, not "Unable to decrypt") as the
// server has it: Element gives a tile its event ID (`data-scroll-tokens`) only once the
// server's copy replaced the local echo.
async function sees(page, text) {
  const tile = page.locator(".mx_EventTile[data-scroll-tokens] .mx_EventTile_body", { hasText: text });
  await tile.first().waitFor({ timeout: STEP });
}

let alice, bob;
const step = async (what, fn) => {
  process.stdout.write(`step: ${what}\n`);
  await fn();
};
try {
  alice = await person("alice");
  bob = await person("bob");
  await step("both sign in", () => Promise.all([login(alice), login(bob)]));
  await dismissToasts(alice.page);
  await dismissToasts(bob.page);

  await step("alice starts a direct chat with bob", async () => {
    const page = alice.page;
    await page.getByRole("button", { name: "Start chat" }).first().click({ timeout: STEP });
    await page.getByTestId("invite-dialog-input").fill(cfg.bob.user);
    await page.locator(".mx_InviteDialog_tile_nameStack_userId", { hasText: cfg.bob.user }).first().click({ timeout: STEP });
    await page.getByRole("button", { name: "Go" }).click();
    // Element makes the room when the first message is sent.
    await send(page, "hello bob, from alice");
    await sees(page, "hello bob, from alice");
  });

  await step("bob sees the invite under alice's name and accepts it", async () => {
    const page = bob.page;
    const invite = page.getByRole("treeitem", { name: /alice/ });
    await invite.first().click({ timeout: STEP });
    // A direct-chat invite says "Start chatting", a room invite "Accept".
    await page.getByRole("button", { name: /^(Start chatting|Accept)$/ }).click({ timeout: STEP });
  });

  await step("bob reads alice's message and answers", async () => {
    await sees(bob.page, "hello bob, from alice");
    await send(bob.page, "hi alice, bob here");
    await sees(bob.page, "hi alice, bob here");
  });

  await step("alice reads bob's answer", () => sees(alice.page, "hi alice, bob here"));

  // Both encrypted: the room says so, and neither shows a decryption failure.
  for (const p of [alice, bob]) {
    const failed = await p.page.locator(".mx_DecryptionFailureBody, .mx_UnknownBody").count();
    if (failed) throw new Error(`${p.name} sees ${failed} undecryptable events`);
  }
  // A little time as an idle client, so a request loop shows in the counts.
  await new Promise((r) => setTimeout(r, 5000));

  const counts = [...calls.entries()].sort((a, b) => b[1] - a[1]);
  process.stdout.write(`requests per endpoint:\n${counts.map(([k, n]) => `  ${n} ${k}`).join("\n")}\n`);
  for (const name of ["alice", "bob"]) {
    if (!calls.get(`${name} PUT /_matrix/client/v3/rooms/{id}/send/m.room.encrypted/{id}`)) {
      throw new Error(`${name} sent no encrypted message`);
    }
  }
  const spinning = counts.filter(([, n]) => n > MAX_CALLS);
  if (spinning.length) throw new Error(`endpoints called more than ${MAX_CALLS} times: ${JSON.stringify(spinning)}`);
  if (failures.length) throw new Error(`5xx answers:\n${failures.join("\n")}`);
  process.stdout.write("element dm test passed\n");
} catch (error) {
  process.stdout.write(`FAILED: ${error.stack || error}\n`);
  if (cfg.shots) mkdirSync(cfg.shots, { recursive: true });
  for (const p of [alice, bob].filter(Boolean)) {
    if (cfg.shots) await p.page.screenshot({ path: `${cfg.shots}/${p.name}.png` }).catch(() => {});
    process.stdout.write(`--- ${p.name}'s console (last 150 lines)\n${p.log.slice(-150).join("\n")}\n`);
  }
  const counts = [...calls.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20);
  process.stdout.write(`requests per endpoint:\n${counts.map(([k, n]) => `  ${n} ${k}`).join("\n")}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
}
