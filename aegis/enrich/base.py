"""Enrichment: context on each incident from the services an analyst would otherwise open one by one.

Enrichers are registered by name (`@enricher("name")`) and each answers a few questions about an
incident's entities. `enrich` runs the chosen ones side by side within a time budget: an enricher
that fails or is still running when the budget is spent is recorded with its error (or `timeout`)
and never holds the incident back or drops it. Results are kept per incident and enricher, with
the incident's version they were computed for, so a grown incident is enriched again and an
unchanged one is not.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from aegis import tracing
from aegis.records import Enrichment, Incident
from aegis.registry import Registry
from aegis.respond.connect import Connections
from aegis.respond.execute import redact

log = structlog.get_logger("aegis.enrich")
MAX_RESULT = 32_768  # bytes of JSON kept per enricher: enough to read, bounded however chatty a service is


@dataclass(frozen=True)
class Context:
    """What enrichers work with: the connections (cloud enrichers), the Log Analytics workspace,
    the store's own events (the local enricher), and the clock."""

    connections: Connections | None = None
    workspace: str | None = None  # Log Analytics workspace id (a GUID)
    events: Callable[[datetime, datetime], list[Any]] | None = None  # the store's events in a window
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


Run = Callable[[Incident, Any], dict[str, Any]]  # an enricher (given a Context) or a deliverer


class Skip(Exception):
    """The enricher does not apply (no entity it looks at, or it is not configured)."""


ENRICHERS: Registry[Run] = Registry("enricher")


enricher = ENRICHERS.register  # @enricher("name") over a Run; its docstring's first line says what it answers


def version(incident: Incident) -> str:
    """What makes an incident worth enriching again: more evidence, later evidence, a new severity."""
    return f"{incident.event_count}:{incident.last_seen.isoformat()}:{incident.severity.value}"


def enrich(
    incident: Incident,
    names: Sequence[str],
    ctx: Any,
    *,
    budget: float = 20.0,
    registry: Mapping[str, Run] | None = None,
) -> list[Enrichment]:
    """Run the enrichers `names` (or the deliverers of `registry`) on `incident` side by side; each
    result within `budget` seconds."""
    registry = ENRICHERS if registry is None else registry
    started = time.monotonic()
    at = ctx.now
    v = version(incident)
    pool = ThreadPoolExecutor(max_workers=max(len(names), 1), thread_name_prefix="enrich")
    # each in a copy of this context: its span joins the caller's trace (OpenTelemetry keeps it in contextvars)
    futures = {name: pool.submit(contextvars.copy_context().run, _timed, registry[name], incident, ctx, name)
               for name in names}  # fmt: skip
    wait(futures.values(), timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)  # a late enricher finishes on its own; nobody waits for it
    out = []
    for name, future in futures.items():
        if not future.done():
            took = int((time.monotonic() - started) * 1000)
            out.append(Enrichment(name, "timeout", {}, f"no answer within {budget:g} s", at, took, v))
            continue
        try:
            result, took = future.result()
            out.append(Enrichment(name, "ok", _bounded(result), None, at, took, v))
        except Skip as exc:
            out.append(Enrichment(name, "skipped", {}, str(exc), at, 0, v))
        except Exception as exc:
            log.warning("enrichment_failed", name=name, incident=incident.id, error=type(exc).__name__)
            out.append(Enrichment(name, "error", {}, error_text(exc), at, 0, v))
    return out


def _timed(fn: Run, incident: Incident, ctx: Any, name: str) -> tuple[dict[str, Any], int]:
    t = time.monotonic()
    with tracing.span("aegis.enrich", incident=incident.id, enricher=name):
        result = fn(incident, ctx)
    return result, int((time.monotonic() - t) * 1000)


def _bounded(result: dict[str, Any]) -> dict[str, Any]:
    doc = orjson.dumps(result, default=str)
    if len(doc) <= MAX_RESULT:
        return orjson.loads(doc)  # type: ignore[no-any-return]
    return {"truncated": True, "size": len(doc), "keys": sorted(result)[:50]}


def error_text(exc: BaseException) -> str:
    """One redacted line saying what went wrong (kept with the results: no secrets)."""
    return redact(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")


def window(incident: Incident, ctx: Context, *, before: timedelta = timedelta(hours=24)) -> tuple[datetime, datetime]:
    """The time an enricher looks at: the 24 h before the incident's newest evidence, to an hour after
    (never past now)."""
    end = min(incident.last_seen + timedelta(hours=1), max(ctx.now, incident.last_seen))
    return incident.last_seen - before, end
