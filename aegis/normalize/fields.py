"""Typed, bounded reads of payload fields, shared by the normalizers.

Rule: a field a normalizer reads must have the JSON type Azure documents for it. A wrong type makes
the item malformed (dead-lettered with the field's name), so that a changed or forged payload is
seen instead of silently half-read. Strings are cut to a bound, so no field can bloat the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from aegis.arm import ResourceId, parse_resource_id
from aegis.decode import kind_of, loads_nested
from aegis.errors import MalformedInput
from aegis.events import AiResource, Entity, ModelDeployment

AI_PROVIDERS = ("microsoft.cognitiveservices", "microsoft.machinelearningservices")
MAX_TEXT = 1024
MAX_TITLE = 512
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def text(d: dict[str, Any], key: str, *, limit: int = MAX_TEXT, required: bool = False) -> str | None:
    """A string field, stripped and cut to `limit` characters; None when absent, null or empty."""
    value = d.get(key)
    if value is None or value == "":
        if required:
            raise MalformedInput(f"'{key}' is missing")
        return None
    if not isinstance(value, str):
        raise MalformedInput(f"'{key}' is {kind_of(value)}, not a string")
    value = value.strip()
    if not value and required:
        raise MalformedInput(f"'{key}' is empty")
    return value[:limit] or None


def number(d: dict[str, Any], key: str) -> int | float | None:
    """A numeric field; Azure writes some (`resultSignature`, `durationMs`) as strings too."""
    value = d.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    raise MalformedInput(f"'{key}' is {kind_of(value)}, not a number")


def obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    """An object field, which Azure may also send JSON-encoded as a string. Absent → {}."""
    value = loads_nested(d.get(key), key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedInput(f"'{key}' is {kind_of(value)}, not an object")
    return value


def array(d: dict[str, Any], key: str) -> list[Any]:
    """An array field, possibly JSON-encoded as a string. Absent → []."""
    value = loads_nested(d.get(key), key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedInput(f"'{key}' is {kind_of(value)}, not an array")
    return value


def timestamp(d: dict[str, Any], *keys: str) -> datetime:
    """The first present timestamp of `keys`, as an aware UTC datetime. Azure writes 7 fractional
    digits and sometimes no zone (storage export): no zone means UTC."""
    for key in keys:
        value = text(d, key)
        if value is None:
            continue
        try:
            parsed = datetime.fromisoformat(value)  # 3.11+: any number of fractional digits, "Z"
        except ValueError:
            raise MalformedInput(f"'{key}' is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    raise MalformedInput(f"no event time: none of {', '.join(repr(k) for k in keys)} is present")


def resource(d: dict[str, Any], key: str, *, required: bool = False) -> ResourceId | None:
    value = d.get(key)
    if value in (None, ""):
        if required:
            raise MalformedInput(f"'{key}' is missing")
        return None
    try:
        return parse_resource_id(value)
    except MalformedInput as exc:
        raise MalformedInput(f"'{key}': {exc}") from None


def guid(value: object) -> str | None:
    """A lower-case GUID, or None when `value` is not one."""
    if isinstance(value, str) and _GUID.match(value.strip()):
        return value.strip().lower()
    return None


def content_id(record: dict[str, Any]) -> str:
    """A log record's event id: a hash of its canonical content. A record that Event Hubs delivers
    twice, or that arrives with `properties` as a string once and as an object once, gets one id."""
    canonical = dict(record)
    if isinstance(canonical.get("properties"), str):
        with contextlib.suppress(orjson.JSONDecodeError):
            canonical["properties"] = orjson.loads(canonical["properties"])
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]


@lru_cache(maxsize=4096)
def compact_key(key: str) -> str:
    """`Client IP address` → `clientipaddress`: for matching loosely named extended properties."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


def resource_entities(rid: ResourceId) -> list[Entity]:
    """An AI account, or an AI account and its model deployment, for an affected AI resource."""
    if rid.provider not in AI_PROVIDERS or rid.name is None:
        return []
    if rid.type and rid.type.endswith("/deployments"):
        parent = rid.parent()
        out: list[Entity] = [ModelDeployment(name=rid.name, resource_id=parent.id if parent else None)]
        if parent is not None and parent.name:
            out.append(AiResource(resource_id=parent.id, name=parent.name))
        return out
    return [AiResource(resource_id=rid.id, name=rid.name)]


def dedupe(entities: list[Entity]) -> tuple[Entity, ...]:
    seen: dict[tuple[str, str], Entity] = {}
    for e in entities:
        seen.setdefault((e.type, e.key), e)
    return tuple(seen.values())
