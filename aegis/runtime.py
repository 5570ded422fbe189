"""What a long-lived host (a Functions worker) builds once and reuses: settings, logging, the
store client and the pipeline. Built on first use, so importing the app stays cheap."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from starlette.applications import Starlette

from aegis import log, settings, tracing
from aegis.approvals import bot, web
from aegis.approvals.botauth import BotAuth, EntraBearer
from aegis.approvals.signin import ASSERTION_SCOPE, SignIn
from aegis.approvals.sweep import SweepCounts, Sweeper
from aegis.assets import cached_book
from aegis.correlate import coverage, detections
from aegis.correlate.engine import Correlator
from aegis.errors import ConfigurationError
from aegis.events import Event, Severity
from aegis.pipeline import Pipeline
from aegis.records import Incident, Pending
from aegis.registry import UnknownName
from aegis.respond import connect, playbooks
from aegis.respond.connect import Connections
from aegis.respond.execute import Executor, RunCounts
from aegis.respond.record import Responder
from aegis.store import Store, open_store

if TYPE_CHECKING:
    from aegis.inventory.refresh import Refreshed

logger = structlog.get_logger("aegis.runtime")


def build_pipeline(
    cfg: settings.Settings, store: Store, *, respond: bool = False, folder: Path | None = None,
    plan: playbooks.Response | None = None,
) -> Pipeline:  # fmt: skip
    """The correlating pipeline on `store`, with the detections in `detections/` (validated here);
    with `respond`, the response plan (`plan`, or the one in `folder`, or the shipped one) is
    recorded for the incidents each batch creates or changes. Nothing is called from the ingest
    path: it only records, and the response timer (`executor_run`) makes the calls, so a slow or
    throttled service never holds back an Event Hubs partition."""
    loaded = detections.load().detections
    book = cached_book(store.assets, weights=cfg.criticality_weights)  # the inventory, read every few minutes
    # on Table Storage expiry is a scan of the bucket heads: the response timer runs it (`executor_run`)
    correlator = Correlator(loaded, store, lateness=cfg.lateness, expire_in_batch=cfg.store != "table", assets=book)
    hook = None
    if respond:
        record = Responder(plan or load_response(cfg, folder, detection_ids=[d.id for d in loaded]), store,
                           assets=book)  # fmt: skip

        def hook(incidents: list[Incident], events: list[Event]) -> None:
            pending = [Pending.of(i) for i in incidents]  # the outbox entries the batch's commit wrote
            # planned now; cleared by the response timer's drain, off the ingest path
            record.respond_pending(pending, seen=[e for event in events for e in event.entities], clear=False)

    return Pipeline(store, limits=cfg.limits, correlator=correlator, respond=hook, hubs=cfg.hubs,
                    keep_events=cfg.keep_events == "all", tenancy=cfg.tenancy, assets=book)  # fmt: skip


# --- what a worker builds once: settings, logging, the store and pipeline, the plan, the connections ---


@lru_cache(maxsize=1)
def response() -> playbooks.Response:
    """The response plan and playbooks, loaded and validated (against the detections) once."""
    return load_response(settings.get(), detection_ids=[d.id for d in detections.load().detections])


@lru_cache(maxsize=1)
def connections() -> Connections:
    """One credential (its token cache shared by every call) and the service endpoints, for the
    response, the enrichers, the deliverers, the corroboration sources and Teams."""
    return connect.from_settings(settings.get())


def reset() -> None:
    """Forget what this worker built (the settings changed: tests, or a host reloading them)."""
    for cached in (settings.get, pipeline, response, connections):
        cached.cache_clear()


@lru_cache(maxsize=1)
def pipeline() -> Pipeline:
    cfg = settings.get()
    traced = tracing.configure(cfg.trace, managed_identity_client_id=cfg.managed_identity_client_id)
    log.configure_from_settings(cfg, attributes=traced == "azure")
    return build_pipeline(cfg, open_store(cfg), respond=True, plan=response())


def console_app() -> Starlette:
    """The approvals API and console (one ASGI app) behind App Service Authentication. In execute
    mode an approved step is run by the response timer, within a minute."""
    store, plan, cfg = pipeline().store, response(), settings.get()
    who: Callable[[Any], Any] = web.easy_auth_identity
    signin = None
    if cfg.console_auth == "bearer":
        if not cfg.tenant_id or not cfg.auth_client_id:
            raise ConfigurationError("AEGIS_CONSOLE_AUTH=bearer needs AEGIS_TENANT_ID and AEGIS_AUTH_CLIENT_ID")
        who = web.bearer_identity(EntraBearer(cfg.tenant_id, cfg.auth_client_id, bot.json_getter(connections())).verify)
        if cfg.console_url.startswith("https://"):  # browsers sign in there (its /console/signin/callback)
            credential = connections().credential
            signin = SignIn(cfg.tenant_id, cfg.auth_client_id, f"{cfg.console_url.rstrip('/')}/console",
                            assertion=lambda: credential.get_token(ASSERTION_SCOPE).token)  # fmt: skip
    console = web.Console.over(store, plan, who, zone=ZoneInfo(cfg.display_timezone or "UTC"),
                               detections=detections.load().detections,
                               atlas=coverage.atlas_file(cfg.atlas_data) if cfg.atlas_data else None)  # fmt: skip
    endpoint = None
    if cfg.bot_app_id:  # the Teams bot's /api/messages: decisions on the approval cards
        conn = connections()
        decisions = bot.Decisions(
            Responder(plan, store),
            plan.plan,
            bot.checked_groups(conn),
            incident=lambda ident: next((i for i in store.incidents() if i.id == ident), None),
            console_url=cfg.console_url,
        )
        auth = BotAuth(cfg.bot_app_id, bot.json_getter(conn), cfg.bot_openid_metadata)
        endpoint = web.BotEndpoint(auth, decisions)
    return web.create_app(console, bot=endpoint, signin=signin)


def sweep() -> SweepCounts:
    """The approvals timer: expire, escalate, post and update Teams cards."""
    store = pipeline().store
    return Sweeper.from_settings(response(), store, store.incidents, settings.get(), connections).run()


def enrich_run() -> tuple[int, int]:
    """The enrichment timer: enrich the incidents that are new or changed since last time, then
    deliver them (Sentinel, the SOC's Teams channel) as configured. (enriched, delivered)."""
    return enrich_and_deliver(settings.get(), pipeline().store, response(), connections)


def enrich_and_deliver(
    cfg: settings.Settings, store: Store, plan: playbooks.Response, made: Callable[[], Connections] | None = None
) -> tuple[int, int]:
    """Enrich the incidents that need it, then deliver them; `made` gives the connections (built
    only if an enricher or deliverer needs them; the settings' when not given)."""
    from aegis.deliver.run import Deliveries  # noqa: PLC0415  (the enrichers' SDKs load only here)
    from aegis.enrich.run import Enrichers  # noqa: PLC0415

    made = made or connect.lazy(cfg)  # one for the enrichers and the deliverers
    enrichers = Enrichers.from_settings(cfg, lambda start, end: list(store.events(since=start, until=end)), made)
    incidents = store.incidents()  # read once: enrichment does not change them
    enriched = enrichers.run(incidents, store)
    delivered = Deliveries.from_settings(cfg, plan.plan.soc_channel, made).run(incidents, store,
                                                                               findings=store.findings())  # fmt: skip
    return enriched, delivered


def executor_run() -> RunCounts | None:
    """The response timer: expire idle correlation state where the ingest path does not (Table
    Storage), plan what the outbox still holds (a crash between correlation and response), settle
    the steps waiting for corroboration, then one executor pass over every open step; None when
    nothing can run (the plan is a dry run)."""
    store, plan, cfg = pipeline().store, response(), settings.get()
    correlator = pipeline().correlator
    if correlator is not None and not correlator.expire_in_batch:
        correlator.expire()  # idle buckets, by the event time this worker has seen
    Responder(plan, store).drain()
    corroborate(cfg, plan, store, store.incidents, connections)
    key_callers(cfg, store, connections)
    if plan.plan.mode != "execute":
        return None
    return Executor(plan, store, connections()).run()


def load_response(cfg: settings.Settings, folder: Path | None = None, **kw: Any) -> playbooks.Response:
    """The response plan and playbooks, with the corroboration sources the settings configure."""
    return replace(playbooks.load(folder, **kw), corroborators=tuple(cfg.corroborators))


def corroborate(
    cfg: settings.Settings, plan: playbooks.Response, store: Store, incidents: Callable[[], list[Incident]],
    made: Callable[[], Connections] | None = None,
) -> int:  # fmt: skip
    """Ask the configured sources about the steps waiting for corroboration; how many were settled.
    `made` gives the connections (the settings' when not given)."""
    if not cfg.corroborators:
        return 0
    from aegis.enrich.base import Context  # noqa: PLC0415  (the sources' SDKs load only here)
    from aegis.enrich.corroborate import Corroborator  # noqa: PLC0415

    ctx = Context(connections=(made or connect.lazy(cfg))(), workspace=cfg.log_analytics_workspace)
    try:
        checker = Corroborator(cfg.corroborators, ctx)
    except UnknownName as exc:
        raise ConfigurationError(f"AEGIS_CORROBORATORS: {exc}") from None
    return checker.run(Responder(plan, store), incidents)


def inventory_run() -> Refreshed:
    """The inventory timer: read the AI estate, record what changed, reconcile the findings."""
    return refresh_inventory(settings.get(), pipeline().store, connections)


def refresh_inventory(cfg: settings.Settings, store: Store, made: Callable[[], Connections] | None = None) -> Refreshed:
    """One inventory refresh from Azure (Resource Graph and the services it names) or, with
    `AEGIS_INVENTORY_FILE`, from a file of the same rows; `made` gives the connections."""
    from aegis.inventory import refresh  # noqa: PLC0415  (the inventory's SDKs load only here)

    options = refresh.Options(tags=cfg.tag_names, hubs=(cfg.diagnostics_hub,),
                              namespaces=tuple(cfg.event_hub_namespaces),
                              severity=Severity(cfg.finding_severity))  # fmt: skip
    if cfg.inventory_file is not None:
        return refresh.refresh(store, refresh.rows_from_file(cfg.inventory_file), options=options)
    from aegis.inventory.azure import Estate  # noqa: PLC0415

    got = Estate((made or connect.lazy(cfg))(), cfg.inventory_subscriptions).collect()
    return refresh.refresh(store, got.rows, options=options, errors=got.errors)


def key_callers(cfg: settings.Settings, store: Store, made: Callable[[], Connections] | None = None) -> int:
    """Ask Log Analytics who used the keys of each account a waiting step would cut them off from
    (once a step); how many steps' lists changed. Nothing without `AEGIS_LOG_ANALYTICS_WORKSPACE`."""
    if not cfg.log_analytics_workspace:
        return 0
    from aegis.enrich.base import Context  # noqa: PLC0415  (the query SDK loads only here)
    from aegis.enrich.keycallers import KeyCallers  # noqa: PLC0415

    ctx = Context(connections=(made or connect.lazy(cfg))(), workspace=cfg.log_analytics_workspace)
    return KeyCallers(ctx).run(store)


def retention_run() -> int:
    """The retention timer: purge events, dead letters and raw bodies older than `AEGIS_RETENTION`."""
    from datetime import UTC, datetime  # noqa: PLC0415

    cfg = settings.get()
    return pipeline().store.purge(datetime.now(UTC) - cfg.retention)
