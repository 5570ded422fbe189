"""The approvals timer's work: expire, escalate, and keep the Teams cards true.

- A step awaiting approval past its expiry is recorded `expired` (never approved; it will not run).
- A step still undecided when an escalation contact's `after` has passed is escalated to that
  contact, once per contact: audited, and (with Teams) a reply in the card's thread that
  @mentions the group's members. The contact's members may decide it (identity.py).
- With an `on_call` channel in the plan, a step that awaits approval gets a card, and a card whose
  step has moved on is updated. A card's message id is written to the step over its revision; a
  failed Graph call is logged and tried again on the next run, and never blocks the others.

Runs in dry-run plans as well: approvals matter before anything is executed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from aegis.approvals.bot import BotCards, CardGone
from aegis.approvals.teams import card
from aegis.records import AuditEntry, Incident, StepRecord
from aegis.respond import connect
from aegis.respond.playbooks import Channel, Response
from aegis.respond.record import Responder
from aegis.settings import Settings
from aegis.store import Store

log = structlog.get_logger("aegis.approvals")


class Cards(Protocol):
    def post_card(self, where: Channel, content: dict[str, Any]) -> str: ...
    def update_card(self, where: Channel, message: str, content: dict[str, Any]) -> None: ...
    def escalate(self, where: Channel, message: str, group: str, text: str) -> int: ...


@dataclass(slots=True)
class SweepCounts:
    expired: int = 0
    escalated: int = 0
    cards_posted: int = 0
    cards_updated: int = 0
    errors: int = 0


class Sweeper:
    def __init__(
        self,
        response: Response,
        store: Store,
        *,
        incidents: Callable[[], list[Incident]],
        teams: Cards | None = None,
        console_url: str = "http://127.0.0.1:8765",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.response, self.store, self.incidents = response, store, incidents
        self.teams, self.console_url, self.clock = teams, console_url, clock
        self.channel = response.plan.on_call if teams is not None else None

    @classmethod
    def from_settings(
        cls, response: Response, store: Store, incidents: Callable[[], list[Incident]], cfg: Settings,
        connections: Callable[[], connect.Connections] | None = None,
    ) -> Sweeper:  # fmt: skip
        """With Teams cards when the plan names an on-call channel and a bot is configured (the Bot
        Connector with `connections`' credential: the worker's, or the settings')."""
        teams = None
        if response.plan.on_call is not None:
            conn = (connections or connect.lazy(cfg))()
            if conn.bot is None:  # the connections say whether a bot is configured (`connect.from_settings`)
                log.warning("teams_cards_off", reason="AEGIS_BOT_APP_ID and AEGIS_TENANT_ID are needed to post cards")
            else:
                teams = BotCards(conn)
        return cls(response, store, incidents=incidents, teams=teams, console_url=cfg.console_url)

    def run(self) -> SweepCounts:
        counts = SweepCounts()
        now = self.clock()
        responder = Responder(self.response, self.store, clock=self.clock)
        for step in self.store.steps(status=["awaiting_approval"]):
            if step.expires is not None and now > step.expires:
                responder.expire(step, now)
                counts.expired += 1
            else:
                counts.escalated += self._escalate(step, now, counts)
        if self.channel is not None:
            self._cards(self.channel, counts)
        return counts

    def _escalate(self, step: StepRecord, now: datetime, counts: SweepCounts) -> int:
        plan = self.response.plan
        due = sum(1 for e in plan.escalation if step.created + e.after <= now)
        done = 0
        for level in range(step.escalated, due):
            contact = plan.escalation[level]
            who = contact.name or f"group {contact.group}"
            text = (f"No decision after {_minutes(contact.after)} on {step.action} on {step.target}: "
                    f"{who}, please decide: {self._link(step)}")  # fmt: skip
            if self.channel is not None and self.teams is not None and step.card:
                try:
                    self.teams.escalate(self.channel, step.card, contact.group, text)
                except Exception as exc:
                    counts.errors += 1
                    log.warning("escalation_failed", step=step.key, error=type(exc).__name__)
                    break
            entry = AuditEntry.about(step, "escalated", f"to {who}", now)
            written = step.next(escalated=level + 1)
            if not self.store.replace_step(written, audit=[entry]):
                break  # decided meanwhile: the next run looks again
            step, done = written, done + 1
        return done

    def _cards(self, where: Channel, counts: SweepCounts) -> None:
        assert self.teams is not None
        stale = [
            s for s in self.store.steps() if (s.card or s.status == "awaiting_approval") and s.card_shows != s.status
        ]
        if not stale:
            return
        by_id = {i.id: i for i in self.incidents()}
        for step in stale:
            content = card(step, by_id.get(step.incident), self.console_url)
            message, posted = step.card, False
            try:
                if message:
                    try:
                        self.teams.update_card(where, message, content)
                        counts.cards_updated += 1
                    except CardGone:  # a card posted before the bot: post it again, the bot's way
                        message = None
                if not message:
                    message, posted = self.teams.post_card(where, content), True
                    counts.cards_posted += 1
            except Exception as exc:
                counts.errors += 1
                log.warning("card_failed", step=step.key, error=type(exc).__name__)
                continue
            self._remember(step, message, posted=posted)

    def _remember(self, step: StepRecord, message: str, posted: bool) -> None:
        """Write the card's id and the status it shows over the step's revision; if the step was
        decided meanwhile, over the new one (the next run then updates the card)."""
        shows, now = step.status, self.clock()
        audit = (
            [AuditEntry.about(step, "notified", f"approval card {message} in the on-call channel", now)]
            if posted
            else []
        )
        for _ in range(3):
            if self.store.replace_step(step.next(card=message, card_shows=shows), audit=audit):
                return
            fresh = self.store.step(step.key)
            if fresh is None:
                return
            step = fresh
        log.warning("card_not_recorded", step=step.key, message=message)

    def _link(self, step: StepRecord) -> str:
        return f"{self.console_url.rstrip('/')}/console/approvals/{step.key}"


def _minutes(delta: Any) -> str:
    return f"{int(delta.total_seconds() // 60)} min"
