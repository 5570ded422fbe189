"""Panes: a group's matches aggregated per slice of event time, the unit of correlation state.

A pane holds what the rule kinds and the incidents need, and nothing that grows with the number
of matches: counts and earliest / latest time per step, the sum of a numeric field, the distinct
values of a field (at most the detection's threshold of them: past that the answer is known),
the highest severity, Defender alert types, the earliest matches as evidence samples, and
references to the entities seen. Every field merges as a set union or a sum, so a pane is the
same whatever order its matches arrived in.

Redelivery: a pane keeps the ids of its events, so a repeated event changes nothing. Events read
from Event Hubs carry a position (partition, sequence number): past `EXACT_IDS` of those a pane
only counts, and the bucket's highest applied position per partition (`engine.py`) keeps a
redelivered batch from counting twice. Events without a position (tests, library use) are
always kept by id.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from aegis.events import UNKNOWN_KIND

EXACT_IDS = 16
PANE_SAMPLES = 16  # a pane's earliest events kept as evidence: all of them, up to this many
PANE_KINDS = 8
PANE_ENTITIES = 16
NONE = -1
MAX_SUM = 1e18  # a pane's sum saturates here (normalized numbers are at most 2**53, never negative or NaN)

# (time µs, event id, step, kind, source, title, where its bytes are: `Fact.where`); panes stored
# before the pointer have six fields
Sample = tuple[Any, ...]


_NO_JSON: Mapping[str, bytes] = MappingProxyType({})


class Fact(NamedTuple):
    """What one event brings to any pane it matches in (computed once per event and batch)."""

    id: str
    digest: str  # a short digest of the id, for the pane's exact-ids set
    time: int  # µs since the epoch
    position: str | None  # "hub/partition" of Event Hubs, when known
    sequence: int
    severity: int
    alert_kind: str | None  # for Defender alerts
    sample: tuple[str, str, str | None, str]  # kind, source, title, where (message digest, pointer, position)
    refs: frozenset[str]  # entity references
    entities: list[tuple[str, Any]]  # (reference, entity)
    trusted: frozenset[str] = frozenset()  # references of the entities not only an application named
    mark: str = ""  # the watermark it advances: its source, and its Event Hubs partition when known
    tenant: str | None = None
    json: Mapping[str, bytes] = _NO_JSON  # each entity as JSON, by reference: serialized once per event


_NO_VALUES: set[str] = set()  # shared and never added to: most panes have no values or alert types


class Pane:
    """One slice of a group's event time. Sets are kept bounded to their smallest items."""

    __slots__ = (
        "_json",
        "counts",
        "end",
        "entities",
        "events",
        "first",
        "ids",
        "index",
        "kinds",
        "last",
        "moments",
        "samples",
        "severity",
        "total",
        "traits",
        "values",
    )  # fmt: skip

    def __init__(self, index: int, steps: int) -> None:
        self.index = index
        self.events = 0
        self.counts = [0] * steps
        self.first = [NONE] * steps  # per step, µs since the epoch (NONE: no match)
        self.last = [NONE] * steps
        self.end = NONE  # the latest of `last`: kept as it moves (an incident's segments read it per trigger)
        self.total = 0.0
        self.values: set[str] = _NO_VALUES  # replaced by a set of its own on the first value
        self.severity = NONE
        self.kinds: set[str] = _NO_VALUES
        self.ids: set[str] | None = set()  # id digests; None once the pane only counts
        self.samples: list[Sample] = []  # sorted
        self.entities: set[str] = set()  # entity references
        self.traits: list[int] = []  # per `when` weight of the detection (`weigh`), the events that hold it
        self.moments: list[list[float]] = []  # per `steady` weight: [values, sum, sum of squares]
        self._json: orjson.Fragment | None = None

    def add(
        self, f: Fact, steps: list[int], value: Any, values_cap: int, *, traits: int = 0, sizes: tuple[Any, ...] = ()
    ) -> bool:
        """Add one event's match (to one or more steps; `traits`: a bit per `when` weight it holds,
        `sizes`: its value of each `steady` weight's field); False if the pane already had it."""
        if self.ids is not None:
            if f.digest in self.ids:
                return self._again(f)
            self.ids.add(f.digest)
            if len(self.ids) > EXACT_IDS and f.position is not None:
                self.ids = None  # Event Hubs positions guard against redelivery from here on
        self._json = None
        self.events += 1
        t = f.time
        for s in steps:
            self.counts[s] += 1
            self.first[s] = t if self.first[s] == NONE else min(self.first[s], t)
            self.last[s] = max(self.last[s], t)
            self.end = max(self.end, t)
            samples = self.samples
            if len(samples) < PANE_SAMPLES or t <= samples[-1][0]:
                bisect.insort(samples, (t, f.id, s, *f.sample))
                if len(samples) > PANE_SAMPLES:
                    samples.pop()
        if value is not None:
            if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_SUM:
                self.total = min(self.total + value, MAX_SUM)  # saturates: a sum can never overflow or go back
            if values_cap:
                if self.values is _NO_VALUES:
                    self.values = set()
                self.values.add(str(value))
                if len(self.values) > values_cap:
                    self.values = set(sorted(self.values)[:values_cap])
        self.severity = max(self.severity, f.severity)
        if f.alert_kind is not None:
            if self.kinds is _NO_VALUES:
                self.kinds = set()
            self.kinds.add(f.alert_kind)
            if len(self.kinds) > PANE_KINDS:
                self.kinds = set(sorted(self.kinds)[:PANE_KINDS])
        self.entities.update(f.refs)
        if len(self.entities) > PANE_ENTITIES:
            self.entities = set(sorted(self.entities)[:PANE_ENTITIES])
        if traits:
            self.traits = add_traits(self.traits, traits)
        if sizes:
            self.moments = add_moments(self.moments, sizes)
        return True

    def _again(self, f: Fact) -> bool:
        """An event the pane holds, again: a redelivery (nothing changes), or another copy of it
        that says more (an alert's export after its activity-log event): its entities join, and its
        sample takes the richer copy's kind and title. True if the pane changed."""
        changed = False
        if not self.entities >= f.refs:
            before = self.entities
            self.entities = _bounded(self.entities | f.refs, PANE_ENTITIES)
            changed = self.entities != before
        for n, sample in enumerate(self.samples):
            if sample[1] == f.id:
                copy = (sample[0], f.id, sample[2], *f.sample)
                if _says_more(copy, sample):
                    self.samples[n] = copy
                    changed = True
        if changed:
            self._json = None
        return changed

    def dump(self) -> orjson.Fragment:
        """The pane as JSON, serialized again only after it changed (or its state let it go: `cool`)."""
        if self._json is None:
            self._json = orjson.Fragment(orjson.dumps([
                self.index, self.events, self.counts, self.first, self.last, self.total,
                sorted(self.values) if self.values else [], self.severity, sorted(self.kinds) if self.kinds else [],
                None if self.ids is None else sorted(self.ids), self.samples, sorted(self.entities), self.traits,
                self.moments,
            ]))  # fmt: skip
        return self._json

    def cool(self) -> None:
        """Let go of the JSON `dump` keeps (made again if it is needed again)."""
        self._json = None

    @classmethod
    def load(cls, raw: list[Any]) -> Pane:
        p = cls.__new__(cls)
        (p.index, p.events, p.counts, p.first, p.last, p.total, values, p.severity, kinds, ids, samples,
         entities) = raw[:12]  # fmt: skip
        p.end = max(p.last, default=NONE)
        p.traits = list(raw[12]) if len(raw) > 12 else []  # a pane stored before weights has none
        p.moments = [list(m) for m in raw[13]] if len(raw) > 13 else []
        p.values, p.kinds, p.entities = set(values), set(kinds), set(entities)
        if not isinstance(p.total, int | float) or not 0 <= p.total <= MAX_SUM:  # NaN too: state from before the bound
            p.total = 0.0
        p.ids = None if ids is None else set(ids)
        p.samples = [tuple(x) for x in samples]
        p._json = None
        return p


@dataclass(slots=True)
class Summary:
    """What an incident needs of the panes it spans, folded: bounded however long it lasts."""

    events: int = 0
    start: tuple[int, str] | None = None  # the earliest match: (time µs, event id)
    end: int = NONE
    severity: int = NONE
    kinds: set[str] = field(default_factory=set)
    head: list[Sample] = field(default_factory=list)  # the earliest samples, sorted
    tail: list[Sample] = field(default_factory=list)  # the latest samples, sorted
    entities: set[str] = field(default_factory=set)
    traits: list[int] = field(default_factory=list)  # per `when` weight, the events that hold it
    moments: list[list[float]] = field(default_factory=list)  # per `steady` weight: [values, sum, sum of squares]

    SAMPLES = 50
    KINDS = 32
    ENTITIES = 64

    def add(self, p: Pane) -> None:
        start = (p.samples[0][0], p.samples[0][1]) if p.samples else None
        self.merge(Summary(p.events, start, p.end, p.severity, p.kinds, p.samples, p.samples, p.entities, p.traits,
                           p.moments))  # fmt: skip

    def fold(self, panes: Iterable[Pane]) -> None:
        """`add` each pane in turn (in index order), in one pass: the bounded sets and the samples
        are cut once at the end, not at each pane, and sums are added in the same order. A pane's
        samples lie in its slice of event time, so panes in order give their samples in order."""
        events, start, end, severity = self.events, self.start, self.end, self.severity
        kinds, entities = set(self.kinds), set(self.entities)
        traits, moments = list(self.traits), [list(m) for m in self.moments]
        samples: list[Sample] = []
        for p in panes:
            events += p.events
            if p.samples:
                first = (p.samples[0][0], p.samples[0][1])
                if start is None or first < start:
                    start = first
                samples += p.samples
            end = max(end, p.end)
            severity = max(severity, p.severity)
            if p.kinds:
                kinds |= p.kinds
            entities |= p.entities
            for k, n in enumerate(p.traits):
                if k < len(traits):
                    traits[k] += n
                else:
                    traits.append(n)
            for k, m in enumerate(p.moments):
                if k < len(moments):
                    mine = moments[k]
                    mine[0], mine[1], mine[2] = mine[0] + m[0], mine[1] + m[1], mine[2] + m[2]
                else:
                    moments.append([0.0 + m[0], 0.0 + m[1], 0.0 + m[2]])
        self.events, self.start, self.end, self.severity = events, start, end, severity
        self.kinds, self.entities = _bounded(kinds, self.KINDS), _bounded(entities, self.ENTITIES)
        self.traits, self.moments = traits, moments
        if samples:
            self.head = list(dict.fromkeys(sorted([*self.head, *samples[: self.SAMPLES]])))[: self.SAMPLES]
            self.tail = list(dict.fromkeys(sorted([*self.tail, *samples[-self.SAMPLES :]])))[-self.SAMPLES :]

    def merge(self, other: Summary) -> None:
        self.events += other.events
        if other.start is not None and (self.start is None or other.start < self.start):
            self.start = other.start
        self.end = max(self.end, other.end)
        self.severity = max(self.severity, other.severity)
        self.kinds = _bounded(self.kinds | other.kinds, self.KINDS)
        self.entities = _bounded(self.entities | other.entities, self.ENTITIES)
        if other.traits:
            self.traits = [a + b for a, b in itertools.zip_longest(self.traits, other.traits, fillvalue=0)]
        if other.moments:
            pairs = itertools.zip_longest(self.moments, other.moments, fillvalue=[0.0, 0.0, 0.0])
            self.moments = [[x + y for x, y in zip(a, b, strict=True)] for a, b in pairs]
        head, tail = other.head, other.tail
        if head and (len(self.head) < self.SAMPLES or head[0] < self.head[-1]):
            self.head = sorted(set(self.head).union(head))[: self.SAMPLES]
        if tail and (len(self.tail) < self.SAMPLES or tail[-1] > self.tail[0]):
            if not self.tail or tail[0] > self.tail[-1]:  # the usual case: later panes come later
                self.tail = (self.tail + tail)[-self.SAMPLES :]
            else:
                self.tail = sorted(set(self.tail).union(tail))[-self.SAMPLES :]

    def copy(self) -> Summary:
        return Summary(self.events, self.start, self.end, self.severity, set(self.kinds), list(self.head),
                       list(self.tail), set(self.entities), list(self.traits),
                       [list(m) for m in self.moments])  # fmt: skip

    def samples(self) -> list[Sample]:
        return sorted(set(self.head) | set(self.tail))

    def dump(self) -> list[Any]:
        return [self.events, self.start, self.end, self.severity, sorted(self.kinds), self.head, self.tail,
                sorted(self.entities), self.traits, self.moments]  # fmt: skip

    @classmethod
    def load(cls, raw: list[Any]) -> Summary:
        events, start, end, severity, kinds, head, tail, entities = raw[:8]
        return cls(events, (start[0], start[1]) if start else None, end, severity, set(kinds),
                   [tuple(s) for s in head], [tuple(s) for s in tail], set(entities),
                   list(raw[8]) if len(raw) > 8 else [], [list(m) for m in raw[9]] if len(raw) > 9 else [])  # fmt: skip


def add_traits(counts: list[int], bits: int) -> list[int]:
    """`counts` (per weight; the pane's own list, grown in place) with one more event for each
    weight whose bit is set."""
    k = 0
    while bits:
        if bits & 1:
            if k >= len(counts):
                counts.extend([0] * (k + 1 - len(counts)))
            counts[k] += 1
        bits >>= 1
        k += 1
    return counts


def add_moments(moments: list[list[float]], sizes: tuple[Any, ...]) -> list[list[float]]:
    """`moments` (per `steady` weight; the pane's own lists, in place) with one event's values
    added (None: it has none)."""
    moments.extend([0.0, 0.0, 0.0] for _ in range(len(sizes) - len(moments)))
    for m, v in zip(moments, sizes, strict=False):
        if v is not None:
            m[0] += 1
            m[1] += v
            m[2] += v * v
    return moments


def _says_more(a: Sample, b: Sample) -> bool:
    """Whether sample `a` (kind, source, title at 3..5) names more of its event than `b`."""
    return (a[3] != UNKNOWN_KIND, a[5] is not None) > (b[3] != UNKNOWN_KIND, b[5] is not None)


def _bounded(items: set[str], cap: int) -> set[str]:
    """At most `cap` items, the smallest: a bounded set union that does not depend on order."""
    return items if len(items) <= cap else set(sorted(items)[:cap])
