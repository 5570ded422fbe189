"""Traces and logs: one trace per batch with its partition and sequence range, spans for
normalization, correlation, the store's commit and the response; enrichers and action calls in the
trace that runs them, the SDK's own HTTP spans under them; log fields as record attributes (what
Application Insights shows as customDimensions); `AEGIS_TRACE=console` prints the spans."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aegis import log, tracing
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.enrich.base import enrich
from aegis.pipeline import Message, Pipeline
from aegis.store import SqliteStore
from tests.conftest import SAMPLES

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans():
    """An in-memory exporter behind the process's tracer provider (set once; OpenTelemetry allows one)."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    else:
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))
    tracing._sdk_tracing()
    yield EXPORTER
    EXPORTER.shutdown()  # the provider stays (one per process): the later tests' spans are not kept


def by_name(exporter: InMemorySpanExporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for s in exporter.get_finished_spans():
        found.setdefault(s.name, []).append(s)
    return found


def test_a_batch_is_one_trace_with_its_position_and_a_span_per_stage(spans):
    spans.clear()
    store = SqliteStore(":memory:")
    planned: list[list[str]] = []
    p = Pipeline(store, correlator=Correlator(detections.load().detections, store, lateness=timedelta(days=3650)),
                 respond=lambda incidents, _: planned.append([i.id for i in incidents]),
                 clock=lambda: datetime(2026, 11, 20, 12, tzinfo=UTC))  # fmt: skip
    bodies = [
        (SAMPLES / "defender" / n).read_bytes() for n in ("01-jailbreak-arm.json", "02-credential-theft-export.json")
    ]
    p.process([Message(b, hub="defender-alerts", partition="3", sequence_number=41 + n) for n, b in enumerate(bodies)])
    named = by_name(spans)
    (batch,) = named["aegis.batch"]
    assert batch.attributes["messaging.batch.message_count"] == 2
    assert (batch.attributes["aegis.hub"], batch.attributes["aegis.partition"]) == ("defender-alerts", "3")
    assert (batch.attributes["aegis.sequence.first"], batch.attributes["aegis.sequence.last"]) == (41, 42)
    for name in ("aegis.normalize", "aegis.correlate", "aegis.respond", "aegis.store.commit"):
        assert named[name][0].context.trace_id == batch.context.trace_id, name  # one trace
    (correlate,) = named["aegis.correlate"]
    assert correlate.parent.span_id == batch.context.span_id
    assert named["aegis.store.commit"][0].parent.span_id == correlate.context.span_id
    assert list(correlate.attributes["aegis.incidents"]) == planned[0]  # the incidents, by id
    assert named["aegis.normalize"][0].attributes["aegis.events"] == 2


def test_the_batch_continues_the_trace_the_functions_host_started_for_the_invocation(spans, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from aegis import runtime
    from handlers import ingest
    from tests.test_handlers import hub_events

    monkeypatch.setenv("AEGIS_DB", str(tmp_path / "i.db"))
    runtime.reset()
    spans.clear()
    host = "4bf92f3577b34da6a3ce929d0e0e4736"
    invocation = SimpleNamespace(trace_context=SimpleNamespace(Traceparent=f"00-{host}-00f067aa0ba902b7-01",
                                                               Tracestate=""))  # fmt: skip
    try:
        ingest.defender_alerts(hub_events([(SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes()]), invocation)
    finally:
        runtime.pipeline().store.close()
        runtime.reset()
    (batch,) = by_name(spans)["aegis.batch"]
    assert f"{batch.context.trace_id:032x}" == host
    assert f"{batch.parent.span_id:016x}" == "00f067aa0ba902b7"


def test_enrichers_run_in_threads_and_their_spans_join_the_callers_trace(spans):
    spans.clear()
    from aegis.enrich.base import Context
    from tests.test_approvals import incident

    with trace.get_tracer("test").start_as_current_span("enrichment run") as parent:
        enrich(incident(), ["ok"], Context(), registry={"ok": lambda i, c: {"seen": i.id}})
    (span,) = by_name(spans)["aegis.enrich"]
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes["aegis.enricher"] == "ok"


def test_an_action_call_is_a_span_with_the_sdks_own_http_span_under_it(spans, tmp_path):
    spans.clear()
    from tests.test_execute import Clock, executor, incident, plan_and_approve, response
    from tests.wire import Reply, WireServer

    steps = """  - name: tell
    action: notify
    params: {team: 0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c, channel: "19:abc@thread.tacv2", text: "{{ incident.title }}"}
"""
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps)
    plan_and_approve(resp, store, clock, incident("/subscriptions/s/resourceGroups/rg/providers/"
                                                  "Microsoft.CognitiveServices/accounts/oai"))  # fmt: skip
    with WireServer(tmp_path) as server:
        server.expect("POST", "/teams/v3/conversations", Reply(201, {"id": "19:abc;messageid=1", "activityId": "1"}))
        assert executor(resp, store, server, clock).run().succeeded == 1
    named = by_name(spans)
    (action,) = named["aegis.action"]
    assert (action.attributes["aegis.action"], action.attributes["aegis.step"]) == ("notify", store.steps()[0].key)
    http = [
        s for s in spans.get_finished_spans() if s.parent is not None and s.parent.span_id == action.context.span_id
    ]
    assert http  # azure-core's DistributedTracingPolicy: the Bot Connector call itself
    assert any("POST" in s.name or s.attributes.get("http.request.method") == "POST" for s in http)


def test_log_fields_are_record_attributes_and_not_rendered_into_the_message():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("aegis").addHandler(handler)
    try:
        log.configure(json=True, attributes=True)
        import structlog

        structlog.get_logger("aegis.test").info("batch_done", events=3, partition="2", counts={"a": 1},
                                                 token="s3cr3t")  # fmt: skip
    finally:
        logging.getLogger("aegis").removeHandler(handler)
        log.configure(json=False)
    (record,) = records
    assert record.getMessage() == "batch_done"
    assert (record.events, record.partition, record.counts) == (3, "2", '{"a":1}')  # type: ignore[attr-defined]
    assert record.token == log.REDACTED  # type: ignore[attr-defined]  # redaction first, as ever


def test_aegis_trace_console_prints_the_spans_of_a_replay(tmp_path):
    from tests.test_cli import aegis

    done = aegis("replay", str(SAMPLES / "defender" / "01-jailbreak-arm.json"),
                 env={"AEGIS_TRACE": "console", "AEGIS_DB": str(tmp_path / "t.db")})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"name": "aegis.batch"' in done.stderr
    assert '"name": "aegis.correlate"' in done.stderr


def test_tracing_off_installs_nothing_and_auto_is_off_outside_azure(monkeypatch):
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)
    monkeypatch.delenv("WEBSITE_SITE_NAME", raising=False)
    monkeypatch.setattr(tracing, "_configured", False)
    assert tracing.configure("auto") == "off"
    assert tracing.configure("off") == "off"
    assert tracing._configured is False  # nothing was installed: a later call may still install
