"""Typed, bounded reads of payload fields, shared by the normalizers.

Rule: a field a normalizer reads must have the JSON type Azure documents for it. A wrong type makes
the item malformed (dead-lettered with the field's name), so that a changed or forged payload is
seen instead of silently half-read. Strings are cut to a bound, so no field can bloat the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from aegis.arm import ResourceId, parse_resource_id
from aegis.decode import kind_of, loads_nested
from aegis.errors import MalformedInput
from aegis.events import ORIGIN_RANK, AiResource, Entity, ModelDeployment

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


# Numbers an event may carry: exact in a double and in SQLite's and Table Storage's 64-bit integers,
# and far above any real byte, token or millisecond count.
MAX_NUMBER = 2**53 - 1


def number(
    d: dict[str, Any], key: str, *, refused: list[str] | None = None, minimum: float = -MAX_NUMBER
) -> int | float | None:
    """A numeric field, bounded and finite. Azure writes some (`resultSignature`, `durationMs`) as
    numeric strings, and some counters as single-element arrays (`[42]`): both are read as numbers.

    A value that is not finite, outside [`minimum`, MAX_NUMBER] or not a number at all is refused:
    with a `refused` list the field is left out and its name appended there (the record is kept
    without it, and the event says which fields were refused); without one the record is malformed.
    """
    value = d.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == "" or isinstance(value, bool):
        return None
    problem = None
    parsed: int | float | None = None
    if isinstance(value, (int, float)):
        parsed = value
    elif isinstance(value, str):
        parsed = _numeric_text(value.strip())
        if parsed is None:
            problem = "not a number"
    else:
        problem = f"{kind_of(value)}, not a number"
    if parsed is not None:
        if isinstance(parsed, float) and not math.isfinite(parsed):
            problem = "not a finite number"
        elif not minimum <= parsed <= MAX_NUMBER:
            problem = f"out of range ({_fmt(minimum)} to {MAX_NUMBER})"
    if problem is None:
        return parsed
    if refused is None:
        raise MalformedInput(f"'{key}' is {problem}")
    refused.append(key[:64])
    return None


_NUMERIC = re.compile(r"^[+-]?(\d{1,400}(\.\d{0,400})?|\.\d{1,400})([eE][+-]?\d{1,5})?$")


def is_numeric_text(value: object) -> bool:
    return isinstance(value, str) and _NUMERIC.match(value.strip()) is not None


def _numeric_text(text: str) -> int | float | None:
    """A number written as text in decimal (not `inf`, `nan`, `0x10` or `1_000`, which Python reads too)."""
    if not _NUMERIC.match(text):
        return None
    if text.lstrip("+-").isdigit():
        return int(text)
    return float(text)


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


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
    """One entity per (type, key): the first seen, or the one from the more trusted origin."""
    seen: dict[tuple[str, str], Entity] = {}
    for e in entities:
        k = (e.type, e.key)
        kept = seen.get(k)
        if kept is None or ORIGIN_RANK[e.origin] > ORIGIN_RANK[kept.origin]:
            seen[k] = e
    return tuple(seen.values())
