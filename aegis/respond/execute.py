"""The executor: runs approved steps, in playbook order, at most once each.

- **Recorded before, outcome after.** A step is claimed (its `started` time and attempt written
  over the revision it was read at) before the call, and its outcome written after. Two workers
  cannot both claim it; a redelivered incident finds it claimed or done and runs nothing.
- **Order.** Within one playbook a step waits for the steps before it: one awaiting approval holds
  the rest back; one that failed stops the playbook and the later steps are recorded `skipped`.
  A denied, expired or refused step is passed over (the decision was about that step).
- **Failures.** The SDKs retry 429 and 5xx themselves, with backoff honouring `Retry-After`. What is
  left after that is classified: still throttled or unavailable → the step is released and tried
  again by a later run, up to `max_attempts`; refused by the service (4xx) or by the action
  (`CannotRun`) → failed; a timeout after the request went out → failed with the outcome unknown
  (never repeated blindly: the engineer checks the target). A claim older than `lease` with no
  outcome (the worker died mid-call) is recorded failed the same way.
- **Blast radius.** Protected assets and the plan's rate limits (per action per hour, per
  incident) are checked again just before the call; a step over them is refused, with the reason.
- **Audit.** Every claim, outcome, retry, skip and refusal is appended to the audit log.
  Outcomes carry names and ids, never secrets; error texts are redacted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import structlog
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from kiota_abstractions.api_error import APIError

from aegis import tracing
from aegis.records import AuditEntry, StepRecord
from aegis.respond import botconnector, cognitive, connect, defender, graph, mde, planner, tickets
from aegis.respond.actions import ACTIONS
from aegis.respond.connect import CannotRun, Connections, Context, ProtectedAsset
from aegis.respond.playbooks import Response
from aegis.respond.record import Responder, call
from aegis.settings import Settings
from aegis.store import Store

log = structlog.get_logger("aegis.respond")

# each service module attaches the runs of its actions (`@runs`): one without a run cannot be executed
_SERVICES = (botconnector, cognitive, defender, graph, mde, tickets)
_NOT_RUNNABLE = sorted(name for name, spec in ACTIONS.items() if spec.run is None)
if _NOT_RUNNABLE:
    raise RuntimeError(f"actions no service module runs: {', '.join(_NOT_RUNNABLE)}")
OPEN = ("awaiting_approval", "approved")  # statuses a run may still move on
_SECRETISH = re.compile(r"[A-Za-z0-9+/=_]{32,}")  # keys, tokens, connection-string parts


@dataclass(slots=True)
class RunCounts:
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0
    refused: int = 0
    skipped: int = 0
    expired: int = 0
    waiting: int = 0  # playbooks held back by a step awaiting approval


def classify(exc: BaseException) -> tuple[str, str]:
    """(transient | permanent | unknown, a one-line reason) for what a call raised after its retries."""
    status: int | None = None
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
    elif isinstance(exc, APIError):
        status = exc.response_status_code
    if status is not None:
        kind = "transient" if status in (408, 429) or status >= 500 else "permanent"
        return kind, redact(f"HTTP {status}: {_first_line(exc)}")
    if isinstance(exc, CannotRun):
        return "permanent", redact(str(exc))
    if isinstance(exc, ServiceResponseError | httpx.ReadTimeout | httpx.WriteTimeout | httpx.RemoteProtocolError):
        return "unknown", redact(f"no answer ({type(exc).__name__}): the call may have been carried out")
    if isinstance(exc, ServiceRequestError | httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return "transient", redact(f"cannot connect ({type(exc).__name__}): {_first_line(exc)}")
    return "permanent", redact(f"{type(exc).__name__}: {_first_line(exc)}")


def redact(text: str) -> str:
    return _SECRETISH.sub("[redacted]", text)[:500]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class Executor:
    def __init__(
        self, response: Response, store: Store, connections: Connections | None, *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease: timedelta = timedelta(minutes=15), max_attempts: int = 3,
    ) -> None:  # fmt: skip
        self.response, self.store, self.connections = response, store, connections
        self.clock, self.lease, self.max_attempts = clock, lease, max_attempts
        self.responder = Responder(response, store, clock=clock)

    @classmethod
    def from_settings(cls, response: Response, store: Store, cfg: Settings) -> Executor:
        """The executor the settings describe; in dry-run mode it connects to nothing and runs nothing."""
        connections = connect.from_settings(cfg) if response.plan.mode == "execute" else None
        return cls(response, store, connections)

    def run(self, incidents: Iterable[str] | None = None) -> RunCounts:
        """Move on every open step (of these incidents, or of all incidents with open steps)."""
        counts = RunCounts()
        if self.response.plan.mode == "dry_run":
            return counts  # the plan is recorded; nothing runs
        if self.connections is None:
            raise CannotRun("the response plan says `mode: execute` but no connections were given")
        ids = list(incidents) if incidents is not None else sorted({s.incident for s in self.store.steps(status=OPEN)})
        for incident in ids:
            books: dict[str, list[StepRecord]] = {}
            for step in self.store.steps(incident=incident):
                books.setdefault(step.playbook, []).append(step)
            for steps in books.values():
                self._playbook(steps, counts)
        return counts

    def _playbook(self, steps: list[StepRecord], counts: RunCounts) -> None:
        stopped: StepRecord | None = None
        for step in steps:
            if stopped is not None:
                if step.status in OPEN and step.started is None:
                    self._skip(step, stopped, counts)
                continue
            if step.status == "awaiting_approval":
                if step.expires is not None and self.clock() > step.expires:
                    self.responder.expire(step, self.clock())
                    counts.expired += 1
                    continue
                counts.waiting += 1
                return  # the later steps wait for this decision
            if step.status == "failed":
                stopped = step
                continue
            if step.status != "approved":
                continue  # done, denied, expired, refused, skipped or dry run
            if step.started is not None:
                if self.clock() - step.started < self.lease:
                    return  # another worker is running it
                stopped = self._abandoned(step, counts)
                continue
            after = self._run(step, counts)
            if after.status == "failed":
                stopped = after
            elif after.status == "approved":
                return  # released for a retry, or claimed by another worker: the later steps wait

    def _run(self, step: StepRecord, counts: RunCounts) -> StepRecord:
        assert self.connections is not None
        spec = ACTIONS[step.action]
        params = spec.params.model_validate(step.params)
        now = self.clock()
        learned = self.store.protected_aliases()
        reason = planner.protected(params, self.response.plan, step.aliases, learned) or self._over_limit(step, now)
        if reason:
            refused = step.next(status="refused", reason=reason)
            self._write(refused, "refused", reason, now)
            counts.refused += 1
            return refused
        claimed = step.next(started=now, attempts=step.attempts + 1)
        if not self._write(claimed, "started", f"attempt {claimed.attempts}: {call(step.action, step.params)}", now):
            return step  # another worker claimed it first
        try:
            context = Context(self.connections, self.store, claimed, dict(self.response.plan.protected.tags))
            assert spec.run is not None  # every action has one: checked at import
            with tracing.span("aegis.action", step=step.key, action=step.action, incident=step.incident,
                              target=step.target, attempt=claimed.attempts):  # fmt: skip
                outcome = spec.run(params, context)
        except ProtectedAsset as exc:  # seen only now, on the resource itself: refused, not failed
            refused = claimed.next(status="refused", reason=str(exc), started=None)
            self._write(refused, "refused", str(exc), self.clock())
            counts.refused += 1
            return refused
        except Exception as exc:
            kind, message = classify(exc)
            log.warning("step_failed", step=step.key, action=step.action, kind=kind, error=message)
            if kind == "transient" and claimed.attempts < self.max_attempts:
                after = claimed.next(started=None, reason=f"attempt {claimed.attempts} failed: {message}")
                self._write(after, "retrying", after.reason or "", self.clock())
                counts.retrying += 1
                return after
            after = claimed.next(status="failed", reason=f"{kind}: {message}", outcome={"error": message,
                                                                                          "kind": kind})  # fmt: skip
            self._write(after, "failed", after.reason or "", self.clock())
            counts.failed += 1
            return after
        done = claimed.next(status="succeeded", reason=None, outcome=outcome)
        self._write(done, "succeeded", orjson.dumps(outcome).decode(), self.clock())
        counts.succeeded += 1
        return done

    def _abandoned(self, step: StepRecord, counts: RunCounts) -> StepRecord:
        reason = (f"unknown: the worker that started it at {step.started:%Y-%m-%d %H:%M:%S}Z stopped before its "
                  f"outcome was recorded; check {step.target} and rerun it by hand if needed")  # fmt: skip
        failed = step.next(status="failed", reason=reason, outcome={"error": reason, "kind": "unknown"})
        self._write(failed, "failed", reason, self.clock())
        counts.failed += 1
        return failed

    def _skip(self, step: StepRecord, cause: StepRecord, counts: RunCounts) -> None:
        reason = f"not run: the earlier step {cause.step!r} failed"
        self._write(step.next(status="skipped", reason=reason), "skipped", reason, self.clock())
        counts.skipped += 1

    def _over_limit(self, step: StepRecord, now: datetime) -> str | None:
        limit = self.response.plan.rate_limits.get(step.action)
        if limit is None:
            return None
        recent = self.store.started_since(step.action, now - timedelta(hours=1))
        if recent >= limit.per_hour:
            return f"rate limit: {step.action} started {recent} times in the last hour (allowed: {limit.per_hour})"
        mine = sum(1 for s in self.store.steps(incident=step.incident, action=step.action) if s.started is not None)
        if mine >= limit.per_incident:
            return f"rate limit: {step.action} ran {mine} times for this incident (allowed: {limit.per_incident})"
        return None

    def _write(self, step: StepRecord, event: str, detail: str, now: datetime) -> bool:
        return self.store.replace_step(step, audit=[AuditEntry.about(step, event, detail, now)])
