"""The retention timer: once a day, purge the events, dead letters and raw message bodies older than
`AEGIS_RETENTION` (30 days by default). Raw bodies hold what attackers and applications sent,
secrets and prompts included: they are kept only as long as an investigation may need them.
"""

from __future__ import annotations

import azure.functions as func
import structlog

from aegis import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.retention")


@bp.timer_trigger(arg_name="timer", schedule="0 17 3 * * *", run_on_startup=False, use_monitor=True)
def retention_timer(timer: func.TimerRequest) -> None:
    log.info("retention_run", purged=runtime.retention_run())
