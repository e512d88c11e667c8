"""Live conformance check of kith's contacts API against spec/contacts.yaml.

Usage: contacts_schema.py BASE_URL [--no-schemathesis] [--rate-limit-probe N]
                                   [--max-examples N] [--schemathesis-time SECONDS]

BASE_URL is a running kith (e.g. http://127.0.0.1:8008) with open registration
(KITH_REGISTRATION__MODE=open) and the default contacts rate limit
(contacts.request_burst 20; the 429 check sends up to --rate-limit-probe new requests,
default 25, from one user; 0 skips it). Other contacts settings may be anything: the policy
checks read the server's policy from /capabilities.

1. Registers a handful of users and drives every operation of the spec with valid and
   invalid input (including every documented error), validating each live response: its
   status must be documented for that operation, its body JSON matching the documented
   schema for that status (jsonschema, draft 2020-12), and then the status/errcode the
   scenario expects and what the body says (who is a friend, which requests exist). Also:
   the `org.kith.contacts` account data (GET, refused PUT, initial and incremental /sync),
   /versions and /capabilities advertising, and the friendship policy on createRoom/send.
   Every documented (operation, status) pair must have been seen once.
2. Runs schemathesis against the spec as a fresh user with some contacts, bounded in
   examples and time, with the checks not_a_server_error, status_code_conformance,
   content_type_conformance and response_schema_conformance.

Prints every mismatch (operation, status, body, schema error) and exits 1, or prints
"contacts schema test passed" and exits 0. Every request and the whole run are bounded in
time. Needs jsonschema, pyyaml, requests and schemathesis (pinned in .ci/requirements.txt).
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import jsonschema
import requests
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = pathlib.Path(__file__).resolve().parents[2] / "spec" / "contacts.yaml"
CS = "/_matrix/client/v3"
PASSWORD = "contacts-schema-pw-1"
HTTP_TIMEOUT = 20  # seconds, any one request
WHOLE_RUN_TIMEOUT = 900  # seconds, the whole script
SPEC_URI = "urn:kith:spec:contacts"

mismatches: list[str] = []


def mismatch(text: str) -> None:
    mismatches.append(text)
    print(f"MISMATCH: {text}", flush=True)


def short(body, limit: int = 600) -> str:
    text = body if isinstance(body, str) else json.dumps(body, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


class Spec:
    """spec/contacts.yaml: operations by ID, and response schemas to validate against."""

    def __init__(self, path: pathlib.Path):
        self.doc = yaml.safe_load(path.read_text())
        self.base_path = self.doc["servers"][0]["variables"]["basePath"]["default"]
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(SPEC_URI, resource)
        self.ops: dict[str, tuple[str, str, dict]] = {}
        for path_template, item in self.doc["paths"].items():
            for method, op in item.items():
                if isinstance(op, dict) and "operationId" in op:
                    self.ops[op["operationId"]] = (method.upper(), path_template, op)
        self.seen: set[tuple[str, str]] = set()

    def response(self, op_id: str, status: int):
        responses = self.ops[op_id][2]["responses"]
        response = responses.get(str(status))
        if response is None:
            return None, None
        pointer = None
        if "$ref" in response:
            pointer = response["$ref"]
            response = self.resolve(pointer)
        else:
            method, path_template, _ = self.ops[op_id]
            escaped = path_template.replace("~", "~0").replace("/", "~1")
            pointer = f"#/paths/{escaped}/{method.lower()}/responses/{status}"
        return response, pointer

    def resolve(self, pointer: str):
        node = self.doc
        for part in pointer.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def validator(self, pointer: str):
        schema = {"$ref": f"{SPEC_URI}{pointer}"}
        return jsonschema.Draft202012Validator(schema, registry=self.registry)

    def schema_errors(self, pointer: str, body) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in self.validator(pointer).iter_errors(body)
        ]

    def component_errors(self, name: str, body) -> list[str]:
        return self.schema_errors(f"#/components/schemas/{name}", body)


class User:
    def __init__(self, user_id: str, token: str | None):
        self.user_id = user_id
        self.token = token

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


class Client:
    def __init__(self, base_url: str, spec: Spec):
        self.base = base_url.rstrip("/")
        self.spec = spec
        self.http = requests.Session()

    # --- plain Matrix calls used to set the scene -------------------------------------

    def register(self, username: str, login: bool = True) -> User:
        body = {
            "username": username,
            "password": PASSWORD,
            "auth": {"type": "m.login.dummy"},
            "inhibit_login": not login,
        }
        r = self.http.post(f"{self.base}{CS}/register", json=body, timeout=HTTP_TIMEOUT)
        if r.status_code != 200:
            raise SystemExit(
                f"FAILED: registering {username}: {r.status_code} {short(r.text)} "
                "(is kith running with KITH_REGISTRATION__MODE=open?)"
            )
        data = r.json()
        return User(data["user_id"], data.get("access_token"))

    def matrix(self, method: str, path: str, user: User | None = None, **kw):
        headers = {"Authorization": f"Bearer {user.token}"} if user else {}
        r = self.http.request(method, f"{self.base}{path}", headers=headers, timeout=HTTP_TIMEOUT, **kw)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        return r.status_code, body

    # --- spec'd calls: every response checked against the spec ------------------------

    def call(
        self,
        op_id: str,
        user: User | None = None,
        *,
        path_params: dict | None = None,
        raw_path: str | None = None,
        query: str = "",
        json_body=None,
        data: bytes | str | None = None,
        token: str | None = None,
        token_in_query: bool = False,
        expect: int | tuple = 200,
        errcode: str | None = None,
        what: str = "",
    ):
        """Calls an operation, validates the response against the spec, checks the status
        (and errcode) the scenario expects. Returns the JSON body (or None)."""
        method, template, _ = self.spec.ops[op_id]
        path = template
        for name, value in (path_params or {}).items():
            path = path.replace("{" + name + "}", requests.utils.quote(value, safe="@:"))
        if raw_path is not None:
            path = raw_path
        url = f"{self.base}{self.spec.base_path}{path}"
        headers = {}
        if token is None and user is not None:
            token = user.token
        params = query
        if token is not None:
            if token_in_query:
                params = (query + "&" if query else "") + f"access_token={token}"
            else:
                headers["Authorization"] = f"Bearer {token}"
        if params:
            url += "?" + params
        kwargs = {}
        if json_body is not None:
            kwargs["json"] = json_body
        elif data is not None:
            kwargs["data"] = data
            headers["Content-Type"] = "application/json"
        label = f"{method} {path}{'?' + query if query else ''} {what}".strip()
        try:
            r = self.http.request(method, url, headers=headers, timeout=HTTP_TIMEOUT, **kwargs)
        except requests.RequestException as e:
            mismatch(f"{op_id} [{label}]: request failed: {e}")
            return None
        status = r.status_code
        self.spec.seen.add((op_id, str(status)))
        try:
            body = r.json()
        except ValueError:
            body = None
        response, pointer = self.spec.response(op_id, status)
        content_type = r.headers.get("content-type", "")
        if response is None:
            mismatch(
                f"{op_id} [{label}]: status {status} is not documented for this operation; "
                f"body: {short(r.text)}"
            )
        elif not content_type.startswith("application/json") or body is None:
            mismatch(
                f"{op_id} [{label}]: status {status} with content-type {content_type!r}, "
                f"not a JSON body: {short(r.text)}"
            )
        else:
            errors = self.spec.schema_errors(f"{pointer}/content/application~1json/schema", body)
            for error in errors:
                mismatch(
                    f"{op_id} [{label}]: status {status} body {short(body)} does not match "
                    f"the documented schema: {error}"
                )
        expected = expect if isinstance(expect, tuple) else (expect,)
        if status not in expected:
            mismatch(f"{op_id} [{label}]: expected status {expect}, got {status}: {short(r.text)}")
        elif errcode is not None and isinstance(body, dict) and body.get("errcode") != errcode:
            mismatch(f"{op_id} [{label}]: expected errcode {errcode}, got {short(r.text)}")
        return body if isinstance(body, dict) else None


def check(condition: bool, text: str) -> bool:
    if not condition:
        mismatch(text)
    return condition


def field(body, key, default=None):
    return body.get(key, default) if isinstance(body, dict) else default


def ids(items, key="user_id"):
    return [i.get(key) for i in items or [] if isinstance(i, dict)]


# ----------------------------------------------------------------------------------------
# Scenario


def scenario(c: Client, rate_limit_probe: int) -> None:
    tag = "cs" + uuid.uuid4().hex[:8]
    names = ["alice", "bob", "carol", "dave", "eve", "frank", "gina"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda n: c.register(f"{tag}_{n}"), names))
    alice, bob, carol, dave, eve, frank, gina = made
    server = alice.user_id.split(":", 1)[1]
    print(f"registered {len(made)} users as {tag}_*", flush=True)

    # --- advertising ----------------------------------------------------------------
    status, versions = c.matrix("GET", "/_matrix/client/versions")
    check(
        status == 200 and field(versions, "unstable_features", {}).get("org.kith.contacts") is True,
        f"/versions does not advertise unstable_features['org.kith.contacts']: {status} {short(versions)}",
    )
    status, caps = c.matrix("GET", f"{CS}/capabilities", alice)
    capability = field(field(caps, "capabilities", {}), "org.kith.contacts")
    policy = field(capability, "dm_requires_friendship", "off")
    if check(capability is not None, f"/capabilities lacks org.kith.contacts: {status} {short(caps)}"):
        for e in c.spec.component_errors("ContactsCapability", capability):
            mismatch(f"/capabilities org.kith.contacts {short(capability)}: {e}")

    # --- authentication, on every operation --------------------------------------------
    bodies = {"sendFriendRequest": {"user_id": bob.user_id}, "searchContacts": {"search_term": "x"}}
    params = {"userId": bob.user_id, "requestId": "nonexistent"}
    for op_id, (method, template, _) in c.spec.ops.items():
        pp = {k: v for k, v in params.items() if "{" + k + "}" in template}
        c.call(
            op_id,
            path_params=pp,
            json_body=bodies.get(op_id),
            expect=401,
            errcode="M_MISSING_TOKEN",
            what="(no token)",
        )
        c.call(
            op_id,
            path_params=pp,
            json_body=bodies.get(op_id),
            token="not-a-token",
            expect=401,
            errcode="M_UNKNOWN_TOKEN",
            what="(bad token)",
        )

    # --- empty start; listing variants -------------------------------------------------
    body = c.call("getFriends", alice)
    check(field(body, "friends") == [], f"a new user has friends: {short(body)}")
    body = c.call("getFriends", alice, token_in_query=True, what="(access_token in query)")
    check(field(body, "friends") == [], f"a new user has friends (query token): {short(body)}")
    for query in ("", "dir=incoming", "dir=outgoing"):
        body = c.call("getFriendRequests", alice, query=query)
        check(field(body, "requests") == [], f"a new user has requests ({query}): {short(body)}")
    c.call("getFriendRequests", alice, query="dir=sideways", expect=400, errcode="M_INVALID_PARAM")
    c.call(
        "getFriendRequests", alice, query="dir=incoming&dir=outgoing", expect=400, errcode="M_INVALID_PARAM"
    )
    c.call(
        "getFriendRequests", alice, data="{not json", expect=400, errcode="M_NOT_JSON", what="(non-JSON body)"
    )
    c.call("getFriends", alice, data="{not json", expect=400, errcode="M_NOT_JSON", what="(non-JSON body)")

    # --- sending: invalid input --------------------------------------------------------
    bad = [
        ({"user_id": alice.user_id}, 400, "M_INVALID_PARAM", "(self)"),
        ({"user_id": "not a user id"}, 400, "M_INVALID_PARAM", "(garbage user ID)"),
        ({"user_id": f"@{tag}_nobody:{server}"}, 404, "M_NOT_FOUND", "(unknown user)"),
        ({"user_id": bob.user_id, "message": "x" * 1001}, 400, "M_INVALID_PARAM", "(1001-byte message)"),
        (
            {"user_id": bob.user_id, "message": "é" * 500 + "x"},
            400,
            "M_INVALID_PARAM",
            "(500 characters, 1001 bytes)",
        ),
        ({"user_id": 42}, 400, "M_BAD_JSON", "(user_id not a string)"),
        ({"message": "hi"}, 400, "M_BAD_JSON", "(no user_id)"),
        ({"user_id": bob.user_id, "message": 7}, 400, "M_BAD_JSON", "(message not a string)"),
        (["not", "an", "object"], 400, "M_BAD_JSON", "(array body)"),
    ]
    for payload, status, code, what in bad:
        c.call("sendFriendRequest", alice, json_body=payload, expect=status, errcode=code, what=what)
    c.call(
        "sendFriendRequest",
        alice,
        data='{"user_id": ',
        expect=400,
        errcode="M_NOT_JSON",
        what="(truncated JSON)",
    )
    c.call("sendFriendRequest", alice, data=b"", expect=400, errcode="M_BAD_JSON", what="(no body)")
    c.call(
        "sendFriendRequest",
        alice,
        data=b'{"user_id": "' + b"a" * (1 << 20) + b'"}',
        expect=413,
        errcode="M_TOO_LARGE",
        what="(body over 1 MiB)",
    )
    body = c.call("getFriendRequests", alice, query="dir=outgoing")
    check(field(body, "requests") == [], f"refused requests were stored: {short(body)}")

    # --- a request, seen from both sides -----------------------------------------------
    note = "Hi Bob, it's Alice — from the club."
    sent = c.call("sendFriendRequest", alice, json_body={"user_id": bob.user_id, "message": note})
    rid = field(sent, "request_id", "missing")
    check(field(sent, "state") == "pending", f"first request not pending: {short(sent)}")
    c.call(
        "sendFriendRequest",
        alice,
        json_body={"user_id": bob.user_id},
        expect=409,
        errcode="ORG.KITH.CONTACTS_REQUEST_EXISTS",
        what="(again)",
    )
    out = field(c.call("getFriendRequests", alice, query="dir=outgoing"), "requests", [])
    check(
        len(out) == 1
        and out[0].get("request_id") == rid
        and out[0].get("user_id") == bob.user_id
        and out[0].get("dir") == "outgoing"
        and out[0].get("message") == note,
        f"alice's outgoing requests after asking bob: {short(out)}",
    )
    inc = field(c.call("getFriendRequests", bob, query="dir=incoming"), "requests", [])
    check(
        len(inc) == 1
        and inc[0].get("request_id") == rid
        and inc[0].get("user_id") == alice.user_id
        and inc[0].get("dir") == "incoming"
        and inc[0].get("message") == note,
        f"bob's incoming requests after alice asked: {short(inc)}",
    )
    check(
        field(c.call("getFriendRequests", bob, query="dir=outgoing"), "requests") == [],
        "bob has outgoing requests he never sent",
    )
    # A message of exactly 1000 bytes (500 two-byte characters) is fine.
    body = c.call(
        "sendFriendRequest",
        alice,
        json_body={"user_id": gina.user_id, "message": "é" * 500},
        what="(1000-byte message)",
    )
    gina_rid = field(body, "request_id", "missing")

    # --- acting on requests that are not yours, or do not exist ------------------------
    for op_id, actor, what in [
        ("acceptFriendRequest", alice, "(sender accepts)"),
        ("acceptFriendRequest", carol, "(stranger accepts)"),
        ("declineFriendRequest", alice, "(sender declines)"),
        ("declineFriendRequest", carol, "(stranger declines)"),
        ("cancelFriendRequest", bob, "(recipient cancels)"),
        ("cancelFriendRequest", carol, "(stranger cancels)"),
    ]:
        c.call(op_id, actor, path_params={"requestId": rid}, expect=403, errcode="M_FORBIDDEN", what=what)
    for op_id in ("acceptFriendRequest", "declineFriendRequest", "cancelFriendRequest"):
        c.call(op_id, bob, path_params={"requestId": f"{tag}nonexistent"}, expect=404, errcode="M_NOT_FOUND")
        # Not valid UTF-8 once percent-decoded: a Matrix error like any other bad input.
        c.call(
            op_id,
            bob,
            raw_path=f"/requests/%FF{tag}"
            + ("" if op_id == "cancelFriendRequest" else "/" + op_id.replace("FriendRequest", "")),
            expect=400,
            errcode="M_INVALID_PARAM",
            what="(request ID not UTF-8)",
        )
    for op_id in ("acceptFriendRequest", "declineFriendRequest"):
        c.call(
            op_id,
            bob,
            path_params={"requestId": rid},
            data="{nope",
            expect=400,
            errcode="M_NOT_JSON",
            what="(non-JSON body)",
        )
        c.call(
            op_id,
            bob,
            path_params={"requestId": rid},
            data=b"[" + b"0," * (1 << 19) + b"0]",
            expect=413,
            errcode="M_TOO_LARGE",
            what="(body over 1 MiB)",
        )
    c.call(
        "cancelFriendRequest",
        alice,
        path_params={"requestId": rid},
        data="{nope",
        expect=400,
        errcode="M_NOT_JSON",
        what="(non-JSON body)",
    )
    check(
        len(field(c.call("getFriendRequests", bob, query="dir=incoming"), "requests", [])) == 1,
        "a refused action changed bob's incoming requests",
    )

    # --- accept -----------------------------------------------------------------------
    body = c.call("acceptFriendRequest", bob, path_params={"requestId": rid}, json_body={})
    check(field(body, "state") == "accepted", f"accept answered {short(body)}")
    c.call(
        "acceptFriendRequest",
        bob,
        path_params={"requestId": rid},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(twice)",
    )
    c.call(
        "declineFriendRequest",
        bob,
        path_params={"requestId": rid},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(after accept)",
    )
    c.call(
        "cancelFriendRequest",
        alice,
        path_params={"requestId": rid},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(after accept)",
    )
    for me, other in ((alice, bob), (bob, alice)):
        friends = field(c.call("getFriends", me), "friends", [])
        check(ids(friends) == [other.user_id], f"{me.localpart}'s friends after accept: {short(friends)}")
    check(
        field(c.call("getFriendRequests", bob), "requests") == [],
        "the accepted request is still listed for bob",
    )
    c.call(
        "sendFriendRequest",
        alice,
        json_body={"user_id": bob.user_id},
        expect=409,
        errcode="ORG.KITH.CONTACTS_ALREADY_FRIENDS",
        what="(already friends)",
    )
    c.call(
        "sendFriendRequest",
        bob,
        json_body={"user_id": alice.user_id},
        expect=409,
        errcode="ORG.KITH.CONTACTS_ALREADY_FRIENDS",
        what="(already friends, other way)",
    )

    # --- mutual requests: the second is an acceptance ----------------------------------
    first = c.call("sendFriendRequest", carol, json_body={"user_id": alice.user_id})
    second = c.call(
        "sendFriendRequest", alice, json_body={"user_id": carol.user_id}, what="(they asked first)"
    )
    check(
        field(second, "state") == "accepted" and field(second, "request_id") == field(first, "request_id"),
        f"asking someone who asked first: {short(first)} then {short(second)}",
    )
    friends = field(c.call("getFriends", alice), "friends", [])
    check(
        ids(friends) == sorted([bob.user_id, carol.user_id]),
        f"alice's friends (ordered by user ID) after the mutual request: {short(friends)}",
    )

    # --- decline and cancel ------------------------------------------------------------
    body = c.call("sendFriendRequest", dave, json_body={"user_id": alice.user_id, "message": "hello"})
    decline_rid = field(body, "request_id", "missing")
    body = c.call("declineFriendRequest", alice, path_params={"requestId": decline_rid})
    check(field(body, "state") == "declined", f"decline answered {short(body)}")
    check(
        field(c.call("getFriendRequests", dave, query="dir=outgoing"), "requests") == [],
        "a declined request is still in the sender's outgoing list",
    )
    c.call(
        "cancelFriendRequest",
        dave,
        path_params={"requestId": decline_rid},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(after decline)",
    )
    c.call("cancelFriendRequest", alice, path_params={"requestId": gina_rid})
    check(
        field(c.call("getFriendRequests", gina, query="dir=incoming"), "requests") == [],
        "a cancelled request is still in the recipient's incoming list",
    )
    c.call(
        "acceptFriendRequest",
        gina,
        path_params={"requestId": gina_rid},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(after cancel)",
    )

    # --- both directions in one list, oldest first, incoming first ---------------------
    in_rid = field(c.call("sendFriendRequest", gina, json_body={"user_id": alice.user_id}), "request_id")
    out_rid = field(c.call("sendFriendRequest", alice, json_body={"user_id": dave.user_id}), "request_id")
    both = field(c.call("getFriendRequests", alice), "requests", [])
    check(
        ids(both, "request_id") == [in_rid, out_rid]
        and [r.get("dir") for r in both] == ["incoming", "outgoing"],
        f"alice's requests without dir: {short(both)}",
    )

    # --- account data and /sync ----------------------------------------------------------
    def view(user):
        return {
            "friends": field(c.call("getFriends", user), "friends"),
            "incoming": field(c.call("getFriendRequests", user, query="dir=incoming"), "requests"),
            "outgoing": field(c.call("getFriendRequests", user, query="dir=outgoing"), "requests"),
        }

    def contacts_event(sync_body):
        events = field(field(sync_body, "account_data", {}), "events", [])
        found = [e for e in events if isinstance(e, dict) and e.get("type") == "org.kith.contacts"]
        return found[-1].get("content") if found else None

    account_data_path = f"{CS}/user/{alice.user_id}/account_data/org.kith.contacts"
    status, content = c.matrix("GET", account_data_path, alice)
    if check(status == 200, f"GET {account_data_path}: {status} {short(content)}"):
        for e in c.spec.component_errors("ContactsAccountDataContent", content):
            mismatch(f"org.kith.contacts account data {short(content)}: {e}")
        check(
            content == view(alice),
            f"account data {short(content)} differs from the API's lists {short(view(alice))}",
        )
    status, body = c.matrix(
        "PUT", account_data_path, alice, json={"friends": [], "incoming": [], "outgoing": []}
    )
    check(
        status == 405 and field(body, "errcode") == "M_BAD_JSON",
        f"PUT {account_data_path}: expected 405 M_BAD_JSON, got {status} {short(body)}",
    )
    status, synced = c.matrix("GET", f"{CS}/sync", alice, params={"timeout": "0"})
    content = contacts_event(synced)
    if check(
        status == 200 and content is not None,
        f"initial /sync lacks org.kith.contacts: {status} {short(synced)}",
    ):
        for e in c.spec.component_errors("ContactsAccountDataContent", content):
            mismatch(f"org.kith.contacts in /sync {short(content)}: {e}")
        check(
            content == view(alice), f"/sync's org.kith.contacts {short(content)} differs from the API's lists"
        )
    since = field(synced, "next_batch")
    eve_rid = field(c.call("sendFriendRequest", eve, json_body={"user_id": alice.user_id}), "request_id")
    status, synced = c.matrix("GET", f"{CS}/sync", alice, params={"timeout": "5000", "since": since})
    content = contacts_event(synced)
    if check(
        status == 200 and content is not None,
        f"incremental /sync after a new request lacks org.kith.contacts: {status} {short(synced)}",
    ):
        for e in c.spec.component_errors("ContactsAccountDataContent", content):
            mismatch(f"org.kith.contacts in incremental /sync {short(content)}: {e}")
        check(
            eve_rid in ids(field(content, "incoming"), "request_id"),
            f"incremental /sync's org.kith.contacts lacks eve's new request: {short(content)}",
        )

    # --- an ignoring recipient never sees the request ----------------------------------
    status, body = c.matrix(
        "PUT",
        f"{CS}/user/{frank.user_id}/account_data/m.ignored_user_list",
        frank,
        json={"ignored_users": {alice.user_id: {}}},
    )
    check(status == 200, f"setting m.ignored_user_list: {status} {short(body)}")
    hidden = c.call(
        "sendFriendRequest", alice, json_body={"user_id": frank.user_id}, what="(recipient ignores sender)"
    )
    hidden_rid = field(hidden, "request_id", "missing")
    check(field(hidden, "state") == "pending", f"request to an ignoring user: {short(hidden)}")
    check(
        field(c.call("getFriendRequests", frank), "requests") == [],
        "an ignoring recipient sees the ignored sender's request",
    )
    c.call(
        "acceptFriendRequest",
        frank,
        path_params={"requestId": hidden_rid},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(hidden from the ignoring recipient)",
    )
    check(
        hidden_rid
        in ids(field(c.call("getFriendRequests", alice, query="dir=outgoing"), "requests"), "request_id"),
        "the sender does not see the request the recipient ignores",
    )

    # --- search ----------------------------------------------------------------------
    status, body = c.matrix(
        "PUT",
        f"{CS}/profile/{bob.user_id}/avatar_url",
        bob,
        json={"avatar_url": f"mxc://{server}/{tag}avatar"},
    )
    check(status == 200, f"setting bob's avatar: {status} {short(body)}")
    body = c.call("searchContacts", alice, json_body={"search_term": f"{tag} bob"})
    results = field(body, "results", [])
    check(
        ids(results) == [bob.user_id]
        and results[0].get("relationship") == "friend"
        and results[0].get("avatar_url") == f"mxc://{server}/{tag}avatar"
        and "display_name" in results[0]
        and field(body, "limited") is False,
        f"searching for bob: {short(body)}",
    )
    body = c.call("searchContacts", alice, json_body={"search_term": bob.user_id}, what="(full user ID)")
    check(ids(field(body, "results", []))[:1] == [bob.user_id], f"searching for bob's user ID: {short(body)}")
    body = c.call("searchContacts", alice, json_body={"search_term": tag, "limit": 50})
    results = field(body, "results", [])
    rel = {r.get("user_id"): r.get("relationship") for r in results if isinstance(r, dict)}
    expected = {
        bob.user_id: "friend",
        carol.user_id: "friend",
        gina.user_id: "incoming",
        eve.user_id: "incoming",
        dave.user_id: "outgoing",
        frank.user_id: "outgoing",
    }
    check(
        all(rel.get(u) == r for u, r in expected.items()) and alice.user_id not in rel,
        f"relationships in search for {tag}: {short(rel)}; expected {short(expected)} and no alice",
    )
    rank = {"friend": 0, "incoming": 1, "outgoing": 2, "none": 3}
    order = [rank.get(r.get("relationship"), 9) for r in results if isinstance(r, dict)]
    check(order == sorted(order), f"search results not friends, incoming, outgoing, none: {short(results)}")
    body = c.call("searchContacts", alice, json_body={"search_term": tag, "limit": 1}, what="(limit 1)")
    check(
        len(field(body, "results", [])) == 1 and field(body, "limited") is True,
        f"search with limit 1: {short(body)}",
    )
    body = c.call("searchContacts", alice, json_body={"search_term": tag, "limit": 0}, what="(limit 0)")
    check(len(field(body, "results", [])) == 1, f"search with limit 0 (taken as 1): {short(body)}")
    body = c.call("searchContacts", alice, json_body={"search_term": "!!!"}, what="(no words)")
    check(field(body, "results") == [], f"a search term with no words found: {short(body)}")
    for payload, what in [
        ({}, "(no search_term)"),
        ({"search_term": 5}, "(search_term not a string)"),
        ({"search_term": tag, "limit": -1}, "(negative limit)"),
        ({"search_term": tag, "limit": 2.5}, "(fractional limit)"),
        ({"search_term": tag, "limit": "10"}, "(limit a string)"),
    ]:
        c.call("searchContacts", alice, json_body=payload, expect=400, errcode="M_BAD_JSON", what=what)
    c.call("searchContacts", alice, data="search_term=x", expect=400, errcode="M_NOT_JSON", what="(not JSON)")
    c.call(
        "searchContacts",
        alice,
        data=b'{"search_term": "' + b"a" * (1 << 20) + b'"}',
        expect=413,
        errcode="M_TOO_LARGE",
        what="(body over 1 MiB)",
    )

    # --- settings ------------------------------------------------------------------------
    body = c.call("getContactsSettings", alice)
    check(body == {"discoverable_by_email": False}, f"settings start off: {short(body)}")
    c.call("setContactsSettings", alice, json_body={"discoverable_by_email": True})
    body = c.call("getContactsSettings", alice, what="(after the change)")
    check(field(body, "discoverable_by_email") is True, f"the change was kept: {short(body)}")
    for payload, what in [
        ({}, "(no field)"),
        ({"discoverable_by_email": "yes"}, "(not a boolean)"),
        ({"discoverable_by_email": True, "extra": 1}, "(unknown field)"),
    ]:
        c.call("setContactsSettings", alice, json_body=payload, expect=400, errcode="M_BAD_JSON", what=what)
    c.call("setContactsSettings", alice, data="x", expect=400, errcode="M_NOT_JSON", what="(not JSON)")
    c.call(
        "setContactsSettings",
        alice,
        data=b'{"discoverable_by_email": "' + b"a" * (1 << 20) + b'"}',
        expect=413,
        errcode="M_TOO_LARGE",
        what="(body over 1 MiB)",
    )
    body = c.call("getContactsSettings", alice, what="(after refused changes)")
    check(field(body, "discoverable_by_email") is True, f"refused changes changed it: {short(body)}")

    # --- deactivated users ---------------------------------------------------------------
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": eve.user_id},
        "password": PASSWORD,
    }
    status, body = c.matrix("POST", f"{CS}/account/deactivate", eve, json={"auth": auth})
    if check(status == 200, f"deactivating eve: {status} {short(body)}"):
        c.call(
            "sendFriendRequest",
            alice,
            json_body={"user_id": eve.user_id},
            expect=404,
            errcode="M_NOT_FOUND",
            what="(deactivated user)",
        )
        body = c.call(
            "searchContacts", alice, json_body={"search_term": f"{tag} eve"}, what="(deactivated user)"
        )
        check(field(body, "results") == [], f"search finds a deactivated user: {short(body)}")

    # --- the friendship policy ---------------------------------------------------------
    if policy in ("dm_only", "all_invites"):
        status, body = c.matrix(
            "POST",
            f"{CS}/createRoom",
            alice,
            json={"is_direct": True, "preset": "trusted_private_chat", "invite": [gina.user_id]},
        )
        check(
            status == 403 and field(body, "errcode") == "M_INVITE_BLOCKED",
            f"createRoom inviting a non-friend under {policy}: expected 403 M_INVITE_BLOCKED, got {status} {short(body)}",
        )
        status, body = c.matrix(
            "POST",
            f"{CS}/createRoom",
            alice,
            json={"is_direct": True, "preset": "trusted_private_chat", "invite": [bob.user_id]},
        )
        room = field(body, "room_id")
        if check(status == 200 and room, f"createRoom inviting a friend: {status} {short(body)}"):
            status, body = c.matrix("POST", f"{CS}/join/{requests.utils.quote(room)}", bob, json={})
            check(status == 200, f"bob joining the direct room: {status} {short(body)}")
            c.call("removeFriend", alice, path_params={"userId": bob.user_id}, what="(to test the policy)")
            status, body = c.matrix(
                "PUT",
                f"{CS}/rooms/{requests.utils.quote(room)}/send/m.room.message/{tag}1",
                alice,
                json={"msgtype": "m.text", "body": "still there?"},
            )
            check(
                status == 403 and field(body, "errcode") == "M_FORBIDDEN",
                f"sending into the direct room after unfriending: expected 403 M_FORBIDDEN, got {status} {short(body)}",
            )
    else:
        c.call("removeFriend", alice, path_params={"userId": bob.user_id})
        print(f"policy is {policy!r}: the M_INVITE_BLOCKED checks do not apply", flush=True)

    # --- removing friends ------------------------------------------------------------
    check(
        ids(field(c.call("getFriends", bob), "friends", [])) == [],
        "bob still has alice as a friend after removal",
    )
    c.call(
        "removeFriend",
        alice,
        path_params={"userId": bob.user_id},
        expect=404,
        errcode="M_NOT_FOUND",
        what="(no longer friends)",
    )
    c.call(
        "removeFriend",
        alice,
        path_params={"userId": "not a user id"},
        expect=400,
        errcode="M_INVALID_PARAM",
        what="(garbage user ID)",
    )
    c.call(
        "removeFriend",
        alice,
        raw_path="/friends/%FF%FE",
        expect=400,
        errcode="M_INVALID_PARAM",
        what="(user ID not UTF-8)",
    )
    c.call(
        "removeFriend",
        alice,
        path_params={"userId": carol.user_id},
        data="{nope",
        expect=400,
        errcode="M_NOT_JSON",
        what="(non-JSON body)",
    )
    c.call("removeFriend", carol, path_params={"userId": alice.user_id}, what="(the other side removes)")
    check(field(c.call("getFriends", alice), "friends") == [], "alice still has friends after both removals")
    body = c.call("searchContacts", alice, json_body={"search_term": f"{tag} carol"})
    check(
        [r.get("relationship") for r in field(body, "results", [])] == ["none"],
        f"a removed friend's relationship in search: {short(body)}",
    )

    # --- unknown paths and methods -----------------------------------------------------
    base = c.spec.base_path
    for method, path, code in [
        ("GET", f"{base}/nowhere", 404),
        ("PUT", f"{base}/friends", 405),
        ("GET", f"{base}/requests/{rid}", 405),
        ("GET", f"{base}/search", 405),
    ]:
        status, body = c.matrix(method, path, alice)
        check(
            status == code
            and field(body, "errcode") == "M_UNRECOGNIZED"
            and not c.spec.schema_errors("#/components/schemas/Error", body),
            f"{method} {path}: expected {code} M_UNRECOGNIZED, got {status} {short(body)}",
        )

    # --- the rate limit ---------------------------------------------------------------
    if rate_limit_probe > 0:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            targets = list(
                pool.map(lambda i: c.register(f"{tag}_t{i}", login=False), range(rate_limit_probe))
            )
        limited = None
        for i, target in enumerate(targets):
            body = c.call(
                "sendFriendRequest",
                gina,
                json_body={"user_id": target.user_id},
                expect=(200, 429),
                what=f"(rate limit probe {i + 1})",
            )
            if field(body, "errcode") == "M_LIMIT_EXCEEDED":
                limited = i + 1
                break
        check(
            limited is not None,
            f"no 429 M_LIMIT_EXCEEDED after {rate_limit_probe} new friend requests from one user "
            "(is contacts.request_burst above that? run kith with the default, or pass --rate-limit-probe 0)",
        )
        if limited:
            print(f"rate limit reached at probe request {limited}", flush=True)
            # Refused requests are not counted, and an acceptance is not a new request.
            c.call(
                "sendFriendRequest",
                gina,
                json_body={"user_id": gina.user_id},
                expect=400,
                errcode="M_INVALID_PARAM",
                what="(while rate-limited)",
            )


# ----------------------------------------------------------------------------------------
# schemathesis


def run_schemathesis(c: Client, max_examples: int, budget: int) -> None:
    tag = "st" + uuid.uuid4().hex[:8]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        logged_in = list(
            pool.map(lambda n: c.register(f"{tag}_{n}"), ["me", "f1", "f2", "a1", "a2", "a3", "a4"])
        )
        others = list(
            pool.map(lambda n: c.register(f"{tag}_{n}", login=False), ["o1", "o2", "u1", "u2", "u3"])
        )
    me, friends, askers = logged_in[0], logged_in[1:3], logged_in[3:]
    # State for the generated requests to find: friends, incoming and outgoing requests,
    # and users to ask. schemathesis draws path and body values from these half the time.
    request_ids = []
    for friend in friends:
        rid = field(c.call("sendFriendRequest", friend, json_body={"user_id": me.user_id}), "request_id")
        c.call("acceptFriendRequest", me, path_params={"requestId": rid or "missing"})
    for asker in askers:
        request_ids.append(
            field(
                c.call("sendFriendRequest", asker, json_body={"user_id": me.user_id, "message": "hi"}),
                "request_id",
            )
        )
    for target in others[:2]:
        request_ids.append(
            field(c.call("sendFriendRequest", me, json_body={"user_id": target.user_id}), "request_id")
        )
    config = {
        "dictionaries": {
            "request_ids": {"values": [r for r in request_ids if r]},
            "friend_ids": {"values": [f.user_id for f in friends]},
            "user_ids": {"values": [u.user_id for u in others[2:] + askers]},
        },
        "parameters": {
            "path.requestId": {"dictionary": "request_ids", "probability": 0.5},
            "path.userId": {"dictionary": "friend_ids", "probability": 0.5},
            "body.user_id": {"dictionary": "user_ids", "probability": 0.5},
        },
    }

    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    with tempfile.TemporaryDirectory() as reports:
        config_path = pathlib.Path(reports) / "schemathesis.toml"
        config_path.write_text(to_toml(config))
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config_path),
            "run",
            str(SPEC_PATH),
            "--url",
            c.base + c.spec.base_path,
            "--header",
            f"Authorization: Bearer {me.token}",
            "--checks",
            checks,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(max_examples),
            "--workers",
            "1",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
            "--output-truncate",
            "false",
            "--report-dir",
            reports,
        ]
        env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
        started = time.monotonic()
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=budget + 120, env=env, cwd=reports
            )
        except subprocess.TimeoutExpired as e:
            mismatch(
                f"schemathesis did not finish within {budget + 120} s; output: {short(str(e.stdout), 4000)}"
            )
            return
        took = time.monotonic() - started
    output = done.stdout + done.stderr
    summary = [line for line in output.splitlines() if line.strip()][-12:]
    print(f"schemathesis exited {done.returncode} after {took:.0f} s:", flush=True)
    print("\n".join("  " + line for line in summary), flush=True)
    if done.returncode != 0:
        mismatch(f"schemathesis found failures (exit {done.returncode}):\n{output[-20000:]}")


def to_toml(config: dict) -> str:
    """The little TOML the schemathesis config needs: tables of strings, numbers and lists."""
    lines = []
    for section, tables in config.items():
        if section == "dictionaries":
            for name, table in tables.items():
                lines.append(f"[dictionaries.{name}]")
                lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        else:
            lines.append(f"[{section}]")
            for key, value in tables.items():
                inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{json.dumps(key)} = {{ {inline} }}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--no-schemathesis", action="store_true")
    parser.add_argument("--rate-limit-probe", type=int, default=25)
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--schemathesis-time", type=int, default=120)
    args = parser.parse_args()

    def overrun(*_):
        print(f"FAILED: the contacts schema test ran over {WHOLE_RUN_TIMEOUT} s", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(WHOLE_RUN_TIMEOUT)
    started = time.monotonic()

    spec = Spec(SPEC_PATH)
    client = Client(args.base_url, spec)
    try:
        scenario(client, args.rate_limit_probe)
    except SystemExit:
        raise
    except Exception as e:  # a crash of the scenario is a failure to report, not a traceback
        import traceback

        mismatch(f"the scenario stopped: {type(e).__name__}: {e}\n{traceback.format_exc()}")

    documented = {(op_id, status) for op_id, (_, _, op) in spec.ops.items() for status in op["responses"]}
    skipped = {(op, "429") for op in spec.ops} if args.rate_limit_probe == 0 else set()
    for op_id, status in sorted(documented - spec.seen - skipped):
        mismatch(f"{op_id}: documented status {status} was never exercised by the scenario")
    print(
        f"scenario done in {time.monotonic() - started:.1f} s: "
        f"{len(spec.seen)} (operation, status) pairs seen",
        flush=True,
    )

    if not args.no_schemathesis:
        run_schemathesis(client, args.max_examples, args.schemathesis_time)

    print(f"total {time.monotonic() - started:.1f} s", flush=True)
    if mismatches:
        print(f"\n{len(mismatches)} mismatch(es):")
        for m in mismatches:
            print(f"- {m}")
        print("contacts schema test FAILED")
        sys.exit(1)
    print("contacts schema test passed")


if __name__ == "__main__":
    main()
