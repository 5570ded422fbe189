"""Detections carry their own test events and expected result; this runs them
(`aegis detections test`, and a pytest over every file in CI)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aegis.arm import parse_resource_id
from aegis.correlate import mapping
from aegis.correlate.detections import Detection, DetectionCase, SampleEvent
from aegis.correlate.engine import Correlator
from aegis.events import (
    AiResource,
    Entity,
    Event,
    Evidence,
    Host,
    Model,
    ModelDeployment,
    ServicePrincipal,
    Source,
    User,
    UserAgent,
    make_ip,
)
from aegis.normalize.fields import guid, resource_entities
from aegis.records import max_severity
from aegis.store.sqlite import SqliteStore

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Outcome:
    detection: str
    test: str
    passed: bool
    detail: str


def build_events(test: DetectionCase) -> list[Event]:
    events = []
    for index, spec in enumerate(test.events):
        for n in range(spec.repeat):
            events.append(_event(test.name, index, n, spec, START + spec.at + n * spec.every))
    return events


def _entity(kind: str, value: str) -> list[Entity]:
    match kind:
        case "ip":
            ip = make_ip(value)
            return [ip] if ip else []
        case "user":
            if "@" in value:
                return [User(upn=value.lower())]
            return [User(object_id=guid(value))] if guid(value) else [User(name=value)]
        case "host":
            return [Host(name=value, mde_machine_id=f"mde-{value.lower()}")]
        case "ai_resource":
            rid = parse_resource_id(value)
            return [AiResource(resource_id=rid.id, name=rid.name)]
        case "model_deployment":
            return [ModelDeployment(name=value)]
        case "model":
            return [Model(name=value)]
        case "user_agent":
            return [UserAgent(value=value)]
        case "service_principal":
            return [ServicePrincipal(app_id=guid(value), name=None if guid(value) else value)]
    raise ValueError(f"unknown entity kind {kind!r} in a detection test")


def _event(test: str, index: int, n: int, spec: SampleEvent, time: datetime) -> Event:
    resource = parse_resource_id(spec.resource) if spec.resource else None
    entities: list[Entity] = resource_entities(resource) if resource else []
    for kind, values in spec.entities.items():
        for value in [values] if isinstance(values, str) else values:
            entities += _entity(kind, value)
    return Event(
        id=hashlib.sha256(f"{test}/{index}/{n}".encode()).hexdigest()[:32],
        source=Source(spec.source),
        normalizer="test",
        kind=spec.kind,
        time=time,
        evidence=Evidence("0" * 64, f"/{index}/{n}", "test"),
        resource=resource,
        severity=spec.severity,
        entities=tuple(entities),
        attributes=dict(spec.attributes),
        tenant=spec.tenant,
    )


def alert_event(kind: str) -> Event:
    """A bare Defender alert of `kind`, as `detections coverage` probes the detections with."""
    return Event(id=kind, source=Source.DEFENDER, normalizer="probe", kind=kind, time=START,
                 evidence=Evidence("0" * 64, "", "probe"))  # fmt: skip


def run(detection: Detection, *, shuffle_seed: int | None = None) -> list[Outcome]:
    outcomes = []
    for test in detection.tests:
        events = build_events(test)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(events)  # noqa: S311 - test order, not secrets
        store = SqliteStore(":memory:")
        store.save({}, events, [])
        counts = Correlator([detection], store, lateness=timedelta(days=1)).process(events)
        incidents = store.incidents()
        store.close()
        problems = [f"detection failed: {e}" for e in counts.errors]
        if len(incidents) != test.expect.incidents:
            problems.append(f"{len(incidents)} incident(s), expected {test.expect.incidents}")
        if (
            incidents
            and test.expect.severity
            and max_severity(*(i.severity for i in incidents)) != test.expect.severity
        ):
            got = sorted({i.severity.value for i in incidents})
            problems.append(f"severity {got}, expected {test.expect.severity.value}")
        if incidents and test.expect.events is not None and incidents[0].event_count != test.expect.events:
            problems.append(f"{incidents[0].event_count} events in the incident, expected {test.expect.events}")
        keys = {e.key for i in incidents for e in i.entities}
        missing = [k for k in test.expect.entities if k not in keys]
        if missing:
            problems.append(f"missing entities {missing}")
        outcomes.append(Outcome(detection.id, test.name, not problems, "; ".join(problems) or "ok"))
    return outcomes


def alert_types_matched(d: Detection) -> list[str]:
    """The known Defender AI alert types whose mapping a detection adds (`alert_mapping`): those an
    alert of that type, with no other fields, would match in some step."""
    if not d.alert_mapping:
        return []
    return [k for k in mapping.known_alert_types() if any(p(alert_event(k)) for p in d.predicates)]
