"""The console's browser sign-in, where the platform signs nobody in (Flex Consumption: App
Service Authentication is not enforced there, so the app checks Entra ID tokens itself).

OpenID Connect's authorization code flow with PKCE, through MSAL (Microsoft's maintained library
for Entra ID; it builds the request, keeps the state, nonce and code verifier, checks them and
the ID token when the code comes back):

- `/console/signin` sends the browser to Entra ID with a fresh state, nonce and code challenge,
  kept for ten minutes in a cookie of their own (`__Host-`, HttpOnly, Secure; SameSite=None, as
  Entra ID posts the code back from its own site: `form_post`, so no code is ever in a URL, a
  log line or a Referer);
- `/console/signin/callback` checks the state, redeems the code as the console's app registration,
  proving itself with a client assertion: the Function App's managed identity's token for
  `api://AzureADTokenExchange` (a federated credential on the app registration; no secret
  anywhere), and keeps the access token it gets as the session cookie;
- every request then proves that cookie as it proves an `Authorization: Bearer` header
  (`EntraBearer`: signature, issuer, audience, tenant, expiry): no server-side session store and
  no key to sign sessions with; a session lasts as long as its token (about an hour), then the
  browser is sent to sign in again (silently, while the Entra ID session lasts).

The session cookie is read on console pages only (`/console…`): the API takes bearer tokens, so a
cookie cannot carry a cross-site request there; the console's forms carry their CSRF token.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msal
import msal.exceptions
import orjson
import requests

from aegis.errors import AegisError

ASSERTION_SCOPE = "api://AzureADTokenExchange/.default"  # what a federated credential accepts from Entra ID
FLOW_COOKIE = "__Host-aegis_signin"
SESSION_COOKIE = "__Host-aegis_session"
FLOW_FOR = 600  # seconds a sign-in may take, from the redirect to Entra ID to the callback
MAX_COOKIE = 4000  # bytes: browsers keep at most about 4 KiB a cookie (its name and attributes too)
# the parts of MSAL's flow that finishing it needs (its `auth_uri` is long and only for the redirect)
_KEPT = ("state", "redirect_uri", "scope", "code_verifier", "nonce", "claims_challenge")


class SignInFailed(AegisError):
    """The sign-in could not be completed: the reason is shown, with how to start again."""


class SignInUnavailable(AegisError):
    """Entra ID could not be reached (its configuration or its token endpoint): try again later."""


# what MSAL raises when Entra ID cannot be reached or answers with an HTTP error
_UNREACHABLE = (OSError, requests.RequestException, msal.exceptions.MsalError)


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a console path of this site, never another site."""
    if not path or not path.startswith("/console") or "//" in path or "\\" in path or any(c < " " for c in path):
        return "/console"
    return path[:1024]


@dataclass
class SignIn:
    """The console app registration's authorization code flow (`AEGIS_CONSOLE_AUTH=bearer`, with
    `AEGIS_CONSOLE_URL` naming where the console is: its `/signin/callback` is the redirect URI
    the app registration lists)."""

    tenant: str
    client_id: str
    console_url: str  # https://<host>/console
    assertion: Callable[[], str]  # the managed identity's token for api://AzureADTokenExchange
    authority: str = "https://login.microsoftonline.com"
    tls: bool | str = True  # what TLS certificates to trust (tests: the local server's CA file)
    _app: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def redirect_uri(self) -> str:
        return f"{self.console_url.rstrip('/')}/signin/callback"

    @property
    def scopes(self) -> list[str]:
        """The console's own API: the token's audience is what `EntraBearer` accepts."""
        return [f"api://{self.client_id}/.default"]

    def start(self, next_path: str | None) -> tuple[str, str]:
        """(the Entra ID URL to send the browser to, the flow cookie's value)."""
        try:  # MSAL reads the tenant's OpenID configuration on first use
            flow = self._msal().initiate_auth_code_flow(self.scopes, redirect_uri=self.redirect_uri,
                                                        response_mode="form_post")  # fmt: skip
        except (*_UNREACHABLE, ValueError) as exc:  # ValueError: MSAL found no configuration there
            raise SignInUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from None
        kept = {k: flow[k] for k in _KEPT if k in flow} | {"next": safe_next(next_path)}
        return str(flow["auth_uri"]), base64.urlsafe_b64encode(orjson.dumps(kept)).decode()

    def finish(self, cookie: str | None, query: Mapping[str, str]) -> tuple[str, int, str]:
        """(the access token, its lifetime in seconds, where to go next) for the callback's fields
        (`code` and `state`, or Entra ID's `error`), given the flow cookie."""
        if "error" in query:
            raise SignInFailed(f"Entra ID refused the sign-in: {query['error'][:64]}: "
                               f"{query.get('error_description', '')[:300]}")  # fmt: skip
        flow = _flow(cookie)
        goto = safe_next(flow.pop("next", None))
        try:
            result = self._msal().acquire_token_by_auth_code_flow(flow, dict(query))
        except ValueError as exc:  # MSAL: the state or the nonce is not this browser's sign-in
            raise SignInFailed(f"this is not the sign-in this browser started ({exc}): start again") from None
        except _UNREACHABLE as exc:
            raise SignInUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from None
        token = result.get("access_token")
        if not isinstance(token, str) or not token:
            raise SignInFailed(f"Entra ID gave no token: {str(result.get('error'))[:64]}: "
                               f"{str(result.get('error_description', ''))[:300]}")  # fmt: skip
        if len(token) + len(SESSION_COOKIE) + 100 > MAX_COOKIE:
            raise SignInFailed(
                f"the access token is {len(token)} bytes, too large for a browser session: "
                "give people the app roles rather than many group claims, or use the API with a token"
            )
        return token, int(result.get("expires_in") or 3600), goto

    @property
    def signed_out(self) -> str:
        """Entra ID's sign-out, coming back to the console."""
        back = quote(self.console_url, safe="")
        return f"{self.authority}/{self.tenant}/oauth2/v2.0/logout?post_logout_redirect_uri={back}"

    def _msal(self) -> Any:
        """One MSAL application per worker (it fetches the tenant's OpenID configuration once)."""
        with self._lock:
            if self._app is None:
                http = None
                if isinstance(self.tls, str):  # a CA file of its own: requests would let REQUESTS_CA_BUNDLE win
                    http = requests.Session()
                    http.verify, http.trust_env = self.tls, False
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential={"client_assertion": self.assertion},
                    authority=f"{self.authority}/{self.tenant}", http_client=http, timeout=10,
                    instance_discovery=False,  # the authority is the tenant's own: its metadata is fetched from it
                )  # fmt: skip
            return self._app


def _flow(cookie: str | None) -> dict[str, Any]:
    if not cookie:
        raise SignInFailed("no sign-in was started in this browser, or it took longer than 10 minutes, or the "
                           "browser refused its cookie: start again")  # fmt: skip
    try:
        flow = orjson.loads(base64.urlsafe_b64decode(cookie.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise SignInFailed("the sign-in cookie is damaged: start again") from None
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str | list | type(None)) for k in _KEPT):
        raise SignInFailed("the sign-in cookie is damaged: start again")
    return flow
