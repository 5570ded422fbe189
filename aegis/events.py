"""The normalized event: what every later stage (correlation, enrichment, response) reads.

An `Event` is built only by a normalizer, from one Defender alert or one log record. Every string
in it came from a payload an attacker may have shaped: it is data to compare and display, never
code, a query fragment or a URL to follow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar

import orjson

from aegis.arm import ResourceId

Scalar = str | int | float | bool | None


class Source(StrEnum):
    DEFENDER = "defender"
    RESOURCE_LOG = "resource_log"
    ACTIVITY_LOG = "activity_log"
    SIGNIN_LOG = "signin_log"


class Severity(StrEnum):
    INFORMATIONAL = "informational"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @classmethod
    def parse(cls, value: object) -> Severity | None:
        if isinstance(value, str) and value.strip().lower() in cls._value2member_map_:
            return cls(value.strip().lower())
        return None


# --- entities --------------------------------------------------------------------------------


class Origin(StrEnum):
    """Where an entity came from, and so how far it may be trusted to name a target.

    - `azure`: a field Azure itself wrote into a log record (`resourceId`, `callerIpAddress`, the
      token's object id, the activity log's identity claims, a sign-in record's user);
    - `defender`: an entity of a Defender for Cloud alert (its entities, its affected resource);
    - `app`: a field the calling application supplied (the end-user context an AI app passes to
      the model API: an end-user id or IP). It describes; it never names a disruptive step's target.
    """

    AZURE = "azure"
    DEFENDER = "defender"
    APP = "app"


ORIGIN_RANK = {Origin.APP: 0, Origin.DEFENDER: 1, Origin.AZURE: 2}  # the same entity from two origins keeps the higher


@dataclass(frozen=True, slots=True)
class Entity:
    """Base of the typed entities. `type` names the kind in JSON; `key` identifies the entity for
    grouping and deduplication; `origin` says where it came from (not part of its identity)."""

    type: str = field(init=False)
    origin: Origin = field(default=Origin.AZURE, kw_only=True, compare=False)

    @property
    def key(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ip(Entity):
    """An IP address. Azure masks the last octet of caller IPs in AI logs (`81.2.69.***`): then
    `address` is None and `prefix` holds the part that is known (`81.2.69.0/24`). A full
    address has the same `prefix`, so both group together."""

    type: str = field(default="ip", init=False, repr=False)
    prefix: str
    address: str | None = None
    # derived: RFC 1918, ULA or link-local, where a private endpoint's (a virtual network's) callers are
    private: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "private", _private(self.address or self.prefix.partition("/")[0]))

    @property
    def masked(self) -> bool:
        return self.address is None

    @property
    def key(self) -> str:
        return self.address or self.prefix


@dataclass(frozen=True, slots=True)
class User(Entity):
    type: str = field(default="user", init=False, repr=False)
    upn: str | None = None
    object_id: str | None = None
    name: str | None = None
    tenant_id: str | None = None

    @property
    def key(self) -> str:
        return self.object_id or self.upn or self.name or ""


@dataclass(frozen=True, slots=True)
class ServicePrincipal(Entity):
    type: str = field(default="service_principal", init=False, repr=False)
    app_id: str | None = None
    object_id: str | None = None
    name: str | None = None
    kind: str | None = None  # "application" or "managed_identity", when a source says which

    @property
    def key(self) -> str:
        return self.object_id or self.app_id or self.name or ""


@dataclass(frozen=True, slots=True)
class Host(Entity):
    type: str = field(default="host", init=False, repr=False)
    name: str | None = None
    azure_id: str | None = None
    mde_machine_id: str | None = None
    os: str | None = None

    @property
    def key(self) -> str:
        return self.mde_machine_id or self.azure_id or (self.name or "").lower()


@dataclass(frozen=True, slots=True)
class AiResource(Entity):
    """An Azure AI account (Azure OpenAI, AI Foundry, AI services): a canonical ARM id."""

    type: str = field(default="ai_resource", init=False, repr=False)
    resource_id: str
    name: str | None = None

    @property
    def key(self) -> str:
        return self.resource_id


@dataclass(frozen=True, slots=True)
class AiProject(Entity):
    """An AI Foundry project (`.../accounts/A/projects/P`): its own entity, beside its parent
    account (`AiResource`), which is what joins it to the account's logs and alerts."""

    type: str = field(default="ai_project", init=False, repr=False)
    resource_id: str
    name: str | None = None
    account: str | None = None  # the parent account's ARM id

    @property
    def key(self) -> str:
        return self.resource_id


@dataclass(frozen=True, slots=True)
class ModelDeployment(Entity):
    type: str = field(default="model_deployment", init=False, repr=False)
    name: str
    resource_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.resource_id}/deployments/{self.name.lower()}" if self.resource_id else self.name


@dataclass(frozen=True, slots=True)
class Model(Entity):
    type: str = field(default="model", init=False, repr=False)
    name: str
    version: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True, slots=True)
class UserAgent(Entity):
    type: str = field(default="user_agent", init=False, repr=False)
    value: str

    @property
    def key(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class DefenderAlert(Entity):
    """A Defender for Cloud alert as an ARM resource (`.../providers/microsoft.security/locations/L/
    alerts/A`, canonical lower case): what the response moves to in progress or resolved."""

    type: str = field(default="defender_alert", init=False, repr=False)
    resource_id: str

    @property
    def key(self) -> str:
        return self.resource_id


ENTITY_TYPES: dict[str, type[Entity]] = {
    cls.__dataclass_fields__["type"].default: cls  # type: ignore[misc]
    for cls in (
        Ip,
        User,
        ServicePrincipal,
        Host,
        AiResource,
        AiProject,
        ModelDeployment,
        Model,
        UserAgent,
        DefenderAlert,
    )
}


# the fields each entity is built from (not its type, nor what it derives)
_GIVEN = {cls: frozenset(f.name for f in dataclass_fields(cls) if f.init) for cls in ENTITY_TYPES.values()}

E = TypeVar("E", bound="Entity")


def union(a: E, b: E) -> E:
    """Two entities of one real thing as one: the fields of each, the richer one's (more fields
    known) where both have one; its origin too."""
    names = [n for n in _GIVEN[type(a)] if n != "origin"]
    known = [sum(bool(getattr(x, n)) for n in names) for x in (a, b)]
    richer, other = (b, a) if known[1] > known[0] else (a, b)
    return replace(richer, **{n: getattr(richer, n) or getattr(other, n) for n in names})


def entity_from_dict(raw: Mapping[str, Any]) -> Entity:
    """An entity from its JSON form (`{"type": "ip", "prefix": ..., ...}`, nulls allowed; an entity
    stored before origins were recorded is `azure`)."""
    cls = ENTITY_TYPES[raw["type"]]
    given = _GIVEN[cls]
    fields = {k: v for k, v in raw.items() if v is not None and k in given}  # derived fields are made again
    if "origin" in fields:
        fields["origin"] = Origin(fields["origin"])
    return cls(**fields)


def make_ip(value: object) -> Ip | None:
    """An `Ip` from a full address or one whose last octet is masked with `*` (`81.2.69.***`,
    `20.236.11.**`). Anything else is not an IP and gives None."""
    return _make_ip(value) if isinstance(value, str) else None


@lru_cache(maxsize=8192)  # callers repeat; parsing with ipaddress is the costly part
def _make_ip(value: str) -> Ip | None:
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if "*" in text:
        head, _, tail = text.rpartition(".")
        if tail.strip("*") or head.count(".") != 2:
            return None
        try:
            net = ipaddress.IPv4Network(f"{head}.0/24")
        except ValueError:
            return None
        return Ip(prefix=str(net))
    try:
        addr = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    bits = 24 if addr.version == 4 else 64
    return Ip(prefix=str(ipaddress.ip_network(f"{addr}/{bits}", strict=False)), address=str(addr))


# the networks a private endpoint's (or a virtual network's) caller comes from: not Python's
# `is_private`, which also counts the documentation ranges, which samples use as public callers
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                                                    "fc00::/7", "fe80::/10"))  # fmt: skip


@lru_cache(maxsize=8192)
def _private(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in _PRIVATE)


# --- the event -------------------------------------------------------------------------------


@dataclass(frozen=True)  # no slots: orjson serializes a __dict__ several times faster
class Evidence:
    """Where an event came from: the raw message (by its SHA-256; the store keeps the bytes of dead
    letters, and of every message with `AEGIS_KEEP_EVENTS=all`: otherwise Event Hubs Capture, found
    by the position) and the JSON pointer of the alert or record inside it, plus the Event Hubs
    position when known."""

    message: str
    pointer: str
    hub: str
    partition: str | None = None
    sequence_number: int | None = None
    offset: str | None = None
    enqueued_time: datetime | None = None


@dataclass(frozen=True)  # no slots: orjson serializes a __dict__ several times faster
class Event:
    id: str
    source: Source
    normalizer: str
    kind: str
    time: datetime
    evidence: Evidence
    resource: ResourceId | None = None
    severity: Severity | None = None
    title: str | None = None
    entities: tuple[Entity, ...] = ()
    attributes: Mapping[str, Scalar] = field(default_factory=dict)
    # the Entra tenant (lower-case GUID) the event belongs to: from the payload where it says so, or
    # from the subscription's tenant (`tenancy.py`); None when nothing says
    tenant: str | None = None

    def entities_of(self, cls: type[Entity]) -> list[Any]:
        return [e for e in self.entities if isinstance(e, cls)]

    def to_json(self) -> bytes:
        """The event as JSON (orjson serializes the dataclasses natively: the hot path of storing)."""
        return orjson.dumps(self, option=orjson.OPT_UTC_Z)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.to_json())
        return result

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        ev = dict(d["evidence"])
        ev["enqueued_time"] = _parse_iso(ev.get("enqueued_time"))
        entities = [entity_from_dict(raw) for raw in d.get("entities", ())]
        return cls(
            id=d["id"],
            source=Source(d["source"]),
            normalizer=d["normalizer"],
            kind=d["kind"],
            time=datetime.fromisoformat(d["time"]),
            severity=Severity(d["severity"]) if d.get("severity") else None,
            title=d.get("title"),
            resource=ResourceId(**d["resource"]) if d.get("resource") else None,
            entities=tuple(entities),
            attributes=dict(d.get("attributes", {})),
            evidence=Evidence(**ev),
            tenant=d.get("tenant"),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Event:
        return cls.from_dict(orjson.loads(data))


UNKNOWN_KIND = "unknown"  # an alert whose shape does not say its type (the activity-log copy of an alert)


def richer(a: Event, b: Event) -> Event:
    """Of two copies of one event (an alert delivered as its activity-log event, its export and its
    ARM form: one id), the one that says more: a known type, then more entities, then more
    attributes, then a title; between copies that say as much, `a`. Applied wherever copies meet,
    so the richest form wins whatever order they came in."""
    return b if _richness(b) > _richness(a) else a


def _richness(e: Event) -> tuple[bool, int, int, bool]:
    return e.kind != UNKNOWN_KIND, len(e.entities), len(e.attributes), e.title is not None


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# --- dead letters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message, or one item of it, that could not be normalized. The original bytes are kept in
    the store under `message` (their SHA-256); `pointer` says which item ("" for the whole body)."""

    id: str
    reason: str
    message: str
    pointer: str
    hub: str
    received: datetime
    size: int
    normalizer: str | None = None
    partition: str | None = None
    sequence_number: int | None = None
    offset: str | None = None
    enqueued_time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(orjson.dumps(self, option=orjson.OPT_UTC_Z))
        return result

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeadLetter:
        fields = dict(d)
        fields["received"] = _parse_iso(fields["received"])
        fields["enqueued_time"] = _parse_iso(fields.get("enqueued_time"))
        return cls(**fields)
