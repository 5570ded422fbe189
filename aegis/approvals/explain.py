"""A pending step as an approver needs it at 3 a.m.: what it does, what it will break, how many
targets, how to undo it, and where the decision stands for the person looking ("1 of 2 — waiting
for a second approver, not you"). The exact requests stay one click away (the page folds them).
The words come from the action registry (`aegis.respond.actions`: `impact`, `undo`), so a new
action says them where it is declared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aegis.approvals.identity import Principal
from aegis.approvals.names import resource_names
from aegis.arm import try_parse_resource_id
from aegis.records import StepRecord
from aegis.respond.actions import ACTIONS
from aegis.respond.planner import PENDING

ORDINALS = ("first", "second", "third")


@dataclass(frozen=True)
class Explained:
    step: StepRecord
    does: str
    breaks: str  # "" for a step that stops nothing
    undo: str
    targets: list[str]  # what it acts on, by name
    state: str  # where the decision stands, for the person looking
    may_act: bool  # this person can approve or deny it now


@dataclass(frozen=True)
class Group:
    """The pending steps of one incident, soonest to expire first."""

    incident: str
    title: str
    steps: list[Explained]
    expires: datetime | None


def explain(step: StepRecord, who: Principal, *, may_decide: bool) -> Explained:
    spec = ACTIONS.get(step.action)
    does = spec.summary if spec else step.action
    targets = target_names(step.target)
    needed, have = step.approvals, len(step.approver_ids)
    mine = who.id == (step.requested_by_id or step.requested_by)  # as the responder decides it
    if step.status != "awaiting_approval":
        state, may_act = step.status.replace("_", " "), False
    elif mine:
        state, may_act = f"{have} of {needed}: you requested this step, so another approver decides it", False
    elif who.id in step.approver_ids:
        left = needed - have
        more = f"a {ORDINALS[have]} approver" if left == 1 and have < len(ORDINALS) else f"{left} more approvers"
        state, may_act = f"{have} of {needed}: waiting for {more}, not you", False
    elif not may_decide:
        state, may_act = f"{have} of {needed}: waiting for an approver (you may look, not decide)", False
    else:
        turn = f"yours would be the {ORDINALS[have]}" if have < len(ORDINALS) else "yours would count"
        people = "one person" if needed == 1 else f"{needed} people"
        state, may_act = f"{have} of {needed}: needs {people}; {turn}", True
    if step.corroboration == PENDING and step.status == "awaiting_approval":
        state += " (the evidence is being checked: one approval more until it is)"
    return Explained(step, does, spec.impact if spec else "", spec.undo if spec else "", targets, state, may_act)


def grouped(steps: Sequence[StepRecord], who: Principal, titles: dict[str, str], *, may_decide: bool) -> list[Group]:
    """Steps by incident; incidents and their steps by expiry, the soonest first."""
    by_incident: dict[str, list[StepRecord]] = {}
    for s in steps:
        by_incident.setdefault(s.incident, []).append(s)
    far = datetime.max.replace(tzinfo=None)

    def expiry(s: StepRecord) -> datetime:
        return s.expires.replace(tzinfo=None) if s.expires else far

    groups = []
    for incident, mine in by_incident.items():
        mine.sort(key=expiry)
        groups.append(Group(incident, titles.get(incident, incident),
                            [explain(s, who, may_decide=may_decide) for s in mine], mine[0].expires))  # fmt: skip
    groups.sort(key=lambda g: expiry(g.steps[0].step))
    return groups


def target_names(target: str) -> list[str]:
    """A step's target as names: `…/accounts/oai-prod#both` → both keys of oai-prod."""
    base, _, part = target.partition("#")
    kind, _, value = base.partition(":")
    if try_parse_resource_id(base):
        name = resource_names(base)
        if part == "both":
            return [f"{name} key1", f"{name} key2"]
        return [f"{name} {part}" if part else name]
    if kind in ("user", "machine", "host") and value:
        return [f"{kind} {value}"]
    return [target]
