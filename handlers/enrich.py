"""The enrichment timer: every two minutes, enrich the incidents that are new or changed since they
were last enriched (Log Analytics, Defender for Cloud, Graph; `AEGIS_ENRICHERS`), then deliver them
(Sentinel, the SOC's Teams channel; `AEGIS_DELIVERERS`). It runs apart from ingest, so a slow
service never holds back an Event Hubs partition."""

from __future__ import annotations

import azure.functions as func
import structlog

from aegis import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.enrich")


@bp.timer_trigger(arg_name="timer", schedule="15 */2 * * * *", run_on_startup=False, use_monitor=True)
def enrich_timer(timer: func.TimerRequest) -> None:
    enriched, delivered = runtime.enrich_run()
    log.info("enrichment_run", enriched=enriched, delivered=delivered)
