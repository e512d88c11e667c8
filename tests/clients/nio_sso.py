"""Legacy Matrix SSO (OpenID Connect) sign-in against kith, the way a browser and a real
client do it: `requests` plays the browser (one Session, i.e. one cookie jar, for both the
provider and kith), matrix-nio plays the Matrix client that redeems the login token.

Usage: nio_sso.py KITH_BASE_URL IDP_ID LOGIN_NAME [--tamper-state] [--redirect-url URL]
       nio_sso.py --reauth FALLBACK_URL KITH_BASE_URL LOGIN_NAME

  1. GET /_matrix/client/v3/login: m.login.sso (with identity provider IDP_ID) and
     m.login.token must be offered.
  2. GET /_matrix/client/v3/login/sso/redirect/IDP_ID?redirectUrl=http://127.0.0.1:9/done
     -> 302 to the provider's authorization endpoint; follow the provider's redirects and
     HTML forms (login form: login=LOGIN_NAME, any password; consent form if shown) until it
     redirects to KITH/_kith/client/oidc/callback?code=...&state=...; GET that on kith
     -> 302 to http://127.0.0.1:9/done?loginToken=... (not fetched).
     With --redirect-url URL (a client kith does not list), kith answers 200 with a page
     asking the user first; its Continue link carries the loginToken.
  3. nio: login(token=loginToken) then whoami. The last stdout line is
     {"user_id": ..., "device_id": ..., "access_token": ..., "login_token": ...,
      "confirmed": <whether the confirmation page was shown>}.

With --reauth, the browser part of UIA's m.login.sso stage: open kith's fallback page,
press its first "confirm by signing in" button (a POST form), sign in at the provider, and
print the callback's {"status": ..., "body": <text>} as the last line.

With --other-browser, the callback is fetched by a browser other than the one that started
the sign-in (no cookies), and the last line is {"status": ..., "body": ...}.

With --tamper-state the callback is fetched with a different `state` value instead and the
last stdout line is {"status": <HTTP status>, "body": <JSON or text>}; exit status 0.
Any failure exits non-zero with a message starting with FAILED on stderr."""

import asyncio
import json
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from nio import AsyncClient, AsyncClientConfig, LoginInfoResponse, LoginResponse, WhoamiResponse

TIMEOUT = 10
DONE_URL = "http://127.0.0.1:9/done"
CALLBACK_PATH = "/_kith/client/oidc/callback"
MAX_STEPS = 20
REDIRECT_CODES = (301, 302, 303, 307, 308)


class Failure(Exception):
    pass


class LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.extend(v for k, v in attrs if k == "href" and v)


def parse_links(html):
    parser = LinkParser()
    parser.feed(html)
    parser.close()
    return parser.links


def check(condition, message):
    if not condition:
        raise Failure(message)


def log(message):
    print(message, file=sys.stderr, flush=True)


def snippet(resp):
    text = resp.text
    return text if len(text) <= 600 else text[:600] + "..."


class FormParser(HTMLParser):
    """Collects every <form> with its action, method and fields (input, button, select,
    textarea). Deliberately forgiving: unclosed forms end at the next <form> or EOF."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self._form = None
        self._select = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {
                "action": a.get("action", ""),
                "method": (a.get("method") or "get").lower(),
                "fields": [],
            }
            self.forms.append(self._form)
            return
        if self._form is None:
            return
        if tag == "input":
            self._form["fields"].append({
                "tag": "input",
                "type": (a.get("type") or "text").lower(),
                "name": a.get("name"),
                "value": a.get("value", ""),
                "checked": "checked" in a,
            })
        elif tag == "button":
            self._form["fields"].append({
                "tag": "button",
                "type": (a.get("type") or "submit").lower(),
                "name": a.get("name"),
                "value": a.get("value", ""),
                "checked": False,
            })
        elif tag == "select":
            self._select = {"tag": "select", "type": "select", "name": a.get("name"), "value": None, "checked": False}
            self._form["fields"].append(self._select)
        elif tag == "option" and self._select is not None:
            if self._select["value"] is None or "selected" in a:
                self._select["value"] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = {"tag": "textarea", "type": "textarea", "name": a.get("name"), "value": "", "checked": False}
            self._form["fields"].append(self._textarea)

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea["value"] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def parse_forms(html):
    parser = FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def fill_form(form, login_name):
    """The fields a browser would submit, with the login form filled in."""
    data = []
    submit_done = False
    for field in form["fields"]:
        name, ftype = field["name"], field["type"]
        if not name:
            continue
        if ftype in ("submit", "image", "button", "reset"):
            # Only the first named submit button is "clicked".
            if ftype == "submit" and not submit_done:
                data.append((name, field["value"]))
                submit_done = True
            continue
        if ftype in ("checkbox", "radio"):
            if field["checked"]:
                data.append((name, field["value"] or "on"))
            continue
        if ftype == "password":
            data.append((name, "any-password"))
            continue
        lowered = name.lower()
        if ftype in ("text", "email") and lowered in ("login", "username", "user", "email") and not field["value"]:
            data.append((name, login_name))
            continue
        data.append((name, field["value"] or ""))
    return data


def is_kith_callback(url, kith):
    parts = urlsplit(url)
    return parts.path == urlsplit(kith).path.rstrip("/") + CALLBACK_PATH


def drive_provider(session, start_url, kith, login_name):
    """Follows the provider's redirects and forms from its authorization endpoint until it
    redirects to kith's callback. Returns that callback URL (not fetched)."""
    method, url, data = "GET", start_url, None
    for step in range(MAX_STEPS):
        if method == "GET":
            resp = session.get(url, allow_redirects=False, timeout=TIMEOUT)
        else:
            resp = session.post(url, data=data, allow_redirects=False, timeout=TIMEOUT)
        log(f"provider step {step}: {method} {url} -> {resp.status_code}")
        if resp.status_code in REDIRECT_CODES:
            location = resp.headers.get("Location")
            check(location, f"{method} {url}: {resp.status_code} without a Location header")
            target = urljoin(url, location)
            if is_kith_callback(target, kith):
                check(target.startswith(kith + CALLBACK_PATH),
                      f"provider redirected to {target}, which is not on {kith} (cookies would not match)")
                query = parse_qs(urlsplit(target).query)
                check("error" not in query, f"provider returned an error to kith's callback: {target}")
                check("code" in query and "state" in query, f"callback without code/state: {target}")
                log(f"provider -> kith callback: {target}")
                return target
            check(urlsplit(target).netloc != urlsplit(kith).netloc,
                  f"provider redirected back to kith but not to its callback: {target}")
            # A browser turns POST into GET on 301/302/303; keep it simple and always GET.
            method, url, data = "GET", target, None
            continue
        check(resp.status_code == 200,
              f"{method} {url}: unexpected {resp.status_code}: {snippet(resp)}")
        forms = [f for f in parse_forms(resp.text) if f["method"] == "post"]
        check(forms, f"{method} {url}: a page without a POST form: {snippet(resp)}")
        form = forms[0]
        data = fill_form(form, login_name)
        log(f"provider step {step}: form to {form['action'] or url} with fields "
            f"{[name for name, _ in data]}")
        method, url = "POST", urljoin(resp.url, form["action"] or resp.url)
    raise Failure(f"provider did not redirect to kith's callback within {MAX_STEPS} steps")


def with_state(url, new_state):
    parts = urlsplit(url)
    query = [(k, new_state if k == "state" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_login_flows(kith, idp_id):
    resp = requests.get(f"{kith}/_matrix/client/v3/login", timeout=TIMEOUT)
    check(resp.status_code == 200, f"GET /login: {resp.status_code} {snippet(resp)}")
    flows = resp.json().get("flows")
    check(isinstance(flows, list), f"GET /login: no flows list: {resp.text}")
    types = [flow.get("type") for flow in flows]
    check("m.login.token" in types, f"GET /login: no m.login.token flow in {types}")
    sso = [flow for flow in flows if flow.get("type") == "m.login.sso"]
    check(sso, f"GET /login: no m.login.sso flow in {types}")
    idps = [idp for flow in sso for idp in (flow.get("identity_providers") or [])]
    check(any(isinstance(idp, dict) and idp.get("id") == idp_id for idp in idps),
          f"GET /login: identity provider {idp_id!r} not in {idps}")
    log(f"login flows: {types}; identity providers: {idps}")


def sso_login_token(kith, idp_id, login_name, tamper_state, done_url, other_browser=False):
    session = requests.Session()
    redirect = f"{kith}/_matrix/client/v3/login/sso/redirect/{idp_id}"
    resp = session.get(redirect, params={"redirectUrl": done_url}, allow_redirects=False, timeout=TIMEOUT)
    check(resp.status_code == 302, f"GET {resp.url}: expected 302, got {resp.status_code}: {snippet(resp)}")
    auth_url = urljoin(resp.url, resp.headers.get("Location", ""))
    log(f"kith sso redirect -> {auth_url}")
    auth_query = parse_qs(urlsplit(auth_url).query)
    for param in ("client_id", "redirect_uri", "state", "code_challenge"):
        check(param in auth_query, f"authorization request lacks {param}: {auth_url}")
    check(auth_query.get("response_type") == ["code"], f"response_type is not code: {auth_url}")
    check(auth_query.get("code_challenge_method") == ["S256"], f"code_challenge_method is not S256: {auth_url}")
    check("openid" in auth_query.get("scope", [""])[0].split(), f"scope lacks openid: {auth_url}")
    check(auth_query["redirect_uri"] == [kith + CALLBACK_PATH],
          f"redirect_uri {auth_query['redirect_uri']} is not {kith + CALLBACK_PATH}")

    callback = drive_provider(session, auth_url, kith, login_name)

    if other_browser:
        resp = requests.get(callback, allow_redirects=False, timeout=TIMEOUT)
        log(f"callback from another browser -> {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return None, {"status": resp.status_code, "body": body}

    if tamper_state:
        old_state = parse_qs(urlsplit(callback).query)["state"][0]
        tampered = with_state(callback, old_state + "x" if old_state else "tampered")
        resp = session.get(tampered, allow_redirects=False, timeout=TIMEOUT)
        log(f"tampered callback {tampered} -> {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return None, {"status": resp.status_code, "body": body}

    resp = session.get(callback, allow_redirects=False, timeout=TIMEOUT)
    confirmed = resp.status_code == 200
    if confirmed:
        # A client kith does not list: the user is asked first; Continue is the way on.
        links = [link for link in parse_links(resp.text) if "loginToken=" in link]
        check(len(links) == 1, f"confirmation page without one Continue link: {snippet(resp)}")
        location = links[0]
    else:
        check(resp.status_code == 302, f"GET {callback}: expected 302, got {resp.status_code}: {snippet(resp)}")
        location = resp.headers.get("Location", "")
    log(f"kith callback -> {location}")
    check(location.startswith(done_url + "?loginToken="),
          f"kith callback led to {location!r}, not {done_url}?loginToken=...")
    tokens = parse_qs(urlsplit(location).query).get("loginToken")
    check(tokens and tokens[0], f"no loginToken in {location}")
    return tokens[0], {"confirmed": confirmed}


def reauth(fallback_url, kith, login_name):
    session = requests.Session()
    resp = session.get(fallback_url, headers={"Accept": "text/html"}, timeout=TIMEOUT)
    check(resp.status_code == 200, f"GET {fallback_url}: {resp.status_code} {snippet(resp)}")
    forms = [f for f in parse_forms(resp.text) if f["method"] == "post"]
    check(forms, f"fallback page without a confirmation form: {snippet(resp)}")
    fields = [(f["name"], f["value"]) for f in forms[0]["fields"] if f["name"]]
    start = urljoin(resp.url, forms[0]["action"] or resp.url)
    resp = session.post(start, data=fields, allow_redirects=False, timeout=TIMEOUT)
    check(resp.status_code == 302, f"POST {start}: expected 302, got {resp.status_code}: {snippet(resp)}")
    callback = drive_provider(session, urljoin(start, resp.headers["Location"]), kith, login_name)
    resp = session.get(callback, headers={"Accept": "text/html"}, allow_redirects=False, timeout=TIMEOUT)
    return {"status": resp.status_code, "body": resp.text}


async def redeem(kith, login_token):
    config = AsyncClientConfig(request_timeout=TIMEOUT, max_timeouts=1, max_limit_exceeded=0)
    client = AsyncClient(kith, "", config=config)
    try:
        info = await asyncio.wait_for(client.login_info(), TIMEOUT)
        check(isinstance(info, LoginInfoResponse), f"nio login_info: {info}")
        check("m.login.sso" in info.flows and "m.login.token" in info.flows, f"nio login_info flows: {info.flows}")
        resp = await asyncio.wait_for(client.login(token=login_token, device_name="nio-sso"), TIMEOUT)
        check(isinstance(resp, LoginResponse), f"nio login(token=...): {resp}")
        me = await asyncio.wait_for(client.whoami(), TIMEOUT)
        check(isinstance(me, WhoamiResponse), f"nio whoami: {me}")
        check(me.user_id == resp.user_id, f"whoami says {me.user_id}, login said {resp.user_id}")
        check(me.device_id in (None, resp.device_id), f"whoami device {me.device_id}, login said {resp.device_id}")
        return {
            "user_id": resp.user_id,
            "device_id": resp.device_id,
            "access_token": resp.access_token,
            "login_token": login_token,
        }
    finally:
        await client.close()


def main(argv):
    args = argv[1:]
    tamper = "--tamper-state" in args
    other = "--other-browser" in args
    args = [a for a in args if a not in ("--tamper-state", "--other-browser")]
    done_url = DONE_URL
    if "--redirect-url" in args:
        i = args.index("--redirect-url")
        done_url = args[i + 1]
        del args[i:i + 2]
    fallback_url = None
    if "--reauth" in args:
        i = args.index("--reauth")
        fallback_url = args[i + 1]
        del args[i:i + 2]
    try:
        if fallback_url is not None:
            if len(args) != 2:
                raise SystemExit("usage: nio_sso.py --reauth FALLBACK_URL KITH_BASE_URL LOGIN_NAME")
            print(json.dumps(reauth(fallback_url, args[0].rstrip("/"), args[1])), flush=True)
            return 0
        if len(args) != 3:
            raise SystemExit("usage: nio_sso.py KITH_BASE_URL IDP_ID LOGIN_NAME [--tamper-state] [--redirect-url URL]")
        kith, idp_id, login_name = args[0].rstrip("/"), args[1], args[2]
        check_login_flows(kith, idp_id)
        login_token, extra = sso_login_token(kith, idp_id, login_name, tamper, done_url, other)
        if tamper or other:
            print(json.dumps(extra), flush=True)
            return 0
        result = asyncio.run(redeem(kith, login_token))
        result.update(extra)
    except Failure as err:
        log(f"FAILED: {err}")
        return 1
    except (requests.RequestException, asyncio.TimeoutError, OSError) as err:
        log(f"FAILED: {type(err).__name__}: {err}")
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
