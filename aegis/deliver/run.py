"""Delivery of incidents to the tools the SOC already uses, idempotent.

- `sentinel`: the Microsoft Sentinel incident of each Aegis incident (one id per incident, derived
  from it), created or updated with title, severity, a description (what, on which AI resource, by
  whom, ATLAS / OWASP with names, what enrichment found, the console link) and ATLAS / OWASP labels.
  Sentinel derives an incident's entities, tactics and techniques from its alerts (the API has them
  read-only), so they are written into the description and labels.
- `teams`: a notice in the plan's `soc_channel`, posted once per incident; when the incident grows
  the update is a reply in the notice's thread, never a second notice.
- `defender_xdr`: a comment on the Defender XDR incident that holds the incident's Defender for Cloud
  alerts (Graph security API), once per incident version.

A delivery is recorded per incident and deliverer with the incident version it carried, so a
redelivered or unchanged incident is not delivered again and a grown one updates what exists.
Incidents below `AEGIS_DELIVER_MIN_SEVERITY` are not delivered. The inventory's open findings (blind
spots, `aegis.assets`) are delivered the same way, as incidents of detection `inventory.<kind>` at
their own severity (`AEGIS_FINDING_SEVERITY`, whatever the minimum), once per change.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.security.alert_comment import AlertComment
from msgraph.generated.security.alerts_v2.alerts_v2_request_builder import Alerts_v2RequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from aegis.assets import Finding
from aegis.correlate import mapping
from aegis.enrich import kql
from aegis.enrich.base import Run, Skip, enrich, version
from aegis.errors import ConfigurationError
from aegis.events import AiResource, DefenderAlert, Host, Ip, ServicePrincipal, Severity, User
from aegis.records import SEVERITY_ORDER, Enrichment, Incident, View, views
from aegis.registry import Registry, UnknownName
from aegis.respond import connect, graph, tickets
from aegis.respond.botconnector import BotConnector, text_activity
from aegis.respond.connect import Connections
from aegis.respond.playbooks import Channel
from aegis.respond.sentinel import TACTICS, workspace
from aegis.settings import Settings
from aegis.store import Store

DELIVERERS: Registry[Run] = Registry("deliverer")


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


deliverer = DELIVERERS.register  # @deliverer("name") over a Run


def summary(incident: Incident, ctx: DeliveryContext) -> list[str]:
    """The incident as an analyst reads it first, one fact a line (plain text: escape it where it goes)."""
    atlas, owasp = mapping.atlas_names(), mapping.owasp_names()

    def keys(cls: type) -> str:
        return ", ".join(sorted({e.key for e in incident.entities if isinstance(e, cls)})[:10]) or "-"

    asset = incident.attributes.get("asset")
    finding = incident.attributes.get("finding")
    if isinstance(finding, dict):
        return [f"{incident.severity.value.upper()}: {incident.title}", *_asset_line(asset),
                *(f"Evidence: {e}" for e in finding.get("evidence", ())), f"Fix: {finding.get('fix', '-')}",
                f"Open since {incident.first_seen:%Y-%m-%d %H:%M} UTC",
                f"Console: {ctx.console_url.rstrip('/')}/console/inventory"]  # fmt: skip
    lines = [
        f"{incident.severity.value.upper()}: {incident.title}",
        *_asset_line(asset),
        f"Detection {incident.detection}; {incident.event_count} event(s) from {incident.first_seen:%Y-%m-%d %H:%M} "
        f"to {incident.last_seen:%Y-%m-%d %H:%M} UTC",
        f"Why: {incident.why or '-'}",
        f"AI resources: {keys(AiResource)}",
        f"Callers: {keys(Ip)}; users: {keys(User)}; applications: {keys(ServicePrincipal)}",
        "MITRE ATLAS: " + ("; ".join(f"{t} {atlas.get(t, '')}".strip() for t in incident.atlas) or "-"),
        "OWASP LLM: " + ("; ".join(f"{t} {owasp.get(t, '')}".strip() for t in incident.owasp_llm) or "-"),
    ]
    if ctx.enrichment:
        lines.append("Enrichment: " + ", ".join(f"{e.name} {e.status}" for e in ctx.enrichment))
    lines.append(f"Console: {ctx.link(incident)}")
    return lines


def _asset_line(asset: object) -> list[str]:
    """The incident's asset as the inventory knows it: whom to call, and how much it matters."""
    if not isinstance(asset, dict):
        return []
    said = [f"owner {asset.get('owner') or 'not tagged'}", f"criticality {asset.get('criticality') or 'not tagged'}"]
    if asset.get("data_classification"):
        said.append(f"data {asset['data_classification']}")
    return [f"Asset: {asset.get('name', '-')}: " + ", ".join(said)]


def finding_incident(f: Finding) -> Incident:
    """An open finding as the incident a deliverer sends (its id, so that each delivery updates one)."""
    return Incident(
        id=f.id, detection=f"inventory.{f.kind}", bucket="inventory", group=f.asset, title=f.title,
        severity=f.severity, first_seen=f.opened, last_seen=f.seen,
        entities=(AiResource(resource_id=f.asset, name=f.asset_name),), atlas=(), owasp_llm=(), event_ids=(),
        event_count=0, timeline=(),
        attributes={"finding": {"kind": f.kind, "evidence": list(f.evidence), "fix": f.fix},
                    "asset": {"id": f.asset, "name": f.asset_name, **({"owner": f.owner} if f.owner else {})}},
    )  # fmt: skip


def _html(lines: Sequence[str]) -> str:
    """Plain lines as HTML: each escaped (incident fields are attacker-controlled), one per line."""
    return "<br>".join(html.escape(line) for line in lines)


@deliverer("sentinel")
def sentinel(incident: Incident, ctx: DeliveryContext) -> dict[str, Any]:
    if ctx.connections is None or not ctx.connections.tickets.sentinel_workspace:
        raise Skip("no Sentinel workspace configured (AEGIS_SENTINEL_WORKSPACE)")
    description = _html(summary(incident, ctx))  # the portal renders HTML
    asset = incident.attributes.get("asset")
    labels = [*incident.atlas, *incident.owasp_llm]
    if isinstance(asset, dict) and asset.get("criticality"):
        labels.append(f"criticality:{asset['criticality']}")
    result = tickets.upsert_sentinel(
        ctx.connections, incident.id, title=incident.title, severity=incident.severity.value,
        description=description, labels=labels,
    )  # fmt: skip
    return {**result, **_evidence_bookmark(incident, ctx, description)}


def _entity_mapping(entity: object) -> dict[str, Any] | None:
    """One of our entities as a Sentinel entity mapping (entity type and identifier fields)."""
    fields: list[tuple[str, str]] = []
    kind = ""
    if isinstance(entity, Ip):
        kind, fields = "IP", [("Address", entity.address or entity.prefix)]
    elif isinstance(entity, User):
        kind = "Account"
        if entity.upn and "@" in entity.upn:
            name, _, suffix = entity.upn.partition("@")
            fields = [("Name", name), ("UPNSuffix", suffix)]
        elif entity.object_id:
            fields = [("AadUserId", entity.object_id)]
    elif isinstance(entity, AiResource):
        kind, fields = "AzureResource", [("ResourceId", entity.resource_id)]
    elif isinstance(entity, Host) and entity.name:
        kind, fields = "Host", [("HostName", entity.name)]
    elif isinstance(entity, ServicePrincipal) and entity.app_id:
        kind, fields = "CloudApplication", [("AppId", entity.app_id)]
    if not fields:
        return None
    return {"entityType": kind, "fieldMappings": [{"identifier": k, "value": v[:256]} for k, v in fields]}


def _attack_techniques(ctx: DeliveryContext) -> list[str]:
    """ATT&CK technique ids (parents) of the incident's Defender alerts, as the defender enricher found them."""
    found = {str(t).split(".")[0] for e in ctx.enrichment if e.name == "defender" and e.status == "ok"
             for alert in e.result.get("alerts", []) for t in alert.get("techniques") or []}  # fmt: skip
    return sorted(t for t in found if re.fullmatch(r"T\d{4}", t))


def _evidence_bookmark(incident: Incident, ctx: DeliveryContext, notes: str) -> dict[str, Any]:
    """The incident's entities and tactics, which Sentinel keeps read-only on incidents, carried by a
    bookmark (where they are writable) related to the incident: PUT bookmarks/{id}, PUT
    incidents/{id}/relations/{name}; both ids derived from the Aegis incident, so a retry updates."""
    assert ctx.connections is not None
    sentinel = workspace(ctx.connections)
    bookmark = tickets.sentinel_id(incident.id, "evidence")
    mappings = [m for e in incident.entities[:50] if (m := _entity_mapping(e)) is not None]
    tactics = [t.replace(" ", "") for t in mapping.atlas_tactics(incident.atlas)]
    props = {
        "displayName": f"Aegis evidence: {incident.title}"[:250],
        "query": f"// Aegis incident {incident.id}: {incident.event_count} event(s) of detection {incident.detection}\n"
                 f"print aegis_incident = {kql.literal(incident.id)}",
        "notes": notes[:5000], "labels": ["aegis", *incident.atlas, *incident.owasp_llm],
        "eventTime": incident.last_seen.isoformat(), "queryStartTime": incident.first_seen.isoformat(),
        "queryEndTime": incident.last_seen.isoformat(), "entityMappings": mappings,
        "tactics": [t for t in tactics if t in TACTICS], "techniques": _attack_techniques(ctx),
    }  # fmt: skip
    saved = sentinel.put(f"bookmarks/{bookmark}", {"properties": props})
    relation = tickets.sentinel_id(incident.id, "evidence-relation")
    sentinel.put(f"incidents/{tickets.sentinel_id(incident.id)}/relations/{relation}",
                 {"properties": {"relatedResourceId": saved.get("id")}})  # fmt: skip
    return {"bookmark": bookmark, "entities": len(mappings), "tactics": props["tactics"]}


@deliverer("teams")
def teams(incident: Incident, ctx: DeliveryContext) -> dict[str, Any]:
    """A notice in the SOC channel through the bot: a thread per incident, a reply when it grows."""
    if ctx.connections is None or ctx.soc_channel is None or ctx.connections.bot is None:
        raise Skip("no SOC channel in the response plan (soc_channel) or no Azure Bot (AEGIS_BOT_APP_ID)")
    bot, where = BotConnector(ctx.connections), ctx.soc_channel
    before = ctx.previous.get("teams")
    kept = str(before.result.get("message") or "") if before else ""  # kept through a failed update too
    thread = kept.rpartition("|")[0]  # "<thread>|<activity>"; a notice posted through Graph before has none
    if thread:
        bot.reply(thread, text_activity(_html(["Updated:", *summary(incident, ctx)])))
        return {"message": kept, "replied": True}
    thread, activity = bot.start_thread(where.channel, text_activity(_html(summary(incident, ctx))))
    return {"message": f"{thread}|{activity}", "replied": False}


@deliverer("defender_xdr")
def defender_xdr(incident: Incident, ctx: DeliveryContext) -> dict[str, Any]:
    """Comment on the Defender XDR incident(s) holding the incident's Defender for Cloud alerts (Graph
    security API): the alerts are found by their provider id among the Defender for Cloud alerts
    created since a day before the incident (`alerts_v2`), their XDR incident gets the summary."""
    names = {e.key.rsplit("/", 1)[-1] for e in incident.entities if isinstance(e, DefenderAlert)}
    if not names:
        raise Skip("the incident has no Defender alert")
    if ctx.connections is None:
        raise Skip("no Graph connection configured")
    conn = ctx.connections
    since = (incident.first_seen - timedelta(days=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = "Aegis: " + " | ".join(summary(incident, ctx))

    async def work(client: GraphServiceClient) -> dict[str, Any]:
        query = Alerts_v2RequestBuilder.Alerts_v2RequestBuilderGetQueryParameters(
            filter=f"serviceSource eq 'microsoftDefenderForCloud' and createdDateTime ge {since}", top=500
        )
        found = await client.security.alerts_v2.get(request_configuration=RequestConfiguration(query_parameters=query))
        mine = [a for a in (found.value if found and found.value else []) if a.provider_alert_id in names and a.id]
        held = sorted({str(a.incident_id) for a in mine if a.incident_id})
        for xdr_incident in held:
            await _comment(client, xdr_incident, text[:4000])
        return {"alerts": sorted(str(a.id) for a in mine), "xdr_incidents": held}

    result = graph.using(conn, work)
    if not result["xdr_incidents"]:
        raise Skip("none of the incident's alerts is in a Defender XDR incident yet")
    return result


async def _comment(client: GraphServiceClient, xdr_incident: str, text: str) -> None:
    """POST /security/incidents/{id}/comments with one alertComment (Graph v1.0, permission
    SecurityIncident.ReadWrite.All). msgraph-sdk has no builder for it, so the request is made
    through the SDK's own adapter (its auth, retries and error mapping)."""
    comment = AlertComment(comment=text, odata_type="#microsoft.graph.security.alertComment")
    info = RequestInformation(Method.POST, "{+baseurl}/security/incidents/{incident%2Did}/comments",
                              {"incident%2Did": xdr_incident})  # fmt: skip
    info.headers.try_add("Accept", "application/json")
    info.set_content_from_parsable(client.request_adapter, "application/json", comment)
    await client.request_adapter.send_no_response_content_async(info, {"XXX": ODataError})


@dataclass(frozen=True)
class Deliveries:
    names: Sequence[str]
    connections: Connections | None
    console_url: str
    soc_channel: Channel | None
    min_severity: str = "medium"
    budget: float = 30.0

    @classmethod
    def from_settings(
        cls, cfg: Settings, soc_channel: Channel | None, connections: Callable[[], connect.Connections] | None = None
    ) -> Deliveries:
        """`connections`: the worker's (built on first use), or the settings' when not given."""
        try:
            names = DELIVERERS.require(cfg.deliverers or [])
        except UnknownName as exc:
            raise ConfigurationError(f"AEGIS_DELIVERERS: {exc}") from None
        made = (connections or connect.lazy(cfg))() if names else None
        return cls(names, made, cfg.console_url, soc_channel, cfg.deliver_min_severity)

    def run(
        self, incidents: Iterable[Incident], store: Store, *, limit: int = 50, findings: Iterable[Finding] = ()
    ) -> int:
        """Deliver (or update) up to `limit` incidents whose delivery is missing or older than their
        evidence, and the open `findings` the same way (at their own severity)."""
        floor = SEVERITY_ORDER.index(Severity(self.min_severity))
        done = 0
        spots = [View(finding_incident(f), "open") for f in findings if f.open]
        for view in [*views(incidents), *spots]:
            i = view.incident
            below = SEVERITY_ORDER.index(i.severity) < floor and "finding" not in i.attributes
            if not self.names or view.status == "superseded" or below:
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
