"""The records every layer reads: incidents, planned and recorded response steps, the audit log,
enrichment. Plain data and their JSON codecs; the store keeps them without knowing any stage.

The correlator builds incidents (`aegis.correlate`), the response plans and records steps
(`aegis.respond`), enrichers and deliverers leave `Enrichment` records (`aegis.enrich`,
`aegis.deliver`); the store (`aegis.store`), the console and the CLI only read and write them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from aegis.events import Entity, Event, Severity, Source, entity_from_dict
from aegis.tenancy import split_group

PIPELINE = "aegis"  # the requester of every step the plan produces


# --- incidents ---

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
SEVERITY_ORDER = list(Severity)


def max_severity(*values: Severity | None) -> Severity:
    present = [v for v in values if v is not None]
    return max(present, key=SEVERITY_ORDER.index) if present else Severity.INFORMATIONAL


def safe_text(value: object, limit: int = 120) -> str:
    return _CONTROL.sub("", str(value))[:limit]


@dataclass(frozen=True)  # no slots: orjson serializes a __dict__ several times faster
class TimelineEntry:
    time: datetime
    event_id: str
    kind: str
    source: str
    step: str | None = None
    title: str | None = None
    # where the event's bytes are: "<message sha256><JSON pointer>@<hub>/<partition>#<sequence>" (in
    # Event Hubs, Capture, or the store when every event is kept); None in incidents from before it
    evidence: str | None = None


@dataclass(frozen=True)  # no slots: orjson serializes a __dict__ several times faster
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
    why: str | None = None  # what the rule reached at its latest firing, against what it asks
    tenant: str | None = None  # the Entra tenant of its events (`tenancy.py`)

    @property
    def grouped_on(self) -> str:
        """The values the rule grouped on (the group without its tenant)."""
        return split_group(self.group)[1]

    def to_json(self) -> bytes:
        """Its JSON, serialized once: the correlator's fingerprint, the store's row and the outbox's
        share it. Kept as `_json`, which orjson leaves out (it skips a dataclass attribute with a
        leading underscore); the incident is frozen, so the copy cannot go stale."""
        doc: bytes | None = self.__dict__.get("_json")
        if doc is None:
            doc = orjson.dumps(self, option=orjson.OPT_UTC_Z)
            object.__setattr__(self, "_json", doc)
        return doc

    def fingerprint(self) -> str:
        """A digest of the incident as it stands: which change of it this is (the outbox's, and the
        correlator's "changed since written")."""
        return fingerprint(self.to_json())

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
            why=d.get("why"),
            tenant=d.get("tenant"),
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
            "why": self.why,
            "group": self.grouped_on,
            "tenant": self.tenant,
            **({"superseded_by": superseded_by} if superseded_by else {}),
        }


def fingerprint(doc: bytes) -> str:
    return hashlib.sha256(doc).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Pending:
    """An outbox entry: an incident change (its fingerprint) and the incident, written in the same
    transaction as the correlation state, and kept until the response has recorded its steps (then
    cleared). A crash between the two loses nothing: the response timer plans what is left."""

    incident: Incident
    fingerprint: str

    @classmethod
    def of(cls, incident: Incident) -> Pending:
        return cls(incident, incident.fingerprint())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


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


# --- the response: planned steps, recorded steps, the audit log ---


@dataclass(frozen=True, slots=True)
class PlannedStep:
    key: str  # idempotency key
    incident: str
    playbook: str
    step: str
    action: str
    target: str
    params: dict[str, Any]
    approvals: int
    status: str  # dry_run | awaiting_approval | approved | refused (a recorded step moves on: `StepRecord`)
    reason: str | None
    # every other identifier the incident gives the step's target (a user's UPN and object id, a host's
    # names, machine id and VM id): protected assets are checked against all of them, here and at execution
    aliases: tuple[str, ...]
    # disruptive steps only: "pending" (a source will be asked), "corroborated by ...", or
    # "uncorroborated: why" (then the step needs one approval more than the plan says); "" otherwise
    corroboration: str
    # who will break if it runs, as the planner found them (the callers a key rotation cuts off)
    dependents: tuple[str, ...] = field(default=(), kw_only=True)


@dataclass(frozen=True, slots=True)
class StepRecord(PlannedStep):
    """A planned step as recorded: who asked, when, until when it may be decided, who approved.
    `status` goes on to approved | denied | expired | succeeded | failed | skipped | refused."""

    requested_by: str
    created: datetime
    expires: datetime | None
    approvers: tuple[str, ...] = ()  # names, for display
    approver_ids: tuple[str, ...] = ()  # Entra object ids (a local name for `aegis serve` and the CLI): who counted
    requested_by_id: str = ""  # the requester's object id ("" for the pipeline, which never approves)
    incident_events: int = 0  # the incident's event count when the step was planned
    replaces: str | None = None  # the denied or expired step this one proposes again
    revision: int = 0  # +1 on every write: the store writes a step only over the revision it was read at
    started: datetime | None = None  # when the executor claimed it (recorded before the call)
    attempts: int = 0
    outcome: dict[str, Any] | None = None  # what the call returned (no secrets), or the error
    card: str | None = None  # the Teams message that asks the on-call channel for a decision
    card_shows: str | None = None  # the status that card shows (it is updated when the step moves on)
    escalated: int = 0  # how many of the plan's escalation contacts have been called on

    @property
    def digest(self) -> str:
        """SHA-256 of the exact parameters: what an approval is bound to."""
        return digest(self.params)

    @classmethod
    def from_json(cls, doc: bytes | str) -> StepRecord:
        d = orjson.loads(doc)
        times = {k: datetime.fromisoformat(d[k]) if d.get(k) else None for k in ("created", "expires", "started")}
        ids = {
            "approver_ids": tuple(d.get("approver_ids") or d["approvers"]),
            "aliases": tuple(d.get("aliases", ())),
            "corroboration": d.get("corroboration", ""),
            "dependents": tuple(d.get("dependents", ())),
        }
        return cls(**{**d, **times, **ids, "approvers": tuple(d["approvers"])})

    def next(self, **changes: Any) -> StepRecord:
        """This step changed, one revision on (what `Store.replace_step` writes)."""
        return replace(self, revision=self.revision + 1, **changes)

    @classmethod
    def of(
        cls, p: PlannedStep, *, requested_by: str, created: datetime, expires: datetime | None, **more: Any
    ) -> StepRecord:
        planned = {f.name: getattr(p, f.name) for f in fields(PlannedStep)}
        return cls(**planned, requested_by=requested_by, created=created, expires=expires, **more)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.key, "incident": self.incident, "playbook": self.playbook, "step": self.step,
            "action": self.action, "target": self.target, "params": self.params, "status": self.status,
            "approvals_needed": self.approvals, "approvers": list(self.approvers), "reason": self.reason,
            "requested_by": self.requested_by, "created": _iso(self.created), "expires": _iso(self.expires),
            "started": _iso(self.started), "attempts": self.attempts, "outcome": self.outcome,
            "digest": self.digest, "escalated": self.escalated, "dependents": list(self.dependents),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: datetime
    actor: str  # a person's name (UPN), or the pipeline (`PIPELINE`)
    event: str  # planned | refused | approved | denied | expired | superseded | escalated | dry_run | succeeded | ...
    step: str  # "" for an incident's triage (`action` "triage")
    action: str
    target: str
    detail: str
    actor_id: str | None = None  # a person's Entra object id, when they were signed in

    @classmethod
    def about(
        cls, step: PlannedStep, event: str, detail: str, now: datetime, actor: str = PIPELINE, *,
        actor_id: str | None = None,
    ) -> AuditEntry:  # fmt: skip
        """An entry about `step`: who (the pipeline unless a person: their name and object id), what
        happened, the detail."""
        return cls(now, actor, event, step.key, step.action, step.target, detail, actor_id)

    @property
    def by_pipeline(self) -> bool:
        """Written by Aegis itself: a person always has an id (a person named "aegis" is not the pipeline)."""
        return self.actor == PIPELINE and not self.actor_id

    @classmethod
    def from_json(cls, doc: bytes | str) -> AuditEntry:
        d = orjson.loads(doc)
        return cls(**{**d, "time": datetime.fromisoformat(d["time"])})

    def summary(self) -> dict[str, Any]:
        return {"time": _iso(self.time), "actor": self.actor, "actor_id": self.actor_id, "event": self.event,
                "step": self.step, "action": self.action, "target": self.target, "detail": self.detail}  # fmt: skip


# --- triage: what analysts say of an incident (apart from the incident, which the correlator writes) ---

TRIAGE_STATUSES = ("new", "active", "closed")
# as Microsoft Sentinel classifies a closed incident
CLASSIFICATIONS = {
    "true_positive": "True positive: suspicious activity",
    "benign_positive": "Benign positive: suspicious but expected",
    "false_positive": "False positive: incorrect alert logic or data",
    "undetermined": "Undetermined",
}
MAX_COMMENT = 4000
MAX_COMMENTS = 200


@dataclass(frozen=True, slots=True)
class Comment:
    time: datetime
    author: str
    text: str
    author_id: str | None = None


@dataclass(frozen=True, slots=True)
class Triage:
    """An incident's analyst state: acknowledged (active), who owns it, how it was closed, and
    comments. `revision` +1 on every write: the store writes only over the revision it was read at."""

    incident: str
    status: str = "new"
    owner: str | None = None
    owner_id: str | None = None
    classification: str | None = None  # a key of CLASSIFICATIONS, once closed
    reason: str = ""  # why it was closed so
    comments: tuple[Comment, ...] = ()
    revision: int = 0
    updated: datetime | None = None

    def next(self, now: datetime, **changes: Any) -> Triage:
        return replace(self, revision=self.revision + 1, updated=now, **changes)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, doc: bytes | str) -> Triage:
        d = orjson.loads(doc)
        comments = tuple(Comment(**{**c, "time": datetime.fromisoformat(c["time"])}) for c in d.get("comments", ()))
        updated = datetime.fromisoformat(d["updated"]) if d.get("updated") else None
        return cls(**{**d, "comments": comments, "updated": updated})

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "owner": self.owner, "owner_id": self.owner_id,
                "classification": self.classification, "reason": self.reason, "revision": self.revision,
                "updated": _iso(self.updated),
                "comments": [{"time": _iso(c.time), "author": c.author, "author_id": c.author_id, "text": c.text}
                             for c in self.comments]}  # fmt: skip


def digest(params: dict[str, Any]) -> str:
    """SHA-256 of a step's exact parameters: what an approval is bound to."""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sortable(t: datetime) -> str:
    """A UTC timestamp of fixed width, so that stores compare and sort it as text."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- what enrichers found and deliverers did ---

KINDS = ("enrich", "deliver")  # what a kept record is: an enricher's finding, a deliverer's outcome


@dataclass(frozen=True)
class Enrichment:
    name: str
    status: str  # ok | skipped | error | timeout
    result: dict[str, Any]
    error: str | None
    at: datetime
    took_ms: int
    version: str  # the incident's version it was computed for

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat().replace("+00:00", "Z")}

    @classmethod
    def from_json(cls, doc: bytes | str) -> Enrichment:
        d = orjson.loads(doc)
        return cls(**{**d, "at": datetime.fromisoformat(d["at"])})


# --- what an analyst reads of an incident's alerts ------------------------------------------------

# Defender's alert `intent` (a kill-chain phase) as MITRE ATT&CK tactics; Probing and Exploitation
# are Defender's own phases, with no ATT&CK tactic, and are shown as they are
INTENT_TACTICS: dict[str, tuple[str, ...]] = {
    "preattack": ("TA0043 Reconnaissance", "TA0042 Resource Development"), "initialaccess": ("TA0001 Initial Access",),
    "execution": ("TA0002 Execution",), "persistence": ("TA0003 Persistence",),
    "privilegeescalation": ("TA0004 Privilege Escalation",), "defenseevasion": ("TA0005 Defense Evasion",),
    "credentialaccess": ("TA0006 Credential Access",), "discovery": ("TA0007 Discovery",),
    "lateralmovement": ("TA0008 Lateral Movement",), "collection": ("TA0009 Collection",),
    "exfiltration": ("TA0010 Exfiltration",), "commandandcontrol": ("TA0011 Command and Control",),
    "impact": ("TA0040 Impact",), "probing": ("Probing",), "exploitation": ("Exploitation",),
}  # fmt: skip
# links an alert may carry that the console shows as links: Microsoft's portals, over https
PORTAL_HOSTS = frozenset({"portal.azure.com", "security.microsoft.com", "portal.azure.us", "portal.azure.cn",
                          "ms.portal.azure.com"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlertDetail:
    id: str
    kind: str
    title: str | None
    description: str | None
    link: str | None  # a portal link, or None when the alert's link is not one
    tactics: tuple[str, ...]
    severity: str | None


def alert_details(events: Iterable[Event]) -> list[AlertDetail]:
    """The Defender alerts among an incident's kept events, as an analyst reads them: display name,
    description, portal link (only a Microsoft portal's, over https: the field is the sender's) and
    the ATT&CK tactics of the alert's intent."""
    out = []
    for e in events:
        if e.source is not Source.DEFENDER:
            continue
        intent = str(e.attributes.get("intent") or "")
        tactics = tuple(dict.fromkeys(t for part in re.split(r"[,;\s]+", intent) if part
                                      for t in INTENT_TACTICS.get(part.lower(), (safe_text(part)[:40],))))  # fmt: skip
        description = e.attributes.get("description")
        out.append(AlertDetail(e.id, e.kind, e.title, description if isinstance(description, str) else None,
                               _portal_link(e.attributes.get("link")), tactics,
                               e.severity.value if e.severity else None))  # fmt: skip
    return out


def portal_link(value: object) -> str | None:
    """`value` if it is an https link into the Azure or Defender portal (a payload's links are not trusted)."""
    return _portal_link(value)


def _portal_link(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 2048:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    ok = parts.scheme == "https" and (parts.hostname or "").lower() in PORTAL_HOSTS and not parts.username
    return value.strip() if ok else None


# --- the directory: who an object id, a UPN, is ---------------------------------------------------


PRINCIPAL_KINDS = ("user", "service_principal", "managed_identity")


@dataclass(frozen=True, slots=True)
class Principal:
    """What the stream (or Graph) has said about one Entra principal: its object id, what kind of
    principal it is, and its aliases. Kept under each of its keys (`keys`); `conflict` when two
    sources disagreed on it (then no alias of it is used)."""

    kind: str  # one of PRINCIPAL_KINDS
    object_id: str | None = None
    upn: str | None = None
    name: str | None = None
    app_id: str | None = None
    tenant: str | None = None
    source: str = ""  # what paired them: signin_log, activity_log, defender, graph
    learned: str = ""  # when, ISO 8601
    conflict: bool = False

    @property
    def keys(self) -> list[str]:
        return [k for k in (principal_key("oid", self.object_id), principal_key("upn", self.upn)) if k]

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Principal:
        return cls(**orjson.loads(data))


def principal_key(kind: str, value: str | None) -> str | None:
    """The directory's key of an object id (`oid:<guid>`) or a UPN (`upn:<lower case>`)."""
    return f"{kind}:{value.lower()}" if value else None
