"""The correlator's hot path in its parts: folding many panes at once gives what adding them one
by one gives; a condition decided for one event source holds as the general one does."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from aegis.correlate.conditions import Condition
from aegis.correlate.panes import Fact, Pane, Summary
from aegis.events import Event, Evidence, Source

PANE_US = 1_000_000


def _panes(seed: int, matches: int, spread: int) -> list[Pane]:
    """Panes of `matches` random matches over `spread` panes: enough of them to pass every bound
    (a summary's 50 samples, 32 alert kinds, 64 entities)."""
    rng = random.Random(seed)
    panes: dict[int, Pane] = {}
    for n in range(matches):
        index = rng.randrange(spread)
        fact = Fact(
            id=f"e{n}", digest=f"d{n}", time=index * PANE_US + rng.randrange(PANE_US), position="hub/0", sequence=n,
            severity=rng.randrange(-1, 5), alert_kind=rng.choice([None, *(f"Alert{k}" for k in range(40))]),
            sample=("k", "resource_log", None, f"m/{n}"),
            refs=frozenset(f"r{rng.randrange(400):03}" for _ in range(rng.randrange(4))), entities=[],
        )  # fmt: skip
        sizes = tuple(rng.choice([None, rng.uniform(0, 1e6)]) for _ in range(rng.randrange(3)))
        pane = panes.setdefault(index, Pane(index, 2))
        pane.add(fact, [n % 2], n, 0, traits=rng.randrange(8), sizes=sizes)
    return [panes[i] for i in sorted(panes)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 800), st.integers(1, 60), st.booleans())
def test_fold_equals_adding_each_pane(seed: int, matches: int, spread: int, carried: bool) -> None:
    panes = _panes(seed, matches, spread)
    start = Summary()
    if carried and panes:  # an incident that continues a carry: its summary of earlier panes first
        start.add(panes[0])
        panes = panes[1:]
    one_by_one, folded = start.copy(), start.copy()
    for p in panes:
        one_by_one.add(p)
    folded.fold(panes)
    assert folded == one_by_one


# --- conditions decided per event source (what the correlator's matching runs) ---

SOURCES = [s.value for s in Source]
TESTS = [
    {"field": "source", "equals": "resource_log"},
    {"field": "source", "in": ["defender", "SIGNIN_LOG"]},
    {"field": "source", "prefix": "res"},
    {"field": "source", "exists": True},
    {"field": "source", "exists": False},
    {"field": "attributes.http_status", "gte": 400},
    {"field": "kind", "prefix": "AI."},
]


def _condition(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    shape = draw(st.sampled_from(["test"] if depth > 2 else ["test", "all", "any", "not"]))
    if shape == "test":
        return dict(draw(st.sampled_from(TESTS)))
    if shape == "not":
        return {"not": _condition(draw, depth + 1)}
    return {shape: [_condition(draw, depth + 1) for _ in range(draw(st.integers(1, 3)))]}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_condition_decided_for_a_source_holds_as_the_general_one(data: st.DataObject) -> None:
    condition = TypeAdapter(Condition).validate_python(_condition(data.draw))
    source = data.draw(st.sampled_from(SOURCES))
    event = Event(
        id="e", source=Source(source), normalizer="n", kind=data.draw(st.sampled_from(["AI.Azure_X", "Audit:x"])),
        time=datetime(2026, 12, 1, tzinfo=UTC), evidence=Evidence("m", "", "hub"),
        attributes={"http_status": data.draw(st.sampled_from([200, 401, 500]))},
    )  # fmt: skip
    assert condition.compile(source)(event) is condition.compile()(event)
