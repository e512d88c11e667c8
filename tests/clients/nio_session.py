"""A real matrix-nio client against kith: register with the registration token kith printed
at first start, log in, whoami, refresh, log out, and see the old token refused.

Usage: nio_session.py BASE_URL REGISTRATION_TOKEN
matrix-nio has no refresh-token support of its own, so the refreshable login and the
refresh go through nio's raw `send`; everything else uses nio's own API and response
validation (its JSON schemas)."""

import asyncio
import json
import sys

from nio import (
    AsyncClient,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    WhoamiError,
    WhoamiResponse,
)


def check(condition, message):
    if not condition:
        raise SystemExit(f"FAILED: {message}")


async def main(base_url: str, token: str) -> None:
    # Registration exactly as nio does it: token stage, then dummy, with nio's session.
    registrar = AsyncClient(base_url, "")
    try:
        reg = await registrar.register_with_token("nio_alice", "nio-secret-1", token, device_name="nio register")
        check(isinstance(reg, RegisterResponse), f"register_with_token: {reg}")
        user_id = reg.user_id
        check(user_id.startswith("@nio_alice:"), f"user id {user_id}")
        me = await registrar.whoami()
        check(isinstance(me, WhoamiResponse) and me.user_id == user_id, f"whoami after register: {me}")
    finally:
        await registrar.close()

    # Password login through nio's own login().
    client = AsyncClient(base_url, user_id)
    try:
        login = await client.login("nio-secret-1", device_name="nio laptop")
        check(isinstance(login, LoginResponse), f"login: {login}")
        me = await client.whoami()
        check(isinstance(me, WhoamiResponse) and me.device_id == login.device_id, f"whoami: {me}")
        bad = AsyncClient(base_url, user_id)
        wrong = await bad.login("not-the-password")
        check(not isinstance(wrong, LoginResponse), "a wrong password must not log in")
        await bad.close()

        # A refreshable session, then a refresh.
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "nio_alice"},
            "password": "nio-secret-1",
            "refresh_token": True,
        }
        resp = await client.send("POST", "/_matrix/client/v3/login", json.dumps(body), {"Content-Type": "application/json"})
        data = await resp.json()
        check(resp.status == 200 and "refresh_token" in data and "expires_in_ms" in data, f"refreshable login: {data}")
        client.access_token = data["access_token"]
        me = await client.whoami()
        check(isinstance(me, WhoamiResponse), f"whoami with refreshable token: {me}")

        resp = await client.send(
            "POST",
            "/_matrix/client/v3/refresh",
            json.dumps({"refresh_token": data["refresh_token"]}),
            {"Content-Type": "application/json"},
        )
        refreshed = await resp.json()
        check(resp.status == 200 and refreshed.get("refresh_token") not in (None, data["refresh_token"]), f"refresh: {refreshed}")
        old_token = client.access_token
        client.access_token = refreshed["access_token"]
        me = await client.whoami()
        check(isinstance(me, WhoamiResponse) and me.device_id == data["device_id"], f"whoami after refresh: {me}")

        # The access token from before the refresh died with it.
        client.access_token = old_token
        stale = await client.whoami()
        check(isinstance(stale, WhoamiError), f"the pre-refresh access token must be dead: {stale}")
        client.access_token = refreshed["access_token"]

        # Logout through nio; the token is then refused.
        out = await client.logout()
        check(isinstance(out, LogoutResponse), f"logout: {out}")
        client.access_token = refreshed["access_token"]
        after = await client.whoami()
        check(isinstance(after, WhoamiError), f"whoami after logout must fail: {after}")
        check(after.status_code == "M_UNKNOWN_TOKEN", f"errcode after logout: {after.status_code}")
    finally:
        await client.close()
    print("nio session test passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
