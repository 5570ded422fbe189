"""The response timer: every minute, move the response on — run the steps the ingest path recorded
as automatic and the ones approved since, expire the ones that waited past their expiry, retry the
ones a throttled service released. The work is the executor's (`aegis.respond.execute`); a step is
claimed before it runs, so overlapping timer runs on several instances make each call once.
"""

from __future__ import annotations

from dataclasses import asdict

import azure.functions as func
import structlog

from aegis import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.respond")


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=True)
def respond_timer(timer: func.TimerRequest) -> None:
    counts = runtime.executor_run()
    if counts is not None:
        log.info("response_run", **asdict(counts))
