"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any

import orjson

from aegis.events import Event, Evidence
from aegis.normalize import select

EVIDENCE = Evidence(message="0" * 64, pointer="", hub="test")


def body(value: Any) -> bytes:
    return orjson.dumps(value)


def normalize_one(item: dict[str, Any]) -> tuple[str, list[Event]]:
    """The name of the normalizer that takes `item`, and its events."""
    chosen = select(item)
    assert chosen is not None, "no normalizer accepted the item"
    return chosen.name, chosen.normalize(item, EVIDENCE)
