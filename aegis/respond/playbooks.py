"""Playbooks (`playbooks/*.yaml`) and the response plan (`playbooks/response-plan.yaml`), validated
at load against models generated from the action registry; an invalid file fails naming the
file and the field (`PlaybookError`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from aegis.durations import Duration
from aegis.errors import AegisError
from aegis.events import Severity
from aegis.respond import templates
from aegis.respond.actions import ACTIONS
from aegis.respond.params import Guid, HostRef, IpRange, ResourceGroupId, ResourceIdStr, TeamsChannel, UserRef
from aegis.yamlfiles import describe, load_model

PLAYBOOKS_DIR = Path(__file__).resolve().parents[2] / "playbooks"
PLAN_FILE = "response-plan.yaml"
ActionName = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]  # the registered actions


class PlaybookError(AegisError):
    """A playbook or response plan that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    name: str = Field(min_length=1, max_length=120)
    action: ActionName  # type: ignore[valid-type]
    for_each: str | None = Field(None, description="run once per entity of a type (entities.host) or list item")
    params: dict[str, Any] = Field(default_factory=dict, description="literals, or {{ path }} placeholders")

    @model_validator(mode="after")
    def _params_fit_the_action(self) -> Step:
        spec = ACTIONS[self.action]
        fields = spec.params.model_fields
        unknown = sorted(set(self.params) - set(fields))
        if unknown:
            raise ValueError(f"{self.action} has no parameter {', '.join(unknown)} (it takes {', '.join(fields)})")
        missing = sorted(n for n, f in fields.items() if f.is_required() and n not in self.params)
        if missing:
            raise ValueError(f"{self.action} needs {', '.join(missing)}")
        if self.for_each is not None:
            templates.check_for_each(self.for_each)
        for name, value in self.params.items():
            placeholders = [p for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)
                            for p in templates.paths(v)]  # fmt: skip
            for path in placeholders:
                templates.check_path(path, item=self.for_each)
            if not placeholders:  # a literal: it must already be what the action accepts
                try:
                    TypeAdapter(Annotated[fields[name].annotation, fields[name]]).validate_python(value)  # type: ignore[arg-type]
                except ValidationError as exc:
                    raise ValueError(f"params.{name}: {exc.errors()[0]['msg']}") from None
        return self


class Playbook(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")
    description: str
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique_names(cls, steps: list[Step]) -> list[Step]:
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique within a playbook")
        return steps


class Trigger(_Strict):
    detections: list[str] = Field(default_factory=list, description="detection ids; empty: any")
    min_severity: Severity = Severity.INFORMATIONAL
    playbooks: list[str] = Field(min_length=1)


class Escalation(_Strict):
    group: Guid = Field(description="the Entra ID group of the on-call contact (its members may decide)")
    after: Duration = Field(description="escalate to this group when a step waits this long")
    name: str = Field("", max_length=100, description="how the contact is named in messages")


class Channel(_Strict):
    team: Guid
    channel: TeamsChannel


class Access(_Strict):
    """Who may use the console and the approvals API, by the app roles and groups in their sign-in
    (App Service Authentication with Entra ID). Members of the escalation groups may decide too."""

    approver_roles: list[str] = Field(default_factory=lambda: ["Aegis.Approver"])
    approver_groups: list[Guid] = Field(default_factory=list)
    reader_roles: list[str] = Field(default_factory=lambda: ["Aegis.Reader"], description="may look, not decide")
    analyst_roles: list[str] = Field(
        default_factory=lambda: ["Aegis.Analyst"],
        description="may triage incidents (acknowledge, assign, close, comment), not decide steps; approvers may too",
    )


class RateLimit(_Strict):
    per_hour: int = Field(ge=1, le=10_000)
    per_incident: int = Field(ge=1, le=1000)


class Protected(_Strict):
    """What no playbook may touch, checked when a step is planned and again just before it runs."""

    users: list[UserRef] = Field(
        default_factory=list,
        description="break-glass and other untouchable accounts, by UPN or Entra object id (an incident that "
        "pairs a listed UPN with an object id protects that object id too)",
    )
    hosts: list[HostRef] = Field(
        default_factory=list, description="hosts by name, Defender for Endpoint machine id or Azure VM resource id"
    )
    resources: list[ResourceIdStr] = Field(default_factory=list)
    resource_groups: list[ResourceGroupId] = Field(
        default_factory=list, description="/subscriptions/S/resourceGroups/G: everything in them"
    )
    subscriptions: list[Guid] = Field(default_factory=list)
    tags: dict[Annotated[str, Field(min_length=1, max_length=512)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        description="resource tags (name: value, `*` for any value): an AI account carrying one is not touched "
        "(checked when the action reads the account, before any change)",
    )


class Expected(_Strict):
    """Known, ordinary work (a service principal's nightly embedding batch, a load test from a
    known network): its incidents are still recorded, with all their evidence, but their severity
    is held to `severity` for the response and no disruptive step is planned for them.

    An incident is this work when every caller it shows is listed: its networks are within
    `networks`, its service principals and users among `service_principals` and `users`, its AI
    accounts among `resources`, its detection among `detections` (each list left out is not
    checked; at least one of the callers' lists must be given)."""

    name: str = Field(min_length=1, max_length=100)
    detections: list[str] = Field(default_factory=list)
    networks: list[IpRange] = Field(default_factory=list)
    service_principals: list[Guid] = Field(default_factory=list, description="app ids or object ids")
    users: list[UserRef] = Field(default_factory=list)
    resources: list[ResourceIdStr] = Field(default_factory=list)
    severity: Severity = Severity.LOW

    @model_validator(mode="after")
    def _names_callers(self) -> Expected:
        if not (self.networks or self.service_principals or self.users):
            raise ValueError("expected work names its callers: networks, service_principals or users")
        return self


class Corroboration(_Strict):
    """Anyone holding a hub's Send key can forge any message, so what a message says is a claim.
    Before a disruptive step may run, Aegis asks a source the sender cannot forge (the Defender
    alerts API, Log Analytics, Entra sign-ins: `AEGIS_CORROBORATORS`). An uncorroborated step needs
    one approval more than `approvals` says; an action listed here is refused outright when the
    sources configured do not corroborate it (with no source configured, it needs the extra approval)."""

    require: list[ActionName] = Field(default_factory=list)  # type: ignore[valid-type]


class ResponsePlan(_Strict):
    mode: Literal["dry_run", "execute"] = "dry_run"
    tiers: dict[Severity, str] = Field(description="severity → response tier name")
    triggers: list[Trigger] = Field(min_length=1)
    approvals: dict[ActionName, Annotated[int, Field(ge=0, le=2)]] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="approvals each action needs: 0 (automatic), 1 or 2"
    )
    approval_expiry: Duration = timedelta(hours=4)
    escalation: list[Escalation] = Field(default_factory=list)
    access: Access = Field(default_factory=Access)
    on_call: Channel | None = Field(None, description="the Teams channel where approval cards are posted")
    soc_channel: Channel | None = Field(None, description="the Teams channel where incident notices are posted")
    protected: Protected = Field(default_factory=Protected)
    expected: list[Expected] = Field(
        default_factory=list, description="known, ordinary work: held low for the response, never disrupted"
    )
    rate_limits: dict[ActionName, RateLimit] = Field(default_factory=dict)  # type: ignore[valid-type]
    corroboration: Corroboration = Field(default_factory=Corroboration)

    @field_validator("tiers")
    @classmethod
    def _every_severity(cls, tiers: dict[Severity, str]) -> dict[Severity, str]:
        missing = [s.value for s in Severity if s not in tiers]
        if missing:
            raise ValueError(f"no tier for {', '.join(missing)}")
        return tiers

    @model_validator(mode="after")
    def _disruptive_steps_wait_for_a_person(self) -> ResponsePlan:
        automatic = sorted(n for n, spec in ACTIONS.items() if spec.disruptive and self.approvals.get(n, 0) < 1)
        if automatic:
            raise ValueError(f"approvals: {', '.join(automatic)} disrupt people or service and need 1 or 2")
        return self

    def approvals_for(self, action: str) -> int:
        return self.approvals.get(action, 0)


@dataclass(frozen=True)
class Response:
    plan: ResponsePlan
    playbooks: dict[str, Playbook]
    files: dict[str, Path]
    corroborators: tuple[str, ...] = ()  # the corroboration sources configured (the composition root sets them)


def load(folder: Path | None = None, *, detection_ids: Iterable[str] | None = None) -> Response:
    """The plan and every playbook in `folder` (default `playbooks/`), checked against each other
    (and against the known detection ids, when given)."""
    folder = folder or PLAYBOOKS_DIR
    plan_path = folder / PLAN_FILE
    if not plan_path.is_file():
        raise PlaybookError(f"{plan_path}: no response plan (every playbooks folder needs one)")
    plan = load_model(ResponsePlan, plan_path, PlaybookError)
    playbooks: dict[str, Playbook] = {}
    files: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == PLAN_FILE:
            continue
        book = load_model(Playbook, path, PlaybookError)
        if book.id in playbooks:
            raise PlaybookError(f"{path}: id {book.id!r} is already used by {files[book.id]}")
        playbooks[book.id], files[book.id] = book, path
    known = set(detection_ids) if detection_ids is not None else None
    for n, trigger in enumerate(plan.triggers):
        for name in trigger.playbooks:
            if name not in playbooks:
                raise PlaybookError(f"{plan_path}: triggers.{n}.playbooks: no playbook {name!r} in {folder}")
        for name in trigger.detections:
            if known is not None and name not in known:
                raise PlaybookError(f"{plan_path}: triggers.{n}.detections: no detection {name!r}")
    return Response(plan, playbooks, files)


def load_step(text: str, *, origin: str) -> Step:
    """One playbook step from YAML text (the examples in the actions' docstrings)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlaybookError(f"{origin}: cannot read YAML: {exc}") from None
    try:
        return Step.model_validate(raw)
    except ValidationError as exc:
        raise PlaybookError(f"{origin}: {describe(exc)}") from None


TEMPLATE = {"type": "string", "pattern": r"\{\{.*\}\}", "description": "a {{ path }} placeholder, filled at planning"}


def schema() -> dict[str, Any]:
    """JSON Schemas of playbook and plan files, generated from the models and the action registry:
    a step is one of the registered actions (`oneOf`, told apart by `action`), each with its own
    parameters (a literal of the parameter's type, or a `{{ path }}` placeholder)."""
    playbook = Playbook.model_json_schema()
    defs = playbook["$defs"]
    variants = []
    for name, spec in ACTIONS.items():
        params = spec.params.model_json_schema()
        for ref, definition in params.pop("$defs", {}).items():  # refs resolve against the root
            if defs.setdefault(ref, definition) != definition:
                raise AssertionError(f"two definitions named {ref} in the action schemas")
        properties = {k: {"anyOf": [v, TEMPLATE]} for k, v in params.get("properties", {}).items()}
        variants.append({
            "title": name,
            "description": spec.summary,
            "properties": {
                "action": {"const": name},
                "params": {"type": "object", "properties": properties, "required": params.get("required", []),
                           "additionalProperties": False},
            },
        })  # fmt: skip
    defs["Step"]["oneOf"] = variants
    return {"playbook": playbook, "response_plan": ResponsePlan.model_json_schema()}
