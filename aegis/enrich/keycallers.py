"""Who used an AI account's keys, from Log Analytics, for the steps that cut keys off (a key
rotation, turning keys off) while they wait for approval: the workspace keeps the request logs
longer and more completely than the stream Aegis has seen, so the approver sees every application
that breaks. The response timer asks once per waiting step (`KeyCallers.run`); the callers found
are added to the step's list (one revision, with an audit entry) and kept in the store, where the
next plans find them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from azure.monitor.query import LogsQueryStatus

from aegis.assets import KeyCaller
from aegis.enrich import kql
from aegis.enrich.base import Context, error_text
from aegis.enrich.log_analytics import client
from aegis.records import AuditEntry
from aegis.respond.actions import cuts_keys
from aegis.store import Store

log = structlog.get_logger("aegis.enrich.keycallers")

LOOKBACK = timedelta(days=7)
CHECKED = "checked in Log Analytics"  # the last entry of a step's list once the workspace was asked


class KeyCallers:
    def __init__(self, ctx: Context, *, lookback: timedelta = LOOKBACK) -> None:
        self.ctx, self.lookback = ctx, lookback

    def ask(self, account: str) -> list[KeyCaller]:
        """The callers the workspace shows using `account`'s keys in the lookback, most recent first."""
        assert self.ctx.workspace is not None
        end = self.ctx.now
        result: Any = client(self.ctx).query_workspace(
            self.ctx.workspace, kql.render("account_key_callers", account=account), timespan=(end - self.lookback, end)
        )  # fmt: skip
        tables = result.tables if result.status == LogsQueryStatus.SUCCESS else result.partial_data
        found = []
        for table in tables[:1]:
            for row in table.rows[:50]:
                got = dict(zip(table.columns, row, strict=False))
                seen = got.get("last_seen")
                if not isinstance(seen, datetime):
                    continue
                found.append(KeyCaller(account.lower(), _text(got.get("caller_ip")), _text(got.get("user_agent")),
                                       _text(got.get("deployment")), seen.astimezone(UTC)))  # fmt: skip
        return found

    def run(self, store: Store) -> int:
        """Ask about each waiting step that cuts keys off and was not asked about yet; how many changed."""
        if self.ctx.connections is None or not self.ctx.workspace:
            return 0
        changed = 0
        for step in store.steps(status=["awaiting_approval"]):
            if not cuts_keys(step.action, step.params) or (step.dependents and step.dependents[-1].startswith(CHECKED)):
                continue
            account = str(step.params.get("account", ""))
            try:
                callers = self.ask(account)
            except kql.UnsafeValue as exc:
                callers, note = [], f"{CHECKED}: not asked ({exc})"
            except Exception as exc:  # a failing workspace: asked again on the next run
                log.warning("key_callers_failed", step=step.key, error=error_text(exc))
                continue
            else:
                note = f"{CHECKED} over {self.lookback.days} days: {len(callers)} caller(s)"
            if callers:
                store.save_key_callers(callers)
            listed = (*merged(step.dependents, [c.describe() for c in callers]), note)
            audit = AuditEntry.about(step, "dependents", note, self.ctx.now)
            if store.replace_step(step.next(dependents=listed), audit=[audit]):
                changed += 1
        return changed


def merged(before: Sequence[str], found: Sequence[str], limit: int = 30) -> tuple[str, ...]:
    """The step's list with the workspace's callers added, each once, without an older check's note."""
    kept = [d for d in before if not d.startswith(CHECKED)]
    return tuple(dict.fromkeys([*kept, *found]))[:limit]


def _text(value: object) -> str | None:
    return str(value)[:256] if value not in (None, "") else None
