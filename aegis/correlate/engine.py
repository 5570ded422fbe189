"""The correlator: events → per-group state → incidents, in event time.

State is one *bucket* per (detection, group): its matches aggregated into panes (`panes.py`), so
its size depends on time (the window and the allowed lateness), never on how many events match.
Per batch, matches are grouped in memory first; then each touched bucket is read once, its panes
merged, evaluated by the detection's kind (`kinds.py`) and written back with optimistic
concurrency (SQLite version / Table ETag), with only the incidents that changed. A conflict
(another instance wrote the bucket since it was read) re-reads and re-merges that bucket.

Event time and lateness. A bucket keeps a watermark per event source (Defender alerts, resource
logs, activity log, sign-ins) and Event Hubs partition: the latest event time it has seen from
each. Its finality follows the slowest of them (and waits for the detection's declared sources
not yet seen), so one source running ahead (an alerts-only instance, a lagging
diagnostics hub, an instance behind on one partition) never makes another's events too late. A
source or partition that falls silent holds finality back no further than the panes a bucket keeps
(`MAX_PANES`): past that, the leader's lateness decides. Triggers at panes older than
`slowest watermark - lateness` can no longer change: they are final, the panes only they
needed are dropped, and an event that old is counted as too late. Within the lateness the result
does not depend on arrival order. The incident that may still grow past the dropped panes keeps
a bounded summary of them (`carry`), so a campaign that lasts for days stays one incident with
one id.

Redelivery. Within a pane, event ids make a repeated event a no-op (up to `EXACT_IDS` events a
pane). Beyond that a pane only counts, and the bucket remembers the highest Event Hubs sequence
number applied per partition: a redelivered batch, or the part of it already applied, is skipped.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
import structlog

from aegis import tracing
from aegis.assets import AssetBook, context
from aegis.correlate import mapping
from aegis.correlate.detections import Detection
from aegis.correlate.incidents import incident_id, render_title
from aegis.correlate.kinds import KINDS, Trigger
from aegis.correlate.panes import NONE, Fact, Pane, Sample, Summary
from aegis.errors import StoreUnavailable
from aegis.events import (
    AiProject,
    AiResource,
    Entity,
    Event,
    Evidence,
    Ip,
    Origin,
    Severity,
    Source,
    entity_from_dict,
    richer,
)
from aegis.records import SEVERITY_ORDER, Incident, TimelineEntry
from aegis.store.base import BucketWrite, Store, Version
from aegis.tenancy import TENANT_PART, split_group

MAX_CONFLICT_RETRIES = 8
CACHED_STATES = 20_000
EXPIRE_EVERY = timedelta(minutes=10)
PANES_PER_WINDOW = 30
PANES_PER_CHUNK = 16  # panes are stored in chunks: a batch rewrites the chunks it changed
ENTITY_SLACK = 32  # entities no pane refers to any more that a bucket keeps at most (so they are not rewritten)
# a bucket's entities are stored in records of at most this many, new ones in the newest record: a
# write rewrites the records of the entities it added, changed or dropped, not all of them, and no
# record outgrows a table entity however many entities a bucket holds (normalized fields are short)
ENTITIES_PER_RECORD = 16
MAX_PANES = 512  # panes a bucket keeps at most: its document stays well under a table entity's 1 MiB
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
log = structlog.get_logger("aegis.correlate")


@dataclass(slots=True)
class CorrelationCounts:
    matches: int = 0
    buckets: int = 0
    incidents: int = 0
    evidence: int = 0  # events written as evidence (of the batch's, those the changed incidents hold)
    too_late: int = 0
    conflicts: int = 0
    expired: int = 0
    # detection id → (how many times it failed in this batch, the first reason): a failed detection
    # changes nothing of its state in the batch, and the others go on
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    changed: list[Incident] = field(default_factory=list)  # incidents new or changed, as committed

    def failed(self, detection: str, exc: BaseException, where: str) -> None:
        n, reason = self.errors.get(detection, (0, f"{where}: {type(exc).__name__}: {str(exc)[:200]}"))
        self.errors[detection] = (n + 1, reason)
        if n == 0:
            log.error("detection_failed", detection=detection, where=where, error=type(exc).__name__,
                      reason=str(exc)[:200])  # fmt: skip


class Match(NamedTuple):
    event: Event
    steps: list[int]
    value: Any
    traits: int = 0  # a bit per `when` weight of the detection the event holds
    sizes: tuple[Any, ...] = ()  # its value of each `steady` weight's field (None: none)


class Correlator:
    def __init__(
        self, detections: Sequence[Detection], store: Store, *, lateness: timedelta = timedelta(hours=1),
        expire_in_batch: bool = True, assets: Callable[[], AssetBook] | None = None,
    ) -> None:  # fmt: skip
        """`expire_in_batch`: expire idle buckets from `process` (cheap on SQLite); off, the caller
        calls `expire` from a timer (Table Storage, where expiry is a scan of the bucket heads and
        the ingest path makes none). `assets`: the inventory as it stands (`aegis.assets`), read when
        an incident is built: its asset's owner and criticality go on it, and weigh its severity."""
        self.detections = {d.id: d for d in detections}
        self.assets = assets
        self.expire_in_batch = expire_in_batch
        self.store = store
        self.lateness_us = lateness // _US
        # states this instance wrote last, by version: a bucket still at that version is not re-read
        self._cache: OrderedDict[str, tuple[Version, State]] = OrderedDict()
        # a bucket idle for longer than this (event time) can no longer trigger or extend an incident
        reach = max((d.window or timedelta(0)) + d.suppress_for for d in detections) if detections else timedelta(0)
        self.ttl_us = (reach + lateness) // _US + 2 * max((geometry(d, self.lateness_us)[0] for d in detections),
                                                          default=0)  # fmt: skip
        self._newest = NONE  # the newest event time seen
        self._expired_at = NONE

    def process(self, events: Sequence[Event]) -> CorrelationCounts:
        counts = CorrelationCounts()
        unique: dict[str, Event] = {}
        for e in events:  # copies of one event (an alert in two shapes): the one that says more
            unique[e.id] = richer(unique[e.id], e) if e.id in unique else e
        events = list(unique.values()) if len(unique) < len(events) else events
        additions: dict[str, tuple[Detection, str, list[Match]]] = {}
        by_source: dict[str, list[Event]] = {}
        for e in events:
            by_source.setdefault(e.source.value, []).append(e)
        for d in self.detections.values():
            candidates = events if d.sources is None else [e for s in d.sources for e in by_source.get(s, ())]
            found: dict[str, tuple[Detection, str, list[Match]]] = {}
            matched = counts.matches
            try:
                self._match(d, candidates, found, counts)
            except Exception as exc:  # a detection bug is reported, never fatal for the others: no partial matches
                counts.matches = matched
                counts.failed(d.id, exc, "matching")
                continue
            additions.update(found)
        if not additions:
            return counts
        try:
            self._commit(additions, counts)
        except BaseException:
            for key in additions:  # states may have been changed and not written
                self._cache.pop(key, None)
            raise
        self._newest = max(self._newest, *((e.time - EPOCH) // _US for e in events))
        if self.expire_in_batch:
            counts.expired += self.expire()
        return counts

    def expire(self) -> int:
        """Drop the state of buckets idle for longer than the TTL in event time (the newest this
        correlator has seen), at most once per `EXPIRE_EVERY` of it; how many buckets went."""
        if self._newest == NONE or (self._expired_at != NONE and self._newest - self._expired_at < EXPIRE_EVERY // _US):
            return 0
        self._expired_at = self._newest
        before = self._newest - self.ttl_us
        gone = self.store.expire_buckets(before)
        # and from the cache: an expired bucket's state would otherwise stay until pushed out
        for key in [k for k, (_, state) in self._cache.items() if state.watermark < before]:
            del self._cache[key]
        return gone

    def _commit(self, additions: dict[str, tuple[Detection, str, list[Match]]], counts: CorrelationCounts) -> None:
        facts = _Facts()
        pending = dict(additions)
        book = self.assets() if self.assets is not None else None
        for _ in range(MAX_CONFLICT_RETRIES):
            # a state this instance wrote last is applied as it holds it, unread: if another instance
            # wrote the bucket since, the commit finds its version moved on (a conflict), and the next
            # turn reads it and applies the batch again. A batch reads only the buckets it holds no copy of.
            loaded = self.store.load_buckets([k for k in pending if k not in self._cache])
            writes, states, failed = [], {}, set()
            for key, (d, group, matches) in pending.items():
                if d.id in failed:
                    continue
                cached, bucket = self._cache.get(key), loaded.get(key)
                version = cached[0] if cached is not None else bucket.version if bucket is not None else None
                try:
                    if cached is not None:
                        state = cached[1]
                    elif bucket is None:
                        state = State.new(d, group, self.lateness_us)
                    else:
                        state = State.load(bucket.doc, bucket.chunks, bucket.entities)
                    write = state.apply(d, matches, facts, self.lateness_us, counts, book=book)
                except Exception as exc:  # a rule kind's bug or a bad stored value: this detection sits the batch out
                    counts.failed(d.id, exc, "evaluation")
                    failed.add(d.id)
                    continue
                if write is not None:
                    writes.append(BucketWrite(key, version, **write))
                    states[key] = state
            if failed:  # none of a failed detection's buckets is written: its state stays as before the batch
                for key, (d, _, _) in pending.items():
                    if d.id in failed:
                        self._cache.pop(key, None)  # its cached states may be half-applied: read them again
                writes = [w for w in writes if pending[w.key][0].id not in failed]
                pending = {k: v for k, v in pending.items() if v[0].id not in failed}
            with tracing.span("aegis.store.commit", buckets=len(writes)) as committing:
                committed = self.store.commit_buckets(writes)
                committing.set_attribute("aegis.conflicts", len(committed.conflicts))
            upserts = {w.key: w.upsert for w in writes}
            for key, version in committed.versions.items():
                counts.changed += upserts[key]
                self._cache[key] = (version, states[key])
                self._cache.move_to_end(key)
            for key in committed.conflicts:
                self._cache.pop(key, None)
            while len(self._cache) > CACHED_STATES:
                self._cache.popitem(last=False)
            counts.buckets += len(committed.versions)
            counts.evidence += sum(len(w.evidence) for w in writes if w.key in committed.versions)
            counts.conflicts += len(committed.conflicts)
            pending = {k: v for k, v in pending.items() if k in committed.conflicts}
            if not pending:
                return
        raise StoreUnavailable(f"{len(pending)} correlation bucket(s) still conflicting after retries")

    @staticmethod
    def _match(
        d: Detection, events: Sequence[Event], out: dict[str, tuple[Detection, str, list[Match]]], c: CorrelationCounts
    ) -> None:
        value_of, by_source, getters, by_tenant = d.value_getter, d.source_predicates, d.group_getters, d.by_tenant
        weights, steadies = d.weights, d.steadies
        for e in events:
            steps = [i for i, predicate in enumerate(by_source[e.source]) if predicate(e)]
            if not steps:
                continue
            value = None
            if value_of is not None:
                values = value_of(e)
                value = values[0] if values else None
            traits = sum(1 << k for k, holds in enumerate(weights) if holds(e)) if weights else 0
            sizes = tuple(_size(get(e)) for get in steadies) if steadies else ()
            match = Match(e, steps, value, traits, sizes)
            tenant = f"{TENANT_PART}{e.tenant}|" if by_tenant and e.tenant else ""
            for parts in itertools.product(*[g(e) for g in getters]):
                group = tenant + "|".join(map(str, parts))
                key = bucket_key(d.id, group)
                entry = out.get(key)
                if entry is None:
                    entry = out[key] = (d, group, [])
                entry[2].append(match)
                c.matches += 1


@lru_cache(maxsize=65536)
def bucket_key(detection: str, group: str) -> str:
    return f"{detection}.{hashlib.sha256(group.encode()).hexdigest()[:24]}"


def geometry(d: Detection, lateness_us: int) -> tuple[int, int]:
    """(pane length in µs, window length in panes): a thirtieth of the window, at least 1 s, and
    long enough that the panes a bucket keeps (window + lateness) stay under `MAX_PANES`."""
    window = d.window // _US if d.window is not None else 0
    pane = max(1_000_000, window // PANES_PER_WINDOW, math.ceil((window + lateness_us) / MAX_PANES))
    return pane, max(1, math.ceil(window / pane))


class _Facts:
    """Per-batch memo of what each event contributes to any pane, computed once per event."""

    def __init__(self) -> None:
        self._facts: dict[str, Fact] = {}

    def of(self, e: Event) -> Fact:
        got = self._facts.get(e.id)
        if got is None:
            refs = sorted((entity_ref(x), x) for x in e.entities)
            ev = e.evidence
            got = self._facts[e.id] = Fact(
                id=e.id,
                digest=hashlib.blake2b(e.id.encode(), digest_size=8).hexdigest(),
                time=(e.time - EPOCH) // _US,
                position=f"{ev.hub}/{ev.partition}" if ev.partition is not None and ev.sequence_number is not None
                else None,
                sequence=ev.sequence_number if ev.sequence_number is not None else -1,
                severity=SEVERITY_ORDER.index(e.severity) if e.severity else NONE,
                alert_kind=e.kind if e.source is Source.DEFENDER else None,
                sample=(e.kind, e.source.value, e.title, where(ev)),
                refs=frozenset(r for r, _ in refs),
                entities=refs,
                trusted=frozenset(r for r, x in refs if x.origin is not Origin.APP),
                mark=f"{e.source.value}|{ev.hub}/{ev.partition}" if ev.partition is not None else e.source.value,
                tenant=e.tenant,
                json={r: _json(x, x.origin) for r, x in refs},
            )  # fmt: skip
        return got


def where(ev: Evidence) -> str:
    """Where an event's bytes are: the message's SHA-256 and the item's JSON pointer in it, and the
    Event Hubs position when known (`<digest><pointer>@<hub>/<partition>#<sequence>`)."""
    at = f"@{ev.hub}/{ev.partition}#{ev.sequence_number}" if ev.partition is not None else f"@{ev.hub}"
    return f"{ev.message}{ev.pointer}{at}"


@lru_cache(maxsize=65536)
def _json(e: Entity, origin: Origin) -> bytes:
    """An entity as JSON, one copy for equal entities of one origin (`origin` is not part of an
    entity's equality): the states that hold it share it."""
    return orjson.dumps(e)


def entity_ref(e: Entity) -> str:
    return _ref(e.type, e.key)


@lru_cache(maxsize=65536)
def _ref(kind: str, key: str) -> str:
    return hashlib.sha1(f"{kind}\x00{key}".encode(), usedforsecurity=False).hexdigest()[:12]


@dataclass(slots=True)
class Carry:
    """The incident that may still grow, as far as it reaches into dropped panes."""

    id: str
    summary: Summary  # dropped panes from its start to its last final trigger
    tail: Summary  # dropped panes after that trigger: they join if a later trigger chains on
    last_trigger: int  # pane index
    last_time: int  # µs

    def dump(self) -> list[Any]:
        return [self.id, self.summary.dump(), self.tail.dump(), self.last_trigger, self.last_time]

    @classmethod
    def load(cls, raw: list[Any]) -> Carry:
        return cls(raw[0], Summary.load(raw[1]), Summary.load(raw[2]), raw[3], raw[4])


@dataclass(slots=True)
class _Segment:
    triggers: list[Trigger]
    times: list[int]
    carried: bool  # continues the carry


@dataclass(slots=True)
class State:
    detection: str
    group: str
    pane_us: int
    width: int
    final_before: int | None  # pane index: triggers before it are final; events before it too late
    watermarks: dict[str, int]  # "source|hub/partition" (or "source") → the newest event time merged from it, µs
    applied: dict[str, int]  # "hub/partition" → highest sequence number merged
    panes: dict[int, Pane]
    # by reference: as JSON (bytes) or as stored (dicts) until an incident needs them as entities
    entities: dict[str, Entity | dict[str, Any] | bytes]
    group_refs: list[str]
    carry: Carry | None
    live: dict[str, str]  # incident id → digest of what was last written
    triggers: dict[int, int] = field(default_factory=dict)  # pane → evidence start, for triggers not final
    stored: set[int] = field(default_factory=set)  # pane chunks in the store
    dirty: set[int] = field(default_factory=set)  # pane chunks changed since
    warm: set[int] = field(default_factory=set)  # pane chunks the last write rewrote: their panes keep their JSON
    touched: list[int] = field(default_factory=list)  # the lowest and highest pane this batch changed
    # record number → the references it holds (in order): the records of its entities, as the store has
    # them once written, and which record holds each entity (`ENTITIES_PER_RECORD`)
    records: dict[int, dict[str, None]] = field(default_factory=dict)
    record_of: dict[str, int] = field(default_factory=dict)
    entity_records: set[int] = field(default_factory=set)  # records of its entities in the store
    entities_changed: set[int] = field(default_factory=set)  # records changed since
    tenant: str | None = None  # the tenant of its events (the group's, when the group carries one)
    normal: list[float] | None = None  # the group's learned normal (`baseline`): [average, windows, next window]
    weak: set[str] = field(init=False)  # references of entities only an application has named (derived)
    # (carried, with its tail, first pane) → (last pane folded, the summary so far): what an
    # incident's span has folded of panes no batch has changed since (derived, never stored)
    folded: dict[tuple[bool, bool, int], tuple[int, Summary]] = field(init=False, default_factory=dict)
    reach: int = field(init=False, default=0)  # how many panes back from the newest a batch changes, lately

    def __post_init__(self) -> None:
        self.weak = {r for r, e in self.entities.items() if _origin(e) is Origin.APP}

    @classmethod
    def new(cls, d: Detection, group: str, lateness_us: int) -> State:
        pane, width = geometry(d, lateness_us)
        return cls(d.id, group, pane, width, None, {}, {}, {}, {}, [], None, {})

    @classmethod
    def load(cls, doc: dict[str, Any], chunks: Mapping[int, bytes], entities: Mapping[int, bytes]) -> State:
        """From the stored head, pane chunks and records of entities. Entities stored otherwise (in
        the head, or in one record, as written before; a record over `ENTITIES_PER_RECORD`) are
        read, and written again in records at the next change."""
        panes = {raw[0]: Pane.load(raw) for chunk in chunks.values() for raw in orjson.loads(chunk)}
        held: dict[str, Any] = dict(doc.get("entities", {}))  # a head from before entities had a record
        records: dict[int, dict[str, None]] = {}
        for n, record in sorted(entities.items()):
            stored = orjson.loads(record)
            held.update(stored)
            records[n] = dict.fromkeys(stored)
        state = cls(
            doc["detection"], doc["group"], doc["pane_us"], doc["width"], doc["final_before"], _watermarks(doc),
            doc["applied"], panes, held, doc["group_refs"], Carry.load(doc["carry"]) if doc["carry"] else None,
            doc["live"], dict(doc["triggers"]), set(chunks), records=records,
            record_of={r: n for n, refs in records.items() for r in refs}, entity_records=set(entities),
            tenant=doc.get("tenant"), normal=doc.get("normal"),
        )  # fmt: skip
        placed = sum(map(len, records.values()))
        if not placed == len(state.record_of) == len(held) or any(n < 0 or len(r) > ENTITIES_PER_RECORD
                                                                  for n, r in records.items()):  # fmt: skip
            state._repack()
        return state

    def dump(self) -> tuple[bytes, dict[int, bytes], list[int], dict[int, bytes], list[int]]:
        """The head, the pane chunks that changed, those now empty, the records of entities that
        changed and those now empty: a write of what changed."""
        head = orjson.dumps(
            {
                "detection": self.detection, "group": self.group, "pane_us": self.pane_us, "width": self.width,
                "final_before": self.final_before, "watermarks": self.watermarks, "applied": self.applied,
                "group_refs": self.group_refs,
                "carry": self.carry.dump() if self.carry else None, "live": self.live,
                "triggers": sorted(self.triggers.items()), "tenant": self.tenant, "normal": self.normal,
            }
        )  # fmt: skip
        by_chunk = {
            n: [p for i in range(n * PANES_PER_CHUNK, (n + 1) * PANES_PER_CHUNK) if (p := self.panes.get(i))]
            for n in self.dirty
        }
        chunks = {n: orjson.dumps([p.dump() for p in panes]) for n, panes in by_chunk.items() if panes}
        dropped, self.stored = _written(self.stored, chunks, self.dirty)
        # a pane keeps its JSON while its chunk is being rewritten (the newest, in order), and lets it go
        # once a write leaves the chunk as it was: most panes never change again, and their JSON would
        # otherwise double the memory a state takes
        for n in self.warm - self.dirty:
            for i in range(n * PANES_PER_CHUNK, (n + 1) * PANES_PER_CHUNK):
                if (p := self.panes.get(i)) is not None:
                    p.cool()
        self.warm = set(chunks)
        self.dirty = set()
        changed, held, fragment = self.entities_changed, self.entities, orjson.Fragment
        # each entity's JSON is written as it is: serialized once, when it came
        entities = {n: orjson.dumps({r: fragment(e) if type(e := held[r]) is bytes else e for r in refs})
                    for n in changed if (refs := self.records.get(n))}  # fmt: skip
        gone, self.entity_records = _written(self.entity_records, entities, changed)
        self.entities_changed = set()
        return head, chunks, dropped, entities, gone

    @property
    def watermark(self) -> int:
        """The newest event time merged from any source (what expiry measures idleness by)."""
        return max(self.watermarks.values(), default=NONE)

    def _final_before(self, d: Detection, lateness_us: int) -> int:
        """The first pane that is not final: the slowest watermark (of every source and partition
        seen) minus the lateness. A source the detection declares but this bucket has not seen yet
        holds finality back too. Either holds it only as far as the panes a bucket keeps allow
        (`MAX_PANES`): past that, the leader's lateness decides."""
        leader = self.watermark
        slowest = min(self.watermarks.values(), default=NONE)
        if d.sources is not None and not d.sources <= {k.partition("|")[0] for k in self.watermarks}:
            slowest = NONE
        held = leader // self.pane_us - MAX_PANES + self.width  # finality no later than this keeps ≤ MAX_PANES panes
        return max((slowest - lateness_us) // self.pane_us, held)

    # --- one batch ---

    def apply(
        self, d: Detection, matches: list[Match], facts: _Facts, lateness_us: int, c: CorrelationCounts,
        *, book: AssetBook | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Merge a batch's matches, re-evaluate, prune; what to write (`BucketWrite` fields), or
        None when nothing changed (a redelivery)."""
        newest = max(self.panes, default=None)
        if not self._merge(d, matches, facts, c):
            return None
        if newest is not None:  # fold no nearer the newest pane than batches lately reached back
            self.reach = max(newest - self.touched[0], self.reach * 7 // 8)
        self.folded = {k: v for k, v in self.folded.items() if v[0] < self.touched[0]}  # a pane it folded changed
        # only triggers whose window holds a changed pane can change: evaluate those, keep the rest
        lo, hi = self.touched[0], self.touched[1] + self.width - 1
        if self.final_before is not None:
            lo = max(lo, self.final_before)
        panes = [self.panes[i] for i in self._between(lo - self.width + 1, hi)]
        fresh = KINDS[d.kind].evaluate(panes, d, self.width, lo, self.threshold(d))
        self.triggers = {p: s for p, s in self.triggers.items() if not lo <= p <= hi}
        self.triggers.update((t.pane, t.start) for t in fresh)
        segments = self._segments(d, [Trigger(p, s) for p, s in sorted(self.triggers.items())])
        incidents = [self._incident(d, seg, book) for seg in segments]
        self._prune(d, segments, [inc.id for inc in incidents], lateness_us)
        upsert, live = [], {}
        for inc, seg in zip(incidents, segments, strict=True):
            digest = inc.fingerprint()
            if self.live.get(inc.id) != digest:
                upsert.append(inc)
            if self._is_live(inc, seg):
                live[inc.id] = digest
        computed = {inc.id for inc in incidents}
        delete = [i for i in self.live if i not in computed]
        self.live = live
        c.incidents += len(upsert)
        head, chunks, dropped, entities, gone = self.dump()
        # the batch's events that the changed incidents hold are kept with them; an earlier batch's
        # are kept by where their bytes are (each timeline entry's `evidence`: Event Hubs, Capture)
        held = {i for inc in upsert for i in inc.event_ids}
        evidence = list({m.event.id: m.event for m in matches if m.event.id in held}.values()) if held else []
        return {"doc": head, "watermark": self.watermark, "chunks": chunks, "drop_chunks": dropped,
                "entities": entities, "drop_entities": gone, "upsert": upsert, "delete": delete,
                "evidence": evidence}  # fmt: skip

    def _merge(self, d: Detection, matches: list[Match], facts: _Facts, c: CorrelationCounts) -> bool:
        applied, seen = dict(self.applied), self.applied
        values_cap = int(d.threshold) if d.kind == "value_count" and d.threshold else 0
        group_parts = set(self.group.split("|"))
        steps = len(d.predicates)
        panes, entities, pane_us, final_before = self.panes, self.entities, self.pane_us, self.final_before
        watermarks = self.watermarks
        weak = self.weak
        lo = hi = None
        for m in matches:
            f = facts.of(m.event)
            if f.position is not None and f.sequence <= seen.get(f.position, -1):
                continue  # this bucket already merged that Event Hubs position
            index = f.time // pane_us
            if final_before is not None and index < final_before:
                c.too_late += 1
                continue
            if f.position is not None and f.sequence > applied.get(f.position, -1):
                applied[f.position] = f.sequence
            if self.tenant is None and f.tenant is not None:
                self.tenant = f.tenant
            if not entities.keys() >= f.refs:
                for ref, entity in f.entities:
                    if ref not in entities:
                        entities[ref] = f.json[ref]  # kept as its JSON: what the state writes, and reads back
                        self._place(ref)
                        if entity.origin is Origin.APP:
                            weak.add(ref)
                        if entity.key in group_parts or (isinstance(entity, Ip) and entity.prefix in group_parts):
                            self.group_refs = sorted({*self.group_refs, ref})
            if weak and not weak.isdisjoint(f.trusted):  # an application's word, now confirmed by Azure or Defender
                for ref in f.refs:
                    if ref in weak and ref in f.trusted:
                        entities[ref] = f.json[ref]
                        weak.discard(ref)
                        self.entities_changed.add(self.record_of[ref])
            pane = panes.get(index)
            if pane is None:
                pane = panes[index] = Pane(index, steps)
            if pane.add(f, m.steps, m.value, values_cap, traits=m.traits, sizes=m.sizes):
                self.dirty.add(index // PANES_PER_CHUNK)
                lo = index if lo is None else min(lo, index)
                hi = index if hi is None else max(hi, index)
                mark = f.mark
                if f.time > watermarks.get(mark, NONE):
                    watermarks[mark] = f.time
        self.applied = applied
        if lo is None or hi is None:
            self.touched = []
            return False
        self.touched = [lo, hi]
        return True

    def _segments(self, d: Detection, triggers: list[Trigger]) -> list[_Segment]:
        suppress = d.suppress_for // _US
        segments: list[_Segment] = []
        if self.carry is not None:
            segments.append(_Segment([], [], carried=True))
        for trig in triggers:
            t = self.panes[trig.pane].end
            prev = segments[-1].times[-1] if segments and segments[-1].times else None
            if prev is None and segments and segments[-1].carried:
                assert self.carry is not None
                prev = self.carry.last_time
            if prev is not None and t - prev <= suppress:
                segments[-1].triggers.append(trig)
                segments[-1].times.append(t)
            else:
                segments.append(_Segment([trig], [t], carried=False))
        return segments

    def _span(self, seg: _Segment) -> Summary:
        """The summary of the retained panes an incident spans (with the carry's, if it continues it).

        An incident is built again at every change of its bucket, and a long one spans many panes
        (124 on average on the bench stream) of which a batch changes the last few: what was folded
        of the others is kept (`folded`) and the fold goes on from there. Folding is adding pane by
        pane (`Summary.fold`), so the result is the same to the bit."""
        carried, tail = seg.carried, seg.carried and bool(seg.triggers)
        if carried:
            assert self.carry is not None
            lo, hi = min(self.panes, default=0), seg.triggers[-1].pane if tail else self.carry.last_trigger
        else:
            lo, hi = seg.triggers[0].start, seg.triggers[-1].pane
        indices = self._between(lo, hi)
        key = (carried, tail, lo)
        kept = self.folded.get(key)
        if kept is not None and kept[0] <= hi:
            summary = kept[1].copy()
            indices = [i for i in indices if i > kept[0]]
        elif carried:
            assert self.carry is not None
            summary = self.carry.summary.copy()
            if tail:
                summary.merge(self.carry.tail)
        else:
            summary = Summary()
        stable = bisect.bisect_left(indices, hi - self.reach)  # the panes a next batch likely leaves as they are
        if stable > 0:
            summary.fold(self.panes[i] for i in indices[:stable])
            self.folded[key] = (indices[stable - 1], summary.copy())
            indices = indices[stable:]
        summary.fold(self.panes[i] for i in indices)
        return summary

    def _incident(self, d: Detection, seg: _Segment, book: AssetBook | None = None) -> Incident:
        s = self._span(seg)
        assert s.start is not None
        if seg.carried:
            assert self.carry is not None
            ident, last_trigger_time = self.carry.id, self.carry.last_time
        else:
            ident = incident_id(d.id, self.group, f"{_iso_us(s.start[0])}/{s.start[1]}")
            last_trigger_time = seg.times[-1]
        if seg.times:
            last_trigger_time = seg.times[-1]
        severity = d.severity
        if d.severity_from_events and s.severity != NONE:
            severity = max(severity, SEVERITY_ORDER[s.severity], key=SEVERITY_ORDER.index)
        lasted = (s.end - s.start[0]) * _US
        for step in d.escalate:
            if (step.events is None or s.events >= step.events) and (step.lasting is None or lasted >= step.lasting):
                severity = max(severity, step.severity, key=SEVERITY_ORDER.index)
        severity, weighed = _weighed(d, s, severity)
        refs = list(dict.fromkeys([*self.group_refs, *sorted(s.entities)]))
        entities = tuple(_entity(self.entities[r]) for r in refs if r in self.entities)
        attributes: dict[str, Any] = {}
        if book:
            asset = book.of(e.resource_id for e in entities if isinstance(e, AiResource | AiProject))
            severity, moved = book.weigh(severity, asset, alerted=bool(s.kinds))
            weighed = "; ".join(w for w in (weighed, moved) if w) or None
            if asset is not None:
                attributes["asset"] = context(asset)
        if weighed:
            attributes["weighed"] = weighed
        atlas, owasp = list(d.atlas), list(d.owasp_llm)
        if d.alert_mapping:
            for k in sorted(s.kinds):
                m = mapping.mapping_of(k)
                atlas += m.atlas
                owasp += m.owasp_llm
        samples = s.samples()
        step_names = [st.name for st in d.steps] if d.steps else None
        timeline = tuple(_entry(sample, step_names[sample[2]] if step_names else None) for sample in samples)
        kind = samples[0][3] if samples else ""
        if samples and samples[0][4] == Source.DEFENDER.value and samples[0][5] and mapping.mapping_of(kind).generic:
            kind = samples[0][5]  # an alert type nobody mapped yet: its display name says more than its type
        title = render_title(d.title, kind=kind, entities=entities, count=s.events, group=split_group(self.group)[1])
        return Incident(
            id=ident,
            detection=d.id,
            bucket=bucket_key(d.id, self.group),
            group=self.group,
            title=title,
            severity=severity,
            first_seen=_dt(s.start[0]),
            last_seen=_dt(s.end),
            entities=entities,
            atlas=tuple(dict.fromkeys(atlas)),
            owasp_llm=tuple(dict.fromkeys(owasp)),
            event_ids=tuple(dict.fromkeys(i for _, i, *_ in samples)),
            event_count=s.events,
            timeline=timeline,
            fallback=d.fallback,
            suppress_until=_dt(last_trigger_time + d.suppress_for // _US),
            why=_joined(self._why(d, seg.triggers[-1]) if seg.triggers else None, weighed),
            tenant=self.tenant,
            attributes=attributes,
        )

    def _why(self, d: Detection, trigger: Trigger) -> str:
        """What the rule reached in the window of a firing, against what it asks, in words:
        `11 events in 15m (needs 5)`, `8 denied then 3 accepted in 15m (needs 5, 1)`."""
        window = [p for i, p in self.panes.items() if trigger.pane - self.width < i <= trigger.pane]
        span = _duration(d.window) if d.window else ""
        if d.kind == "single":
            return f"{sum(p.events for p in window)} matching event(s)"
        needs = _num(round(self.threshold(d)))
        normal = self.learned(d)
        if normal is not None and d.baseline is not None:
            needs += (
                f": {d.baseline.factor:g}× this group's normal of {_num(round(normal))}, at least {_num(d.threshold)}"
            )
        if d.kind == "event_count":
            return f"{sum(p.events for p in window)} events in {span} (needs {needs})"
        if d.kind == "value_count":
            distinct = len(set().union(*(p.values for p in window)))
            more = "+" if distinct >= (d.threshold or 0) else ""
            return f"{distinct}{more} distinct {d.field} in {span} (needs {_num(d.threshold)})"
        if d.kind == "value_sum":
            return f"{_num(sum(p.total for p in window))} {d.field} in {span} (needs {needs})"
        steps = d.steps or []
        counts = [sum(p.counts[n] for p in window) for n in range(len(steps))]
        joiner = " then " if d.kind == "temporal_ordered" else " and "
        reached = joiner.join(f"{c} {s.name}" for c, s in zip(counts, steps, strict=True))
        return f"{reached} in {span} (needs {', '.join(str(s.min) for s in steps)})"

    # --- the group's normal (`Detection.baseline`) ---

    def threshold(self, d: Detection) -> float:
        """What a window must reach: the detection's threshold, or `factor` times the group's
        normal once `warmup` windows are learned, whichever is more."""
        normal = self.learned(d)
        base = d.threshold or 0.0
        return base if normal is None or d.baseline is None else max(base, d.baseline.factor * normal)

    def learned(self, d: Detection) -> float | None:
        """The group's normal total per window, once warm (the average, corrected for its start)."""
        if d.baseline is None or self.normal is None:
            return None
        if self.normal[1] * self.width * self.pane_us < d.baseline.warmup // _US:
            return None
        raw, n, _ = self.normal
        return float(raw / (1 - (1 - self._alpha(d)) ** n))

    def _alpha(self, d: Detection) -> float:
        assert d.baseline is not None
        return float(1 - 0.5 ** (self.width * self.pane_us / (d.baseline.half_life // _US)))

    def _learn(self, d: Detection, final_before: int) -> None:
        """Fold the windows (tumbling, `width` panes) that became final into the normal: each
        window's total, capped at what would have fired then; empty windows count as nothing."""
        if not self.panes:
            return
        width, alpha = self.width, self._alpha(d)
        if self.normal is None:
            self.normal = [0.0, 0, min(self.panes) // width]
        raw, n, at = self.normal
        done = final_before // width  # the windows before this one are final
        if done <= at:
            return
        totals: dict[int, float] = {}
        for i, p in self.panes.items():
            if at <= i // width < done:
                totals[i // width] = totals.get(i // width, 0.0) + (p.total if d.kind == "value_sum" else p.events)
        for w in sorted(totals):
            raw, n = raw * (1 - alpha) ** (w - at), n + (w - at)  # the empty windows before it
            self.normal = [raw, n, w]
            x = min(totals[w], self.threshold(d))
            raw, n, at = raw + alpha * (x - raw), n + 1, w + 1
        self.normal = [raw * (1 - alpha) ** (done - at), n + (done - at), done]

    def _is_live(self, inc: Incident, seg: _Segment) -> bool:
        """After pruning: can the incident still change? (the carry's, or one with a trigger not final)"""
        if self.final_before is None or (self.carry is not None and inc.id == self.carry.id):
            return True
        return any(t.pane >= self.final_before for t in seg.triggers)

    def _prune(self, d: Detection, segments: list[_Segment], ids: list[str], lateness_us: int) -> None:
        """Make final what no event within the lateness can change, and drop the panes only that needed.

        The last segment with a final trigger becomes the carry (only it can be continued by a later
        trigger); dropped panes it spans are folded into its summary, or into its tail if they come
        after its last final trigger."""
        final_before = self._final_before(d, lateness_us)
        if self.final_before is not None and final_before <= self.final_before:
            return
        self.final_before = final_before
        horizon = final_before - self.width + 1  # the panes before it are dropped
        # the carry's summaries may change, and so may a span over dropped panes
        self.folded = {k: v for k, v in self.folded.items() if not k[0] and k[2] >= horizon}
        if d.baseline is not None:
            self._learn(d, final_before)
        for seg, ident in zip(reversed(segments), reversed(ids), strict=True):
            finals = [t for t in seg.triggers if t.pane < final_before]
            if not finals:
                continue
            if seg.carried:
                assert self.carry is not None
                self.carry.summary.merge(self.carry.tail)
                self.carry.tail = Summary()
                start = min(self.panes)
            else:
                self.carry = Carry(ident, Summary(), Summary(), 0, 0)
                start = seg.triggers[0].start
            self.carry.last_trigger = finals[-1].pane
            self.carry.last_time = self.panes[finals[-1].pane].end
            break
        else:
            start = min(self.panes)
        lowest = min(self.panes)
        lowest_chunk = lowest // PANES_PER_CHUNK
        for i in self._between(lowest, horizon - 1):
            if self.carry is not None and i >= start:
                (self.carry.summary if i <= self.carry.last_trigger else self.carry.tail).add(self.panes[i])
            del self.panes[i]
            self.dirty.add(i // PANES_PER_CHUNK)
        if self.carry is not None and final_before * self.pane_us - self.carry.last_time > d.suppress_for // _US:
            self.carry = None  # no later trigger can continue it: its incident is final
        self.triggers = {p: s for p, s in self.triggers.items() if p >= final_before}
        if self.panes and min(self.panes) // PANES_PER_CHUNK == lowest_chunk:
            return  # forget entities no pane refers to any more once a whole chunk of panes is gone
        used = set(self.group_refs)
        for pane in self.panes.values():
            used.update(pane.entities)
        if self.carry:
            used.update(self.carry.summary.entities)
            used.update(self.carry.tail.entities)
        unused = self.entities.keys() - used
        if len(unused) > ENTITY_SLACK:  # not at each change: entities seen again stay
            self.entities = {r: e for r, e in self.entities.items() if r in used}
            for r in unused:
                n = self.record_of.pop(r)
                del self.records[n][r]
                if not self.records[n]:
                    del self.records[n]
                self.entities_changed.add(n)
            if len(self.records) > 2 * (len(self.entities) // ENTITIES_PER_RECORD + 1):  # mostly holes: pack them
                self._repack()

    def _between(self, lo: int, hi: int) -> list[int]:
        """The indices of its panes from `lo` to `hi`, in order: by probing each index when there
        are fewer of those than panes (a batch touches the newest few of up to `MAX_PANES`)."""
        panes = self.panes
        if hi - lo < len(panes):
            return [i for i in range(lo, hi + 1) if i in panes]
        return sorted(i for i in panes if lo <= i <= hi)

    # --- where its entities are stored ---

    def _place(self, ref: str) -> None:
        """A new entity goes into the newest record, or a new one once that is full (records are
        made in increasing number: the newest is the last)."""
        n = next(reversed(self.records), 0)
        if len(self.records.get(n, ())) >= ENTITIES_PER_RECORD:
            n += 1
        self.records.setdefault(n, {})[ref] = None
        self.record_of[ref] = n
        self.entities_changed.add(n)

    def _repack(self) -> None:
        """Every entity placed again, in full records from 0: all of them rewritten once."""
        before = set(self.records) | self.entity_records
        self.records, self.record_of = {}, {}
        for k, ref in enumerate(self.entities):
            self.records.setdefault(k // ENTITIES_PER_RECORD, {})[ref] = None
            self.record_of[ref] = k // ENTITIES_PER_RECORD
        self.entities_changed |= before | set(self.records)


def _written(stored: set[int], written: Mapping[int, bytes], changed: set[int]) -> tuple[list[int], set[int]]:
    """Of the records (pane chunks, entity records) that `changed`, those now empty that the store
    has, to drop; and the records the store has once `written` is written and those dropped."""
    gone = [n for n in changed if n not in written and n in stored]
    return gone, (stored | written.keys()) - set(gone)


def _weighed(d: Detection, s: Summary, severity: Severity) -> tuple[Severity, str | None]:
    """The severity once the detection's weights are applied to the incident's events, and what
    moved it ("Entra identity 100%, steady sizes (±3%): 2 lower"). An incident that holds a
    Defender alert is never weighed down: Defender judged it an attack."""
    if not d.weigh or not s.events:
        return severity, None
    moved, held, k, j = 0, [], 0, 0
    alerted = bool(s.kinds)  # Defender judged part of it an attack: nothing weighs it down
    for w in d.weigh:
        if w.share is not None:
            share = (s.traits[k] if k < len(s.traits) else 0) / s.events
            k += 1
            if share >= w.share and not (alerted and w.severity < 0):
                moved += w.severity
                held.append(f"{w.name} {share:.0%}")
        elif w.spread is not None:
            n, total, squares = s.moments[j] if j < len(s.moments) else (0.0, 0.0, 0.0)
            j += 1
            if n >= MIN_STEADY and total > 0:
                mean = total / n
                spread = math.sqrt(max(squares / n - mean * mean, 0.0)) / mean
                if spread <= w.spread and not (alerted and w.severity < 0):
                    moved += w.severity
                    held.append(f"{w.name} (±{spread:.0%})")
    if not held:
        return severity, None
    level = min(max(SEVERITY_ORDER.index(severity) + moved, 0), len(SEVERITY_ORDER) - 1)
    way = f"{abs(moved)} lower" if moved < 0 else f"{moved} higher" if moved > 0 else "no change"
    return SEVERITY_ORDER[level], f"{', '.join(held)}: {way}"


MIN_STEADY = 20  # values a `steady` weight needs before it can say sizes are even


def _size(values: list[Any]) -> float | None:
    v = values[0] if values else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1e15 else None


def _joined(why: str | None, weighed: str | None) -> str | None:
    return f"{why}; weighed: {weighed}" if why and weighed else why


def _watermarks(doc: dict[str, Any]) -> dict[str, int]:
    if "watermarks" in doc:
        return dict(doc["watermarks"])
    return {"*": doc["watermark"]} if doc.get("watermark", NONE) != NONE else {}  # a head written before sources


def _origin(raw: Entity | dict[str, Any] | bytes) -> Origin:
    if isinstance(raw, bytes):
        return _parsed(raw).origin
    return raw.origin if isinstance(raw, Entity) else Origin(raw.get("origin") or Origin.AZURE)


def _entity(raw: Entity | dict[str, Any] | bytes) -> Entity:
    if isinstance(raw, bytes):
        return _parsed(raw)
    return entity_from_dict(raw) if isinstance(raw, dict) else raw


@lru_cache(maxsize=65536)
def _parsed(doc: bytes) -> Entity:
    """An entity from its JSON (frozen: one parse serves every incident built from it)."""
    return entity_from_dict(orjson.loads(doc))


@lru_cache(maxsize=65536)
def _entry(sample: Sample, step: str | None) -> TimelineEntry:
    """A sample as a timeline entry (frozen: one serves every build of the incidents holding it)."""
    t, event_id, _, kind, source, title, *at = sample
    return TimelineEntry(time=_dt(t), event_id=event_id, kind=kind, source=source, step=step, title=title,
                         evidence=at[0] if at else None)  # fmt: skip


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _dt(us: int) -> datetime:
    return EPOCH + us * _US


def _iso_us(us: int) -> str:
    return _dt(us).isoformat()
