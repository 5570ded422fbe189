"""Detections: YAML files in `detections/`, validated at load against a model whose `kind` is one of
the registered rule kinds (`kinds.py`), so the JSON Schema (`schema()`) follows the registry.

An invalid file fails at load with the file name and the field: `DetectionError`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aegis.correlate import mapping
from aegis.correlate.conditions import Condition, Predicate
from aegis.correlate.kinds import KINDS
from aegis.correlate.paths import Getter, compile_path
from aegis.durations import Duration
from aegis.errors import AegisError
from aegis.events import Severity, Source
from aegis.yamlfiles import load_model

DETECTIONS_DIR = Path(__file__).resolve().parents[2] / "detections"
# group paths whose values name one tenant's thing: ARM ids, alert ids
TENANT_SCOPED = frozenset({"id", "resource", "resource.id", "entities.ai_resource", "entities.ai_project",
                           "entities.defender_alert"})  # fmt: skip
BASELINE_KINDS = ("event_count", "value_sum")  # the kinds whose threshold a group's normal can raise
TITLE_FIELDS = ("group", "ai_resource", "ip", "user", "host", "kind", "count")


class DetectionError(AegisError):
    """A detection file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Step(_Strict):
    name: str
    match: Condition
    min: int = Field(1, ge=1, le=10_000, description="at least this many matches of the step")


class Escalation(_Strict):
    """Raise the incident's severity once it holds `events` events, or has lasted `lasting` (from
    its first event to its latest); with both, once both hold."""

    events: int | None = Field(None, gt=1, description="at this many events in the incident")
    lasting: Duration | None = Field(None, description="once the incident has lasted this long (a slow campaign)")
    severity: Severity

    @model_validator(mode="after")
    def _when(self) -> Escalation:
        if self.events is None and self.lasting is None:
            raise ValueError("an escalation needs `events`, `lasting` or both")
        return self


class Baseline(_Strict):
    """Far above normal means above this group's normal: the group's total per window (events, or
    the summed field) learned from the stream itself, in event time, as an average that forgets
    with `half_life`. Once `warmup` of event time is learned, the rule fires only where the window
    reaches `factor` times that normal as well as its threshold. Until then the threshold alone
    decides, and a window's share of what is learned is capped at what would have fired: so a group
    first seen under attack does not learn the attack as its normal within hours (a new group that
    always runs heavy fires once, for the warm-up, then only far above its normal)."""

    factor: float = Field(gt=1, le=1000, description="fire at this many times the group's normal (and the threshold)")
    half_life: Duration = Field(timedelta(days=1), description="how fast the normal forgets: this old counts half")
    warmup: Duration = Field(timedelta(days=1), description="event time learned before the normal counts")


class Weight(_Strict):
    """What a SOC weighs: when at least `share` of an incident's events hold `when` (an Entra
    identity rather than a key, a private network, successful answers), or, with `steady`, when
    that numeric field varies across its events by at most `spread` (standard deviation over mean:
    a batch job's even sizes, not a probe's), its severity moves by `severity` levels: down for
    ordinary work (never for an incident that holds a Defender alert), up for what makes it worse.
    The evidence stays."""

    name: str = Field(min_length=1, max_length=64)
    when: Condition | None = None
    share: float | None = Field(None, gt=0, le=1, description="of the incident's events")
    steady: str | None = Field(None, description="a numeric field path: its values' spread is weighed")
    spread: float | None = Field(None, gt=0, le=10, description="at most this standard deviation over the mean")
    severity: int = Field(ge=-4, le=4, description="levels to move: negative lowers")

    @field_validator("severity")
    @classmethod
    def _moves(cls, value: int) -> int:
        if value == 0:
            raise ValueError("a weight moves the severity by at least one level")
        return value

    @model_validator(mode="after")
    def _one_test(self) -> Weight:
        share = self.when is not None and self.share is not None
        steady = self.steady is not None and self.spread is not None
        if (
            share == steady
            or (self.when is None) != (self.share is None)
            or (self.steady is None) != (self.spread is None)
        ):
            raise ValueError("a weight is either `when` with `share`, or `steady` with `spread`")
        if self.steady is not None:
            compile_path(self.steady)
        return self


class SampleEvent(_Strict):
    """A normalized event, written compactly, for a detection's own test."""

    kind: str
    source: str = "defender"
    at: Duration = Field(timedelta(0), description="offset from the test's start time")
    severity: Severity | None = None
    resource: str | None = None
    entities: dict[str, str | list[str]] = Field(default_factory=dict)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    tenant: str | None = Field(None, description="the Entra tenant the event belongs to")
    repeat: int = Field(1, ge=1, le=1000)
    every: Duration = timedelta(seconds=1)


class Expect(_Strict):
    incidents: int = Field(ge=0)
    severity: Severity | None = None
    events: int | None = None
    entities: list[str] = Field(default_factory=list, description="entity keys the incident must hold")


class DetectionCase(_Strict):
    name: str
    events: list[SampleEvent]
    expect: Expect


class Detection(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")
    title: str = Field(max_length=200)
    description: str
    kind: Literal[tuple(KINDS)]  # type: ignore[valid-type]  # the registered rule kinds
    severity: Severity
    severity_from_events: bool = False
    escalate: list[Escalation] = Field(default_factory=list)
    atlas: list[str] = Field(default_factory=list)
    owasp_llm: list[str] = Field(default_factory=list)
    alert_mapping: bool = Field(False, description="add the ATLAS/OWASP mapping of member Defender alerts")
    fallback: bool = Field(False, description="yield to other detections: hidden when another incident covers it")
    group_by: list[str] = Field(min_length=1)
    window: Duration | None = None
    suppress_for: Duration = timedelta(hours=1)
    match: Condition | None = None
    steps: list[Step] | None = Field(None, min_length=2)
    threshold: float | None = Field(None, gt=0)
    baseline: Baseline | None = None
    weigh: list[Weight] = Field(default_factory=list, max_length=8)
    field: str | None = None
    tests: list[DetectionCase] = Field(min_length=1)

    @field_validator("group_by")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            compile_path(path)  # raises PathError, a ValueError: pydantic reports it on the field
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        for _, name, spec, conversion in string.Formatter().parse(value):
            if name is not None and (name not in TITLE_FIELDS or spec or conversion):
                raise ValueError(f"title placeholders are plain {{name}} with name in {', '.join(TITLE_FIELDS)}")
        return value

    @field_validator("atlas", "owasp_llm")
    @classmethod
    def _known_ids(cls, value: list[str], info: ValidationInfo) -> list[str]:
        known, what = (
            (mapping.atlas_names(), "ATLAS technique")
            if info.field_name == "atlas"
            else (mapping.owasp_names(), "OWASP LLM")
        )
        unknown = [t for t in value if t not in known]
        if unknown:
            raise ValueError(f"unknown {what} id(s): {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> Detection:
        spec = KINDS[self.kind]
        given = {f for f in ("match", "steps", "threshold", "field", "window") if getattr(self, f) is not None}
        missing, extra = spec.needs - given, given & spec.forbids
        if missing:
            raise ValueError(f"kind {self.kind} needs {', '.join(sorted(missing))}")
        if extra:
            raise ValueError(f"kind {self.kind} does not take {', '.join(sorted(extra))}")
        if self.field is not None:
            compile_path(self.field)
        if self.baseline is not None and self.kind not in BASELINE_KINDS:
            raise ValueError(f"a baseline needs a volume rule: kind {' or '.join(BASELINE_KINDS)}")
        return self

    # --- compiled forms (built once per loaded detection) ---

    @cached_property
    def conditions(self) -> list[Condition]:
        """One condition per step (a single one for non-temporal kinds)."""
        if self.steps:
            return [s.match for s in self.steps]
        assert self.match is not None
        return [self.match]

    @cached_property
    def predicates(self) -> list[Predicate]:
        """One predicate per step, for events of any source."""
        return [c.compile() for c in self.conditions]

    @cached_property
    def source_predicates(self) -> dict[str, list[Predicate]]:
        """Source → the step predicates for events of that source, with their tests on `source`
        decided (`NEVER` for a step no event of it can match)."""
        return {src.value: [c.compile(src.value) for c in self.conditions] for src in Source}

    @cached_property
    def weights(self) -> list[Predicate]:
        """One predicate per `when` weight (in order), over the events the detection matches."""
        return [w.when.compile() for w in self.weigh if w.when is not None]

    @cached_property
    def steadies(self) -> list[Getter]:
        """One getter per `steady` weight (in order): the field whose spread is weighed."""
        return [compile_path(w.steady) for w in self.weigh if w.steady is not None]

    @cached_property
    def sources(self) -> frozenset[str] | None:
        """The event sources any step can match (None: any source), to skip the rest cheaply."""
        found = [c.sources() for c in self.conditions]
        return None if any(s is None for s in found) else frozenset().union(*found)  # type: ignore[arg-type]

    @cached_property
    def group_getters(self) -> list[Getter]:
        return [compile_path(p) for p in self.group_by]

    @cached_property
    def by_tenant(self) -> bool:
        """Whether a group carries its events' tenant: unless a value it groups on already names
        one tenant's thing (an ARM resource, an alert), two tenants seen from one network, or two
        hosts of one name, would otherwise share an incident."""
        return not any(p in TENANT_SCOPED for p in self.group_by)

    @cached_property
    def value_getter(self) -> Getter | None:
        return compile_path(self.field) if self.field else None


@dataclass(frozen=True)
class Loaded:
    detections: list[Detection]
    files: dict[str, Path]


def load(paths: Iterable[Path] | None = None) -> Loaded:
    """Load every `*.yaml` file under the given folders or files (default: `detections/`)."""
    files: list[Path] = []
    for p in paths or [DETECTIONS_DIR]:
        files += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    detections: list[Detection] = []
    where: dict[str, Path] = {}
    for path in files:
        d = load_file(path)
        if d.id in where:
            raise DetectionError(f"{path}: id {d.id!r} is already used by {where[d.id]}")
        detections.append(d)
        where[d.id] = path
    return Loaded(detections, where)


def load_file(path: Path) -> Detection:
    return load_model(Detection, path, DetectionError)


def schema() -> dict[str, Any]:
    """The JSON Schema of detection files, generated from the model and the kind registry: one
    variant per registered kind (`oneOf`, told apart by `kind`), with the fields that kind needs
    required and the fields it forbids absent."""
    doc = Detection.model_json_schema(by_alias=True)
    doc["oneOf"] = [
        {
            "title": name,
            "description": (spec.evaluate.__doc__ or "").strip().split("\n")[0],
            "properties": {"kind": {"const": name}},
            "required": ["kind", *sorted(spec.needs)],
            "not": {"anyOf": [{"required": [f]} for f in sorted(spec.forbids)]},
        }
        for name, spec in KINDS.items()
    ]
    return doc
