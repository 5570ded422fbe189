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


def corroborate_all(responder: Any) -> None:
    """Settle every step waiting for corroboration as corroborated, as a source that confirmed the
    evidence would: for the tests of approvals and execution, whose subject is not corroboration
    (that has its own tests, up to the wire, in test_hostile.py)."""
    for step in responder.store.steps(status=["awaiting_approval"]):
        if step.corroboration:
            responder.settle(step, True, "the test's own evidence")
