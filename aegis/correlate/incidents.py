"""AI incident signals: what a SOC analyst receives. Built only by the correlator, from events.

Titles are rendered from a fixed set of placeholders with values cut to a bound and stripped of
control characters: an attacker-chosen user name or host name is text, never markup or format.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from aegis.events import AiResource, Entity, Host, Ip, Severity, User, entity_from_dict

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
SEVERITY_ORDER = list(Severity)


def max_severity(*values: Severity | None) -> Severity:
    present = [v for v in values if v is not None]
    return max(present, key=SEVERITY_ORDER.index) if present else Severity.INFORMATIONAL


def safe_text(value: object, limit: int = 120) -> str:
    return _CONTROL.sub("", str(value))[:limit]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    time: datetime
    event_id: str
    kind: str
    source: str
    step: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    detection: str
    bucket: str
    group: str
    title: str
    severity: Severity
    first_seen: datetime
    last_seen: datetime
    entities: tuple[Entity, ...]
    atlas: tuple[str, ...]
    owasp_llm: tuple[str, ...]
    event_ids: tuple[str, ...]  # evidence: every event of a small incident, the earliest and latest of a large one
    event_count: int  # every matching event of the incident
    timeline: tuple[TimelineEntry, ...]
    fallback: bool = False
    suppress_until: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, data: bytes | str) -> Incident:
        d = orjson.loads(data)
        entities = [entity_from_dict(raw) for raw in d["entities"]]
        return cls(
            id=d["id"],
            detection=d["detection"],
            bucket=d["bucket"],
            group=d["group"],
            title=d["title"],
            severity=Severity(d["severity"]),
            first_seen=datetime.fromisoformat(d["first_seen"]),
            last_seen=datetime.fromisoformat(d["last_seen"]),
            entities=tuple(entities),
            atlas=tuple(d["atlas"]),
            owasp_llm=tuple(d["owasp_llm"]),
            event_ids=tuple(d["event_ids"]),
            event_count=d["event_count"],
            timeline=tuple(TimelineEntry(**{**t, "time": datetime.fromisoformat(t["time"])}) for t in d["timeline"]),
            fallback=d.get("fallback", False),
            suppress_until=datetime.fromisoformat(d["suppress_until"]) if d.get("suppress_until") else None,
            attributes=d.get("attributes", {}),
        )

    def summary(self, *, status: str = "open", superseded_by: str | None = None) -> dict[str, Any]:
        """The analyst's JSON form (`aegis incidents --json`)."""
        return {
            "id": self.id,
            "detection": self.detection,
            "title": self.title,
            "severity": self.severity.value,
            "status": status,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "entities": [{"kind": e.type, "id": e.key} for e in self.entities],
            "atlas": list(self.atlas),
            "owasp_llm": list(self.owasp_llm),
            "event_ids": list(self.event_ids),
            "event_count": self.event_count,
            "group": self.group,
            **({"superseded_by": superseded_by} if superseded_by else {}),
        }


def incident_id(detection: str, group: str, first_event: str) -> str:
    """Deterministic: the same detection, group and first event always give the same id."""
    return hashlib.sha256(f"{detection}\x00{group}\x00{first_event}".encode()).hexdigest()[:24]


def render_title(template: str, *, kind: str, entities: Iterable[Entity], count: int, group: str) -> str:
    values: dict[str, str] = {"group": group, "count": str(count), "kind": kind}
    for ent in entities:
        if isinstance(ent, AiResource):
            values.setdefault("ai_resource", ent.name or ent.resource_id)
        elif isinstance(ent, Ip):
            values.setdefault("ip", ent.key)
        elif isinstance(ent, User):
            values.setdefault("user", ent.upn or ent.name or ent.object_id or "")
        elif isinstance(ent, Host):
            values.setdefault("host", ent.name or ent.key)
    safe = {k: safe_text(v) for k, v in values.items()}
    return template.format_map(_Default(safe))[:200]


class _Default(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "unknown"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class View:
    """An incident as the analyst sees it now: its status and, for a fallback incident whose
    events all belong to another incident, the incident that supersedes it."""

    incident: Incident
    status: str
    superseded_by: str | None = None

    def summary(self) -> dict[str, Any]:
        return self.incident.summary(status=self.status, superseded_by=self.superseded_by)


def views(incidents: Iterable[Incident]) -> list[View]:
    """Status is relative to the newest evidence seen (event time, not the wall clock): an
    incident is open while new matches would still join it."""
    items = list(incidents)
    if not items:
        return []
    watermark = max(i.last_seen for i in items)
    owners: dict[str, str] = {}
    for i in items:
        if not i.fallback:
            for event_id in i.event_ids:
                owners.setdefault(event_id, i.id)
    out = []
    for i in sorted(items, key=lambda i: (i.first_seen, i.id)):
        superseded = None
        if i.fallback and i.event_ids and all(e in owners for e in i.event_ids):
            superseded = owners[i.event_ids[0]]
        status = "superseded" if superseded else "open" if (i.suppress_until or i.last_seen) >= watermark else "closed"
        out.append(View(i, status, superseded))
    return out
