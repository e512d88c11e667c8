// The real Element Web (1.11.54, Rust crypto) in Chromium, as two people use it: alice and
// bob sign in on Element's own login screen, alice starts an encrypted direct chat with bob
// from the "Start chat" dialog, bob accepts the invite (shown under alice's name) from his
// room list, each writes, and each reads the other's message decrypted.
// `node dm.mjs '<config>'` (see harness.mjs); prints "element dm test passed".

import { STEP, config, run } from "./harness.mjs";

await run("element dm test", async (h) => {
  const alice = await h.person("alice");
  const bob = await h.person("bob");
  await h.step("both sign in", () => Promise.all([alice.login(), bob.login()]));
  await alice.dismissToasts();
  await bob.dismissToasts();

  await h.step("alice starts a direct chat with bob", async () => {
    const page = alice.page;
    await page.getByRole("button", { name: "Start chat" }).first().click({ timeout: STEP });
    await page.getByTestId("invite-dialog-input").fill(config.bob.user);
    const suggestion = page.locator(".mx_InviteDialog_tile_nameStack_userId", { hasText: config.bob.user });
    await suggestion.first().click({ timeout: STEP });
    await page.getByRole("button", { name: "Go" }).click();
    // Element makes the room when the first message is sent.
    await alice.send("hello bob, from alice");
    await alice.sees("hello bob, from alice");
  });

  await h.step("bob sees the invite under alice's name and accepts it", async () => {
    await bob.open(/alice/);
    await bob.accept();
  });

  await h.step("bob reads alice's message and answers", async () => {
    await bob.sees("hello bob, from alice");
    await bob.send("hi alice, bob here");
    await bob.sees("hi alice, bob here");
  });

  await h.step("alice reads bob's answer", () => alice.sees("hi alice, bob here"));

  for (const p of [alice, bob]) {
    const failed = await p.undecryptable();
    if (failed) throw new Error(`${p.name} sees ${failed} undecryptable events`);
    if (!h.count(p.name, "PUT /_matrix/client/v3/rooms/{id}/send/m.room.encrypted/{id}")) {
      throw new Error(`${p.name} sent no encrypted message`);
    }
  }
});
