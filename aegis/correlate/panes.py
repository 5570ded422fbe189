"""Panes: a group's matches aggregated per slice of event time, the unit of correlation state.

A pane holds what the rule kinds and the incidents need, and nothing that grows with the number
of matches: counts and earliest / latest time per step, the sum of a numeric field, the distinct
values of a field (at most the detection's threshold of them: past that the answer is known),
the highest severity, Defender alert types, the earliest matches as evidence samples, and
references to the entities seen. Every field merges as a set union or a sum, so a pane is the
same whatever order its matches arrived in.

Redelivery: a pane keeps the ids of its events while it has at most `EXACT_IDS` of them, so a
repeated event changes nothing; past that it only counts, and the bucket's Event Hubs positions
(`engine.py`) keep a redelivered batch from counting twice.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

EXACT_IDS = 16
PANE_SAMPLES = 2
PANE_KINDS = 8
PANE_ENTITIES = 16
NONE = -1

# (time µs, event id, step, kind, source, title)
Sample = tuple[int, str, int, str, str, str | None]


@dataclass(frozen=True, slots=True)
class Fact:
    """What one event brings to any pane it matches in (computed once per event and batch)."""

    id: str
    digest: str  # a short digest of the id, for the pane's exact-ids set
    time: int  # µs since the epoch
    position: str | None  # "hub/partition" of Event Hubs, when known
    sequence: int
    severity: int
    alert_kind: str | None  # for Defender alerts
    sample: tuple[str, str, str | None]  # kind, source, title
    refs: list[str]  # entity references, sorted
    entities: list[tuple[str, Any]]  # (reference, entity)


@dataclass(slots=True)
class Pane:
    index: int
    steps: int
    events: int = 0
    counts: list[int] = field(default_factory=list)
    first: list[int] = field(default_factory=list)  # per step, µs since the epoch (NONE: no match)
    last: list[int] = field(default_factory=list)
    total: float = 0.0
    values: list[str] = field(default_factory=list)  # sorted
    severity: int = NONE
    kinds: list[str] = field(default_factory=list)  # sorted
    ids: list[str] | None = field(default_factory=list)  # sorted id digests; None once the pane only counts
    samples: list[Sample] = field(default_factory=list)  # sorted
    entities: list[str] = field(default_factory=list)  # sorted entity references

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * self.steps
            self.first = [NONE] * self.steps
            self.last = [NONE] * self.steps

    @property
    def start(self) -> int:
        return min(t for t in self.first if t != NONE)

    @property
    def end(self) -> int:
        return max(self.last)

    def add(self, f: Fact, steps: list[int], value: Any, values_cap: int) -> bool:
        """Add one event's match (to one or more steps); False if the pane already had it."""
        if self.ids is not None:
            at = bisect.bisect_left(self.ids, f.digest)
            if at < len(self.ids) and self.ids[at] == f.digest:
                return False
            self.ids.insert(at, f.digest)
            if len(self.ids) > EXACT_IDS:
                self.ids = None
        self.events += 1
        t = f.time
        for s in steps:
            self.counts[s] += 1
            self.first[s] = t if self.first[s] == NONE else min(self.first[s], t)
            self.last[s] = max(self.last[s], t)
            self.samples = _smallest(self.samples, [(t, f.id, s, *f.sample)], PANE_SAMPLES)
        if value is not None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.total += value
            if values_cap:
                self.values = _smallest(self.values, [str(value)], values_cap)
        self.severity = max(self.severity, f.severity)
        if f.alert_kind is not None:
            self.kinds = _smallest(self.kinds, [f.alert_kind], PANE_KINDS)
        self.entities = _smallest(self.entities, f.refs, PANE_ENTITIES)
        return True

    def dump(self) -> list[Any]:
        return [self.index, self.events, self.counts, self.first, self.last, self.total, self.values,
                self.severity, self.kinds, self.ids, [list(s) for s in self.samples], self.entities]  # fmt: skip

    @classmethod
    def load(cls, raw: list[Any]) -> Pane:
        index, events, counts, first, last, total, values, severity, kinds, ids, samples, entities = raw
        return cls(index, len(counts), events, counts, first, last, total, values, severity, kinds, ids,
                   [tuple(s) for s in samples], entities)  # fmt: skip


@dataclass(slots=True)
class Summary:
    """What an incident needs of the panes it spans, folded: bounded however long it lasts."""

    events: int = 0
    start: tuple[int, str] | None = None  # the earliest match: (time µs, event id)
    end: int = NONE
    severity: int = NONE
    kinds: list[str] = field(default_factory=list)
    head: list[Sample] = field(default_factory=list)  # the earliest samples
    tail: list[Sample] = field(default_factory=list)  # the latest samples
    entities: list[str] = field(default_factory=list)

    SAMPLES = 50
    KINDS = 32
    ENTITIES = 64

    def add(self, p: Pane) -> None:
        self.events += p.events
        if p.samples:
            first = p.samples[0][:2]
            if self.start is None or first < self.start:
                self.start = (first[0], first[1])
        self.end = max(self.end, p.end)
        self.severity = max(self.severity, p.severity)
        self.kinds = _smallest(self.kinds, p.kinds, self.KINDS)
        self.head = _smallest(self.head, p.samples, self.SAMPLES)
        self.tail = _largest(self.tail, p.samples, self.SAMPLES)
        self.entities = _smallest(self.entities, p.entities, self.ENTITIES)

    def merge(self, other: Summary) -> None:
        self.events += other.events
        if other.start is not None and (self.start is None or other.start < self.start):
            self.start = other.start
        self.end = max(self.end, other.end)
        self.severity = max(self.severity, other.severity)
        self.kinds = _smallest(self.kinds, other.kinds, self.KINDS)
        self.head = _smallest(self.head, other.head, self.SAMPLES)
        self.tail = _largest(self.tail, other.tail, self.SAMPLES)
        self.entities = _smallest(self.entities, other.entities, self.ENTITIES)

    def copy(self) -> Summary:
        return Summary(self.events, self.start, self.end, self.severity, list(self.kinds), list(self.head),
                       list(self.tail), list(self.entities))  # fmt: skip

    def samples(self) -> list[Sample]:
        return sorted(set(self.head) | set(self.tail))

    def dump(self) -> list[Any]:
        return [self.events, list(self.start) if self.start else None, self.end, self.severity, self.kinds,
                [list(s) for s in self.head], [list(s) for s in self.tail], self.entities]  # fmt: skip

    @classmethod
    def load(cls, raw: list[Any]) -> Summary:
        events, start, end, severity, kinds, head, tail, entities = raw
        return cls(events, (start[0], start[1]) if start else None, end, severity, kinds,
                   [tuple(s) for s in head], [tuple(s) for s in tail], entities)  # fmt: skip


def _smallest(current: list[Any], new: list[Any], cap: int) -> list[Any]:
    """The `cap` smallest distinct items of both sorted lists, sorted: a bounded set union that
    does not depend on the order items came in."""
    if len(new) > 4:
        return sorted(set(current).union(new))[:cap]
    for item in new:
        at = bisect.bisect_left(current, item)
        if at < len(current) and current[at] == item:
            continue
        if len(current) < cap:
            current.insert(at, item)
        elif at < cap:
            current.insert(at, item)
            current.pop()
    return current


def _largest(current: list[Any], new: list[Any], cap: int) -> list[Any]:
    """The `cap` largest distinct items of both sorted lists, sorted."""
    if not new or (len(current) >= cap and new[-1] <= current[0]):
        return current
    return sorted(set(current).union(new))[-cap:]
