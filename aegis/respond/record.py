"""Recording the response: planned steps, approvals and an append-only audit log.

A step is recorded once, under its idempotency key, before anything runs; planning the same
incident again finds it and changes nothing. Decisions follow the rules on-call engineers rely on:
the requester cannot approve; one person counts once; an expired step never runs (expiry is
recorded as `expired`, never as approval); a decision replayed changes nothing; two approvers at
the same moment cannot both be "the second" (the store compares the status it read).

This version plans and decides; executing actions against Azure comes next. In `dry_run` mode an
approved step is recorded as `dry_run` with the exact call it would make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from aegis.correlate.incidents import Incident
from aegis.errors import AegisError, InputNotFound
from aegis.respond import planner
from aegis.respond.actions import ACTIONS
from aegis.respond.planner import PlannedStep
from aegis.respond.playbooks import Response

PIPELINE = "aegis"  # the requester of every step the plan produces


class DecisionRefused(AegisError):
    """An approval or denial that does not count, with the reason."""


@dataclass(frozen=True, slots=True)
class StepRecord(PlannedStep):
    """A planned step as recorded: who asked, when, until when it may be decided, who approved.
    `status` goes on to approved | denied | expired | succeeded | failed | skipped."""

    requested_by: str
    created: datetime
    expires: datetime | None
    approvers: tuple[str, ...] = ()

    @classmethod
    def of(cls, p: PlannedStep, *, requested_by: str, created: datetime, expires: datetime | None) -> StepRecord:
        planned = {f.name: getattr(p, f.name) for f in fields(PlannedStep)}
        return cls(**planned, requested_by=requested_by, created=created, expires=expires)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.key, "incident": self.incident, "playbook": self.playbook, "step": self.step,
            "action": self.action, "target": self.target, "params": self.params, "status": self.status,
            "approvals_needed": self.approvals, "approvers": list(self.approvers), "reason": self.reason,
            "requested_by": self.requested_by, "created": _iso(self.created), "expires": _iso(self.expires),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: datetime
    actor: str
    event: str  # planned | refused | approved | denied | expired | dry_run | succeeded | failed
    step: str
    action: str
    target: str
    detail: str

    def summary(self) -> dict[str, Any]:
        return {"time": _iso(self.time), "actor": self.actor, "event": self.event, "step": self.step,
                "action": self.action, "target": self.target, "detail": self.detail}  # fmt: skip


class ResponseStore(Protocol):
    def add_steps(self, steps: Sequence[StepRecord], audit: Sequence[AuditEntry]) -> int:
        """Record steps not recorded yet (by key) with their audit entries; return how many were new."""
        ...

    def steps(self, *, incident: str | None = None) -> list[StepRecord]: ...

    def replace_step(self, step: StepRecord, *, expected_status: str, audit: Sequence[AuditEntry]) -> bool:
        """Write `step` if its stored status is still `expected_status`; False if another decision won."""
        ...

    def audit_log(self) -> list[AuditEntry]: ...


class Responder:
    def __init__(
        self, response: Response, store: ResponseStore, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        if response.plan.mode != "dry_run":
            raise AegisError(
                "the response plan says `mode: execute`, but this version only plans and records (dry run): "
                "set `mode: dry_run` in playbooks/response-plan.yaml"
            )
        self.response, self.store, self.clock = response, store, clock

    def respond(self, incidents: Sequence[Incident]) -> int:
        """Record the plan's steps for these incidents; return how many steps were new."""
        now = self.clock()
        records, audit = [], []
        for incident in incidents:
            for p in planner.plan(incident, self.response):
                expires = now + self.response.plan.approval_expiry if p.status == "awaiting_approval" else None
                records.append(StepRecord.of(p, requested_by=PIPELINE, created=now, expires=expires))
                event = "refused" if p.status == "refused" else "planned"
                audit.append(AuditEntry(now, PIPELINE, event, p.key, p.action, p.target, p.reason or p.status))
                if p.status == "dry_run":
                    audit.append(
                        AuditEntry(now, PIPELINE, "dry_run", p.key, p.action, p.target, call(p.action, p.params))
                    )
        return self.store.add_steps(records, audit)

    def decide(self, key: str, person: str, *, approve: bool, reason: str = "") -> StepRecord:
        step = self._find(key)
        now = self.clock()
        person = person.strip().lower()
        if step.status != "awaiting_approval":
            raise DecisionRefused(f"step {key} is {step.status}, not awaiting approval")
        if step.expires is not None and now > step.expires:
            expired = replace(step, status="expired", reason=f"no decision by {_iso(step.expires)}")
            entry = AuditEntry(now, PIPELINE, "expired", key, step.action, step.target, expired.reason or "")
            self.store.replace_step(expired, expected_status=step.status, audit=[entry])
            raise DecisionRefused(f"step {key} expired at {_iso(step.expires)}: it will not run")
        if person == step.requested_by:
            raise DecisionRefused(f"{person} requested this step and cannot decide it")
        if person in step.approvers:
            raise DecisionRefused(f"{person} already approved this step; another person must")
        if approve:
            approvers = (*step.approvers, person)
            done = len(approvers) >= step.approvals
            new = replace(step, approvers=approvers, status="dry_run" if done else "awaiting_approval")
            audit = [AuditEntry(now, person, "approved", key, step.action, step.target,
                                f"approval {len(approvers)} of {step.approvals}")]  # fmt: skip
            if done:
                audit.append(AuditEntry(now, PIPELINE, "dry_run", key, step.action, step.target,
                                        call(step.action, step.params)))  # fmt: skip
        else:
            if not reason.strip():
                raise DecisionRefused("a denial needs a reason (--reason)")
            new = replace(step, status="denied", reason=reason.strip()[:500])
            audit = [AuditEntry(now, person, "denied", key, step.action, step.target, new.reason or "")]
        if not self.store.replace_step(new, expected_status=step.status, audit=audit):
            raise DecisionRefused(f"step {key} was decided by someone else at the same moment: look again")
        return new

    def _find(self, key: str) -> StepRecord:
        found = [s for s in self.store.steps() if s.key == key]
        if not found:
            raise InputNotFound(f"no step {key}: `aegis approvals list` shows the pending ones")
        return found[0]


def call(action: str, params: dict[str, Any]) -> str:
    """The exact request(s) the step makes with these parameters: what running it would do."""
    return ACTIONS[action].params.model_validate(params).request()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
