"""What the response plan would do for an incident: the exact steps, targets and parameters, the
approvals each needs, and the steps it refuses and why. Pure: it runs nothing and writes nothing
(the executor that records and runs steps builds on it).

Each planned step has an idempotency key: a digest of the incident, playbook, step and its
parameters, so the same step for the same incident is recognised however often it is planned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from dataclasses import fields as dc_fields
from typing import Any

import orjson
from pydantic import ValidationError

from aegis.correlate.incidents import SEVERITY_ORDER, Incident
from aegis.events import ENTITY_TYPES, Entity
from aegis.respond import templates
from aegis.respond.actions import ACTIONS, Params
from aegis.respond.playbooks import Playbook, Response, ResponsePlan, Step
from aegis.yamlfiles import describe


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
    status: str  # dry_run | awaiting_approval | approved | refused (a recorded step moves on: record.py)
    reason: str | None


def plan(incident: Incident, response: Response, *, playbooks: list[str] | None = None) -> list[PlannedStep]:
    """The steps of every playbook the plan's triggers select for this incident (or of `playbooks`), in order."""
    out: list[PlannedStep] = []
    context = incident_context(incident)
    for name in playbooks_for(incident, response.plan) if playbooks is None else playbooks:
        book = response.playbooks[name]
        for step in book.steps:
            out += _steps(incident, book, step, context, response.plan)
    return out


def playbooks_for(incident: Incident, plan_: ResponsePlan) -> list[str]:
    level = SEVERITY_ORDER.index(incident.severity)
    names: list[str] = []
    for trigger in plan_.triggers:
        if trigger.detections and incident.detection not in trigger.detections:
            continue
        if level < SEVERITY_ORDER.index(trigger.min_severity):
            continue
        names += [n for n in trigger.playbooks if n not in names]
        if trigger.detections:  # a specific trigger matched: the catch-all ones after it do not add more
            break
    return names


def incident_context(incident: Incident) -> dict[str, Any]:
    """The values placeholders may name (`templates.py`), as a flat map of path → value."""
    summary = incident.summary()
    context: dict[str, Any] = {f"incident.{k}": summary[k] for k in templates.INCIDENT_FIELDS}
    context["incident.event_ids"] = list(incident.event_ids)
    for kind, cls in ENTITY_TYPES.items():
        of_kind = [e for e in incident.entities if type(e) is cls]
        context[f"entities.{kind}"] = [e.key for e in of_kind]
        for f in dc_fields(cls):
            if f.name != "type":
                context[f"entities.{kind}.{f.name}"] = [v for e in of_kind if (v := getattr(e, f.name)) is not None]
        context[f"_items.{kind}"] = of_kind
    return context


def _steps(
    incident: Incident, book: Playbook, step: Step, context: dict[str, Any], plan_: ResponsePlan
) -> list[PlannedStep]:
    if step.for_each is None:
        return [_one(incident, book, step, context, plan_)]
    kind = step.for_each.split(".")[1]
    items: list[Any] = context.get(f"_items.{kind}", context.get(step.for_each, []))
    return [_one(incident, book, step, {**context, **_item(x)}, plan_) for x in items]


def _item(x: Entity | str) -> dict[str, Any]:
    if isinstance(x, str):
        return {"item": x}
    values = {f"item.{f.name}": getattr(x, f.name) for f in dc_fields(x) if f.name != "type"}
    return {"item": x.key, "item.key": x.key, **values}


def _one(incident: Incident, book: Playbook, step: Step, context: dict[str, Any], plan_: ResponsePlan) -> PlannedStep:
    spec = ACTIONS[step.action]
    raw = {name: templates.render(value, context) for name, value in step.params.items()}
    approvals = plan_.approvals_for(step.action)
    base = {"incident": incident.id, "playbook": book.id, "step": step.name, "action": step.action}
    try:
        params: Params = spec.params.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        shown = {k: v for k, v in raw.items() if v is not None}
        return PlannedStep(_key(base, shown), **base, target="", params=shown, approvals=approvals,
                           status="refused", reason=f"parameters: {describe(exc)}")  # fmt: skip
    values = params.model_dump(mode="json")
    reason = protected(params, plan_)
    if reason:
        status = "refused"
    elif approvals:
        status = "awaiting_approval"
    else:
        status = "dry_run" if plan_.mode == "dry_run" else "approved"  # approved by the plan itself
    return PlannedStep(_key(base, values), **base, target=params.target, params=values, approvals=approvals,
                       status=status, reason=reason)  # fmt: skip


def protected(params: Params, plan_: ResponsePlan) -> str | None:
    """Why the plan forbids this target, if it does."""
    p = plan_.protected
    values = params.model_dump()
    user = values.get("user")
    if isinstance(user, str) and user in p.users:
        return f"user {user} is protected by the response plan"
    for name in ("account", "alert"):
        rid = values.get(name)
        if isinstance(rid, str):
            if any(rid == r or rid.startswith(r + "/") for r in p.resources):
                return f"{rid} is protected by the response plan"
            parts = rid.split("/")
            if len(parts) > 2 and parts[2] in p.subscriptions:
                return f"subscription {parts[2]} is protected by the response plan"
    return None


def _key(base: dict[str, str], params: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps({**base, "params": params}, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]
