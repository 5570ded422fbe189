"""The inventory timer: every hour, read the AI estate from Azure Resource Graph (accounts,
projects, hubs, their deployments, content filters, network exposure, diagnostics and the Defender
plan), record what changed since the last look, and open or close the blind-spot findings.
Not at start-up: every instance of a scaled-out app would read the estate again; `aegis inventory
refresh` reads it at once after a deployment.
"""

from __future__ import annotations

import azure.functions as func
import structlog

from aegis import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.inventory")


@bp.timer_trigger(arg_name="timer", schedule="0 41 * * * *", run_on_startup=False, use_monitor=True)
def inventory_timer(timer: func.TimerRequest) -> None:
    done = runtime.inventory_run()
    log.info("inventory_run", assets=len(done.assets), open_findings=len(done.open), changes=len(done.changes),
             gone=len(done.gone), errors=done.errors[:20])  # fmt: skip
