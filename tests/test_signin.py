"""The console's own browser sign-in (Flex Consumption, where App Service Authentication signs
nobody in): the authorization code flow with PKCE through MSAL, against a local HTTPS server
answering as Entra ID does (its OpenID configuration, keys and token endpoint), with a throwaway
signing key. The browser is httpx against the ASGI app: cookies, redirects and all."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from aegis.approvals import web
from aegis.approvals.signin import FLOW_COOKIE, SESSION_COOKIE, SignIn, SignInFailed, safe_next
from tests.test_approvals import planned
from tests.test_bot import ALICE, CONSOLE_APP, FORGER, TENANT, entra, entra_token
from tests.wire import Reply, WireServer

HOST = "https://func-aegis.example"
ASSERTION = "a-managed-identity-token-for-api://AzureADTokenExchange"
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


@pytest.fixture
def console(tmp_path, sqlite_store, server):
    """The console as deployed on Flex: bearer tokens, and the sign-in that sets one as a cookie."""
    resp, store, _, _ = planned(tmp_path, sqlite_store)
    meta = f"/{TENANT}/v2.0/.well-known/openid-configuration"
    server.expect("GET", meta, Reply(200, {  # the tenant's OpenID configuration: MSAL reads it once per worker
        "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "authorization_endpoint": f"{server.url}/{TENANT}/oauth2/v2.0/authorize",
        "token_endpoint": f"{server.url}{TOKEN_PATH}",
        "end_session_endpoint": f"{server.url}/{TENANT}/oauth2/v2.0/logout",
        "jwks_uri": f"{server.url}/{TENANT}/discovery/v2.0/keys",
    }))  # fmt: skip
    verify = entra(server).verify  # and the token check, once, with the signing keys
    flow = SignIn(TENANT, CONSOLE_APP, f"{HOST}/console", assertion=lambda: ASSERTION, authority=server.url,
                  tls=str(server.ca_file))  # fmt: skip
    app = web.create_app(web.Console.over(store, resp, web.bearer_identity(verify)), signin=flow)
    return app, store


class Browser:
    """One browser: a cookie jar, no redirects followed (the test follows them and looks)."""

    def __init__(self, app: Any) -> None:
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HOST)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return asyncio.run(self.client.get(path, **kw))

    def posted(self, fields: dict[str, str]) -> httpx.Response:
        """What Entra ID's page makes the browser post to the callback (`form_post`)."""
        return asyncio.run(self.client.post("/console/signin/callback", data=fields))


def id_token(nonce: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "aud": CONSOLE_APP, "tid": TENANT,
            "oid": ALICE, "sub": "s", "nonce": nonce, "iat": now, "exp": now + 3600, **claims}  # fmt: skip
    return jwt.encode(body, "a-secret-long-enough-for-hs256-tokens", algorithm="HS256")


def signed_in(browser: Browser, server: WireServer, *, token: str | None = None, goto: str = "/console/approvals"):
    """Sign in as Entra ID would let Alice: the redirect, then the callback with a code."""
    started = browser.get(f"/console/signin?next={goto}")
    assert started.status_code == 302
    asked = parse_qs(urlsplit(started.headers["location"]).query)
    server.expect("POST", TOKEN_PATH, Reply(200, {
        "token_type": "Bearer", "expires_in": 3599, "scope": f"api://{CONSOLE_APP}/.default",
        "access_token": token or entra_token(), "id_token": id_token(asked["nonce"][0]),
    }))  # fmt: skip
    return started, asked, browser.posted({"code": "the-code", "state": asked["state"][0]})


def test_a_browser_signs_in_with_the_code_flow_and_its_session_is_the_checked_token(console, server):
    app, _ = console
    browser = Browser(app)
    first = browser.get("/console/approvals?state=awaiting_approval")
    assert first.status_code == 303  # not signed in: sent to sign in, and back here afterwards
    assert first.headers["location"] == "/console/signin?next=%2Fconsole%2Fapprovals%3Fstate%3Dawaiting_approval"

    started, asked, done = signed_in(browser, server)
    to = urlsplit(started.headers["location"])
    assert f"{to.scheme}://{to.netloc}{to.path}" == f"{server.url}/{TENANT}/oauth2/v2.0/authorize"
    assert asked["client_id"] == [CONSOLE_APP]
    assert asked["response_type"] == ["code"]
    assert asked["redirect_uri"] == [f"{HOST}/console/signin/callback"]
    assert asked["code_challenge_method"] == ["S256"]
    assert asked["response_mode"] == ["form_post"]  # the code comes in a POST body, never in a URL
    assert f"api://{CONSOLE_APP}/.default" in asked["scope"][0].split()
    flow_cookie = started.headers["set-cookie"]
    assert flow_cookie.startswith(f"{FLOW_COOKIE}=")
    assert all(a in flow_cookie.lower() for a in ("httponly", "secure", "samesite=none", "max-age=600", "path=/"))

    assert done.status_code == 303
    assert done.headers["location"] == "/console/approvals"
    redeemed = next(s for s in server.seen if s.method == "POST" and s.path == TOKEN_PATH).body
    assert redeemed["grant_type"] == "authorization_code"
    assert (redeemed["code"], redeemed["redirect_uri"]) == ("the-code", f"{HOST}/console/signin/callback")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(redeemed["code_verifier"].encode()).digest()).rstrip(b"=")
    assert asked["code_challenge"] == [challenge.decode()]  # PKCE: the verifier only this browser's flow held
    assert redeemed["client_assertion"] == ASSERTION  # the managed identity proves the app: no secret
    assert redeemed["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in redeemed
    session = [c for c in done.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")]
    assert session
    assert all(a in session[0].lower() for a in ("httponly", "secure", "samesite=lax", "path=/"))

    page = browser.get("/console/approvals")
    assert page.status_code == 200
    assert "alice@contoso.com" in page.text  # who the checked token says


def test_a_callback_that_is_not_this_browsers_sign_in_sets_no_session(console, server):
    app, _ = console
    browser = Browser(app)
    started = browser.get("/console/signin")
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    forged = browser.posted({"code": "the-attackers-code", "state": "not-the-state"})
    assert forged.status_code == 401
    assert "not the sign-in this browser started" in forged.text
    assert not any(c.startswith(SESSION_COOKIE) for c in forged.headers.get_list("set-cookie"))
    assert not [s for s in server.seen if s.path == TOKEN_PATH]  # nothing was redeemed

    stranger = Browser(app)  # a link to the callback opened in a browser that started no sign-in
    cold = stranger.posted({"code": "c", "state": state})
    assert cold.status_code == 401
    assert "no sign-in was started in this browser" in cold.text

    refused = Browser(app)
    refused.get("/console/signin")
    denied = refused.posted({"error": "access_denied", "error_description": "AADSTS50105: not assigned"})
    assert denied.status_code == 401
    assert "Entra ID refused the sign-in: access_denied: AADSTS50105: not assigned" in denied.text


def test_a_session_cookie_proves_nothing_a_bearer_token_would_not(console, server):
    app, _ = console
    for token in (
        entra_token(key=FORGER),  # signed by someone else
        entra_token(exp=int(time.time()) - 3600),  # expired
        entra_token(aud="api://another-app"),  # for another app
        "not-a-token",
    ):
        browser = Browser(app)
        browser.client.cookies.set(SESSION_COOKIE, token, domain="func-aegis.example")
        page = browser.get("/console/approvals")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/signin?")
    browser = Browser(app)
    browser.client.cookies.set(SESSION_COOKIE, entra_token(), domain="func-aegis.example")
    assert browser.get("/console/approvals").status_code == 200
    assert browser.get("/api/approvals").status_code == 401  # the API takes bearer tokens only, never the cookie


def test_after_signing_in_the_browser_goes_only_to_a_console_page_of_this_site(console, server):
    app, _ = console
    _, _, done = signed_in(Browser(app), server, goto="https://evil.example/phish")
    assert done.headers["location"] == "/console"
    for path in (
        "//evil.example/console",
        "/console\\@evil",
        "/console/../../x\r\nSet-Cookie: a=b",
        None,
        "",
        "https:evil.example",
        "/elsewhere",
    ):
        assert safe_next(path) == "/console"
    assert safe_next("/console/incidents/i1?tab=steps") == "/console/incidents/i1?tab=steps"


def test_a_token_too_large_for_a_cookie_or_a_damaged_flow_cookie_is_refused_with_what_to_do(console, server):
    app, _ = console
    many_groups = [f"00000000-0000-4000-8000-{n:012}" for n in range(150)]
    _, _, done = signed_in(Browser(app), server, token=entra_token(groups=many_groups))
    assert done.status_code == 401
    assert "too large for a browser session: give people the app roles" in done.text
    assert not any(c.startswith(SESSION_COOKIE) for c in done.headers.get_list("set-cookie"))
    flow = SignIn(TENANT, CONSOLE_APP, f"{HOST}/console", assertion=lambda: ASSERTION, authority=server.url,
                  tls=str(server.ca_file))  # fmt: skip
    for damaged in ("%%%not-base64%%%", base64.urlsafe_b64encode(b"[1, 2]").decode()):
        with pytest.raises(SignInFailed, match="damaged"):
            flow.finish(damaged, {"code": "c", "state": "s"})


def test_signing_out_clears_the_session_and_signs_out_of_entra(console, server):
    app, _ = console
    browser = Browser(app)
    signed_in(browser, server)
    out = browser.get("/console/signout")
    assert out.status_code == 303
    assert out.headers["location"].startswith(f"{server.url}/{TENANT}/oauth2/v2.0/logout?post_logout_redirect_uri=")
    assert browser.get("/console/approvals").status_code == 303  # signed in no more


@pytest.mark.parametrize(("url", "signs_in"), [("https://func-aegis.example", True), ("http://127.0.0.1:8765", False)])
def test_the_deployed_console_signs_browsers_in_where_it_is_served_over_https(tmp_path, monkeypatch, url, signs_in):
    from aegis import runtime

    for name, value in {"AEGIS_DB": str(tmp_path / "c.db"), "AEGIS_CONSOLE_AUTH": "bearer", "AEGIS_TENANT_ID": TENANT,
                        "AEGIS_AUTH_CLIENT_ID": CONSOLE_APP, "AEGIS_CONSOLE_URL": url}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    runtime.reset()
    try:
        page = Browser(runtime.console_app()).get("/console/audit")
    finally:
        runtime.pipeline().store.close()
        runtime.reset()
    if signs_in:
        assert page.status_code == 303
        assert page.headers["location"] == "/console/signin?next=%2Fconsole%2Faudit"
    else:  # no https address to come back to: nobody to sign in, a token is still all it takes
        assert page.status_code == 401


def test_when_entra_id_cannot_be_reached_the_browser_is_told_and_nothing_is_set(tmp_path, sqlite_store, server):
    resp, store, _, _ = planned(tmp_path, sqlite_store)  # the tenant's metadata is not served: MSAL cannot start
    flow = SignIn(TENANT, CONSOLE_APP, f"{HOST}/console", assertion=lambda: ASSERTION, authority=server.url,
                  tls=str(server.ca_file))  # fmt: skip
    app = web.create_app(web.Console.over(store, resp, web.bearer_identity(lambda _: {})), signin=flow)
    page = Browser(app).get("/console/signin")
    assert page.status_code == 502
    assert "Entra ID could not be reached to sign you in" in page.text
    assert "set-cookie" not in page.headers
