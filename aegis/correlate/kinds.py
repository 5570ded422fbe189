"""Rule kinds: how a detection turns the matching events of one group into triggers.

Every kind is a pure function of the group's members, sorted by (event time, event id): the
result does not depend on arrival order, redelivery or which instance saw which event. A trigger
is a point in event time with the members that caused it; triggers close in time become one
incident (see `engine.segment`).

    single            every match is a trigger
    event_count       at least `threshold` matches within `window`
    value_count       at least `threshold` distinct values of `field` within `window`
    value_sum         the sum of the numeric `field` reaches `threshold` within `window`
    temporal          a match of every step within `window`, in any order
    temporal_ordered  matches of the steps in their order, within `window`
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aegis.events import Scalar


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """One matching event in a group: for temporal kinds, once per step it matches."""

    time: datetime
    event_id: str
    step: int = 0
    value: Scalar = None


@dataclass(frozen=True, slots=True)
class Trigger:
    time: datetime
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str
    evaluate: Callable[[list[Member], Any], list[Trigger]]
    needs: frozenset[str]  # detection fields this kind requires
    forbids: frozenset[str]


KINDS: dict[str, KindSpec] = {}


def kind(name: str, *, needs: set[str], forbids: set[str]) -> Callable[[Any], Any]:
    def register(fn: Callable[[list[Member], Any], list[Trigger]]) -> Callable[[list[Member], Any], list[Trigger]]:
        if name in KINDS:
            raise ValueError(f"rule kind {name!r} is registered twice")
        KINDS[name] = KindSpec(name, fn, frozenset(needs), frozenset(forbids))
        return fn

    return register


@kind("single", needs={"match"}, forbids={"steps", "threshold", "field", "window"})
def _single(members: list[Member], d: Any) -> list[Trigger]:
    return [Trigger(m.time, (m,)) for m in members]


def _sliding(members: list[Member], window: timedelta, fires: Callable[[list[Member]], bool]) -> list[Trigger]:
    out, start = [], 0
    for i, m in enumerate(members):
        while members[start].time < m.time - window:
            start += 1
        span = members[start : i + 1]
        if fires(span):
            out.append(Trigger(m.time, tuple(span)))
    return out


@kind("event_count", needs={"match", "window", "threshold"}, forbids={"steps", "field"})
def _event_count(members: list[Member], d: Any) -> list[Trigger]:
    return _sliding(members, d.window, lambda span: len(span) >= d.threshold)


@kind("value_count", needs={"match", "window", "threshold", "field"}, forbids={"steps"})
def _value_count(members: list[Member], d: Any) -> list[Trigger]:
    return _sliding(members, d.window, lambda span: len({m.value for m in span if m.value is not None}) >= d.threshold)


@kind("value_sum", needs={"match", "window", "threshold", "field"}, forbids={"steps"})
def _value_sum(members: list[Member], d: Any) -> list[Trigger]:
    def total(span: list[Member]) -> float:
        return sum(float(m.value) for m in span if isinstance(m.value, (int, float)) and not isinstance(m.value, bool))

    return _sliding(members, d.window, lambda span: total(span) >= d.threshold)


@kind("temporal", needs={"steps", "window"}, forbids={"match", "threshold", "field"})
def _temporal(members: list[Member], d: Any) -> list[Trigger]:
    mins = [s.min for s in d.steps]

    def complete(span: list[Member]) -> bool:
        seen = Counter(m.step for m in span)
        return all(seen[i] >= n for i, n in enumerate(mins))

    return _sliding(members, d.window, complete)


@kind("temporal_ordered", needs={"steps", "window"}, forbids={"match", "threshold", "field"})
def _temporal_ordered(members: list[Member], d: Any) -> list[Trigger]:
    mins = [s.min for s in d.steps]
    last = len(mins) - 1
    out = []
    for i, m in enumerate(members):
        if m.step != last:
            continue
        # from this match of the last step, walk back collecting the latest matches of each step
        # in turn (the last step included), each step's matches earlier than the next step's
        want, need, floor, earliest = last, mins[last] - 1, m.time - d.window, m
        if need == 0:
            want, need = last - 1, mins[last - 1] if last else 0
        for prev in reversed(members[:i]):
            if want < 0 or prev.time < floor:
                break
            if prev.step == want and (want == last or prev.time <= earliest.time):
                earliest = prev
                need -= 1
                if need == 0:
                    want -= 1
                    need = mins[want] if want >= 0 else 0
        if want < 0:  # the whole window is evidence, not only the chain that completed it
            out.append(Trigger(m.time, tuple(x for x in members[: i + 1] if x.time >= floor)))
    return out
