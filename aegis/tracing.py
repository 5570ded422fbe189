"""Traces: one per batch, from the trigger to every store write and action call (OpenTelemetry).

The core only uses the OpenTelemetry API (`tracer`, `span`): without a configured provider every
span is a no-op that costs a function call. `configure` picks the exporter, once per process:

- `AEGIS_TRACE=azure` (the default in Azure, with `APPLICATIONINSIGHTS_CONNECTION_STRING`): the
  Azure Monitor distro (`azure-monitor-opentelemetry`), authenticated with the managed identity
  (the workspace has local auth off); the Azure SDKs' own spans (ARM, Graph's HTTP, Key Vault, the
  store) are on, and the `aegis` logs go to Application Insights with their fields as
  `customDimensions`;
- `AEGIS_TRACE=console`: every span printed as JSON on stderr as it ends (local debugging);
- `AEGIS_TRACE=off`: none.

Span names and attributes (what to search for in Application Insights):
  aegis.batch       messaging.batch.message_count, aegis.hub, aegis.partition, aegis.sequence.first/last
  aegis.normalize   aegis.events, aegis.dead_letters
  aegis.correlate   aegis.incidents (ids, at most 50), aegis.matches
  aegis.store.commit  aegis.buckets, aegis.conflicts
  aegis.respond     aegis.incidents
  aegis.enrich      aegis.incident, aegis.enricher
  aegis.action      aegis.step, aegis.action, aegis.incident, aegis.target, aegis.outcome
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

tracer = trace.get_tracer("aegis")
MAX_IDS = 50  # ids in one attribute: enough to find the incident, bounded however large the batch

_configured = False


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span of the current trace (a no-op without a provider), with its attributes."""
    with tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


@contextmanager
def continued(traceparent: str | None, tracestate: str | None = None) -> Iterator[None]:
    """Spans within continue the trace the Functions host started for the invocation (its W3C
    `traceparent`), so that the trigger, the batch and every call it makes are one trace."""
    if not traceparent:
        yield
        return
    from opentelemetry import context  # noqa: PLC0415
    from opentelemetry.propagate import extract  # noqa: PLC0415

    token = context.attach(extract({"traceparent": traceparent, "tracestate": tracestate or ""}))
    try:
        yield
    finally:
        context.detach(token)


def ids(values: Sequence[str]) -> list[str]:
    return list(values[:MAX_IDS])


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"aegis.{k}" if "." not in k else k: v for k, v in attributes.items() if v is not None}


def configure(mode: str, *, managed_identity_client_id: str | None = None) -> str:
    """Install the exporter `mode` names (`auto`: Azure Monitor where a connection string is set in
    Azure, else none); what was installed. Once per process: later calls change nothing."""
    global _configured  # noqa: PLW0603 - one provider per process, as OpenTelemetry has
    if _configured:
        return "kept"
    if mode == "auto":
        in_azure = bool(os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("WEBSITE_SITE_NAME"))
        mode = "azure" if in_azure and os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING") else "off"
    if mode == "console":
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor  # noqa: PLC0415

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        trace.set_tracer_provider(provider)
        _sdk_tracing()
    elif mode == "azure":
        from azure.identity import ManagedIdentityCredential  # noqa: PLC0415
        from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415

        configure_azure_monitor(
            credential=ManagedIdentityCredential(client_id=managed_identity_client_id),
            logger_name="aegis",  # our logs, with their fields as customDimensions (`log.py`)
            instrumentation_options={
                "azure_sdk": {"enabled": True},
                "django": {"enabled": False},
                "fastapi": {"enabled": False},
                "flask": {"enabled": False},
                "psycopg2": {"enabled": False},
            },
        )
    _configured = mode != "off"
    return mode


def _sdk_tracing() -> None:
    """The Azure SDKs' own spans (every client built on azure-core) in our traces."""
    from azure.core.settings import settings  # noqa: PLC0415

    settings.tracing_implementation = "opentelemetry"
