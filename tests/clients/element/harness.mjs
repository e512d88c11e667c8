// What the Element Web tests share: Element served for each homeserver, Chromium, one
// browser context per person, Element's own screens for signing in and writing, and a
// record of every request the pages make.
//
// A test script is run as `node SCRIPT.mjs '<config JSON>'`, the config being
//   {"webapp": DIR, "serve": ".../serve.mjs", "shots": DIR,
//    "alice": {"hs": URL, "user": "@alice:…", "password": …}, "bob": {…}}
// and calls `run(name, async (h) => { … })`, which prints "<name> passed" when every step
// did. On failure it saves screenshots of every page to `shots` and prints their consoles.
// Either way it prints the requests made per endpoint (IDs replaced by placeholders) and
// fails the run if one endpoint was called more than MAX_CALLS times or any answer was 5xx.

import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

// "A few dozen" calls of one endpoint in a whole run; a client spinning on something makes
// hundreds in seconds.
const MAX_CALLS = 60;
export const STEP = 60_000;

export const config = JSON.parse(process.argv[2]);

/** `/_matrix/client/v3/rooms/!x:y/send/m.room.message/m12` → `…/rooms/{id}/send/m.room.message/{id}`. */
function template(url) {
  return new URL(url).pathname
    .split("/")
    .map((part) => {
      const p = decodeURIComponent(part);
      const id = /^[!@#$]/.test(p) || /^[0-9]+$/.test(p) || /^m[0-9]+/.test(p) || p.length > 24;
      return id ? "{id}" : part;
    })
    .join("/");
}

class Harness {
  constructor(browser, start) {
    this.browser = browser;
    this.start = start;
    this.servers = new Map();
    this.people = [];
    this.calls = new Map();
    this.counting = true;
    this.failures = [];
  }

  /** Runs `fn` without counting requests: for a known client loop that no server answer
   * can stop (5xx answers still fail the run). */
  async uncounted(fn) {
    this.counting = false;
    try {
      await fn();
    } finally {
      this.counting = true;
    }
  }

  /** Element served for `hs`, once per homeserver. */
  async web(hs) {
    if (!this.servers.has(hs)) {
      const server = await this.start({ hs, port: 0, webapp: config.webapp });
      this.servers.set(hs, server);
    }
    return `http://127.0.0.1:${this.servers.get(hs).address().port}`;
  }

  /** A person from the config (`alice`, `bob`) in a browser context of their own. */
  async person(name) {
    const who = config[name];
    const web = await this.web(who.hs);
    const context = await this.browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 900 },
    });
    // Nothing leaves loopback.
    await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
    const page = await context.newPage();
    page.on("request", (request) => {
      if (!request.url().includes("/_matrix/") || !this.counting) return;
      const key = `${name} ${request.method()} ${template(request.url())}`;
      this.calls.set(key, (this.calls.get(key) || 0) + 1);
    });
    page.on("response", (response) => {
      if (response.status() >= 500) {
        const request = response.request();
        this.failures.push(`${name}: ${response.status()} ${request.method()} ${response.url()}`);
      }
    });
    const person = new Person(name, who, web, page);
    this.people.push(person);
    return person;
  }

  /** How often `name` called `METHOD /path/template`. */
  count(name, endpoint) {
    return this.calls.get(`${name} ${endpoint}`) || 0;
  }

  report() {
    const counts = [...this.calls.entries()].sort((a, b) => b[1] - a[1]);
    return counts.map(([key, n]) => `  ${n} ${key}`).join("\n");
  }

  check() {
    const spinning = [...this.calls.entries()].filter(([, n]) => n > MAX_CALLS);
    if (spinning.length) {
      throw new Error(`endpoints called more than ${MAX_CALLS} times: ${JSON.stringify(spinning)}`);
    }
    if (this.failures.length) throw new Error(`5xx answers:\n${this.failures.join("\n")}`);
  }
}

class Person {
  constructor(name, who, web, page) {
    Object.assign(this, { name, who, web, page, log: [] });
    page.on("console", (message) => this.log.push(`${name} ${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => this.log.push(`${name} pageerror: ${error.message}`));
  }

  /** Signs in on Element's login screen; done once the room list shows. */
  async login() {
    const { page, who, web } = this;
    await page.goto(`${web}/#/login`);
    await this.signIn(who);
  }

  /** Signs in on the login screen on display. `verify: "later"`: the account has
   * cross-signing and Element asks to verify the new session first; put it off. */
  async signIn(who = this.who, { verify } = {}) {
    const page = this.page;
    await page.locator("#mx_LoginForm_username").fill(who.user.slice(1).split(":")[0], { timeout: STEP });
    await page.locator("#mx_LoginForm_password").fill(who.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    if (verify === "later") {
      await page.getByRole("button", { name: "Skip verification for now" }).click({ timeout: STEP });
      await page.getByRole("button", { name: "I'll verify later" }).click({ timeout: STEP });
    }
    await page.getByRole("tree", { name: "Rooms" }).waitFor({ timeout: STEP });
  }

  /** Closes the toasts that sit over the room list (notifications, backup), as a person does. */
  async dismissToasts() {
    for (const label of ["Dismiss", "Later", "Not now"]) {
      for (const button of await this.page.getByRole("button", { name: label, exact: true }).all()) {
        await button.click({ timeout: 2000 }).catch(() => {});
      }
    }
  }

  /** Writes `text` in the composer and sends it (slash commands included). */
  async send(text) {
    // "Send a message…" in a DM not made yet (its first message makes it), "Send an
    // encrypted message…" once it is, "…reply…" while replying.
    const composer = this.page.getByRole("textbox", { name: /Send (an encrypted|a) (message|reply)/ });
    await composer.click({ timeout: STEP });
    await composer.fill(text);
    await composer.press("Enter");
  }

  /** The timeline tile of the newest event showing `text`, as the server has it: Element
   * gives a tile its event ID (`data-scroll-tokens`) only once the server's copy replaced
   * the local echo. */
  tile(text) {
    return this.page.locator(".mx_EventTile[data-scroll-tokens]", { hasText: text }).last();
  }

  /** Waits until the message shows as text: decrypted, not "Unable to decrypt". */
  async sees(text) {
    const body = this.page.locator(".mx_EventTile[data-scroll-tokens] .mx_EventTile_body", { hasText: text });
    await body.first().waitFor({ timeout: STEP });
  }

  /** Opens the room (or invite) named `name` from the room list. */
  async open(name) {
    await this.page.getByRole("treeitem", { name }).first().click({ timeout: STEP });
  }

  /** Accepts the invite on screen: "Start chatting" for a direct chat, else "Accept". */
  async accept() {
    await this.page.getByRole("button", { name: /^(Start chatting|Accept)$/ }).click({ timeout: STEP });
  }

  /** Whether the timeline shows events Element could not decrypt or show. */
  async undecryptable() {
    return this.page.locator(".mx_DecryptionFailureBody, .mx_UnknownBody").count();
  }
}

export async function run(name, steps) {
  const { startServer } = await import(config.serve);
  const browser = await chromium.launch({
    executablePath: process.env.KITH_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
  const harness = new Harness(browser, startServer);
  harness.step = async (what, fn) => {
    process.stdout.write(`step: ${what}\n`);
    await fn();
  };
  try {
    await steps(harness);
    // A little time as an idle client, so a request loop shows in the counts.
    await new Promise((resolve) => setTimeout(resolve, 5000));
    process.stdout.write(`requests per endpoint:\n${harness.report()}\n`);
    harness.check();
    process.stdout.write(`${name} passed\n`);
  } catch (error) {
    process.stdout.write(`FAILED: ${error.stack || error}\n`);
    if (config.shots) mkdirSync(config.shots, { recursive: true });
    for (const p of harness.people) {
      if (config.shots) await p.page.screenshot({ path: `${config.shots}/${p.name}.png` }).catch(() => {});
      process.stdout.write(`--- ${p.name}'s console (last 150 lines)\n${p.log.slice(-150).join("\n")}\n`);
    }
    process.stdout.write(`requests per endpoint:\n${harness.report()}\n`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    for (const server of harness.servers.values()) {
      server.closeAllConnections();
      server.close();
    }
  }
}
