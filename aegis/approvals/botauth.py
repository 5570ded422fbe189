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
class BotAuth:
    app_id: str  # the bot's Microsoft app id: the audience its tokens are for
    fetch: Fetch
    metadata_url: str = OPENID_METADATA
    clock: Callable[[], float] = time.time
    _keys: dict[str, PyJWK] = field(default_factory=dict, repr=False)
    _endorsements: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _fetched: float = field(default=-1e18, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def verify(self, authorization: str | None, activity: Mapping[str, Any]) -> dict[str, Any]:
        """The token's claims, if it proves the activity; else `Unauthorized`."""
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
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=self.app_id, issuer=ISSUER, leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from None
        channel = str(activity.get("channelId") or "")
        if channel not in self._endorsements.get(kid, frozenset()):
            raise Unauthorized(f"the signing key is not endorsed for the channel {channel[:32]!r}")
        service = str(activity.get("serviceUrl") or "")
        if claims.get("serviceurl", claims.get("serviceUrl")) != service:
            raise Unauthorized("the activity's serviceUrl is not the one its token was issued for")
        return claims

    def _key(self, kid: str) -> PyJWK:
        with self._lock:
            now = self.clock()
            stale = now - self._fetched > KEYS_FOR
            unknown = kid not in self._keys and now - self._fetched > REFETCH_AFTER
            if stale or unknown:
                self._refresh(now)
            key = self._keys.get(kid)
        if key is None:
            raise Unauthorized(f"the token's signing key {kid[:64]!r} is not one the Bot Framework publishes")
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
