"""Azure Resource Manager ids: parsed, checked and put in one canonical form.

Resource ids arrive in every case (`/SUBSCRIPTIONS/…/PROVIDERS/MICROSOFT.COGNITIVESERVICES/…`) and
come from attacker-reachable payloads, so nothing downstream uses a raw id: it uses a `ResourceId`,
whose `id` is lower case, has no empty segments and contains only characters ARM allows in names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from aegis.errors import MalformedInput

MAX_LENGTH = 1024
# Characters ARM allows inside a path segment: letters, digits and - _ . ( ) ~ : @ and space.
# Anything else (/ \ ? # % & quotes, angle brackets, control characters) cannot be in a real id.
_SEGMENT = re.compile(r"^[\w\-.()~:@ ]+$")


@dataclass(frozen=True)  # no slots: orjson serializes a __dict__ several times faster (in events)
class ResourceId:
    """A canonical (lower-case) ARM id and its parts.

    `type` is the full provider type (`microsoft.cognitiveservices/accounts/deployments`);
    `name` is the last name segment (None for a provider or scope id).
    """

    id: str
    subscription: str | None = None
    resource_group: str | None = None
    provider: str | None = None
    type: str | None = None
    name: str | None = None
    tenant: str | None = None

    def parent(self) -> ResourceId | None:
        """The enclosing resource of a child resource (an account for a deployment)."""
        if not self.type or self.type.count("/") < 2:
            return None
        parts = self.id.split("/")
        return parse_resource_id("/".join(parts[:-2]))


def parse_resource_id(value: object) -> ResourceId:
    """Parse an ARM id (subscription, resource group, resource, child resource or tenant scope).

    Raises `MalformedInput` with the reason when `value` is not an id Azure could have written.
    """
    if not isinstance(value, str):
        raise MalformedInput(f"resource id is {type(value).__name__}, not a string")
    return _parse(value)


@lru_cache(maxsize=4096)  # a stream names the same few resources again and again
def _parse(value: str) -> ResourceId:
    if not value or len(value) > MAX_LENGTH:
        raise MalformedInput("resource id is empty or longer than 1024 characters")
    if not value.startswith("/"):
        raise MalformedInput("resource id does not start with '/'")
    segments = value.strip().rstrip("/").lower().split("/")[1:]
    if any(not s or not _SEGMENT.match(s) or s in (".", "..") for s in segments):
        raise MalformedInput("resource id has an empty or invalid segment")
    canonical = "/" + "/".join(segments)
    head, rest = segments[0], segments[1:]
    if head == "tenants" and rest:
        tenant, rest = rest[0], rest[1:]
        provider, type_, name = _providers(rest, canonical)
        return ResourceId(canonical, provider=provider, type=type_, name=name, tenant=tenant)
    if head != "subscriptions" or not rest:
        raise MalformedInput("resource id does not start with /subscriptions/{id} or /tenants/{id}")
    subscription, rest = rest[0], rest[1:]
    group = None
    if rest[:1] == ["resourcegroups"]:
        if len(rest) < 2:
            raise MalformedInput("resource id names no resource group")
        group, rest = rest[1], rest[2:]
    provider, type_, name = _providers(rest, canonical)
    return ResourceId(canonical, subscription, group, provider, type_, name)


def _providers(rest: list[str], canonical: str) -> tuple[str | None, str | None, str | None]:
    if not rest:
        return None, None, None
    if rest[0] != "providers" or len(rest) < 2:
        raise MalformedInput("resource id has segments that are not under /providers/")
    namespace, pairs = rest[1], rest[2:]
    if not pairs:
        return namespace, namespace, None
    types = pairs[0::2]
    names = pairs[1::2]
    name = names[-1] if len(names) == len(types) else None
    return namespace, "/".join([namespace, *types]), name


def try_parse_resource_id(value: object) -> ResourceId | None:
    """For optional, secondary ids (an entity's AzureID): a bad one is left out, not fatal."""
    if value in (None, ""):
        return None
    try:
        return parse_resource_id(value)
    except MalformedInput:
        return None
