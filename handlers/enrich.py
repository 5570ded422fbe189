"""The enrichment timer: every two minutes, enrich the incidents that are new or changed since they
were last enriched (Log Analytics, Defender for Cloud, Graph; `AEGIS_ENRICHERS`). Enrichment runs
apart from ingest, so a slow service never holds back an Event Hubs partition."""

from __future__ import annotations

import azure.functions as func
import structlog

from aegis import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.enrich")


@bp.timer_trigger(arg_name="timer", schedule="15 */2 * * * *", run_on_startup=False, use_monitor=True)
def enrich_timer(timer: func.TimerRequest) -> None:
    log.info("enrichment_run", incidents=runtime.enrich_run())
