"""Who sent an activity to `/api/messages`: the Bot Framework's signed token, checked as its
published contract says, before anything in the activity is believed.

The endpoint is outside App Service Authentication (Teams cannot sign in there): the token in the
`Authorization` header is the only proof. It must be
- a JWT signed (RS256) by a key in the Bot Framework's published keys (the OpenID metadata's
  `jwks_uri`, fetched over https and cached for a day; an unknown key id fetches them again, at
  most once every five minutes, so a forged `kid` cannot make us hammer the endpoint);
- issued by `https://api.botframework.com`, for this bot (`aud` = the bot's app id: its managed
  identity's client id), not expired and already valid (five minutes of clock skew);
- endorsed for the channel the activity says it came from (`msteams`);
- and the activity's `serviceUrl` must be the token's: replies go only where the signer said.
Anything else is `Unauthorized` (HTTP 401), with the reason logged and nothing decided.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

from aegis.errors import AegisError

OPENID_METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"
ISSUER = "https://api.botframework.com"
LEEWAY = 300  # seconds of clock skew
KEYS_FOR = 86_400  # seconds the published keys are kept
REFETCH_AFTER = 300  # seconds before an unknown key id may fetch them again


class Unauthorized(AegisError):
    """The activity's token does not prove that the Bot Framework sent it to this bot: HTTP 401."""


Fetch = Callable[[str], Mapping[str, Any]]  # GET an https URL, its JSON


@dataclass
class SignedTokens:
    """JWTs signed by the keys an OpenID provider publishes (its metadata's `jwks_uri`), fetched
    over https, kept for a day, fetched again for an unknown key id at most every five minutes."""

    fetch: Fetch
    metadata_url: str
    clock: Callable[[], float] = time.time
    _keys: dict[str, PyJWK] = field(default_factory=dict, repr=False)
    _endorsements: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _fetched: float = field(default=-1e18, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def claims(
        self, authorization: str | None, *, audience: str | list[str], issuer: str | list[str]
    ) -> tuple[str, dict[str, Any]]:
        """(signing key id, claims) of the `Bearer` token, if signed by a published key (RS256), for
        `audience`, from `issuer`, unexpired; else `Unauthorized`."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("no bearer token")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"not a JWT: {exc}") from None
        if header.get("alg") != "RS256":
            raise Unauthorized(f"signed with {str(header.get('alg'))[:16]!r}, not RS256")
        kid = str(header.get("kid") or "")
        key = self._key(kid)
        try:
            found: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer, leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from None
        return kid, found

    def endorsed(self, kid: str) -> frozenset[str]:
        return self._endorsements.get(kid, frozenset())

    def _key(self, kid: str) -> PyJWK:
        with self._lock:
            now = self.clock()
            stale = now - self._fetched > KEYS_FOR
            unknown = kid not in self._keys and now - self._fetched > REFETCH_AFTER
            if stale or unknown:
                self._refresh(now)
            key = self._keys.get(kid)
        if key is None:
            raise Unauthorized(f"the token's signing key {kid[:64]!r} is not one its issuer publishes")
        return key

    def _refresh(self, now: float) -> None:
        metadata = self.fetch(self.metadata_url)
        jwks_uri = str(metadata.get("jwks_uri") or "")
        if not jwks_uri.startswith("https://"):
            raise Unauthorized("the OpenID metadata names no https jwks_uri")
        keys, endorsements = {}, {}
        for raw in self.fetch(jwks_uri).get("keys", ()):
            try:
                key = PyJWK.from_dict(dict(raw))
            except jwt.PyJWTError:
                continue  # a key of another type: not one that signs these tokens
            kid = str(raw.get("kid") or "")
            keys[kid], endorsements[kid] = key, frozenset(map(str, raw.get("endorsements") or ()))
        self._keys, self._endorsements, self._fetched = keys, endorsements, now


@dataclass
class BotAuth:
    """The Bot Framework's tokens on `/api/messages`."""

    app_id: str  # the bot's Microsoft app id: the audience its tokens are for
    fetch: Fetch
    metadata_url: str = OPENID_METADATA
    tokens: SignedTokens = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tokens = SignedTokens(self.fetch, self.metadata_url)

    def verify(self, authorization: str | None, activity: Mapping[str, Any]) -> dict[str, Any]:
        """The token's claims, if it proves the activity; else `Unauthorized`."""
        kid, claims = self.tokens.claims(authorization, audience=self.app_id, issuer=ISSUER)
        channel = str(activity.get("channelId") or "")
        if channel not in self.tokens.endorsed(kid):
            raise Unauthorized(f"the signing key is not endorsed for the channel {channel[:32]!r}")
        service = str(activity.get("serviceUrl") or "")
        if claims.get("serviceurl", claims.get("serviceUrl")) != service:
            raise Unauthorized("the activity's serviceUrl is not the one its token was issued for")
        return claims


@dataclass
class EntraBearer:
    """Entra ID access tokens for the console's app registration (`api://<client id>`): who calls,
    proven by the token itself rather than by a header a platform may or may not have set."""

    tenant: str
    client_id: str
    fetch: Fetch
    authority: str = "https://login.microsoftonline.com"  # where its metadata and keys are fetched
    issuer_authority: str = "https://login.microsoftonline.com"  # what its tokens name as their issuer
    tokens: SignedTokens = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tokens = SignedTokens(self.fetch, f"{self.authority}/{self.tenant}/v2.0/.well-known/openid-configuration")

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The claims of a valid token for this app, from this tenant (v2 or v1 issuer)."""
        issuers = [f"{self.issuer_authority}/{self.tenant}/v2.0", f"https://sts.windows.net/{self.tenant}/"]
        audiences = [f"api://{self.client_id}", self.client_id]
        _, claims = self.tokens.claims(authorization, audience=audiences, issuer=issuers)
        if str(claims.get("tid", "")).lower() != self.tenant.lower():
            raise Unauthorized("the token is not for this tenant")
        return claims
