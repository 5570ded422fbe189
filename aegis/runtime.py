"""What a long-lived host (a Functions worker) builds once and reuses: settings, logging, the
store client and the pipeline. Built on first use, so importing the app stays cheap."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette

from aegis import log, settings
from aegis.approvals import web
from aegis.approvals.sweep import SweepCounts, Sweeper
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.errors import ConfigurationError
from aegis.events import Event
from aegis.pipeline import Pipeline
from aegis.records import Incident, Pending
from aegis.respond import playbooks
from aegis.respond.execute import Executor, RunCounts
from aegis.respond.record import Responder
from aegis.store import Store, open_store

logger = structlog.get_logger("aegis.runtime")


def build_pipeline(
    cfg: settings.Settings, store: Store, *, respond: bool = False, folder: Path | None = None
) -> Pipeline:
    """The correlating pipeline on `store`, with the detections in `detections/` (validated here);
    with `respond`, the response plan (of the playbooks in `folder`, or the shipped one) is recorded for the
    incidents each batch creates or changes."""
    loaded = detections.load().detections
    correlator = Correlator(loaded, store, lateness=cfg.lateness)
    hook = responder(cfg, store, [d.id for d in loaded], folder) if respond else None
    return Pipeline(
        store,
        limits=cfg.limits,
        correlator=correlator,
        respond=hook,
        hubs=cfg.hubs,
        keep_events=cfg.keep_events == "all",
    )


def responder(
    cfg: settings.Settings, store: Store, known: Iterable[str], folder: Path | None = None
) -> Callable[[list[Incident], list[Event]], None]:
    """Record the response plan's steps for changed incidents. Nothing is called from here: the
    ingest path only records, and the response timer (`executor_run`) makes the calls, so a slow
    or throttled service never holds back an Event Hubs partition."""
    record = Responder(load_response(cfg, folder, detection_ids=known), store)

    def respond(incidents: list[Incident], events: list[Event]) -> None:
        pending = [Pending.of(i) for i in incidents]  # the outbox entries the batch's commit wrote
        record.respond_pending(pending, seen=[e for event in events for e in event.entities])

    return respond


@lru_cache(maxsize=1)
def pipeline() -> Pipeline:
    cfg = settings.get()
    log.configure_from_settings(cfg)
    return build_pipeline(cfg, open_store(cfg), respond=True)


def console_app() -> Starlette:
    """The approvals API and console (one ASGI app) behind App Service Authentication. In execute
    mode an approved step is run by the response timer, within a minute."""
    plan = load_response(settings.get())
    return web.create_app(web.Console.over(pipeline().store, plan, web.easy_auth_identity))


def sweep() -> SweepCounts:
    """The approvals timer: expire, escalate, post and update Teams cards."""
    store = pipeline().store
    cfg = settings.get()
    return Sweeper.from_settings(load_response(cfg), store, pipeline().store.incidents, cfg).run()


def enrich_run() -> tuple[int, int]:
    """The enrichment timer: enrich the incidents that are new or changed since last time, then
    deliver them (Sentinel, the SOC's Teams channel) as configured. (enriched, delivered)."""
    return enrich_and_deliver(settings.get(), pipeline().store)


def enrich_and_deliver(cfg: settings.Settings, store: Store) -> tuple[int, int]:
    from aegis.deliver.run import Deliveries  # noqa: PLC0415  (the enrichers' SDKs load only here)
    from aegis.enrich.run import Enrichers  # noqa: PLC0415

    enrichers = Enrichers.from_settings(cfg, lambda start, end: list(store.events(since=start, until=end)))
    incidents = store.incidents()  # read once: enrichment does not change them
    enriched = enrichers.run(incidents, store)
    delivered = Deliveries.from_settings(cfg, playbooks.load().plan.soc_channel).run(incidents, store)
    return enriched, delivered


def executor_run() -> RunCounts | None:
    """The response timer: plan what the outbox still holds (a crash between correlation and
    response), settle the steps waiting for corroboration, then one executor pass over
    every open step; None when nothing can run (the plan is a dry run)."""
    store = pipeline().store
    cfg = settings.get()
    plan = load_response(cfg)
    Responder(plan, store).drain()
    corroborate(cfg, plan, store, pipeline().store.incidents)
    if plan.plan.mode != "execute":
        return None
    return Executor.from_settings(plan, store, cfg).run()


def load_response(cfg: settings.Settings, folder: Path | None = None, **kw: Any) -> playbooks.Response:
    """The response plan and playbooks, with the corroboration sources the settings configure."""
    return replace(playbooks.load(folder, **kw), corroborators=tuple(cfg.corroborators))


def corroborate(
    cfg: settings.Settings, plan: playbooks.Response, store: Store, incidents: Callable[[], list[Incident]]
) -> int:
    """Ask the configured sources about the steps waiting for corroboration; how many were settled."""
    if not cfg.corroborators:
        return 0
    from aegis.enrich.base import Context  # noqa: PLC0415  (the sources' SDKs load only here)
    from aegis.enrich.corroborate import Corroborator  # noqa: PLC0415
    from aegis.respond import connect  # noqa: PLC0415

    ctx = Context(connections=connect.from_settings(cfg), workspace=cfg.log_analytics_workspace)
    try:
        checker = Corroborator(cfg.corroborators, ctx)
    except ValueError as exc:
        raise ConfigurationError(f"AEGIS_CORROBORATORS: {exc}") from None
    return checker.run(Responder(plan, store), incidents)


def retention_run() -> int:
    """The retention timer: purge events, dead letters and raw bodies older than `AEGIS_RETENTION`."""
    from datetime import UTC, datetime  # noqa: PLC0415

    cfg = settings.get()
    return pipeline().store.purge(datetime.now(UTC) - cfg.retention)
