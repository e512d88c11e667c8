"""A real matrix-nio chat between two users on kith: a direct room, messages both ways
delivered by long-poll, read receipts, typing notices, back-pagination to the room's start,
and unread notification counts.

kith's default friendship policy only lets friends open a direct chat, so first the two
become friends the way a kith client does: alice's direct room is refused (M_INVITE_BLOCKED),
she finds bob in the user directory, sends him a friend request (kith's
org.kith.contacts API), bob's pending long-poll delivers it as org.kith.contacts global
account data, he accepts, and alice's pending long-poll shows him among her friends.

Usage: nio_chat.py BASE_URL
The server must have open registration (a one-shot m.login.dummy registration).
Every wait is bounded: a step that does not see what it expects within STEP_DEADLINE
seconds prints what it expected and what it saw (plus the raw /sync JSON for the step),
and the script exits 1."""

import asyncio
import json
import secrets
import sys
import time
from urllib.parse import quote

from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    MessageDirection,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateError,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomPreset,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
    UnknownAccountDataEvent,
)

STEP_DEADLINE = 20.0  # seconds a step may wait for what it expects
LONG_POLL_MS = 15_000  # the long-poll timeout asked of the server
WOKE_WITHIN = 5.0  # a long-poll woken by a commit must return this soon after it
MAX_PAGES = 20
CONTACTS = "org.kith.contacts"  # kith's global account data type for a user's contacts
CONTACTS_API = "/_matrix/client/unstable/org.kith.contacts/v1"


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
        if info.unread_notifications is not None:
            out["unread"] = vars(info.unread_notifications)
    if room_id in resp.rooms.leave:
        out["left"] = True
    return out


class User:
    def __init__(self, base_url, name):
        self.localpart = f"{name}-{secrets.token_hex(3)}"
        self.password = secrets.token_urlsafe(12)
        self.client = AsyncClient(base_url, self.localpart)
        self.since = None
        self.user_id = None

    async def register(self):
        reg = await self.client.register(self.localpart, self.password, device_name="nio chat")
        check(isinstance(reg, RegisterResponse), f"register {self.localpart}: {reg}")
        check(bool(reg.access_token), f"register {self.localpart} returned no access token: {reg}")
        self.user_id = reg.user_id
        check(self.user_id.startswith(f"@{self.localpart}:"), f"registered user id {self.user_id}")
        # nio's register() logged the client in with the returned token.
        check(self.client.logged_in and self.client.access_token == reg.access_token, "nio is not logged in after register")

    async def sync(self, timeout_ms=0, full_state=None, advance=True):
        resp = await asyncio.wait_for(
            self.client.sync(timeout=timeout_ms, since=self.since, full_state=full_state),
            timeout_ms / 1000 + 15,
        )
        check(isinstance(resp, SyncResponse), f"{self.localpart} /sync since={self.since}: {resp}")
        if advance:
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

    async def api(self, method, path, body=None):
        """A raw JSON request with the user's access token, through nio's session.
        Returns (HTTP status, the parsed JSON body or None, the exchange as text)."""
        data = json.dumps(body) if body is not None else None
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        resp = await asyncio.wait_for(self.client.send(method, path, data, headers), STEP_DEADLINE)
        text = await asyncio.wait_for(resp.text(), STEP_DEADLINE)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return resp.status, parsed, f"{method} {path} {data or ''} -> {resp.status} {clip(text)}"

    async def contacts_around(self, action, predicate, expected):
        """Start a long-poll /sync, then run action(); the long-poll must wake on the commit
        with org.kith.contacts global account data whose content satisfies predicate.
        Reads the event from nio's account_data_events, or, if nio dropped it, from a raw
        GET /sync with the same since token. Returns (predicate's result, which way worked)."""
        started = time.monotonic()
        start_since = self.since
        task = asyncio.create_task(self.sync(timeout_ms=LONG_POLL_MS))
        await asyncio.sleep(1.0)
        if task.done():
            early = task.result()
            raise Failed(
                f"{self.localpart}: long-poll (timeout {LONG_POLL_MS} ms) returned after "
                f"{time.monotonic() - started:.2f}s, before anything was sent: "
                f"account data {clip([vars(e) for e in early.account_data_events])}"
            )
        acted = time.monotonic()
        await action()
        resp = await asyncio.wait_for(task, LONG_POLL_MS / 1000 + 15)
        done = time.monotonic()
        from_action, total = done - acted, done - started
        note(f"{self.localpart}'s long-poll returned {from_action:.3f}s after the request ({total:.3f}s after it began)")
        parsed = [e for e in resp.account_data_events if isinstance(e, UnknownAccountDataEvent) and e.type == CONTACTS]
        if parsed:
            content, way = parsed[-1].content, "nio (UnknownAccountDataEvent in account_data_events)"
        else:
            note(
                f"nio's account_data_events hold no {CONTACTS}: "
                f"{[type(e).__name__ + ':' + str(getattr(e, 'type', '')) for e in resp.account_data_events]}"
            )
            status, body, exchange = await self.api("GET", f"/_matrix/client/v3/sync?timeout=0&since={start_since}")
            check(status == 200 and isinstance(body, dict), f"raw /sync fallback: {exchange}")
            raw = [
                e for e in (body.get("account_data") or {}).get("events") or [] if e.get("type") == CONTACTS
            ]
            check(raw, f"{self.localpart}: the long-poll carried no {CONTACTS} account data\n    raw: {exchange}")
            content, way = raw[-1].get("content") or {}, "raw GET /sync (nio did not surface it)"
        note(f"{CONTACTS} read via {way}: {clip(content, 1000)}")
        result = predicate(content)
        if not result:
            raise Failed(
                f"{self.localpart}: the long-poll's {CONTACTS} content lacks {expected}: {clip(content)}\n"
                f"    raw: {await self.raw_sync(start_since)}"
            )
        check(
            from_action < WOKE_WITHIN,
            f"{self.localpart}: the long-poll took {from_action:.2f}s after the request to return "
            f"(timeout {LONG_POLL_MS} ms): it did not wake on the commit",
        )
        return result, way

    async def sync_until(self, room_id, predicate, expected, deadline=STEP_DEADLINE, poll_ms=5000):
        """Sync (long-polls of up to poll_ms) until predicate(resp) gives something truthy."""
        start_since = self.since
        seen = []
        end = time.monotonic() + deadline
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            resp = await self.sync(timeout_ms=int(min(poll_ms, remaining * 1000)))
            seen.append(summarize(resp, room_id))
            result = predicate(resp)
            if result:
                return resp, result
        raw = await self.raw_sync(start_since)
        raise Failed(
            f"{self.localpart}: expected {expected} within {deadline:.0f}s\n"
            f"    saw {len(seen)} sync responses: {clip(seen)}\n    raw: {raw}"
        )

    async def long_poll_around(self, room_id, action, predicate, expected):
        """Start a long-poll /sync first, then run action(); the long-poll must block until
        then, wake on the commit well before its timeout, and carry what predicate wants."""
        started = time.monotonic()
        start_since = self.since
        task = asyncio.create_task(self.sync(timeout_ms=LONG_POLL_MS))
        await asyncio.sleep(1.0)
        if task.done():
            early = task.result()
            raise Failed(
                f"{self.localpart}: long-poll (timeout {LONG_POLL_MS} ms) returned after "
                f"{time.monotonic() - started:.2f}s, before anything was sent: {clip(summarize(early, room_id))}"
            )
        acted = time.monotonic()
        await action()
        resp = await asyncio.wait_for(task, LONG_POLL_MS / 1000 + 15)
        done = time.monotonic()
        from_action, total = done - acted, done - started
        note(f"{self.localpart}'s long-poll returned {from_action:.3f}s after the send ({total:.3f}s after it began)")
        result = predicate(resp)
        if not result:
            raw = await self.raw_sync(start_since)
            raise Failed(
                f"{self.localpart}: the long-poll returned after {total:.2f}s without {expected}: "
                f"{clip(summarize(resp, room_id))}\n    raw: {raw}"
            )
        check(
            from_action < WOKE_WITHIN,
            f"{self.localpart}: the long-poll took {from_action:.2f}s after the send to return "
            f"(timeout {LONG_POLL_MS} ms): it did not wake on the commit",
        )
        return resp, result, from_action


def timeline_of(resp, room_id):
    info = resp.rooms.join.get(room_id)
    return info.timeline.events if info is not None else []


def message_in(room_id, body):
    def predicate(resp):
        for event in timeline_of(resp, room_id):
            if body_of(event) == body:
                return event
        return None

    return predicate


def typing_users(room_id):
    """predicate helper: the user list of the last typing notice for the room, if any."""

    def users(resp):
        info = resp.rooms.join.get(room_id)
        if info is None:
            return None
        notices = [e for e in info.ephemeral if isinstance(e, TypingNoticeEvent)]
        return notices[-1].users if notices else None

    return users


async def send_text(user, room_id, body):
    resp = await user.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    check(isinstance(resp, RoomSendResponse), f"{user.localpart} send {body!r}: {resp}")
    return resp.event_id


async def main(base_url: str) -> int:
    alice, bob = User(base_url, "alice"), User(base_url, "bob")
    long_polls = {}
    try:
        # 1. Register, log in, initial sync.
        step("1. alice and bob register (m.login.dummy) and do an initial full-state sync")
        for user in (alice, bob):
            await user.register()
            resp = await user.sync(full_state=True)
            check(bool(resp.next_batch), f"{user.localpart}: initial sync has no next_batch")
            note(f"{user.user_id} device {user.client.device_id}, next_batch {user.since}")

        # 2. Alice and Bob become friends: kith's default policy refuses a direct chat otherwise.
        step("2a. before they are friends, alice's direct room inviting bob is refused (M_INVITE_BLOCKED)")
        # (nio logs "Error validating response: 'room_id' is a required property" for the 403
        # body before parsing it as a RoomCreateError; that line is expected.)
        refused = await asyncio.wait_for(
            alice.client.room_create(is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat),
            STEP_DEADLINE,
        )
        http = getattr(getattr(refused, "transport_response", None), "status", None)
        check(
            isinstance(refused, RoomCreateError),
            f"room_create(is_direct, invite bob) before friendship must fail, got {refused}",
        )
        check(
            refused.status_code == "M_INVITE_BLOCKED" and http == 403,
            f"room_create before friendship: expected 403 M_INVITE_BLOCKED, got HTTP {http} {refused}",
        )
        note(f"HTTP {http} {refused.status_code}: {refused.message}")

        step("2b. alice finds bob in the user directory by the start of his name")
        term = bob.localpart[:3]
        status, body, exchange = await alice.api(
            "POST", "/_matrix/client/v3/user_directory/search", {"search_term": term, "limit": 50}
        )
        check(status == 200 and isinstance(body, dict), f"user directory search: {exchange}")
        found = [r for r in body.get("results") or [] if r.get("user_id") == bob.user_id]
        check(found, f"{bob.user_id} is not among the results for {term!r}: {exchange}")
        relationship = found[0].get(f"{CONTACTS}.relationship")
        check(
            relationship == "none",
            f"{bob.user_id}'s {CONTACTS}.relationship is {relationship!r}, expected 'none': {exchange}",
        )
        note(f"{term!r}: {len(body['results'])} results, bob among them with relationship 'none'")

        step("2c. alice sends bob a friend request while bob's long-poll /sync is pending")
        await bob.sync()  # catch up, so the long-poll has nothing pending
        greeting = "hi, it's alice"
        sent_request = {}

        async def alice_asks_bob():
            status, body, exchange = await alice.api(
                "POST", f"{CONTACTS_API}/requests", {"user_id": bob.user_id, "message": greeting}
            )
            check(status == 200 and isinstance(body, dict), f"friend request: {exchange}")
            check(
                isinstance(body.get("request_id"), str) and body["request_id"] and body.get("state") == "pending",
                f"friend request: expected {{request_id, state: 'pending'}}: {exchange}",
            )
            sent_request["id"] = body["request_id"]
            note(f"request {body['request_id']} pending")

        def alice_incoming(content):
            for entry in content.get("incoming") or []:
                if entry.get("user_id") == alice.user_id and entry.get("message") == greeting:
                    return entry
            return None

        entry, way = await bob.contacts_around(
            alice_asks_bob, alice_incoming, f"an 'incoming' entry from {alice.user_id} with message {greeting!r}"
        )
        step("2d. bob's long-poll delivered the request as org.kith.contacts account data")
        check(
            entry.get("request_id") == sent_request["id"],
            f"bob's incoming entry has request_id {entry.get('request_id')!r}, alice was given {sent_request['id']!r}",
        )
        note(f"incoming entry {entry}, read via {way}")
        contacts_ways = {"bob <- friend request": way}

        step("2e. bob accepts; alice's pending long-poll shows bob among her friends")
        await alice.sync()  # catch up past her own outgoing request

        async def bob_accepts():
            status, body, exchange = await bob.api(
                "POST", f"{CONTACTS_API}/requests/{quote(entry['request_id'], safe='')}/accept", {}
            )
            check(
                status == 200 and isinstance(body, dict) and body.get("state") == "accepted",
                f"accept: expected 200 {{state: 'accepted'}}: {exchange}",
            )

        def bob_friend(content):
            friends = [f for f in content.get("friends") or [] if f.get("user_id") == bob.user_id]
            return friends[0] if friends else None

        friend, way = await alice.contacts_around(bob_accepts, bob_friend, f"{bob.user_id} in 'friends'")
        note(f"friends entry {friend}, read via {way}")
        contacts_ways["alice <- accepted"] = way

        # 3. Alice creates a direct room inviting Bob, now that they are friends.
        step("3. alice creates a direct, trusted_private_chat room inviting bob (now friends)")
        created = await alice.client.room_create(
            is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat
        )
        check(isinstance(created, RoomCreateResponse), f"room_create: {created}")
        room_id = created.room_id
        note(f"room {room_id}")

        # 4. Bob sees the invite, flagged direct, and joins.
        step("4. bob sees the invite (is_direct) and joins")

        def invited(resp):
            info = resp.rooms.invite.get(room_id)
            return info if info is not None else None

        resp, invite = await bob.sync_until(room_id, invited, f"an invite to {room_id} in rooms.invite")
        members = [
            e for e in invite.invite_state if isinstance(e, InviteMemberEvent) and e.state_key == bob.user_id
        ]
        check(
            members,
            f"invite_state has no m.room.member event for {bob.user_id}: {clip([e.source for e in invite.invite_state])}",
        )
        member = members[-1]
        check(member.membership == "invite", f"bob's member event in invite_state: {member.source}")
        check(member.sender == alice.user_id, f"the invite's sender is {member.sender}, expected {alice.user_id}")
        check(
            member.content.get("is_direct") is True,
            f"bob's invite member event must carry is_direct: true; invite_state member event: {member.source}",
        )
        note(f"invite_state events nio parsed: {sorted({e.source.get('type') for e in invite.invite_state})}")
        joined = await bob.client.join(room_id)
        check(isinstance(joined, JoinResponse) and joined.room_id == room_id, f"join: {joined}")

        def joined_in(user):
            def predicate(resp):
                for event in timeline_of(resp, room_id):
                    src = event.source
                    if (
                        src.get("type") == "m.room.member"
                        and src.get("state_key") == bob.user_id
                        and (src.get("content") or {}).get("membership") == "join"
                    ):
                        return event
                return None

            return predicate

        await bob.sync_until(room_id, joined_in(bob), f"bob's own join in {room_id}'s timeline (rooms.join)")
        await alice.sync_until(room_id, joined_in(alice), f"bob's join in {room_id}'s timeline")
        note("both see bob joined")

        # 5. Messages both ways, each delivered by a long-poll that began before the send.
        step("5. alice -> bob and bob -> alice, each delivered by a pending long-poll")
        await bob.sync()  # catch up, so the long-poll has nothing pending
        hello_bob = {}

        async def alice_says_hello():
            hello_bob["id"] = await send_text(alice, room_id, "hello bob")

        _, event, elapsed = await bob.long_poll_around(
            room_id, alice_says_hello, message_in(room_id, "hello bob"), "alice's 'hello bob'"
        )
        check(event.event_id == hello_bob["id"], f"bob got event {event.event_id}, alice sent {hello_bob['id']}")
        check(event.sender == alice.user_id, f"'hello bob' sender {event.sender}")
        long_polls["bob <- 'hello bob'"] = elapsed

        await alice.sync()  # catch up past her own message
        hello_alice = {}

        async def bob_says_hello():
            hello_alice["id"] = await send_text(bob, room_id, "hello alice")

        _, event, elapsed = await alice.long_poll_around(
            room_id, bob_says_hello, message_in(room_id, "hello alice"), "bob's 'hello alice'"
        )
        check(event.event_id == hello_alice["id"], f"alice got event {event.event_id}, bob sent {hello_alice['id']}")
        check(event.sender == bob.user_id, f"'hello alice' sender {event.sender}")
        long_polls["alice <- 'hello alice'"] = elapsed

        # 6. Bob's read receipt reaches Alice.
        step("6. bob marks 'hello bob' read; alice sees the m.receipt")
        marked = await bob.client.room_read_markers(
            room_id, fully_read_event=hello_bob["id"], read_event=hello_bob["id"]
        )
        check(isinstance(marked, RoomReadMarkersResponse), f"room_read_markers: {marked}")

        def bob_read_receipt(resp):
            info = resp.rooms.join.get(room_id)
            for event in info.ephemeral if info else []:
                if isinstance(event, ReceiptEvent):
                    for receipt in event.receipts:
                        kind = getattr(receipt.receipt_type, "value", receipt.receipt_type)
                        if receipt.event_id == hello_bob["id"] and receipt.user_id == bob.user_id and kind == "m.read":
                            return receipt
            return None

        _, receipt = await alice.sync_until(
            room_id, bob_read_receipt, f"an m.receipt naming {bob.user_id} m.read for {hello_bob['id']}"
        )
        note(f"receipt: {receipt}")

        # 7. Typing notices, each delivered to a pending long-poll.
        step("7. alice types; bob's long-poll sees it, then sees it stop")
        await bob.sync()  # catch up

        async def alice_types():
            typed = await alice.client.room_typing(room_id, True, timeout=30000)
            check(isinstance(typed, RoomTypingResponse), f"room_typing(True): {typed}")

        def alice_typing(resp):
            users = typing_users(room_id)(resp)
            return users if users is not None and alice.user_id in users else None

        _, users, elapsed = await bob.long_poll_around(
            room_id, alice_types, alice_typing, f"an m.typing with {alice.user_id}"
        )
        note(f"typing users: {users}")
        long_polls["bob <- typing on"] = elapsed

        async def alice_stops():
            typed = await alice.client.room_typing(room_id, False)
            check(isinstance(typed, RoomTypingResponse), f"room_typing(False): {typed}")

        def nobody_typing(resp):
            users = typing_users(room_id)(resp)
            return "[]" if users == [] else None

        _, _, elapsed = await bob.long_poll_around(room_id, alice_stops, nobody_typing, "an m.typing with user_ids []")
        long_polls["bob <- typing off"] = elapsed

        # 8. History by back-pagination from Bob's latest sync.
        step("8. alice sends m0..m24; bob back-paginates to the room's creation")
        sent = {}
        for n in range(25):
            sent[f"m{n}"] = await send_text(alice, room_id, f"m{n}")
        last_unread = {}

        def saw_m24(resp):
            info = resp.rooms.join.get(room_id)
            if info is not None and info.unread_notifications is not None:
                if info.unread_notifications.notification_count is not None:
                    last_unread["count"] = info.unread_notifications.notification_count
            return message_in(room_id, "m24")(resp)

        await bob.sync_until(room_id, saw_m24, "m24 in bob's timeline")
        unread_before = last_unread.get("count")

        collected = []
        token, pages = bob.since, 0
        while True:
            check(pages < MAX_PAGES, f"pagination did not end within {MAX_PAGES} pages ({len(collected)} events)")
            page = await asyncio.wait_for(
                bob.client.room_messages(room_id, start=token, direction=MessageDirection.back, limit=10),
                STEP_DEADLINE,
            )
            check(isinstance(page, RoomMessagesResponse), f"/messages from={token}: {page}")
            pages += 1
            check(len(page.chunk) <= 10, f"/messages limit=10 returned {len(page.chunk)} events")
            collected.extend(page.chunk)
            if page.end is None or not page.chunk:
                break
            check(page.end != token, f"/messages returned end == from ({token}) with a non-empty chunk")
            token = page.end
        note(f"{len(collected)} events in {pages} pages")

        ids = [e.source.get("event_id") for e in collected]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        check(not dupes, f"events returned more than once across pages: {dupes}")
        bodies = [body_of(e) for e in collected]
        wanted = [f"m{n}" for n in range(24, -1, -1)] + ["hello alice", "hello bob"]
        for body in wanted:
            check(bodies.count(body) == 1, f"{body!r} appears {bodies.count(body)} times in the pagination")
        order = [b for b in bodies if b in wanted]
        check(order == wanted, f"messages not in reverse chronological order: {order}")
        for n in range(25):
            at = bodies.index(f"m{n}")
            check(ids[at] == sent[f"m{n}"], f"m{n}: paginated event id {ids[at]}, sent {sent[f'm{n}']}")
        kinds = [e.source.get("type") for e in collected]
        check(
            kinds and kinds[-1] == "m.room.create",
            f"the oldest event reached is {kinds[-1] if kinds else None}, expected m.room.create; types: {kinds}",
        )
        check(kinds.count("m.room.create") == 1, f"m.room.create appears {kinds.count('m.room.create')} times")
        note(f"oldest: {collected[-1].source.get('event_id')} m.room.create; newest: {bodies[0]}")

        # 9. Unread notification counts.
        step("9. bob's unread notification count: >= 25 before reading, 0 after")
        check(
            unread_before is not None and unread_before >= 25,
            f"bob's sync showing m24 must report unread_notifications.notification_count >= 25, saw {unread_before}",
        )
        note(f"notification_count before reading: {unread_before}")
        marked = await bob.client.room_read_markers(room_id, fully_read_event=sent["m24"], read_event=sent["m24"])
        check(isinstance(marked, RoomReadMarkersResponse), f"room_read_markers(m24): {marked}")

        def unread_reported(resp):
            info = resp.rooms.join.get(room_id)
            if info is None or info.unread_notifications is None:
                return None
            count = info.unread_notifications.notification_count
            return ("count", count) if count is not None else None

        start_since = bob.since
        _, (_, count) = await bob.sync_until(room_id, unread_reported, "an unread_notifications report for the room")
        if count != 0:
            raise Failed(
                f"after bob's read receipt for m24 his sync reports notification_count {count}, expected 0\n"
                f"    raw: {await bob.raw_sync(start_since)}"
            )
        note("notification_count after reading: 0")

        print("long-poll wake-up times: " + ", ".join(f"{k} {v:.3f}s" for k, v in long_polls.items()))
        print(f"{CONTACTS} account data read via: " + ", ".join(f"{k}: {v}" for k, v in contacts_ways.items()))
        print("nio chat test passed")
        return 0
    except Failed as failure:
        print(f"FAILED: {failure}", flush=True)
        if long_polls:
            print("long-poll wake-up times so far: " + ", ".join(f"{k} {v:.3f}s" for k, v in long_polls.items()))
        return 1
    except asyncio.TimeoutError:
        print("FAILED: a request to the server did not complete in time", flush=True)
        return 1
    finally:
        await alice.client.close()
        await bob.client.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: nio_chat.py BASE_URL")
    sys.exit(asyncio.run(main(sys.argv[1])))
