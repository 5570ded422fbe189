"""Event Hubs ingest: one trigger per hub, batches of messages into the pipeline.

- `cardinality="many"`, binary bodies: the pipeline sees the exact bytes that were sent.
- Hub names and consumer group come from app settings (`%AEGIS_DEFENDER_HUB%`, ...); the
  connection `AEGIS_EVENTHUB` is identity-based (`AEGIS_EVENTHUB__fullyQualifiedNamespace`,
  `__credential=managedidentity`, `__clientId`).
- A bad message is dead-lettered inside the pipeline and never fails the batch. A transient store
  fault (`StoreUnavailable`) propagates, so the exponential-backoff retry policy replays the batch;
  redelivery is harmless because events and dead letters have deterministic ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import structlog

from aegis import runtime, settings, tracing
from aegis.pipeline import Message

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.ingest")

CONNECTION = "AEGIS_EVENTHUB"
# A failed batch (a transient store fault) is retried with backoff before the host moves on.
retry = bp.retry(
    strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:05", maximum_interval="00:05:00"
)


def to_messages(hub: str, events: list[func.EventHubEvent]) -> list[Message]:
    partition = _partition(events)
    return [
        Message(
            body=e.get_body(),
            hub=hub,
            partition=partition,
            sequence_number=e.sequence_number,
            offset=str(e.offset) if e.offset is not None else None,
            enqueued_time=_utc(e.enqueued_time),
        )
        for e in events
    ]


def ingest(hub: str, events: list[func.EventHubEvent], context: func.Context | None = None) -> None:
    messages = to_messages(hub, events)
    seqs = [m.sequence_number for m in messages if m.sequence_number is not None]
    invocation = getattr(context, "trace_context", None)  # the host's trace of this invocation
    with (
        tracing.continued(getattr(invocation, "Traceparent", None), getattr(invocation, "Tracestate", None)),
        structlog.contextvars.bound_contextvars(
            hub=hub,
            partition=messages[0].partition if messages else None,
            sequence_range=f"{min(seqs)}-{max(seqs)}" if seqs else None,
        ),
    ):
        counts = runtime.pipeline().process(messages)
        log.info(
            "batch_processed",
            messages=counts.messages,
            events=counts.events,
            evidence=counts.evidence,
            ignored=counts.ignored,
            ignored_items=counts.ignored_items or None,
            dead_lettered=counts.dead_lettered,
            incident_updates=counts.incident_updates,
            too_late=counts.late,
            detection_errors=counts.detection_errors or None,
        )


@retry
@bp.event_hub_message_trigger(
    arg_name="events",
    connection=CONNECTION,
    event_hub_name="%AEGIS_DEFENDER_HUB%",
    consumer_group="%AEGIS_CONSUMER_GROUP%",
    cardinality="many",
    data_type="binary",
)
def defender_alerts(events: list[func.EventHubEvent], context: func.Context) -> None:
    """Defender for Cloud continuous export: alerts (and the assessments that share the hub)."""
    ingest(settings.get().defender_hub, events, context)


@retry
@bp.event_hub_message_trigger(
    arg_name="events",
    connection=CONNECTION,
    event_hub_name="%AEGIS_DIAGNOSTICS_HUB%",
    consumer_group="%AEGIS_CONSUMER_GROUP%",
    cardinality="many",
    data_type="binary",
)
def ai_diagnostics(events: list[func.EventHubEvent], context: func.Context) -> None:
    """Diagnostic settings of AI accounts, the activity log and Entra sign-in logs."""
    ingest(settings.get().diagnostics_hub, events, context)


def _regional(region: str) -> None:
    """The ingest trigger of another region's diagnostics namespace (Azure Monitor sends an AI
    account's logs only to a namespace of its own region): the same hub name and consumer group,
    on the connection AEGIS_EVENTHUB_<REGION>."""

    def handler(events: list[func.EventHubEvent], context: func.Context) -> None:
        ingest(settings.get().diagnostics_hub, events, context)

    handler.__name__ = handler.__qualname__ = f"ai_diagnostics_{region}"
    handler.__doc__ = f"Diagnostic settings of the AI accounts in {region}."
    retry(bp.event_hub_message_trigger(
        arg_name="events", connection=f"{CONNECTION}_{region.upper()}", event_hub_name="%AEGIS_DIAGNOSTICS_HUB%",
        consumer_group="%AEGIS_CONSUMER_GROUP%", cardinality="many", data_type="binary",
    )(handler))  # fmt: skip


for _region in settings.get().diagnostics_regions:  # AEGIS_DIAGNOSTICS_REGIONS (infra sets it)
    _regional(_region)


def _partition(events: list[func.EventHubEvent]) -> str | None:
    """The partition id, from the batch's shared trigger metadata (`PartitionContext`)."""
    if not events:
        return None
    meta: Any = events[0].metadata or {}
    context = meta.get("PartitionContext")
    if isinstance(context, dict):
        pid = context.get("PartitionId")
        return str(pid) if pid is not None else None
    return None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
