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
from aegis.events import ORIGIN_RANK, AiProject, AiResource, Entity, Host, ModelDeployment, union

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


# Times as Azure writes them. ISO 8601 first (any number of fractional digits, `Z` or an offset;
# no zone means UTC, as storage exports write it), then the US form some exports and sign-in
# pipelines write (`11/14/2025 1:48:53 AM`: month first, 12-hour clock, UTC). Nothing else is
# guessed: not day-first dates, not epoch numbers, not words.
_US_TIME = re.compile(
    r"^(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})[ T](?P<h>\d{1,2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,7}))?)?\s*(?P<ap>[AaPp][Mm])?$"
)


def parse_time(value: str) -> datetime | None:
    """A time in a form Azure writes, as an aware UTC datetime; None if `value` is none of them."""
    try:
        parsed = datetime.fromisoformat(value)  # 3.11+: any number of fractional digits, "Z"
    except ValueError:
        m = _US_TIME.match(value)
        if m is None:
            return None
        hour = int(m["h"])
        if m["ap"]:
            if not 1 <= hour <= 12:
                return None
            hour = hour % 12 + (12 if m["ap"].lower() == "pm" else 0)
        try:
            parsed = datetime(int(m["y"]), int(m["mo"]), int(m["d"]), hour, int(m["mi"]), int(m["s"] or 0),
                              int((m["f"] or "0").ljust(6, "0")[:6]))  # fmt: skip
        except ValueError:  # 13/45/2025, 25:00
            return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def timestamp(d: dict[str, Any], *keys: str, fallback: tuple[dict[str, Any], str] | None = None) -> datetime:
    """The first present of `keys` (then `fallback`, a field of another object), as an aware UTC
    datetime. It must hold a time (`parse_time`): a present field that holds something else makes
    the record malformed, as a field of the wrong type does, rather than another time being used."""
    candidates = [(d, key) for key in keys] + ([fallback] if fallback else [])
    for where, key in candidates:
        value = text(where, key)
        if value is None:
            continue
        parsed = parse_time(value)
        if parsed is None:
            raise MalformedInput(f"'{key}' is not a time (ISO 8601, or M/D/YYYY h:mm:ss AM/PM)")
        return parsed
    raise MalformedInput(f"no event time: none of {', '.join(repr(k) for _, k in candidates)} is present")


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


def content_id(record: dict[str, Any], properties: dict[str, Any] | None = None) -> str:
    """A log record's event id: a hash of its canonical content. A record that Event Hubs delivers
    twice, or that arrives with `properties` as a string once and as an object once, gets one id.
    `properties`: the record's `properties` as its normalizer already parsed them (`obj`)."""
    canonical = dict(record)
    if isinstance(canonical.get("properties"), str):
        if properties is not None:
            canonical["properties"] = properties
        else:
            with contextlib.suppress(orjson.JSONDecodeError):
                canonical["properties"] = orjson.loads(canonical["properties"])
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]


@lru_cache(maxsize=4096)
def compact_key(key: str) -> str:
    """`Client IP address` → `clientipaddress`: for matching loosely named extended properties."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


VM_TYPES = ("microsoft.compute/virtualmachines", "microsoft.compute/virtualmachinescalesets/virtualmachines")


def _hosts_merged(entities: list[Entity]) -> list[Entity]:
    """Hosts that share an Azure resource id, or a name when one has no id, as one host: the
    fields of each, the richer one's (more fields known) where both have one."""
    hosts = [e for e in entities if isinstance(e, Host)]
    if len(hosts) < 2:
        return entities
    out: list[Entity] = []
    merged: list[Host] = []
    for e in entities:
        if not isinstance(e, Host):
            out.append(e)
            continue
        same = next((i for i, h in enumerate(merged) if _same_host(h, e)), None)
        if same is None:
            merged.append(e)
            out.append(e)
            continue
        kept = merged[same]
        out[out.index(kept)] = merged[same] = union(kept, e)
    return out


def _same_host(a: Host, b: Host) -> bool:
    if a.azure_id and b.azure_id:
        return a.azure_id.lower() == b.azure_id.lower()
    if a.mde_machine_id and b.mde_machine_id:
        return a.mde_machine_id == b.mde_machine_id
    return bool(a.name and b.name and a.name.lower() == b.name.lower() and not (a.mde_machine_id and b.mde_machine_id))


def resource_entities(rid: ResourceId) -> list[Entity]:
    """The entities an affected resource stands for: a virtual machine is a host; an AI account is
    itself; anything inside one (a deployment, an AI Foundry project, a project's agent or
    connection) is its parent account, with the deployment or the project as an entity too."""
    return list(_resource_entities(rid))


@lru_cache(maxsize=4096)  # a stream names the same few resources again and again (entities are frozen)
def _resource_entities(rid: ResourceId) -> tuple[Entity, ...]:
    if rid.type in VM_TYPES and rid.name:
        return (Host(name=rid.name, azure_id=rid.id),)
    if rid.provider not in AI_PROVIDERS or rid.name is None:
        return ()
    chain = [rid]
    while chain[-1].type is not None and chain[-1].type.count("/") > 1 and (up := chain[-1].parent()) is not None:
        chain.append(up)
    account = chain[-1]
    out: list[Entity] = []
    if rid.type and rid.type.endswith("/deployments"):
        out.append(ModelDeployment(name=rid.name, resource_id=account.id if account is not rid else None))
    project = next((r for r in chain if r.type == "microsoft.cognitiveservices/accounts/projects"), None)
    if project is not None:
        out.append(AiProject(resource_id=project.id, name=project.name, account=account.id))
    if account.name and (account.type or "").count("/") == 1:
        out.append(AiResource(resource_id=account.id, name=account.name))
    return tuple(out)


def dedupe(entities: list[Entity]) -> tuple[Entity, ...]:
    """One entity per (type, key): the first seen, or the one from the more trusted origin. A host
    named twice (by its VM resource id, and by an entity with its Defender for Endpoint id) is one."""
    seen: dict[tuple[str, str], Entity] = {}
    for e in _hosts_merged(entities):
        k = (e.type, e.key)
        kept = seen.get(k)
        if kept is None or ORIGIN_RANK[e.origin] > ORIGIN_RANK[kept.origin]:
            seen[k] = e
    return tuple(seen.values())
