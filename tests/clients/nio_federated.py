"""A real matrix-nio chat across federation: alice on kith, bob on Synapse, both on loopback.

1. alice registers on kith and bob on Synapse (m.login.dummy), each with an initial sync;
2. alice creates a direct, trusted_private_chat room on kith inviting bob's full user ID;
   bob's sync on Synapse shows the invite (is_direct), he joins, both see the join;
3. messages both ways, each seen in the other's sync timeline;
4. typing notices and read receipts both ways, each seen in the other's sync ephemeral events;
5. bob creates a room on Synapse (its default room version) inviting alice; alice's sync on
   kith shows the invite, she joins through kith, both see the join; one message each way.

Usage: nio_federated.py KITH_BASE_URL SYNAPSE_BASE_URL
kith's client API is plain http; Synapse's is https with a self-signed certificate, so
certificate checks are off for it. Both servers must allow open m.login.dummy registration
and federate with each other.
Every wait is bounded: a step that does not see what it expects within STEP_DEADLINE seconds
prints what it expected and what it saw (plus the raw /sync JSON for the step), and the whole
run is bounded by RUN_DEADLINE; on any failure the script exits 1."""

import asyncio
import json
import secrets
import sys
import time

from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomPreset,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
)

STEP_DEADLINE = 30.0  # seconds a step may wait for what it expects
RUN_DEADLINE = 180.0  # seconds the whole run may take
POLL_MS = 5_000  # the long-poll timeout asked of the server while waiting


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def step(text):
    print(f"--- {text}", flush=True)


def note(text):
    print(f"    {text}", flush=True)


def clip(value, limit=4000):
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def body_of(event):
    """The body of an m.room.message event, from its raw source."""
    source = getattr(event, "source", None) or {}
    if source.get("type") != "m.room.message":
        return None
    return (source.get("content") or {}).get("body")


def summarize(resp, room_id):
    """A short account of what a sync response held for the room (for failure messages)."""
    out = {"next_batch": resp.next_batch}
    if room_id in resp.rooms.invite:
        out["invite_state"] = [e.source for e in resp.rooms.invite[room_id].invite_state]
    info = resp.rooms.join.get(room_id)
    if info is not None:
        out["timeline"] = [
            (e.source.get("type"), e.source.get("sender"), body_of(e) or e.source.get("state_key"))
            for e in info.timeline.events
        ]
        out["ephemeral"] = [type(e).__name__ + ":" + repr(vars(e)) for e in info.ephemeral]
    if room_id in resp.rooms.leave:
        out["left"] = True
    return out


class User:
    def __init__(self, base_url, name, server):
        self.localpart = f"{name}-{secrets.token_hex(3)}"
        self.password = secrets.token_urlsafe(12)
        self.server = server  # "kith" or "Synapse", for messages
        # Synapse serves a self-signed certificate: no certificate checks (ssl=False).
        ssl = False if base_url.startswith("https:") else None
        self.client = AsyncClient(base_url, self.localpart, ssl=ssl)
        self.since = None
        self.user_id = None

    def __str__(self):
        return f"{self.localpart} ({self.server})"

    async def register(self):
        reg = await asyncio.wait_for(
            self.client.register(self.localpart, self.password, device_name="nio federated"), STEP_DEADLINE
        )
        check(isinstance(reg, RegisterResponse), f"register {self}: {reg}")
        check(bool(reg.access_token), f"register {self} returned no access token: {reg}")
        self.user_id = reg.user_id
        check(self.user_id.startswith(f"@{self.localpart}:"), f"{self}: registered user id {self.user_id}")
        check(self.client.logged_in, f"nio is not logged in after registering {self}")

    async def sync(self, timeout_ms=0, full_state=None):
        resp = await asyncio.wait_for(
            self.client.sync(timeout=timeout_ms, since=self.since, full_state=full_state),
            timeout_ms / 1000 + 15,
        )
        check(isinstance(resp, SyncResponse), f"{self} /sync since={self.since}: {resp}")
        self.since = resp.next_batch
        return resp

    async def raw_sync(self, since):
        """The raw JSON of GET /sync since a token (timeout 0), for failure reports."""
        path = f"/_matrix/client/v3/sync?timeout=0&access_token={self.client.access_token}"
        if since:
            path += f"&since={since}"
        try:
            resp = await asyncio.wait_for(self.client.send("GET", path), 15)
            return f"GET /sync?since={since} -> {resp.status} {clip(await resp.text())}"
        except Exception as error:  # diagnostics only
            return f"GET /sync?since={since} failed: {error!r}"

    async def sync_until(self, room_id, predicate, expected, deadline=STEP_DEADLINE):
        """Sync (long-polls of up to POLL_MS) until predicate(resp) gives something truthy.
        Returns (the response, predicate's result, seconds waited)."""
        start_since = self.since
        seen = []
        started = time.monotonic()
        end = started + deadline
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            resp = await self.sync(timeout_ms=int(min(POLL_MS, remaining * 1000)))
            seen.append(summarize(resp, room_id))
            result = predicate(resp)
            if result:
                return resp, result, time.monotonic() - started
        raw = await self.raw_sync(start_since)
        raise Failed(
            f"{self}: expected {expected} within {deadline:.0f}s\n"
            f"    saw {len(seen)} sync responses: {clip(seen)}\n    raw: {raw}"
        )


def timeline_of(resp, room_id):
    info = resp.rooms.join.get(room_id)
    return info.timeline.events if info is not None else []


def ephemeral_of(resp, room_id):
    info = resp.rooms.join.get(room_id)
    return info.ephemeral if info is not None else []


def message_in(room_id, body):
    def predicate(resp):
        for event in timeline_of(resp, room_id):
            if body_of(event) == body:
                return event
        return None

    return predicate


def joined(room_id, user_id):
    def predicate(resp):
        for event in timeline_of(resp, room_id):
            src = event.source
            if (
                src.get("type") == "m.room.member"
                and src.get("state_key") == user_id
                and (src.get("content") or {}).get("membership") == "join"
            ):
                return event
        return None

    return predicate


def invited(room_id):
    def predicate(resp):
        return resp.rooms.invite.get(room_id)

    return predicate


def typing(room_id, user_id):
    """The user list of the last m.typing for the room, if it names user_id."""

    def predicate(resp):
        notices = [e for e in ephemeral_of(resp, room_id) if isinstance(e, TypingNoticeEvent)]
        if notices and user_id in notices[-1].users:
            return notices[-1].users
        return None

    return predicate


def read_receipt(room_id, user_id, event_id):
    def predicate(resp):
        for event in ephemeral_of(resp, room_id):
            if isinstance(event, ReceiptEvent):
                for receipt in event.receipts:
                    kind = getattr(receipt.receipt_type, "value", receipt.receipt_type)
                    if receipt.event_id == event_id and receipt.user_id == user_id and kind == "m.read":
                        return receipt
        return None

    return predicate


async def send_text(user, room_id, body):
    resp = await asyncio.wait_for(
        user.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}), STEP_DEADLINE
    )
    check(isinstance(resp, RoomSendResponse), f"{user} send {body!r} in {room_id}: {resp}")
    return resp.event_id


async def accept_invite(invitee, inviter, room_id, timings, label, want_direct):
    """invitee's sync shows inviter's invite to room_id; invitee joins; both see the join."""
    _, invite, waited = await invitee.sync_until(room_id, invited(room_id), f"an invite to {room_id} in rooms.invite")
    timings[f"{label}: invite reached {invitee.server}"] = waited
    members = [e for e in invite.invite_state if isinstance(e, InviteMemberEvent) and e.state_key == invitee.user_id]
    check(
        members,
        f"{invitee}: invite_state has no m.room.member for {invitee.user_id}: "
        f"{clip([e.source for e in invite.invite_state])}",
    )
    member = members[-1]
    check(member.membership == "invite", f"{invitee}: member event in invite_state: {member.source}")
    check(member.sender == inviter.user_id, f"the invite's sender is {member.sender}, expected {inviter.user_id}")
    if want_direct:
        check(
            member.content.get("is_direct") is True,
            f"{invitee}: the invite member event must carry is_direct: true: {member.source}",
        )
    note(
        f"invite seen after {waited:.2f}s; invite_state types: "
        f"{sorted({e.source.get('type') for e in invite.invite_state})}"
    )
    started = time.monotonic()
    join = await asyncio.wait_for(invitee.client.join(room_id), STEP_DEADLINE)
    check(isinstance(join, JoinResponse) and join.room_id == room_id, f"{invitee} join {room_id}: {join}")
    timings[f"{label}: {invitee.server} join request"] = time.monotonic() - started
    note(f"{invitee} joined in {time.monotonic() - started:.2f}s")
    _, _, waited = await invitee.sync_until(
        room_id, joined(room_id, invitee.user_id), f"{invitee.user_id}'s own join in {room_id}'s timeline"
    )
    _, _, waited = await inviter.sync_until(
        room_id, joined(room_id, invitee.user_id), f"{invitee.user_id}'s join in {room_id}'s timeline"
    )
    timings[f"{label}: join reached {inviter.server}"] = waited
    note(f"both see {invitee.user_id} joined")


async def message(sender, receiver, room_id, body, timings, label):
    """sender sends body; receiver's sync timeline shows it (same event ID and sender)."""
    await receiver.sync()  # catch up, so what follows is new
    event_id = await send_text(sender, room_id, body)
    _, event, waited = await receiver.sync_until(
        room_id, message_in(room_id, body), f"{sender.user_id}'s {body!r} in {room_id}'s timeline"
    )
    check(event.event_id == event_id, f"{receiver} got {body!r} as {event.event_id}, {sender} sent {event_id}")
    check(event.sender == sender.user_id, f"{receiver} got {body!r} from {event.sender}, expected {sender.user_id}")
    timings[f"{label}: {sender.server} -> {receiver.server} message"] = waited
    note(f"{receiver} saw {body!r} ({event_id}) after {waited:.2f}s")
    return event_id


async def typing_notice(typer, watcher, room_id, timings, label):
    await watcher.sync()
    resp = await asyncio.wait_for(typer.client.room_typing(room_id, True, timeout=30_000), STEP_DEADLINE)
    check(isinstance(resp, RoomTypingResponse), f"{typer} room_typing(True): {resp}")
    _, users, waited = await watcher.sync_until(
        room_id, typing(room_id, typer.user_id), f"an m.typing naming {typer.user_id} in {room_id}'s ephemeral events"
    )
    timings[f"{label}: {typer.server} -> {watcher.server} typing"] = waited
    note(f"{watcher} saw typing {users} after {waited:.2f}s")
    resp = await asyncio.wait_for(typer.client.room_typing(room_id, False), STEP_DEADLINE)
    check(isinstance(resp, RoomTypingResponse), f"{typer} room_typing(False): {resp}")


async def receipt(reader, watcher, room_id, event_id, timings, label):
    await watcher.sync()
    resp = await asyncio.wait_for(
        reader.client.room_read_markers(room_id, fully_read_event=event_id, read_event=event_id), STEP_DEADLINE
    )
    check(isinstance(resp, RoomReadMarkersResponse), f"{reader} room_read_markers({event_id}): {resp}")
    _, found, waited = await watcher.sync_until(
        room_id,
        read_receipt(room_id, reader.user_id, event_id),
        f"an m.receipt naming {reader.user_id} m.read for {event_id} in {room_id}'s ephemeral events",
    )
    timings[f"{label}: {reader.server} -> {watcher.server} receipt"] = waited
    note(f"{watcher} saw receipt {found} after {waited:.2f}s")


async def run(alice, bob, timings):
    # 1. Register, initial sync.
    step("1. alice registers on kith and bob on Synapse (m.login.dummy), each does an initial sync")
    for user in (alice, bob):
        await user.register()
        resp = await user.sync(full_state=True)
        check(bool(resp.next_batch), f"{user}: initial sync has no next_batch")
        note(f"{user.user_id} on {user.server}, device {user.client.device_id}")

    # 2. alice's direct room on kith; bob joins from Synapse.
    step("2. alice creates a direct, trusted_private_chat room on kith inviting bob; bob joins from Synapse")
    created = await asyncio.wait_for(
        alice.client.room_create(is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat),
        STEP_DEADLINE,
    )
    check(isinstance(created, RoomCreateResponse), f"alice room_create(is_direct, invite {bob.user_id}): {created}")
    kith_room = created.room_id
    note(f"room {kith_room}")
    await accept_invite(bob, alice, kith_room, timings, "kith room", want_direct=True)

    # 3. Messages both ways.
    step("3. messages: alice -> bob and bob -> alice in the kith room")
    to_bob = await message(alice, bob, kith_room, "hello bob, from kith", timings, "kith room")
    to_alice = await message(bob, alice, kith_room, "hello alice, from Synapse", timings, "kith room")

    # 4. Typing and read receipts both ways.
    step("4a. typing: alice types (bob sees it), bob types (alice sees it)")
    await typing_notice(alice, bob, kith_room, timings, "kith room")
    await typing_notice(bob, alice, kith_room, timings, "kith room")
    step("4b. read receipts: bob reads alice's message (alice sees it), alice reads bob's (bob sees it)")
    await receipt(bob, alice, kith_room, to_bob, timings, "kith room")
    await receipt(alice, bob, kith_room, to_alice, timings, "kith room")

    # 5. bob's room on Synapse; alice joins through kith.
    step("5. bob creates a room on Synapse (default room version) inviting alice; alice joins through kith")
    created = await asyncio.wait_for(bob.client.room_create(invite=[alice.user_id]), STEP_DEADLINE)
    check(isinstance(created, RoomCreateResponse), f"bob room_create(invite {alice.user_id}): {created}")
    synapse_room = created.room_id
    resp = await bob.sync()
    create_events = [
        e.source for e in timeline_of(resp, synapse_room) if e.source.get("type") == "m.room.create"
    ]
    version = (create_events[0].get("content") or {}).get("room_version") if create_events else "?"
    note(f"room {synapse_room}, room version {version}")
    await accept_invite(alice, bob, synapse_room, timings, "Synapse room", want_direct=False)
    await message(bob, alice, synapse_room, "hi alice, in bob's room", timings, "Synapse room")
    await message(alice, bob, synapse_room, "hi bob, from kith, in your room", timings, "Synapse room")


async def main(kith_url: str, synapse_url: str) -> int:
    alice, bob = User(kith_url, "alice", "kith"), User(synapse_url, "bob", "Synapse")
    timings = {}
    started = time.monotonic()

    def report_timings(prefix):
        if timings:
            print(f"{prefix}: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()), flush=True)

    try:
        await asyncio.wait_for(run(alice, bob, timings), RUN_DEADLINE)
        report_timings("timings")
        print(f"total {time.monotonic() - started:.1f}s")
        print("nio federated test passed")
        return 0
    except Failed as failure:
        print(f"FAILED: {failure}", flush=True)
        report_timings("timings so far")
        return 1
    except asyncio.TimeoutError:
        print(
            f"FAILED: a request did not complete in time, or the run exceeded {RUN_DEADLINE:.0f}s "
            f"(after {time.monotonic() - started:.1f}s)",
            flush=True,
        )
        report_timings("timings so far")
        return 1
    finally:
        await alice.client.close()
        await bob.client.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: nio_federated.py KITH_BASE_URL SYNAPSE_BASE_URL")
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
