"""Friend requests with a client that knows nothing of contacts: matrix-nio users on kith
under the default policy `request` befriend by a direct-chat invite and joining it, decline
by rejecting, cancel by rescinding, and chat; a request made through kith's contacts API
reaches a nio user as an ordinary DM invite, which joining accepts. Every state is checked
through the contacts API and the live org.kith.contacts account data the long-poll carries.

Usage: nio_requests.py BASE_URL   (open registration). Every wait is bounded (nio_chat's
helpers: a step that does not see what it expects in time fails with what it saw)."""

import asyncio
import sys

from nio import JoinResponse, RoomCreateResponse, RoomKickResponse, RoomLeaveResponse, RoomPreset

from nio_chat import CONTACTS_API, Failed, User, check, message_in, send_text, step


def entries(content, key, other):
    return [e for e in content.get(key) or [] if e.get("user_id") == other]


async def requests_of(user):
    status, body, exchange = await user.api("GET", f"{CONTACTS_API}/requests")
    check(status == 200, exchange)
    return body["requests"]


async def direct_chat(inviter, invitee):
    resp = await inviter.client.room_create(
        is_direct=True, invite=[invitee.user_id], preset=RoomPreset.trusted_private_chat
    )
    check(isinstance(resp, RoomCreateResponse), f"createRoom: {resp}")
    return resp.room_id


async def main(base_url: str) -> int:
    users = [User(base_url, name) for name in ["alice", "bob", "carol", "dave", "erin"]]
    alice, bob, carol, dave, erin = users
    try:
        for user in users:
            await user.register()
            await user.sync()

        step("alice invites bob into a direct chat: bob's invite is a friend request")
        room = None

        async def invite_bob():
            nonlocal room
            room = await direct_chat(alice, bob)

        def bob_asked(content):
            found = entries(content, "incoming", alice.user_id)
            return found and found[0].get("dm_room_id") == room and found[0]

        await bob.sync()  # what came before is not news

        request, _ = await bob.contacts_around(invite_bob, bob_asked, "alice's request about the room")
        status, body, exchange = await bob.api("GET", "/_matrix/client/v3/sync?timeout=0")
        check(status == 200 and room in body["rooms"]["invite"], f"the invite in bob's sync: {exchange}")
        outgoing = await requests_of(alice)
        check([r["request_id"] for r in outgoing] == [request["request_id"]], f"alice's side: {outgoing}")

        step("alice writes while the request is pending; bob joins, which accepts it")
        await send_text(alice, room, "a message request")

        async def bob_joins():
            check(isinstance(await bob.client.join(room), JoinResponse), "bob's join")

        def alice_friend(content):
            found = entries(content, "friends", bob.user_id)
            return found and found[0].get("dm_room_id") == room and not content.get("outgoing")

        await alice.sync()  # what came before is not news

        await alice.contacts_around(bob_joins, alice_friend, "bob among alice's friends")
        status, body, exchange = await bob.api("GET", f"{CONTACTS_API}/friends")
        check(status == 200 and [f["user_id"] for f in body["friends"]] == [alice.user_id], exchange)
        await bob.sync_until(room, message_in(room, "a message request"), "alice's first message")
        await send_text(bob, room, "hello friend")
        await alice.sync_until(room, message_in(room, "hello friend"), "bob's reply")

        step("carol rejects alice's invite, which declines the request")
        room = await direct_chat(alice, carol)
        await carol.sync_until(room, lambda r: room in r.rooms.invite, "the invite in carol's sync")

        async def carol_rejects():
            check(isinstance(await carol.client.room_leave(room), RoomLeaveResponse), "carol's rejection")

        await alice.sync()  # what came before is not news

        await alice.contacts_around(carol_rejects, lambda c: not c.get("outgoing"), "no outgoing request")
        check(await requests_of(carol) == [], "carol still has a request")

        step("alice rescinds her invite to dave, which cancels the request")
        room = await direct_chat(alice, dave)
        await dave.sync_until(room, lambda r: room in r.rooms.invite, "the invite in dave's sync")

        async def alice_rescinds():
            resp = await alice.client.room_kick(room, dave.user_id, "changed my mind")
            check(isinstance(resp, RoomKickResponse), f"alice's kick: {resp}")

        await dave.sync()  # what came before is not news

        await dave.contacts_around(alice_rescinds, lambda c: not c.get("incoming"), "no incoming request")
        check(await requests_of(alice) == [], "alice still has a request to dave")

        step("alice asks erin through the contacts API: erin's client sees a DM invite and joins")
        status, asked, exchange = await alice.api(
            "POST", f"{CONTACTS_API}/requests", {"user_id": erin.user_id, "message": "hi erin"}
        )
        check(status == 200 and asked["state"] == "pending", exchange)

        def direct_invite(resp):
            for room_id, info in resp.rooms.invite.items():
                for event in info.invite_state:
                    content = getattr(event, "content", None) or {}
                    if getattr(event, "state_key", None) == erin.user_id and content.get("is_direct"):
                        return room_id
            return None

        _, room = await erin.sync_until(None, direct_invite, "an is_direct invite")
        request = (await requests_of(erin))[0]
        check(request["request_id"] == asked["request_id"] and request["dm_room_id"] == room, f"{request}")
        check(request.get("message") == "hi erin", f"{request}")

        async def erin_joins():
            check(isinstance(await erin.client.join(room), JoinResponse), "erin's join")

        await alice.sync()  # what came before is not news

        await alice.contacts_around(
            erin_joins, lambda c: entries(c, "friends", erin.user_id), "erin among alice's friends"
        )
        await send_text(erin, room, "hi alice")
        await alice.sync_until(room, message_in(room, "hi alice"), "erin's message")
        print("nio requests test passed", flush=True)
        return 0
    except Failed as failure:
        print(f"FAILED: {failure}", flush=True)
        return 1
    except asyncio.TimeoutError:
        print("FAILED: a request to the server did not complete in time", flush=True)
        return 1
    finally:
        for user in users:
            await user.client.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: nio_requests.py BASE_URL")
    sys.exit(asyncio.run(main(sys.argv[1])))
