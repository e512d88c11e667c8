"""Fuzz the whole Matrix Client-Server API of a running kith with schemathesis.

Usage: fuzz_client_api.py BASE_URL [--max-examples N] [--time SECONDS] [--probe-time SECONDS]
                                   [--seed N] [--workers N] [--spec-dir DIR] [--strict-ids]
                                   [--record FILE]

BASE_URL is a running kith (e.g. http://127.0.0.1:8008) with open registration
(KITH_REGISTRATION__MODE=open) and generous rate limits (registration, messages, uploads,
to-device and login-failure bursts raised), so that 429s do not hide the interesting answers.
Defaults (10 examples, 300 s of schemathesis, at most 60 s of edge probes) take about
5 1/2 minutes on 2 cores.

1. Sets the scene: registers two users; user 1 creates a public room with an alias (the
   main room) that user 2 joins, a private room and a spare public room; sends a message
   and a threaded reply, uploads a text file, a PNG and a truncated PNG, defines a filter,
   creates a key backup version, tags the room: real IDs for the fuzzer to aim at.
2. Bundles every client-server OpenAPI file of the Matrix spec (v1.19 by default:
   $MATRIX_SPEC_DIR, ../shared/matrix-spec-v1.19 beside the clone or
   /work/shared/matrix-spec-v1.19, data/api/client-server/*.yaml)
   into one OpenAPI document: every relative and internal `$ref` is inlined, each file's
   paths are prefixed with its own basePath (/_matrix/client/v3, /_matrix/client/v1,
   /_matrix/media, /.well-known, ...); two operations on one method and path (the peeking
   and the legacy GET /events, the user and the third-party POST /invite) are merged
   (parameters united, bodies `anyOf`); response bodies and security schemes are dropped
   (only the status matters here, and auth is a fixed header); host names in the examples
   (example.com, matrix.org, ...) become 127.0.0.1:1, which kith refuses to contact.
3. Runs schemathesis (as a library: the engine of `schemathesis run`) with its examples,
   coverage and fuzzing phases, positive and negative data, as user 1 (Authorization:
   Bearer), every request bounded (20 s, redirects not followed, no retries), the whole
   engine bounded by --time (fuzzing repeats with fresh seeds until the time is spent).
   Path parameters, some query and body fields, and the Matrix string formats (mx-room-id,
   mx-user-id, mx-event-id, mx-server-name, mx-mxc-uri, ...) draw the real IDs about half
   the time, and otherwise well-formed made-up IDs, malformed IDs ("!x", "@x", server
   name "0", ...) or (negative mode) anything; URIs point at 127.0.0.1:1, never outside.
4. Edge probes (--probe-time, 0 to skip): every operation once with each path parameter
   replaced by nasty segments (bad UTF-8, NUL, "%2F", "..", 5000 characters, ...), each
   query parameter by nasty values, and (POST/PUT) each of a set of nasty bodies (none,
   empty, truncated, not an object, 1e999, invalid UTF-8, lone surrogates, 5000-deep
   nesting, wrong Content-Type, documented fields all null / of the wrong type / huge).

Excluded operations (they would end user 1's session or account, and the rest of the run
would see only 401s): POST /logout, POST /logout/all, POST /account/deactivate,
POST /account/password (logs out the other devices, may change the password),
DELETE /devices/{deviceId} and POST /delete_devices (may delete user 1's own device).
Kept on a leash, before each call: a `timeout` query parameter (GET /sync, GET /events) or
body field (/keys/query, /keys/claim) is clamped to 2000 ms so long-polls cannot eat the
request timeout; PUT /admin/suspend|lock/{userId} never targets user 1; leave, forget,
upgrade, kicking or banning user 1, and power-level/join-rule/membership/create/tombstone
state events aimed at the main room go to the spare room instead; and every 5 s both users
(re)join the main room.

The verdict: every response with status 500-599 other than 502/504 (a remote server
unreachable or slow is allowed), every connection error (a reset or an empty reply: a
panic?) and every request timeout is a failure. Also reported: 4xx responses whose body is
not a Matrix error (a JSON object with a string `errcode` and a string `error`, served as
JSON; a user-interactive-auth 401 is fine), as warnings; every 502/504, flagged when its
input had a malformed room ID, user ID, alias, event ID or server name (one that is not an
IPv4 address, a bracketed IPv6 address or an RFC 1123 host name, with a port in 1-65535),
which should have been a 400 (with --strict-ids those are failures too); the operations
kith only ever answered 404 M_UNRECOGNIZED. Each finding is printed once per (operation,
status, errcode), with a count and up to three different requests behind it (as curl
command lines using $TOKEN, user 1's token, printed at the start), the time they were sent
(to find them in kith's log), and the response. --record writes every request and its
answer to a JSON-lines file.

Exits 1 on any failure, else prints "client API fuzz passed" and exits 0. The whole script
is bounded (--time + --probe-time + 240 s). Needs schemathesis (pinned in
.ci/requirements.txt), pyyaml and requests.
"""

import argparse
import collections
import ipaddress
import json
import os
import pathlib
import random
import re
import shlex
import signal
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zlib

import requests
import yaml

import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import events as engine_events

HTTP_TIMEOUT = 20  # seconds, any one request
CS = "/_matrix/client/v3"
PASSWORD = "fuzz-client-api-pw-1"
# The spec the team keeps beside the clone (../shared), as .ci/run finds Element Web.
_REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_SPEC_DIR = next(
    (
        path
        for path in (
            pathlib.Path(os.environ["MATRIX_SPEC_DIR"]) if os.environ.get("MATRIX_SPEC_DIR") else None,
            _REPO.parent / "shared" / "matrix-spec-v1.19",
            pathlib.Path("/work/shared/matrix-spec-v1.19"),
        )
        if path is not None and (path / "data" / "api" / "client-server").is_dir()
    ),
    pathlib.Path("/work/shared/matrix-spec-v1.19"),
)
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# operationId -> why it is left out
EXCLUDED = {
    "logout": "invalidates user 1's access token",
    "logout_all": "invalidates user 1's access tokens",
    "deactivateAccount": "deactivates user 1",
    "changePassword": "logs out user 1's other sessions and may change the password",
    "deleteDevice": "may delete user 1's own device (and its token)",
    "deleteDevices": "may delete user 1's own device (and its token)",
}
ALLOWED_5XX = {502, 504}
LONG_POLL_MAX_MS = 2000
EXAMPLES_KEPT = 3  # different requests shown per finding
# State events on the main room that would take user 1 out of it or take its power away.
PROTECTED_STATE = {
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.member",
    "m.room.create",
    "m.room.tombstone",
    "m.room.server_acl",
    "m.room.history_visibility",
    "m.room.encryption",
}


def short(text, limit: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        text = json.dumps(text, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# --------------------------------------------------------------------------------------
# the spec: one OpenAPI document out of every client-server file


class Bundler:
    """Inlines every `$ref` (relative file, optional JSON pointer, or internal) of a file."""

    def __init__(self):
        self.docs: dict[pathlib.Path, object] = {}

    def load(self, path: pathlib.Path):
        path = path.resolve()
        if path not in self.docs:
            self.docs[path] = yaml.safe_load(path.read_text())
        return self.docs[path]

    def target(self, ref: str, base: pathlib.Path):
        file_part, _, pointer = ref.partition("#")
        path = (base.parent / file_part).resolve() if file_part else base.resolve()
        node = self.load(path)
        for part in [p for p in pointer.split("/") if p]:
            part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, path, f"{path}#{pointer}"

    def inline(self, node, base: pathlib.Path, stack: frozenset = frozenset()):
        if isinstance(node, list):
            return [self.inline(item, base, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            target, path, key = self.target(ref, base)
            if key in stack:  # a recursive schema: anything goes below this point
                resolved = {}
            else:
                resolved = self.inline(target, path, stack | {key})
            siblings = {k: self.inline(v, base, stack) for k, v in node.items() if k != "$ref"}
            if isinstance(resolved, dict):
                return {**resolved, **siblings}
            return resolved
        return {k: self.inline(v, base, stack) for k, v in node.items()}


# Host names in the spec's examples (example.com, matrix.org, elsewhere.ca, ...) become an
# address kith refuses to contact (loopback), so the examples never send it to the internet.
EXAMPLE_HOST_RE = re.compile(r"(?<![\w.-])(?:[A-Za-z0-9-]+\.)+(?:com|org|net|ca|io|me|im|here|rocks|rainbow)(?::\d+)?(?![\w-])")
LOCAL_STANDIN = "127.0.0.1:1"


def localise_examples(node, inside: bool = False):
    if isinstance(node, dict):
        return {
            (EXAMPLE_HOST_RE.sub(LOCAL_STANDIN, k) if inside else k): localise_examples(
                v, inside or k in ("example", "examples")
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [localise_examples(v, inside) for v in node]
    if inside and isinstance(node, str):
        return EXAMPLE_HOST_RE.sub(LOCAL_STANDIN, node)
    return node


def base_path_of(doc: dict) -> str:
    server = (doc.get("servers") or [{}])[0]
    variables = server.get("variables") or {}
    if "basePath" in variables:
        return variables["basePath"]["default"].rstrip("/")
    return urllib.parse.urlsplit(server.get("url", "")).path.rstrip("/")


def merge_operations(first: dict, second: dict) -> dict:
    """Two spec operations on one method and path: parameters united, bodies `anyOf`."""
    merged = dict(first)
    names_first = {(p["in"], p["name"]) for p in first.get("parameters", [])}
    names_second = {(p["in"], p["name"]) for p in second.get("parameters", [])}
    params = []
    for p in first.get("parameters", []) + second.get("parameters", []):
        key = (p["in"], p["name"])
        if any((q["in"], q["name"]) == key for q in params):
            continue
        p = dict(p)
        if p["in"] != "path" and not (key in names_first and key in names_second):
            p["required"] = False
        params.append(p)
    merged["parameters"] = params
    bodies = [op["requestBody"] for op in (first, second) if "requestBody" in op]
    if len(bodies) == 2:
        schemas = [b.get("content", {}).get("application/json", {}).get("schema", {}) for b in bodies]
        merged["requestBody"] = {
            "required": all(b.get("required") for b in bodies),
            "content": {"application/json": {"schema": {"anyOf": schemas}}},
        }
    elif bodies:
        merged["requestBody"] = dict(bodies[0], required=False)
    merged["operationId"] = f"{first.get('operationId')}+{second.get('operationId')}"
    merged["responses"] = {**second.get("responses", {}), **first.get("responses", {})}
    return merged


def bundle_spec(spec_dir: pathlib.Path) -> tuple[dict, dict, list[str]]:
    """The whole client-server API as one OpenAPI 3.1 document, the excluded operations, notes."""
    cs_dir = spec_dir / "data" / "api" / "client-server"
    files = sorted(cs_dir.glob("*.yaml"))
    if not files:
        raise SystemExit(f"FAILED: no client-server OpenAPI files under {cs_dir}")
    bundler = Bundler()
    paths: dict[str, dict] = {}
    excluded: dict[str, str] = {}
    notes: list[str] = []
    for file in files:
        raw = bundler.load(file)
        if not isinstance(raw, dict) or "paths" not in raw:
            continue
        prefix = base_path_of(raw)
        for template, item in raw["paths"].items():
            item = localise_examples(bundler.inline(item, file))
            shared_params = item.get("parameters", [])
            full = prefix + template
            for method, op in item.items():
                if method not in HTTP_METHODS:
                    continue
                op_id = op.get("operationId", f"{method} {full}")
                if op_id in EXCLUDED:
                    excluded[f"{method.upper()} {full} ({op_id})"] = EXCLUDED[op_id]
                    continue
                op = dict(op)
                op.pop("security", None)
                params = {(p["in"], p["name"]): p for p in shared_params + op.get("parameters", [])}
                op["parameters"] = list(params.values())
                # Only statuses matter here: response bodies are not validated.
                op["responses"] = {
                    str(code): {"description": (r or {}).get("description", "") or "-"}
                    for code, r in (op.get("responses") or {"200": {}}).items()
                }
                body = op.get("requestBody")
                if body:
                    for media_type, content in body.get("content", {}).items():
                        if media_type != "application/json" and not content.get("schema", {}).get("type"):
                            content["schema"] = {"type": "string", "format": "binary"}
                slot = paths.setdefault(full, {})
                if method in slot:
                    notes.append(
                        f"{method.upper()} {full}: {slot[method].get('operationId')} and {op_id} merged"
                    )
                    slot[method] = merge_operations(slot[method], op)
                else:
                    slot[method] = op
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "Matrix Client-Server API (bundled for fuzzing)", "version": "1"},
        "servers": [{"url": "/"}],
        "paths": paths,
    }
    return doc, excluded, notes


# --------------------------------------------------------------------------------------
# the scene: real IDs


def tiny_png(width: int, height: int) -> bytes:
    """An RGB gradient as a PNG file."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 5 % 256, (x + y) % 256))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class Scene:
    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.tag = "fz" + uuid.uuid4().hex[:8]

    def call(self, method: str, path: str, token: str | None = None, expect=200, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = self.http.request(method, self.base + path, headers=headers, timeout=HTTP_TIMEOUT, **kw)
        if expect is not None and r.status_code != expect:
            raise SystemExit(f"FAILED: setting the scene: {method} {path}: {r.status_code} {short(r.text)}")
        try:
            return r.json()
        except ValueError:
            return {}

    def register(self, name: str) -> dict:
        body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        r = self.http.post(f"{self.base}{CS}/register", json=body, timeout=HTTP_TIMEOUT)
        if r.status_code == 401:  # the UIA round trip some servers insist on
            body["auth"]["session"] = r.json().get("session")
            r = self.http.post(f"{self.base}{CS}/register", json=body, timeout=HTTP_TIMEOUT)
        if r.status_code != 200:
            raise SystemExit(
                f"FAILED: registering {name}: {r.status_code} {short(r.text)} "
                "(is kith running with KITH_REGISTRATION__MODE=open?)"
            )
        return r.json()

    def build(self) -> dict:
        q = urllib.parse.quote
        u1 = self.register(f"{self.tag}_1")
        u2 = self.register(f"{self.tag}_2")
        t1, t2 = u1["access_token"], u2["access_token"]
        server = u1["user_id"].split(":", 1)[1]
        alias_local = f"{self.tag}room"
        room = self.call(
            "POST",
            f"{CS}/createRoom",
            t1,
            json={"preset": "public_chat", "room_alias_name": alias_local, "name": "fuzz", "topic": "fuzz"},
        )["room_id"]
        alias = f"#{alias_local}:{server}"
        self.call("POST", f"{CS}/join/{q(room)}", t2, json={})
        txn = uuid.uuid4().hex
        event = self.call(
            "PUT",
            f"{CS}/rooms/{q(room)}/send/m.room.message/{txn}",
            t1,
            json={"msgtype": "m.text", "body": "hello fuzz"},
        )["event_id"]
        reply = self.call(
            "PUT",
            f"{CS}/rooms/{q(room)}/send/m.room.message/{txn}r",
            t2,
            json={
                "msgtype": "m.text",
                "body": "in a thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": event},
            },
        )["event_id"]
        room2 = self.call("POST", f"{CS}/createRoom", t1, json={"preset": "private_chat"})["room_id"]
        # Where the membership- and permission-changing requests aimed at the main room go.
        spare = self.call("POST", f"{CS}/createRoom", t1, json={"preset": "public_chat"})["room_id"]
        self.call("POST", f"{CS}/join/{q(spare)}", t2, json={})
        state = self.call("GET", f"{CS}/rooms/{q(room)}/state", t1)
        state_events = [e["event_id"] for e in state if isinstance(e, dict) and "event_id" in e][:4]
        upload = self.call(
            "POST",
            "/_matrix/media/v3/upload?filename=fuzz.txt",
            t1,
            data=b"fuzz media",
            headers={"Content-Type": "text/plain"},
        )["content_uri"]
        media_server, media_id = upload[len("mxc://") :].split("/", 1)
        # A real image, for the thumbnailer, and a truncated one.
        png = tiny_png(64, 48)
        images = []
        for name, data in (("fuzz.png", png), ("broken.png", png[:60] + b"\x00" * 40)):
            uri = self.call(
                "POST",
                f"/_matrix/media/v3/upload?filename={name}",
                t1,
                data=data,
                headers={"Content-Type": "image/png"},
            )["content_uri"]
            images.append(uri.rsplit("/", 1)[1])
        filter_id = self.call(
            "POST", f"{CS}/user/{q(u1['user_id'])}/filter", t1, json={"room": {"timeline": {"limit": 5}}}
        ).get("filter_id", "0")
        backup = self.call(
            "POST",
            f"{CS}/room_keys/version",
            t1,
            expect=None,
            json={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abcdefg"}},
        ).get("version", "1")
        self.call("PUT", f"{CS}/user/{q(u1['user_id'])}/rooms/{q(room)}/tags/u.work", t1, json={}, expect=None)
        return {
            "server": server,
            "user1": u1["user_id"],
            "user2": u2["user_id"],
            "token1": t1,
            "token2": t2,
            "spare_room": spare,
            "device1": u1.get("device_id", "DEVICE"),
            "device2": u2.get("device_id", "DEVICE"),
            "rooms": [room, room2, spare],
            "alias": alias,
            "events": [event, reply] + state_events,
            "media_server": media_server,
            "media_id": media_id,
            "media_ids": [media_id] + images,
            "mxc": upload,
            "filter_id": str(filter_id),
            "backup_version": str(backup),
        }


# --------------------------------------------------------------------------------------
# IDs: what the fuzzer draws, and what counts as malformed

SERVER_NAME_RE = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?$")
DNS_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def server_name_ok(s: str) -> bool:
    """A server name a homeserver could sensibly contact: an IPv4 address, a bracketed IPv6
    address or an RFC 1123 host name (so not "0", "-" or "a..b", which the lax Matrix grammar
    lets through), with an optional port in 1-65535."""
    m = SERVER_NAME_RE.match(s)
    if not m:
        return False
    host, port = m.groups()
    if port is not None and not 1 <= int(port) <= 65535:
        return False
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
            return True
        except ValueError:
            return False
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")  # "a." is absolute
    return len(host) <= 255 and all(DNS_LABEL_RE.match(label) for label in labels)


OPAQUE_HASH_RE = re.compile(r"^[A-Za-z0-9+/_-]{43}$")


def sigil_id_ok(value: str, sigil: str, needs_server: bool) -> bool:
    if not isinstance(value, str) or not value.startswith(sigil) or len(value.encode()) > 255:
        return False
    rest = value[1:]
    if ":" in rest:
        local, server = rest.split(":", 1)
        return bool(local) and all(0x21 <= ord(c) <= 0x7E for c in local) and server_name_ok(server)
    # Event IDs (room version 3+) and room IDs (version 12+) without a server name are a
    # hash: 43 characters of (URL-safe) unpadded base64.
    return not needs_server and bool(OPAQUE_HASH_RE.match(rest))


def id_problem(name: str, value) -> str | None:
    """Why a path/query/body value is a malformed Matrix identifier, or None."""
    if not isinstance(value, str):
        return None
    checks = {
        "roomId": lambda v: sigil_id_ok(v, "!", False),
        "room_id": lambda v: sigil_id_ok(v, "!", False),
        "userId": lambda v: sigil_id_ok(v, "@", True),
        "user_id": lambda v: sigil_id_ok(v, "@", True),
        "eventId": lambda v: sigil_id_ok(v, "$", False),
        "event_id": lambda v: sigil_id_ok(v, "$", False),
        "roomAlias": lambda v: sigil_id_ok(v, "#", True),
        "roomIdOrAlias": lambda v: sigil_id_ok(v, "!", False) or sigil_id_ok(v, "#", True),
        "serverName": server_name_ok,
        "server_name": server_name_ok,
        "via": server_name_ok,
        "server": server_name_ok,
    }
    check = checks.get(name)
    if check is None or check(value):
        return None
    return f"{name}={value!r}"


def malformed_inputs(case) -> list[str]:
    found = []
    for name, value in (case.path_parameters or {}).items():
        if isinstance(value, str):
            value = urllib.parse.unquote(value)  # schemathesis keeps them percent-encoded
        problem = id_problem(name, value)
        if problem:
            found.append("path " + problem)
    for name, value in (case.query or {}).items():
        for v in value if isinstance(value, list) else [value]:
            problem = id_problem(name, v)
            if problem:
                found.append("query " + problem)
    body = case.body if isinstance(getattr(case, "body", None), dict) else {}
    for name in ("room_id", "user_id", "event_id", "server_name"):
        problem = id_problem(name, body.get(name))
        if problem:
            found.append("body " + problem)
    return found


def register_formats(s: dict) -> None:
    server = re.escape(s["server"])
    local = r"[a-z0-9._=\-/]{1,16}"
    opaque = r"[A-Za-z0-9]{1,18}"
    fmt = schemathesis.openapi.format
    fmt(
        "mx-room-id",
        st.one_of(
            st.sampled_from(s["rooms"]),
            st.from_regex(rf"\A!{opaque}:{server}\Z"),
            st.from_regex(r"\A![A-Za-z0-9_-]{43}\Z"),
        ),
    )
    fmt(
        "mx-user-id",
        st.one_of(
            st.sampled_from([s["user1"], s["user2"]]),
            st.from_regex(rf"\A@{local}:{server}\Z"),
        ),
    )
    fmt("mx-event-id", st.one_of(st.sampled_from(s["events"]), st.from_regex(r"\A\$[A-Za-z0-9_-]{43}\Z")))
    fmt("mx-room-alias", st.one_of(st.just(s["alias"]), st.from_regex(rf"\A#{local}:{server}\Z")))
    fmt("mx-server-name", st.sampled_from([s["server"], s["server"], s["server"], "127.0.0.1:1"]))
    fmt(
        "mx-mxc-uri",
        st.one_of(st.just(s["mxc"]), st.from_regex(rf"\Amxc://{server}/[A-Za-z0-9_-]{{1,24}}\Z")),
    )
    fmt("mx-unpadded-base64", st.from_regex(r"\A[A-Za-z0-9+/]{0,64}\Z"))
    fmt("mx-urlsafe-unpadded-base64", st.from_regex(r"\A[A-Za-z0-9_-]{0,64}\Z"))
    # Pushers, URL previews and the like must not send kith off to the internet.
    fmt(
        "uri",
        st.one_of(
            st.sampled_from(["http://127.0.0.1:1/_matrix/push/v1/notify", "https://127.0.0.1:1/", s["mxc"]]),
            st.from_regex(r"\Ahttps?://127\.0\.0\.1:1/[a-z0-9/]{0,12}\Z"),
        ),
    )


# Malformed identifiers the fuzzer mixes in (about one draw in four of a dictionary): kith
# must answer them 400 (M_INVALID_PARAM / M_BAD_JSON ...), never 5xx, and never go looking
# for a remote server (502/504).
BAD_SERVER_NAMES = [
    "0",
    "-",
    "a..b",
    ".a",
    "127.1",
    "256.1.1.1",
    "x_y",
    "[::1",
    "127.0.0.1:99999",
    "kith.test:0",
    "host:port",
    "h st",
    "\u00e9.test",
]
BAD_ROOM_IDS = ["!", "!x", "!x:", "!:kith.test", "x", "!x:0", "!x:0:0", "!x:a..b", "!x:h st", "$x:kith.test", "!" + "a" * 300]
BAD_USER_IDS = ["@", "@x", "@x:", "@:kith.test", "x", "@x:0", "@x:a..b", "@x:h st", "!x:kith.test", "@" + "a" * 300 + ":kith.test"]
BAD_EVENT_IDS = ["$", "$x", "$x:", "x", "$x:h st", "!x:kith.test"]
BAD_ALIASES = ["#", "#x", "#x:", "#:kith.test", "x", "#x:0", "#x:a..b", "#x:h st"]


def mix(good: list, bad: list) -> list:
    """`good` three times as likely as `bad` overall."""
    return good * max(1, (3 * len(bad)) // max(1, len(good))) + bad


def dictionaries_config(s: dict) -> tuple[dict, dict]:
    values = {
        "room_ids": mix(s["rooms"], BAD_ROOM_IDS),
        "user_ids": mix([s["user1"], s["user2"]], BAD_USER_IDS),
        "event_ids": mix(s["events"], BAD_EVENT_IDS),
        "aliases": mix([s["alias"]], BAD_ALIASES),
        "room_or_alias": mix(s["rooms"] + [s["alias"]], BAD_ROOM_IDS + BAD_ALIASES),
        "server_names": mix([s["media_server"]], BAD_SERVER_NAMES),
        "media_ids": s["media_ids"],
        "thumbnail_sizes": [0, 1, 32, 96, 640, 100000, 2**31 - 1, 2**32],
        "thumbnail_methods": ["crop", "scale"],
        "device_ids": [s["device1"], s["device2"]],
        "filter_ids": [s["filter_id"]],
        "backup_versions": [s["backup_version"]],
        "push_kinds": ["override", "underride", "sender", "room", "content"],
        "rule_ids": [".m.rule.master", ".m.rule.message", ".m.rule.contains_display_name", "fuzz.rule"],
        "event_types": ["m.room.message", "m.room.topic", "m.room.name", "m.reaction", "m.room.power_levels"],
        "state_keys": ["", s["user1"]],
        "key_names": ["displayname", "avatar_url", "m.tz"],
        "receipt_types": ["m.read", "m.read.private", "m.fully_read"],
        "tags": ["u.work", "m.favourite"],
        "rel_types": ["m.thread", "m.annotation", "m.reference"],
        "via_servers": mix([s["server"]], BAD_SERVER_NAMES),
    }
    bindings = {
        "path.roomId": "room_ids",
        "path.userId": "user_ids",
        "path.eventId": "event_ids",
        "path.roomAlias": "aliases",
        "path.roomIdOrAlias": "room_or_alias",
        "path.serverName": "server_names",
        "path.mediaId": "media_ids",
        "path.deviceId": "device_ids",
        "path.filterId": "filter_ids",
        "path.version": "backup_versions",
        "path.kind": "push_kinds",
        "path.ruleId": "rule_ids",
        "path.eventType": "event_types",
        "path.type": "event_types",
        "path.stateKey": "state_keys",
        "path.keyName": "key_names",
        "path.receiptType": "receipt_types",
        "path.tag": "tags",
        "path.relType": "rel_types",
        "query.via": "via_servers",
        "query.server": "via_servers",
        "query.width": "thumbnail_sizes",
        "query.height": "thumbnail_sizes",
        "query.method": "thumbnail_methods",
        "query.room_id": "room_ids",
        "query.user_id": "user_ids",
        "query.userid": "user_ids",
        "body.user_id": "user_ids",
        "body.room_id": "room_ids",
        "body.event_id": "event_ids",
    }
    dictionaries = {name: {"values": v} for name, v in values.items()}
    parameters = {key: {"dictionary": name, "probability": 0.5} for key, name in bindings.items()}
    return dictionaries, parameters


# --------------------------------------------------------------------------------------
# what came back


class Findings:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses: collections.Counter = collections.Counter()
        self.by_operation: collections.Counter = collections.Counter()
        # requests with the operation's own method, and those answered 404 M_UNRECOGNIZED
        self.own_method: collections.Counter = collections.Counter()
        self.unrecognized: collections.Counter = collections.Counter()
        # (kind, operation, status, errcode/detail) -> [count, first example]
        self.groups: dict[tuple, list] = {}

    def add(self, kind: str, key: tuple, example: dict) -> None:
        """Counts a finding; keeps the first EXAMPLES_KEPT different requests behind it."""
        group = self.groups.setdefault((kind,) + key, [0, []])
        group[0] += 1
        same = [e for e in group[1] if (e["method"], e["url"], e["body"]) == (example["method"], example["url"], example["body"])]
        if not same and len(group[1]) < EXAMPLES_KEPT:
            group[1].append(example)

    def of(self, kind: str):
        return [(key[1:], count, exs) for key, (count, exs) in self.groups.items() if key[0] == kind]


FINDINGS = Findings()
STATE: dict = {}


def case_phase(case) -> str:
    meta = getattr(case, "meta", None)
    phase = getattr(getattr(getattr(meta, "phase", None), "name", None), "value", None)
    mode = getattr(getattr(getattr(meta, "generation", None), "mode", None), "value", None)
    return f"{phase or '?'}/{mode or '?'}"


def request_example(phase: str, prepared, **extra) -> dict:
    headers = {
        k: v
        for k, v in (prepared.headers or {}).items()
        if k.lower()
        not in (
            "user-agent",
            "accept",
            "accept-encoding",
            "connection",
            "content-length",
            "authorization",
            "x-schemathesis-testcaseid",
        )
    }
    body = prepared.body
    if isinstance(body, str):
        body = body.encode()
    now = time.time()
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "method": prepared.method,
        "url": prepared.url,
        "headers": headers,
        "body": body,
        "phase": phase,
        **extra,
    }


def curl(ex: dict) -> str:
    parts = ["curl", "-sS", "-X", ex["method"], "-H", "'Authorization: Bearer '\"$TOKEN\""]
    for k, v in ex["headers"].items():
        parts += ["-H", shlex.quote(f"{k}: {v}")]
    body = ex["body"]
    if body is not None:
        try:
            text = body.decode("utf-8")
            printable = all(c.isprintable() or c in "\n\t" for c in text)
        except UnicodeDecodeError:
            printable = False
        if printable:
            parts += ["--data-binary", shlex.quote(text)]
        else:
            parts += ["--data-binary", "$'" + "".join(f"\\x{b:02x}" for b in body) + "'"]
    parts.append(shlex.quote(ex["url"]))
    return " ".join(parts)


def matrix_error(status: int, content: bytes, content_type: str) -> tuple[str | None, str | None]:
    """The errcode of an error body, and what is wrong with it as a Matrix error (None: nothing)."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, f"not JSON (Content-Type {content_type or 'none'})"
    if not isinstance(body, dict):
        return None, f"JSON {type(body).__name__}, not an object"
    errcode = body.get("errcode")
    if status == 401 and "flows" in body and "session" in body:
        return errcode, None  # a user-interactive authentication step, as the spec has it
    if not isinstance(errcode, str):
        return None, f"JSON object without a string errcode (keys {sorted(body)[:8]})"
    if not isinstance(body.get("error"), str):
        return errcode, f"errcode {errcode} without a string error"
    if "json" not in (content_type or "").lower():
        return errcode, f"Matrix error served as Content-Type {content_type or 'none'}"
    return errcode, None


def record(label: str, prepared, status, content: bytes) -> None:
    """One line per request in the --record file, if any (FINDINGS.lock held)."""
    out = STATE.get("record")
    if out is None:
        return
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    line = {
        "t": round(time.time(), 3),
        "op": label,
        "method": prepared.method,
        "url": prepared.url,
        "body": short(body, 2000) if body is not None else None,
        "status": status,
        "response": short(content, 500),
    }
    out.write(json.dumps(line) + "\n")


@schemathesis.hook
def before_call(context, case, kwargs):
    query = case.query
    if isinstance(query, dict) and "timeout" in query:
        try:
            if int(query["timeout"]) > LONG_POLL_MAX_MS:
                query["timeout"] = LONG_POLL_MAX_MS
        except (TypeError, ValueError):
            pass
    body = case.body
    if case.path.endswith(("/keys/query", "/keys/claim")) and isinstance(body, dict):
        timeout = body.get("timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > LONG_POLL_MAX_MS:
            body["timeout"] = LONG_POLL_MAX_MS
    params = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    method = case.method.upper()

    def param(name):
        value = params.get(name)
        return urllib.parse.unquote(value) if isinstance(value, str) else value

    if "/admin/" in case.path and method == "PUT" and param("userId") == STATE.get("user1"):
        params["userId"] = urllib.parse.quote(STATE["user2"], safe="")
    # Keep user 1 joined to the main room, with its power: what would change that goes to
    # the spare room instead.
    if param("roomId") == STATE.get("rooms", [None])[0]:
        target = body.get("user_id") if isinstance(body, dict) else None
        membership_change = (
            case.path.endswith(("/leave", "/forget", "/upgrade"))
            or (case.path.endswith(("/kick", "/ban")) and target == STATE.get("user1"))
            or (
                "/state/" in case.path
                and method == "PUT"
                and param("eventType") in PROTECTED_STATE
            )
        )
        if membership_change:
            params["roomId"] = urllib.parse.quote(STATE["spare_room"], safe="")


def observe(label: str, own_method: bool, prepared, status: int, content: bytes, content_type: str,
            malformed, phase: str) -> None:
    """Judge one answer. `malformed()` lists the malformed identifiers of the request."""
    with FINDINGS.lock:
        record(label, prepared, status, content)
        FINDINGS.requests += 1
        FINDINGS.statuses[status] += 1
        FINDINGS.by_operation[label] += 1
        errcode, problem = matrix_error(status, content, content_type)
        if own_method:
            FINDINGS.own_method[label] += 1
            if status == 404 and errcode == "M_UNRECOGNIZED":
                FINDINGS.unrecognized[label] += 1
        if status < 400:
            return

        def ex(**extra):
            return request_example(phase, prepared, status=status, response=content, **extra)

        if status >= 500 and status not in ALLOWED_5XX:
            FINDINGS.add("server_error", (label, status, errcode), ex())
        elif status in ALLOWED_5XX:
            bad = malformed()
            FINDINGS.add("gateway", (label, status, errcode, bool(bad)), ex(malformed=bad))
        elif status < 500 and problem is not None:
            FINDINGS.add("bad_4xx", (label, status, problem), ex())


def observe_error(label: str, prepared, error: BaseException | None, phase: str) -> None:
    kind = "timeout" if isinstance(error, requests.exceptions.Timeout) else "connection_error"
    detail = type(error).__name__ if error is not None else "?"
    with FINDINGS.lock:
        record(label, prepared, None, f"{detail}: {error}".encode())
        FINDINGS.requests += 1
        FINDINGS.by_operation[label] += 1
        FINDINGS.add(kind, (label, detail), request_example(phase, prepared, error=f"{detail}: {short(str(error), 400)}"))


@schemathesis.hook
def after_call(context, case, response):
    observe(
        case.operation.label,
        response.request.method == case.operation.method.upper(),
        response.request,
        response.status_code,
        response.content or b"",
        (response.headers.get("content-type") or [""])[0],
        lambda: malformed_inputs(case),
        case_phase(case),
    )


@schemathesis.hook
def after_network_error(context, case, request):
    # Called from within the `except` block around the request: the exception is current.
    observe_error(case.operation.label, request, sys.exc_info()[1], case_phase(case))


@schemathesis.check
def kith_observed(ctx, response, case):
    """Every response is judged by the hooks above; this check only keeps the engine going."""
    return None


# --------------------------------------------------------------------------------------


def run_engine(base: str, doc: dict, scene: dict, args) -> tuple[list[str], int]:
    dictionaries, parameters = dictionaries_config(scene)
    config = schemathesis.Config.from_dict(
        {
            "base-url": base,
            "seed": args.seed,
            "max-time": args.time,
            "workers": args.workers,
            "request-timeout": HTTP_TIMEOUT,
            "request-retries": 0,
            "max-redirects": 0,
            "suppress-health-check": ["all"],
            "headers": {"Authorization": f"Bearer {scene['token1']}"},
            "cache": {"enabled": False},
            "generation": {
                "mode": "all",
                "max-examples": args.max_examples,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, "kith_observed": {"enabled": True}},
            "dictionaries": dictionaries,
            "parameters": parameters,
        }
    )
    schema = schemathesis.openapi.from_dict(doc, config=config)
    schema.config.base_url = base
    engine_notes: list[str] = []
    operations = 0
    stop = threading.Event()

    def keep_joined():
        """Every few seconds: both users (back) into the main room, whatever the fuzzer did."""
        http = requests.Session()
        room = urllib.parse.quote(scene["rooms"][0], safe="")
        while not stop.wait(5):
            for token in (scene["token1"], scene["token2"]):
                try:
                    http.post(
                        f"{base}{CS}/join/{room}",
                        headers={"Authorization": f"Bearer {token}"},
                        json={},
                        timeout=HTTP_TIMEOUT,
                    )
                except requests.RequestException:
                    pass

    healer = threading.Thread(target=keep_joined, daemon=True)
    healer.start()
    started = time.monotonic()
    last_progress = started
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, engine_events.PhaseStarted):
            print(f"  [{time.monotonic() - started:5.0f} s] phase {event.phase.name.value} started", flush=True)
        elif isinstance(event, engine_events.ScenarioFinished):
            operations += 1
        elif isinstance(event, engine_events.NonFatalError):
            phase = event.phase.value if event.phase is not None else "-"
            engine_notes.append(f"{event.label} ({phase}): {event.info.title}: {short(event.info.message, 300)}")
        elif isinstance(event, engine_events.FatalError):
            raise SystemExit(f"FAILED: schemathesis stopped: {type(event.exception).__name__}: {event.exception}")
        elif isinstance(event, engine_events.EngineFinished):
            print(
                f"  [{time.monotonic() - started:5.0f} s] engine finished ({event.stop_reason.value})",
                flush=True,
            )
        now = time.monotonic()
        if now - last_progress >= 30:
            last_progress = now
            with FINDINGS.lock:
                print(
                    f"  [{now - started:5.0f} s] {FINDINGS.requests} requests, "
                    f"{len(FINDINGS.by_operation)} operations answered, statuses {dict(sorted(FINDINGS.statuses.items()))}",
                    flush=True,
                )
    stop.set()
    healer.join(HTTP_TIMEOUT * 2 + 5)
    return engine_notes, operations


# --------------------------------------------------------------------------------------
# edge probes: hand-made nasty input on every operation, after schemathesis

NASTY_SEGMENTS = [
    "%FF",  # not UTF-8
    "%C3%28",  # not UTF-8 either
    "%00",
    "%2F",
    "%25",
    "%20",
    "%2E%2E",
    "%E2%80%AE",
    "%F0%9F%98%80",
    "!%00:kith.test",
    "@%FF:kith.test",
    "$x%00",
    "x" * 5000,
]
NASTY_QUERY_VALUES = ["%FF", "", "-1", "99999999999999999999", "1.5", "null", "%00", "x" * 5000]
NASTY_BODIES = [
    (None, None),
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'"x"', "application/json"),
    (b"1e999", "application/json"),
    (b'{"a": 1, "a": 2}', "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b'{"\\ud800": "\\udfff"}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json"),
    (b"{}", "text/plain"),
    (b"{}", "application/x-www-form-urlencoded"),
]


def wrong_type(schema: dict):
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    return {
        "string": 12345,
        "integer": "12345",
        "number": "1.5",
        "boolean": "true",
        "object": ["not", "an", "object"],
        "array": {"not": "an array"},
    }.get(kind, {"unexpected": True})


def edge_bodies(op: dict) -> list[tuple[bytes | None, str | None, str]]:
    """The nasty bodies, plus the documented top-level fields all null, all of the wrong type,
    and all huge, when the operation takes a JSON object."""
    bodies = [(body, ctype, "") for body, ctype in NASTY_BODIES]
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    props = schema.get("properties") or {}
    for variant in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        props = {**(variant.get("properties") or {}), **props}
    if props:
        for name, fields in (
            ("null fields", {k: None for k in props}),
            ("wrong types", {k: wrong_type(v) for k, v in props.items()}),
            ("huge values", {k: ("x" * 70000 if v.get("type") == "string" else 2**70) for k, v in props.items()}),
        ):
            bodies.append((json.dumps(fields).encode(), "application/json", name))
    return bodies


def good_path_values(scene: dict) -> dict:
    return {
        "roomId": scene["spare_room"],
        "roomIdOrAlias": scene["spare_room"],
        "userId": scene["user1"],
        "eventId": scene["events"][0],
        "roomAlias": scene["alias"],
        "serverName": scene["media_server"],
        "mediaId": scene["media_ids"][1],
        "deviceId": scene["device1"],
        "filterId": scene["filter_id"],
        "version": scene["backup_version"],
        "kind": "override",
        "ruleId": "fuzz.rule",
        "eventType": "m.room.message",
        "type": "m.fuzz",
        "stateKey": "",
        "keyName": "displayname",
        "receiptType": "m.read",
        "tag": "u.fuzz",
        "relType": "m.thread",
        "protocol": "irc",
        "txnId": "probe",
        "sessionId": "session",
        "fileName": "f.txt",
    }


def run_probes(base: str, doc: dict, scene: dict, budget: float) -> int:
    good = good_path_values(scene)
    deadline = time.monotonic() + budget
    jobs = []
    for template, item in doc["paths"].items():
        for method, op in item.items():
            label = f"{method.upper()} {template}"
            path_names = re.findall(r"{([^}]+)}", template)
            query_names = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            takes_body = "requestBody" in op
            media_type = next(iter(op.get("requestBody", {}).get("content", {}) or {"application/json": 0}))
            if takes_body and media_type != "application/json":
                base_body = (b"probe", media_type)
            elif takes_body or method in ("post", "put"):
                base_body = (b"{}", "application/json")
            else:
                base_body = (None, None)
            admin = "/admin/" in template

            def path_with(override: dict) -> str:
                values = {}
                for n in path_names:
                    if n in override:
                        values[n] = override[n]  # already percent-encoded, sent as is
                    else:
                        v = good.get(n, "x")
                        if n == "userId" and admin:
                            v = scene["user2"]
                        values[n] = urllib.parse.quote(v, safe="")
                return template.format(**values)

            for name in path_names:
                for seg in NASTY_SEGMENTS:
                    jobs.append((label, method, path_with({name: seg}), "", base_body, [(name, seg)]))
            for name in query_names:
                for value in NASTY_QUERY_VALUES:
                    jobs.append((label, method, path_with({}), f"{name}={value}", base_body, []))
            if takes_body or method in ("post", "put"):
                for body, ctype, _ in edge_bodies(op):
                    if takes_body and media_type != "application/json" and ctype == "application/json":
                        continue  # uploads: any bytes are a valid body
                    jobs.append((label, method, path_with({}), "", (body, ctype), []))

    session = requests.Session()
    auth = {"Authorization": f"Bearer {scene['token1']}"}
    sent = 0

    def send(job):
        label, method, path, query, (body, ctype), nasty = job
        if time.monotonic() > deadline:
            return 0
        headers = dict(auth)
        if ctype:
            headers["Content-Type"] = ctype
        url = base + path + (f"?{query}" if query else "")
        request = requests.Request(method.upper(), url, headers=headers, data=body)
        prepared = session.prepare_request(request)
        prepared.url = url  # exactly these bytes: no requoting
        try:
            r = session.send(prepared, timeout=HTTP_TIMEOUT, allow_redirects=False)
        except requests.RequestException as e:
            observe_error(label, prepared, e, "probe")
            return 1

        def malformed():
            found = []
            for name, seg in nasty:
                problem = id_problem(name, urllib.parse.unquote(seg, errors="replace"))
                if problem:
                    found.append("path " + problem)
            return found

        observe(label, True, prepared, r.status_code, r.content or b"", r.headers.get("Content-Type", ""), malformed, "probe")
        return 1

    # The membership-changing operations last, so they do not pull the rug from the others.
    last = ("/leave", "/forget", "/kick", "/ban", "/upgrade")
    jobs.sort(key=lambda j: any(j[0].endswith(x) for x in last))
    for job in jobs:
        sent += send(job)
    return sent


def print_group(title: str, items, describe) -> None:
    if not items:
        return
    print(f"\n=== {title}: {len(items)} distinct ===")
    for key, count, examples in sorted(items, key=lambda i: str(i[0])):
        print(f"\n- {describe(key)}  (x{count})")
        for ex in examples:
            print(f"  request ({ex['phase']}, {ex['at']}): {curl(ex)}")
            if ex.get("malformed"):
                print(f"    malformed input: {', '.join(ex['malformed'])}")
            if "response" in ex:
                print(f"    response {ex['status']}: {short(ex['response'], 800)}")
            if "error" in ex:
                print(f"    error: {ex['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--max-examples", type=int, default=10, help="per operation and fuzzing cycle")
    parser.add_argument("--time", type=int, default=300, help="schemathesis time budget, seconds")
    parser.add_argument("--probe-time", type=int, default=60, help="edge probe time budget, seconds (0: none)")
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--spec-dir", type=pathlib.Path, default=DEFAULT_SPEC_DIR)
    parser.add_argument("--strict-ids", action="store_true", help="502/504 on malformed IDs fail the run")
    parser.add_argument("--record", type=pathlib.Path, help="write every request and its answer here (JSON lines)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1, 2**31)
    # The script's own choices (which ID to aim at) follow the seed too, so a run repeats.
    random.seed(args.seed)
    base = args.base_url.rstrip("/")

    whole_run = args.time + args.probe_time + 240

    def overrun(*_):
        print(f"FAILED: the client API fuzz ran over {whole_run} s", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(whole_run)
    started = time.monotonic()

    doc, excluded, notes = bundle_spec(args.spec_dir)
    n_ops = sum(len(item) for item in doc["paths"].values())
    print(f"spec: {n_ops} operations on {len(doc['paths'])} paths from {args.spec_dir}", flush=True)
    for op, why in sorted(excluded.items()):
        print(f"  excluded {op}: {why}")
    for note in notes:
        print(f"  {note}")

    scene = Scene(base).build()
    STATE.update(scene)
    print(f"scene: user 1 {scene['user1']}, user 2 {scene['user2']}, rooms {scene['rooms']}, {scene['mxc']}")
    print(f"TOKEN={scene['token1']}  (user 1; the curl lines below use $TOKEN)")
    print(
        f"schemathesis: seed {args.seed}, max examples {args.max_examples}, "
        f"time {args.time} s, workers {args.workers}",
        flush=True,
    )
    register_formats(scene)
    if args.record:
        STATE["record"] = args.record.open("w")

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)  # anything schemathesis or hypothesis writes stays out of the tree
        try:
            engine_notes, scenarios = run_engine(base, doc, scene, args)
        finally:
            os.chdir(cwd)

    if args.probe_time > 0:
        probe_started = time.monotonic()
        print(f"edge probes (at most {args.probe_time} s) ...", flush=True)
        sent = run_probes(base, doc, scene, args.probe_time)
        print(f"  {sent} edge probes in {time.monotonic() - probe_started:.0f} s", flush=True)
    if args.record:
        STATE.pop("record").close()
    alive = True
    try:
        requests.get(f"{base}/_matrix/client/versions", timeout=HTTP_TIMEOUT).raise_for_status()
    except requests.RequestException as e:
        alive = False
        print(f"\nkith does not answer any more: {e}")

    answered = set(FINDINGS.by_operation)
    all_labels = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}
    print(
        f"\n{FINDINGS.requests} requests in {time.monotonic() - started:.0f} s over "
        f"{len(answered)}/{len(all_labels)} operations ({scenarios} scenarios); "
        f"statuses: {dict(sorted(FINDINGS.statuses.items()))}"
    )
    untested = sorted(all_labels - answered)
    if untested:
        print(f"operations never called ({len(untested)}): {', '.join(untested)}")
    unimplemented = sorted(
        label for label, n in FINDINGS.own_method.items() if n and FINDINGS.unrecognized[label] == n
    )
    if unimplemented:
        print(f"operations kith always answered 404 M_UNRECOGNIZED ({len(unimplemented)}, not implemented?):")
        for label in unimplemented:
            print(f"  {label}")
    if engine_notes:
        print(f"schemathesis reported {len(engine_notes)} problem(s) (operations it could not test fully):")
        for note in sorted(set(engine_notes))[:40]:
            print(f"  - {note}")

    server_errors = FINDINGS.of("server_error")
    connection_errors = FINDINGS.of("connection_error")
    timeouts = FINDINGS.of("timeout")
    gateway = FINDINGS.of("gateway")
    malformed_gateway = [g for g in gateway if g[0][3]]
    print_group(
        "WARNING 4xx bodies that are not a Matrix error",
        FINDINGS.of("bad_4xx"),
        lambda k: f"{k[0]} -> {k[1]}: {k[2]}",
    )
    print_group(
        "INFO 502/504 (remote server unreachable), input well-formed",
        [g for g in gateway if not g[0][3]],
        lambda k: f"{k[0]} -> {k[1]} {k[2]}",
    )
    print_group(
        ("FAILURE" if args.strict_ids else "WARNING") + " 502/504 on a malformed ID or server name (should be 400)",
        malformed_gateway,
        lambda k: f"{k[0]} -> {k[1]} {k[2]}",
    )
    print_group("FAILURE request timeouts", timeouts, lambda k: f"{k[0]} -> {k[1]}")
    print_group("FAILURE connection errors (a panic?)", connection_errors, lambda k: f"{k[0]} -> {k[1]}")
    print_group("FAILURE server errors", server_errors, lambda k: f"{k[0]} -> {k[1]} {k[2]}")

    failed = bool(server_errors or connection_errors or timeouts or not alive)
    if args.strict_ids and malformed_gateway:
        failed = True
    print()
    if failed:
        print(
            f"client API fuzz FAILED: {len(server_errors)} server error(s), "
            f"{len(connection_errors)} connection error(s), {len(timeouts)} timeout(s)"
            + ("" if alive else ", kith stopped answering")
            + (f", {len(malformed_gateway)} 502/504 on malformed input" if args.strict_ids else "")
            + f" (seed {args.seed})"
        )
        sys.exit(1)
    print("client API fuzz passed")


if __name__ == "__main__":
    main()
