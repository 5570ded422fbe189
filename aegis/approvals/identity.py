"""Who is asking, and what they may do.

In Azure the console and the approvals API sit behind App Service Authentication (Entra ID): the
platform signs the person in and passes the claims in the `X-MS-CLIENT-PRINCIPAL` header (base64
JSON), which it strips from outside requests. That holds only while authentication is switched on,
so the header is believed only where the platform says authentication is on (`WEBSITE_AUTH_ENABLED`
is true): anywhere else (authentication off, `func start`, a container) every request is refused
rather than trusting a header anyone could send.

`aegis serve` runs on 127.0.0.1 for the person who started it: that person is the principal.

Authorization follows the response plan's `access`: app roles or groups may decide; reader roles
may look. People are compared by their Entra object id (`oid`), never by the name they show: one
person under two sign-in names is still one approver. Names are for display.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from aegis.approvals.botauth import Unauthorized
from aegis.errors import AegisError
from aegis.respond.playbooks import ResponsePlan

HEADER = "x-ms-client-principal"
MAX_HEADER = 32_768  # the platform's header is a few KB; more is not the platform's
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
ROLE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


class NotSignedIn(AegisError):
    """No principal the app can believe: HTTP 401."""


class Forbidden(AegisError):
    """Signed in, without the role or group the request needs: HTTP 403."""


@dataclass(frozen=True)
class Principal:
    name: str  # the sign-in name, lower case: how the records name people
    id: str  # the Entra ID object id (or a local name)
    roles: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)


def from_easy_auth(headers: Mapping[str, str], *, environ: Mapping[str, str] = os.environ) -> Principal:
    """The person App Service Authentication signed in, from the request's headers."""
    if environ.get("WEBSITE_AUTH_ENABLED", "").lower() != "true":  # not known to be on: `func start`, containers
        raise NotSignedIn(
            "App Service Authentication is not known to be on for this app (WEBSITE_AUTH_ENABLED is not true): "
            "turn it on (Entra ID) to use the console; no decision is taken on a header anyone could send"
        )
    raw = headers.get(HEADER) or headers.get(HEADER.upper())
    if not raw:
        raise NotSignedIn("not signed in (no client principal from App Service Authentication)")
    if len(raw) > MAX_HEADER:
        raise NotSignedIn("the client principal header is too large")
    try:
        doc = orjson.loads(base64.b64decode(raw, validate=True))
        claims = [(str(c["typ"]), str(c["val"])) for c in doc["claims"]]
        role_typ = str(doc.get("role_typ") or ROLE)
        auth_typ = str(doc.get("auth_typ", ""))
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise NotSignedIn(f"the client principal header is not valid ({type(exc).__name__})") from None
    if auth_typ.lower() not in {"aad", "aadv2", "oidc"}:
        raise NotSignedIn(f"sign in with Entra ID (this principal came from {auth_typ[:40]!r})")

    def values(*types: str) -> list[str]:
        return [v for t, v in claims if t in types]

    oid = next(iter(values(OID, "oid")), "")
    name = next(iter(values("preferred_username", UPN, "upn", "email")), "")
    if not name and oid:
        name = f"app:{oid}"  # an application calling the API with its own identity
    if not oid or not name:
        raise NotSignedIn("the client principal names no user (no object id or sign-in name)")
    return Principal(
        name=name.strip().lower()[:256],
        id=oid.lower(),
        roles=frozenset(values(role_typ, "roles", ROLE)),
        groups=frozenset(g.lower() for g in values("groups")),
    )


def from_bearer(headers: Mapping[str, str], verify: Callable[[str | None], Mapping[str, Any]]) -> Principal:
    """The caller an Entra ID access token proves (`Authorization: Bearer`, checked by `verify`):
    what the app believes where App Service Authentication does not block unauthenticated callers
    (the Flex Consumption plan, as its documentation says), whatever headers come with it."""
    try:
        claims = verify(headers.get("authorization") or headers.get("Authorization"))
    except Unauthorized as exc:
        raise NotSignedIn(f"sign in with an Entra ID token for this app ({exc})") from None
    oid = str(claims.get("oid") or "")
    name = str(claims.get("preferred_username") or claims.get("upn") or "") or (f"app:{oid}" if oid else "")
    if not oid:
        raise NotSignedIn("the token names no object id")
    return Principal(name=name.strip().lower()[:256], id=oid.lower(),
                     roles=frozenset(map(str, claims.get("roles") or ())),
                     groups=frozenset(str(g).lower() for g in claims.get("groups") or ()))  # fmt: skip


def encode_easy_auth(name: str, oid: str, *, roles: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> str:
    """The header App Service Authentication would send for this person (tests, local tooling)."""
    claims = [{"typ": OID, "val": oid}, {"typ": "preferred_username", "val": name}, {"typ": "name", "val": name}]
    claims += [{"typ": "roles", "val": r} for r in roles] + [{"typ": "groups", "val": g} for g in groups]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(orjson.dumps(doc)).decode()


def may_decide(p: Principal, plan: ResponsePlan) -> bool:
    groups = {g.lower() for g in plan.access.approver_groups} | {e.group.lower() for e in plan.escalation}
    return bool(p.roles & set(plan.access.approver_roles) or p.groups & groups)


def may_triage(p: Principal, plan: ResponsePlan) -> bool:
    return may_decide(p, plan) or bool(p.roles & set(plan.access.analyst_roles))


def may_read(p: Principal, plan: ResponsePlan) -> bool:
    return may_triage(p, plan) or bool(p.roles & set(plan.access.reader_roles))


def require(p: Principal, plan: ResponsePlan, *, decide: bool = False, triage: bool = False) -> Principal:
    if decide and not may_decide(p, plan):
        roles = ", ".join(plan.access.approver_roles) or "none"
        raise Forbidden(f"{p.name} may not decide steps: it needs an approver role ({roles}) or group")
    if triage and not may_triage(p, plan):
        roles = ", ".join([*plan.access.analyst_roles, *plan.access.approver_roles]) or "none"
        raise Forbidden(f"{p.name} may not triage incidents: it needs an analyst or approver role ({roles})")
    if not may_read(p, plan):
        raise Forbidden(f"{p.name} has no role for Aegis (reader, analyst or approver)")
    return p
