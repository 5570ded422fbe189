"""Recording the response: planned steps, approvals and an append-only audit log.

A step is recorded once, under its idempotency key, before anything runs; planning the same
incident again finds it and changes nothing. Decisions follow the rules on-call engineers rely on:
the requester cannot approve; one person counts once; an expired step never runs (expiry is
recorded as `expired`, never as approval); a decision replayed changes nothing; two approvers at
the same moment cannot both be "the second" (the store compares the status it read).

In `dry_run` mode an approved step is recorded as `dry_run` with the exact call it would make; in
`execute` mode it becomes `approved` and the executor (`execute.py`) runs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aegis.assets import AssetBook, cached_book
from aegis.errors import AegisError, InputNotFound
from aegis.events import Entity, Origin, User
from aegis.records import PIPELINE, AuditEntry, Incident, Pending, PlannedStep, StepRecord, views
from aegis.respond import planner
from aegis.respond.actions import ACTIONS
from aegis.respond.playbooks import Response
from aegis.store import Store


class DecisionRefused(AegisError):
    """An approval or denial that does not count, with the reason."""


class Responder:
    """Plans and records the response, and takes the on-call engineers' decisions."""

    def __init__(
        self, response: Response, store: Store, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        assets: Callable[[], AssetBook] | None = None,
    ) -> None:  # fmt: skip
        """`assets`: the inventory (`aegis.assets`), read again every few minutes when not given."""
        self.response, self.store, self.clock = response, store, clock
        self.assets = assets or cached_book(store.assets)

    def _plan(self, incident: Incident, **kw: Any) -> list[PlannedStep]:
        return planner.plan(incident, self.response, assets=self.assets(), key_callers=self.store.key_callers, **kw)

    def respond(self, incidents: Sequence[Incident], *, seen: Iterable[Entity] = ()) -> int:
        """Record the plan's steps for these incidents; return how many steps were new. A step the
        plan gives again after it was denied or expired is proposed again (a new step, linked to the
        old one) only if the incident has grown since. `seen`: the entities of the batch's events,
        learned from (`learn`) with the incidents' own before anything is planned."""
        if not incidents and not any(_pairing(e) for e in seen):
            return 0  # nothing to plan and nothing to learn: no read of the store (most batches)
        known = self.learn([*seen, *(e for incident in incidents for e in incident.entities)])
        return sum(self._record(incident, self._plan(incident, learned=known), PIPELINE)[0] for incident in incidents)

    def respond_pending(self, pending: Sequence[Pending], *, seen: Iterable[Entity] = (), clear: bool = True) -> int:
        """Plan the response for incident changes from the outbox (or, on the ingest path, the batch's
        own, just committed there), then clear those entries (unless not `clear`: the ingest path
        leaves that to the timer's `drain`, so that a batch costs each partition it touches one read
        and one write). An entry left, by a crash or on purpose, is planned again by the next pass,
        which records nothing twice (steps are keyed). Of an incident changed more than once, its
        latest state is planned; a fallback incident another one supersedes, none."""
        latest: dict[str, Incident] = {}
        for p in pending:
            mine = latest.get(p.incident.id)
            if mine is None or (p.incident.event_count, p.incident.last_seen) >= (mine.event_count, mine.last_seen):
                latest[p.incident.id] = p.incident
        shown = [v.incident for v in views(latest.values()) if v.status != "superseded"]
        new = self.respond(shown, seen=seen)
        if clear:
            self.store.clear_outbox(pending)
        return new

    def drain(self) -> int:
        """Plan what the outbox still holds (what a crash, or a front door without the response, left)."""
        return self.respond_pending(self.store.outbox())

    def learn(self, entities: Iterable[Entity]) -> frozenset[str]:
        """Remember every identifier an event or incident pairs with a protected user (an alert naming
        the break-glass UPN with its object id protects that object id from then on, everywhere), and
        refuse the waiting steps that target one of them. Every identifier known so far."""
        listed = {u.lower() for u in self.response.plan.protected.users}
        known = self.store.protected_aliases()
        new: set[str] = set()
        for e in entities:
            ids = _pairing(e)
            if ids and ids & (listed | known | new):
                new |= ids - listed - known
        if new:
            now = self.clock()
            self.store.add_protected_aliases(sorted(new), now)
            for step in self.store.steps(status=["awaiting_approval"]):
                hit = sorted(({str(step.params.get("user", "")).lower()} | set(step.aliases)) & new)
                if hit:
                    reason = f"user {hit[0]} is protected: an incident paired it with a user the plan protects"
                    self.store.replace_step(step.next(status="refused", reason=reason),
                                            audit=[AuditEntry.about(step, "refused", reason, now)])  # fmt: skip
        return frozenset(known | new)

    def request(self, incident: Incident, playbook: str, person: str, person_id: str | None = None) -> list[StepRecord]:
        """A person asks for a playbook on an incident (one the plan did not choose, or again): its
        steps are recorded with that person as the requester, who therefore cannot approve them. A
        step that was denied or expired is proposed again, as a new step."""
        if playbook not in self.response.playbooks:
            raise InputNotFound(f"no playbook {playbook!r}: `aegis playbooks list` shows them")
        planned = self._plan(incident, playbooks=[playbook], learned=self.learn(incident.entities))
        who = _person(person_id) if person_id else _person(person)
        _, keys = self._record(incident, planned, _person(person), who, asked=True)
        return [s for k in keys if (s := self.store.step(k)) is not None]

    def _record(
        self, incident: Incident, planned: Sequence[PlannedStep], requester: str, requester_id: str = "",
        *, asked: bool = False,
    ) -> tuple[int, list[str]]:  # fmt: skip
        """Record the planned steps (each, or its new proposal: `_again`): how many were new, and their keys."""
        now = self.clock()
        records, audit = [], []
        recorded = {s.key: s for s in self.store.steps(incident=incident.id)} if planned else {}
        for planned_step in planned:
            p, replaces = self._again(incident, planned_step, asked, recorded)
            expires = now + self.response.plan.approval_expiry if p.status == "awaiting_approval" else None
            records.append(StepRecord.of(p, requested_by=requester, created=now, expires=expires,
                                         requested_by_id=requester_id, incident_events=incident.event_count,
                                         replaces=replaces))  # fmt: skip
            event = "refused" if p.status == "refused" else "planned"
            detail = p.reason or p.status
            if p.status == "dry_run":  # one entry: planned, and what it would have called
                detail = f"dry run: {call(p.action, p.params)}"
            if replaces is not None:
                detail += f"; proposed again after step {replaces} (the incident grew, or it was asked for)"
            audit.append(AuditEntry.about(p, event, detail, now, requester, actor_id=requester_id or None))
        if not records:
            return 0, []
        new = self.store.add_steps(records, audit)
        if new:  # a parameter change always records a new step (its key is the parameters' digest)
            self._supersede(incident.id, records, now)
        return new, [r.key for r in records]

    def _again(
        self, incident: Incident, p: PlannedStep, asked: bool, recorded: dict[str, StepRecord]
    ) -> tuple[PlannedStep, str | None]:
        """The step to record for `p`: itself, or, when the same step was denied or expired and the
        incident has grown since (or a person asks), a new proposal of it with its own key. Rounds
        are numbered, so two instances proposing again write the same step once. `recorded`: the
        incident's steps as stored."""
        previous, n = recorded.get(p.key), 0
        while previous is not None and previous.status in CLOSED_UNDONE and n < MAX_ROUNDS:
            if not asked and incident.event_count <= previous.incident_events:
                return replace(p, key=previous.key), None  # nothing new since it was turned down: leave it
            n += 1
            key = _round_key(p.key, n)
            following = recorded.get(key)
            if following is None:
                return replace(p, key=key), previous.key
            previous = following
        return replace(p, key=previous.key) if previous is not None else p, None

    def _supersede(self, incident: str, planned: Sequence[PlannedStep], now: datetime) -> None:
        """A step still waiting for approval whose parameters the plan now gives differently (the
        incident grew) is superseded by the new one: approvals count only for the parameters approved."""
        current = {(p.playbook, p.step, p.target): p.key for p in planned}
        for old in self.store.steps(incident=incident, status=["awaiting_approval"]):
            key = current.get((old.playbook, old.step, old.target))
            if key is not None and key != old.key:
                reason = f"the parameters changed: step {key} replaces it"
                entry = AuditEntry.about(old, "superseded", reason, now)
                self.store.replace_step(old.next(status="superseded", reason=reason), audit=[entry])

    def decide(
        self,
        key: str,
        person: str,
        person_id: str | None = None,
        *,
        approve: bool,
        reason: str = "",
        digest: str | None = None,
    ) -> StepRecord:
        """Approve or deny step `key` as `person` (a display name) whose identity is `person_id`
        (the Entra object id; the CLI and `aegis serve` name people locally, by name). People are
        compared by identity, so one object id under two names counts once. `digest`, when given,
        is the digest of the parameters the person was shown: a step whose parameters differ is not
        decided."""
        step = self.store.step(key)
        if step is None:
            raise InputNotFound(f"no step {key}: `aegis approvals list` shows the pending ones")
        now = self.clock()
        person = _person(person)
        who = _person(person_id) if person_id else person
        if digest is not None and digest != step.digest:
            raise DecisionRefused(f"step {key} has other parameters than the ones you saw: look again")
        if step.status != "awaiting_approval":
            raise DecisionRefused(f"step {key} is {step.status}, not awaiting approval")
        if step.expires is not None and now > step.expires:
            self.expire(step, now)
            raise DecisionRefused(f"step {key} expired at {_iso(step.expires)}: it will not run")
        if who == (step.requested_by_id or step.requested_by):
            raise DecisionRefused(f"{person} requested this step and cannot decide it")
        if who in step.approver_ids:
            raise DecisionRefused(f"{person} already approved this step; another person must")
        if approve:
            approvers, ids = (*step.approvers, person), (*step.approver_ids, who)
            done = len(ids) >= step.approvals and step.corroboration != planner.PENDING  # evidence first
            dry = self.response.plan.mode == "dry_run"
            status = "awaiting_approval" if not done else "dry_run" if dry else "approved"
            new = step.next(approvers=approvers, approver_ids=ids, status=status)
            audit = [AuditEntry.about(step, "approved", f"approval {len(ids)} of {step.approvals}", now, person,
                                        actor_id=who)]  # fmt: skip
            if done and dry:
                audit.append(AuditEntry.about(step, "dry_run", call(step.action, step.params), now))
        else:
            if not reason.strip():
                raise DecisionRefused("a denial needs a reason")
            new = step.next(status="denied", reason=reason.strip()[:500])
            audit = [AuditEntry.about(step, "denied", new.reason or "", now, person, actor_id=who)]
        if not self.store.replace_step(new, audit=audit):
            raise DecisionRefused(f"step {key} was decided by someone else at the same moment: look again")
        return new

    def settle(self, step: StepRecord, corroborated: bool, detail: str) -> StepRecord:
        """Record what the corroboration sources said of a pending step: corroborated, it needs the
        approvals the plan says (and may be complete already); not, it keeps the extra approval, or is
        refused when the plan requires corroboration for its action."""
        now = self.clock()
        plan = self.response.plan
        planned = plan.approvals_for(step.action)
        status, reason = step.status, step.reason
        if corroborated:
            text, approvals = f"corroborated by {detail}", planned
        else:
            text, approvals = f"uncorroborated: {detail}", planner.uncorroborated_approvals(planned)
            if step.action in plan.corroboration.require:
                status, reason = "refused", f"the response plan requires corroboration for {step.action}: {detail}"
        if status == "awaiting_approval" and len(step.approver_ids) >= approvals:
            status = "dry_run" if plan.mode == "dry_run" else "approved"
        new = step.next(corroboration=text, approvals=approvals, status=status, reason=reason)
        audit = [AuditEntry.about(step, "corroborated" if corroborated else "uncorroborated", text, now)]
        if status == "refused":
            audit.append(AuditEntry.about(step, "refused", reason or "", now))
        elif status == "dry_run":
            audit.append(AuditEntry.about(step, "dry_run", call(step.action, step.params), now))
        if not self.store.replace_step(new, audit=audit):
            current = self.store.step(step.key)
            return current or step  # changed meanwhile (a decision): the next pass settles it
        return new

    def expire(self, step: StepRecord, now: datetime) -> StepRecord:
        """Record that a step waited past its expiry: it will never run (expiry is never approval)."""
        expired = step.next(status="expired", reason=f"no decision by {_iso(step.expires)}")
        entry = AuditEntry.about(step, "expired", expired.reason or "", now)
        self.store.replace_step(expired, audit=[entry])
        return expired


def call(action: str, params: dict[str, Any]) -> str:
    """The exact request(s) the step makes with these parameters: what running it would do."""
    return ACTIONS[action].params.model_validate(params).request()


def _pairing(e: Entity) -> set[str]:
    """The identifiers a user entity pairs (a UPN with an object id), if Azure or Defender named it;
    an application's word teaches nothing."""
    if not isinstance(e, User) or e.origin is Origin.APP:
        return set()
    ids = planner.identifiers(e)
    return ids if len(ids) > 1 else set()


def _person(name: str) -> str:
    """People are compared by their sign-in name, case-insensitively."""
    return name.strip().lower()


CLOSED_UNDONE = frozenset({"denied", "expired"})  # closed without running: may be proposed again
MAX_ROUNDS = 20


def _round_key(key: str, n: int) -> str:
    return hashlib.sha256(f"{key}\x00again\x00{n}".encode()).hexdigest()[:32]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
