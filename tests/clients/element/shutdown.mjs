// A server admin deletes a room that two people have open in the real Element Web: the
// room leaves their lists of rooms, and each finds the notice room the admin moved them
// to, with the admin's message. The deletion is Synapse's admin API call, as moderation
// tools make it (`config.deletion`: the server, an admin's token, the room, the admin).
// `node shutdown.mjs '<config>'` (see harness.mjs); prints "element shutdown test passed".

import { STEP, config, run } from "./harness.mjs";

await run("element shutdown test", async (h) => {
  const alice = await h.person("alice");
  const bob = await h.person("bob");
  await h.step("both sign in and read the room", async () => {
    await Promise.all([alice.login(), bob.login()]);
    for (const p of [alice, bob]) {
      await p.dismissToasts();
      await p.page.getByRole("group", { name: "Rooms" }).getByRole("treeitem", { name: /Doomed/ })
        .waitFor({ timeout: STEP });
      await p.open(/Doomed/);
      await p.sees("written before the shutdown");
    }
  });

  await h.step("an admin deletes the room, moving its people to a notice room", async () => {
    const { base, token, room, admin } = config.deletion;
    const answer = await fetch(`${base}/_synapse/admin/v2/rooms/${encodeURIComponent(room)}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ block: true, new_room_user_id: admin, message: "This room was shut down." }),
    });
    if (!answer.ok) throw new Error(`the deletion was refused: ${answer.status} ${await answer.text()}`);
  });

  await h.step("each sees the room go and reads the notice", async () => {
    for (const p of [alice, bob]) {
      const rooms = p.page.getByRole("group", { name: "Rooms" });
      await rooms.getByRole("treeitem", { name: /Doomed/ }).waitFor({ state: "detached", timeout: STEP });
      await p.open(/Content Violation Notification/);
      await p.sees("This room was shut down.");
    }
  });
});
