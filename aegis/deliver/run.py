"""Delivery of incidents to the tools the SOC already uses, idempotent.

- `sentinel`: the Microsoft Sentinel incident of each Aegis incident (one id per incident, derived
  from it), created or updated with title, severity, a description (what, on which AI resource, by
  whom, ATLAS / OWASP with names, what enrichment found, the console link) and ATLAS / OWASP labels.
  Sentinel derives an incident's entities, tactics and techniques from its alerts (the API has them
  read-only), so they are written into the description and labels.
- `teams`: a notice in the plan's `soc_channel`, posted once per incident; when the incident grows
  the update is a reply in the notice's thread, never a second notice.

A delivery is recorded per incident and deliverer with the incident version it carried, so a
redelivered or unchanged incident is not delivered again and a grown one updates what exists.
Incidents below `AEGIS_DELIVER_MIN_SEVERITY` are not delivered.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.item_body import ItemBody

from aegis.correlate import mapping
from aegis.correlate.incidents import SEVERITY_ORDER, Incident, views
from aegis.enrich.base import Run, Skip, enrich, version
from aegis.enrich.record import Enrichment, EnrichmentStore
from aegis.errors import ConfigurationError
from aegis.events import AiResource, Ip, ServicePrincipal, Severity, User
from aegis.respond import connect, graph, tickets
from aegis.respond.connect import Connections
from aegis.respond.playbooks import Channel
from aegis.settings import Settings

DELIVERERS: dict[str, Run] = {}


@dataclass(frozen=True)
class DeliveryContext:
    connections: Connections | None
    console_url: str
    soc_channel: Channel | None
    enrichment: Sequence[Enrichment] = ()
    previous: dict[str, Enrichment] = field(default_factory=dict)  # the last delivery, by deliverer
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def link(self, incident: Incident) -> str:
        return f"{self.console_url.rstrip('/')}/console/incidents/{incident.id}"


def deliverer(name: str) -> Callable[[Run], Run]:
    def register(fn: Run) -> Run:
        DELIVERERS[name] = fn
        return fn

    return register


def summary(incident: Incident, ctx: DeliveryContext) -> list[str]:
    """The incident as an analyst reads it first, one fact a line (plain text: escape it where it goes)."""
    atlas, owasp = mapping.atlas_names(), mapping.owasp_names()

    def keys(cls: type) -> str:
        return ", ".join(sorted({e.key for e in incident.entities if isinstance(e, cls)})[:10]) or "-"

    lines = [
        f"{incident.severity.value.upper()}: {incident.title}",
        f"Detection {incident.detection}; {incident.event_count} event(s) from {incident.first_seen:%Y-%m-%d %H:%M} "
        f"to {incident.last_seen:%Y-%m-%d %H:%M} UTC",
        f"AI resources: {keys(AiResource)}",
        f"Callers: {keys(Ip)}; users: {keys(User)}; applications: {keys(ServicePrincipal)}",
        "MITRE ATLAS: " + ("; ".join(f"{t} {atlas.get(t, '')}".strip() for t in incident.atlas) or "-"),
        "OWASP LLM: " + ("; ".join(f"{t} {owasp.get(t, '')}".strip() for t in incident.owasp_llm) or "-"),
    ]
    if ctx.enrichment:
        lines.append("Enrichment: " + ", ".join(f"{e.name} {e.status}" for e in ctx.enrichment))
    lines.append(f"Console: {ctx.link(incident)}")
    return lines


@deliverer("sentinel")
def sentinel(incident: Incident, ctx: DeliveryContext) -> dict[str, Any]:
    if ctx.connections is None or not ctx.connections.tickets.sentinel_workspace:
        raise Skip("no Sentinel workspace configured (AEGIS_SENTINEL_WORKSPACE)")
    description = "<br>".join(html.escape(line) for line in summary(incident, ctx))  # the portal renders HTML
    labels = [*incident.atlas, *incident.owasp_llm]
    return tickets.upsert_sentinel(
        ctx.connections, incident.id, title=incident.title, severity=incident.severity.value,
        description=description, labels=labels,
    )  # fmt: skip


@deliverer("teams")
def teams(incident: Incident, ctx: DeliveryContext) -> dict[str, Any]:
    if ctx.connections is None or ctx.soc_channel is None:
        raise Skip("no SOC channel in the response plan (soc_channel) or no Graph connection")
    conn, where = ctx.connections, ctx.soc_channel
    before = ctx.previous.get("teams")
    thread = before.result.get("message") if before else None  # kept through a failed update too
    lines = summary(incident, ctx)
    if thread:
        lines = ["Updated:", *lines]
    content = "<br>".join(html.escape(line) for line in lines)

    async def go() -> str | None:
        async with graph.http_client(ca_file=conn.ca_file, timeout=conn.timeout) as http:
            client = graph.client(conn.credential, base_url=conn.graph, http_client_=http, retries=conn.retries)
            messages = client.teams.by_team_id(where.team).channels.by_channel_id(where.channel).messages
            message = ChatMessage(body=ItemBody(content_type=BodyType.Html, content=content))
            if thread:
                await messages.by_chat_message_id(str(thread)).replies.post(message)
                return str(thread)
            sent = await messages.post(message)
            return sent.id if sent else None

    message = asyncio.run(go())
    return {"message": message, "replied": bool(thread)}


@dataclass(frozen=True)
class Deliveries:
    names: Sequence[str]
    connections: Connections | None
    console_url: str
    soc_channel: Channel | None
    min_severity: str = "medium"
    budget: float = 30.0

    @classmethod
    def from_settings(cls, cfg: Settings, soc_channel: Channel | None) -> Deliveries:
        names = list(cfg.deliverers or [])
        unknown = [n for n in names if n not in DELIVERERS]
        if unknown:
            raise ConfigurationError(f"AEGIS_DELIVERERS: no deliverer {', '.join(unknown)} "
                                     f"(there are {', '.join(sorted(DELIVERERS))})")  # fmt: skip
        connections = connect.from_settings(cfg) if names else None
        return cls(names, connections, cfg.console_url, soc_channel, cfg.deliver_min_severity)

    def run(self, incidents: Iterable[Incident], store: EnrichmentStore, *, limit: int = 50) -> int:
        """Deliver (or update) up to `limit` incidents whose delivery is missing or older than their evidence."""
        floor = SEVERITY_ORDER.index(Severity(self.min_severity))
        done = 0
        for view in views(incidents):
            i = view.incident
            if not self.names or view.status == "superseded" or SEVERITY_ORDER.index(i.severity) < floor:
                continue
            previous = {d.name: d for d in store.enrichment(i.id, kind="deliver")}
            due = [n for n in self.names if previous.get(n) is None or previous[n].version != version(i)
                   or previous[n].status not in {"ok", "skipped"}]  # fmt: skip
            if not due or done >= limit:
                continue
            ctx = DeliveryContext(self.connections, self.console_url, self.soc_channel,
                                  store.enrichment(i.id), previous)  # fmt: skip
            results = enrich(i, due, ctx, budget=self.budget, registry=DELIVERERS)
            store.save_enrichment(i.id, [_keep_thread(r, previous.get(r.name)) for r in results], kind="deliver")
            done += 1
        return done


def _keep_thread(result: Enrichment, before: Enrichment | None) -> Enrichment:
    """A failed update keeps what the last good delivery made (the Teams thread), to update it next time."""
    if result.status == "ok" or before is None or before.status != "ok":
        return result
    return replace(result, result={**before.result, "last_error": result.error})
