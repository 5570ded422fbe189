"""The correlator: events → per-group state → incidents, in event time.

State is one *bucket* per (detection, group): the members (matching events) still inside the
detection's reach. Incidents are a pure function of a bucket's members, so they do not depend on
arrival order, redelivery or how many instances share the stream:

- a batch's matches are grouped in memory, then each touched bucket is read once, merged (a set
  union: a redelivered event changes nothing), evaluated, and written back with optimistic
  concurrency (SQLite version / Table ETag). A conflict (another instance wrote the bucket since
  it was read) re-reads and re-merges that bucket; nothing is lost, nothing doubles;
- members older than `max(window, suppress_for) + lateness` behind the newest member of the bucket
  are dropped (state stays bounded); incidents that ended before that horizon are final and kept;
  an event older than the horizon is counted as too late for that bucket.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog

from aegis.correlate import mapping
from aegis.correlate.detections import Detection
from aegis.correlate.incidents import Incident, TimelineEntry, incident_id, max_severity, render_title
from aegis.correlate.kinds import KINDS, Member, Trigger
from aegis.errors import StoreUnavailable
from aegis.events import Event, Source
from aegis.store.base import Bucket, BucketWrite, Store

MAX_CONFLICT_RETRIES = 8
log = structlog.get_logger("aegis.correlate")


@dataclass(slots=True)
class CorrelationCounts:
    matches: int = 0
    buckets: int = 0
    incidents: int = 0
    too_late: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)


class Correlator:
    def __init__(self, detections: Sequence[Detection], store: Store, *, lateness: timedelta = timedelta(hours=1)):
        self.detections = {d.id: d for d in detections}
        self.store = store
        self.lateness = lateness

    def process(self, events: Sequence[Event]) -> CorrelationCounts:
        counts = CorrelationCounts()
        additions: dict[str, tuple[Detection, str, set[Member]]] = {}
        for d in self.detections.values():
            try:
                self._match(d, events, additions, counts)
            except Exception as exc:  # a detection bug is reported, never fatal for the others
                log.error("detection_failed", detection=d.id, error=type(exc).__name__)
                counts.errors.append(f"{d.id}: {type(exc).__name__}")
        if not additions:
            return counts
        by_id = {e.id: e for e in events}
        pending = dict(additions)
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = self.store.load_buckets(list(pending))
            writes = []
            for key, (d, group, new) in pending.items():
                write = self._merge(d, group, key, loaded.get(key), new=new, by_id=by_id, c=counts)
                if write is not None:
                    writes.append(write)
            conflicts = self.store.commit_buckets(writes)
            counts.buckets += len(writes) - len(conflicts)
            counts.conflicts += len(conflicts)
            pending = {k: v for k, v in pending.items() if k in conflicts}
            if not pending:
                return counts
        raise StoreUnavailable(f"{len(pending)} correlation bucket(s) still conflicting after retries")

    def _match(
        self,
        d: Detection,
        events: Sequence[Event],
        out: dict[str, tuple[Detection, str, set[Member]]],
        c: CorrelationCounts,
    ) -> None:
        value_of = d.value_getter
        for e in events:
            for step, predicate in enumerate(d.predicates):
                if not predicate(e):
                    continue
                value = None
                if value_of is not None:
                    values = value_of(e)
                    value = values[0] if values else None
                for parts in itertools.product(*(g(e) for g in d.group_getters)):
                    group = "|".join(str(p) for p in parts)
                    key = bucket_key(d.id, group)
                    out.setdefault(key, (d, group, set()))[2].add(Member(e.time, e.id, step, value))
                    c.matches += 1

    def _merge(
        self,
        d: Detection,
        group: str,
        key: str,
        bucket: Bucket | None,
        *,
        new: set[Member],
        by_id: dict[str, Event],
        c: CorrelationCounts,
    ) -> BucketWrite | None:
        old = _members(bucket.doc) if bucket else set()
        old_horizon = _horizon(bucket.doc) if bucket else None
        fresh = {m for m in new if old_horizon is None or m.time >= old_horizon}
        c.too_late += len(new) - len(fresh)
        if fresh <= old:
            return None  # a redelivery: nothing new for this bucket
        members = sorted(old | fresh)
        reach = max(d.window or timedelta(0), d.suppress_for) + self.lateness
        horizon = members[-1].time - reach
        if old_horizon is not None:
            horizon = max(horizon, old_horizon)
        live = [m for m in members if m.time >= horizon]
        triggers = KINDS[d.kind].evaluate(live, d)
        incidents = self._incidents(d, group, key, triggers, by_id)
        c.incidents += len(incidents)
        doc = {"detection": d.id, "group": group, "horizon": horizon.isoformat(), "members": [_dump(m) for m in live]}
        return BucketWrite(key=key, expected=bucket.version if bucket else None, doc=orjson.dumps(doc),
                           incidents=incidents, keep_before=horizon)  # fmt: skip

    def _incidents(
        self, d: Detection, group: str, key: str, triggers: list[Trigger], by_id: dict[str, Event]
    ) -> list[Incident]:
        segments: list[list[Trigger]] = []
        for t in sorted(triggers, key=lambda t: (t.time, t.members[-1].event_id)):
            if segments and t.time - segments[-1][-1].time <= d.suppress_for:
                segments[-1].append(t)
            else:
                segments.append([t])
        if not segments:
            return []
        missing = {m.event_id: m.time for seg in segments for t in seg for m in t.members if m.event_id not in by_id}
        if missing:
            by_id = {**by_id, **self.store.events_by_id(missing)}
        return [self._incident(d, group, key, seg, by_id) for seg in segments]

    def _incident(self, d: Detection, group: str, key: str, seg: list[Trigger], by_id: dict[str, Event]) -> Incident:
        members = sorted({m for t in seg for m in t.members})
        ids = list(dict.fromkeys(m.event_id for m in members))
        events = [by_id[i] for i in ids if i in by_id]
        severity = d.severity
        if d.severity_from_events:
            severity = max_severity(severity, *(e.severity for e in events))
        for step in d.escalate:
            if len(ids) >= step.events:
                severity = max_severity(severity, step.severity)
        atlas, owasp = list(d.atlas), list(d.owasp_llm)
        if d.alert_mapping:
            for e in events:
                if e.source is Source.DEFENDER:
                    m = mapping.mapping_of(e.kind)
                    atlas += m.atlas
                    owasp += m.owasp_llm
        entities: dict[tuple[str, str], Any] = {}
        for e in events:
            for ent in e.entities:
                entities.setdefault((ent.type, ent.key), ent)
        step_names = [s.name for s in d.steps] if d.steps else None
        timeline = tuple(
            TimelineEntry(
                time=m.time,
                event_id=m.event_id,
                kind=by_id[m.event_id].kind if m.event_id in by_id else "",
                source=by_id[m.event_id].source.value if m.event_id in by_id else "",
                step=step_names[m.step] if step_names else None,
                title=by_id[m.event_id].title if m.event_id in by_id else None,
            )
            for m in members
        )
        return Incident(
            id=incident_id(d.id, group, f"{members[0].time.isoformat()}/{members[0].event_id}"),
            detection=d.id,
            bucket=key,
            group=group,
            title=render_title(d.title, events, group),
            severity=severity,
            first_seen=members[0].time,
            last_seen=members[-1].time,
            entities=tuple(entities.values()),
            atlas=tuple(dict.fromkeys(atlas)),
            owasp_llm=tuple(dict.fromkeys(owasp)),
            event_ids=tuple(ids),
            timeline=timeline,
            fallback=d.fallback,
            suppress_until=seg[-1].time + d.suppress_for,
        )


def bucket_key(detection: str, group: str) -> str:
    return f"{detection}.{hashlib.sha256(group.encode()).hexdigest()[:24]}"


def _dump(m: Member) -> list[Any]:
    return [m.time.isoformat(), m.event_id, m.step, m.value]


def _members(doc: dict[str, Any]) -> set[Member]:
    return {Member(datetime.fromisoformat(t), i, s, v) for t, i, s, v in doc["members"]}


def _horizon(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["horizon"])
