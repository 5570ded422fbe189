"""Message bodies: bytes → JSON items, within limits, or a `MalformedInput` saying why not.

A body is one of:
- a diagnostic-settings envelope `{"records": [record, ...]}` (resource logs, activity log, sign-ins);
- one JSON object (a Defender alert, an export message, or a bare log record);
- a JSON array of such objects (Defender continuous export may batch alerts);
- an ARM list response `{"value": [...]}` (alerts listed through the REST API, replayed).

`items()` yields `(pointer, item)` pairs, the pointer being the JSON pointer of the item in the body
(`/records/3`, `/0`, or `` for the whole body), so that evidence and dead letters can point at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from aegis.errors import MalformedInput

_BOM = b"\xef\xbb\xbf"
# An ARM / Graph list response (`az rest` output) replayed as a body: its items are under "value".
_LIST_RESPONSE_KEYS = {"value", "nextLink", "@odata.context", "@odata.nextLink", "@odata.count"}


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1_048_576  # Event Hubs Standard/Premium message limit is 1 MB
    max_depth: int = 64
    max_items: int = 10_000
    # how far an event's time may be after its message was enqueued (received, when that is unknown):
    # clocks drift by seconds, not an hour; a time further ahead is forged or broken
    max_skew: timedelta = timedelta(minutes=5)


def decode(body: bytes, limits: Limits) -> Any:
    """Parse a body. Raises `MalformedInput` for an oversized body, invalid UTF-8, malformed JSON
    or nesting deeper than `limits.max_depth`."""
    if len(body) > limits.max_body_bytes:
        raise MalformedInput(f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}")
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson reports invalid UTF-8 as a decode error too; say which it was.
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as uerr:
            raise MalformedInput(f"body is not valid UTF-8 (byte {uerr.start})") from None
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise MalformedInput(f"JSON nesting deeper than {limits.max_depth} levels") from None
        raise MalformedInput(f"malformed JSON: {_short(exc)}") from None
    if _too_deep(value, limits.max_depth):
        raise MalformedInput(f"JSON nesting deeper than {limits.max_depth} levels")
    return value


def items(value: Any, limits: Limits) -> Iterator[tuple[str, Any]]:
    """The alerts or records of a decoded body. Raises `MalformedInput` when the body's shape is
    wrong as a whole; an item that is not an object is yielded as is, for the caller to reject."""
    if isinstance(value, dict):
        if "records" in value:
            records = value["records"]
            if not isinstance(records, list):
                raise MalformedInput(f"envelope 'records' is {kind_of(records)}, not a list")
            yield from _indexed("/records", records, limits)
        elif isinstance(value.get("value"), list) and value.keys() <= _LIST_RESPONSE_KEYS:
            yield from _indexed("/value", value["value"], limits)
        else:
            yield "", value
    elif isinstance(value, list):
        yield from _indexed("", value, limits)
    else:
        raise MalformedInput(f"body is {kind_of(value)}, not a JSON object or array")


def _indexed(prefix: str, values: list[Any], limits: Limits) -> Iterator[tuple[str, Any]]:
    if len(values) > limits.max_items:
        raise MalformedInput(f"body holds {len(values)} items, more than the limit of {limits.max_items}")
    for i, v in enumerate(values):
        yield f"{prefix}/{i}", v


def loads_nested(value: Any, what: str) -> Any:
    """Fields that Azure sometimes sends as a JSON-encoded string (`properties`, `Entities`,
    `ExtendedProperties`): parse the string form, pass other values through."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise MalformedInput(f"'{what}' is a string but not valid JSON: {_short(exc)}") from None
    return value


def _too_deep(value: Any, limit: int) -> bool:
    """Whether a container lies deeper than `limit`: level by level (no recursion, so a hostile body
    cannot exhaust the Python stack), each level's containers gathered in one comprehension."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        if not level:
            return False
        level = [c for node in level for c in (node.values() if isinstance(node, dict) else node)
                 if isinstance(c, dict | list)]  # fmt: skip
    return bool(level)


def kind_of(value: Any) -> str:
    """How an error message names a JSON value's type."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _short(exc: Exception) -> str:
    # orjson messages name a position, never echo the payload; keep them to one line.
    return str(exc).splitlines()[0][:200]
