"""Corroboration: before a disruptive step may run, ask a source the sender of a message cannot forge.

Anyone holding an Event Hubs Send key can write any alert or log record, so what a message says is
a claim. A disruptive step is planned "pending" (`planner.PENDING`), with one approval more than
the plan says; this pass asks the configured sources (`AEGIS_CORROBORATORS`) about the evidence
behind it and settles the step (`Responder.settle`):

- `defender`: each Defender alert of the incident, by its ARM id, through the Alerts API
  (azure-mgmt-security): it exists and is of a type the incident holds;
- `log_analytics`: the workspace where the diagnostic logs also land (azure-monitor-query) has
  records of the step's AI account (from the incident's caller network, when it has one), or
  sign-ins of the step's user, in the incident's window;
- `entra`: Microsoft Graph has a sign-in record of the step's user in the incident's window
  (`GET /auditLogs/signIns`, permission `AuditLog.Read.All`).

A step is corroborated by the first source that confirms its evidence; otherwise it stays
uncorroborated, with each source's answer as the reason (and is refused if the plan requires
corroboration for its action). A source that fails counts as not confirming: a fault never
corroborates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import structlog
from azure.core.exceptions import ResourceNotFoundError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import SignInsRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from aegis.enrich import kql
from aegis.enrich.base import Context, error_text
from aegis.enrich.log_analytics import client as logs_client
from aegis.enrich.log_analytics import log_prefix
from aegis.events import DefenderAlert, Ip, Origin, Source
from aegis.records import Incident, StepRecord
from aegis.registry import Registry
from aegis.respond import graph, planner
from aegis.respond.defender import alerts
from aegis.respond.record import Responder

log = structlog.get_logger("aegis.corroborate")
MAX_ALERTS = 5
SLACK = timedelta(minutes=15)  # around the incident's window: ingestion delays of the other source


@dataclass(frozen=True, slots=True)
class Answer:
    source: str
    confirmed: bool
    detail: str


Check = Callable[[Incident, StepRecord, Context], Answer | None]  # None: the source has nothing to ask
SOURCES: Registry[Check] = Registry("corroboration source")


source = SOURCES.register  # @source("name") over a Check


@source("defender")
def _defender(incident: Incident, step: StepRecord, ctx: Context) -> Answer | None:
    ids = sorted({e.key for e in incident.entities if isinstance(e, DefenderAlert)})[:MAX_ALERTS]
    if not ids or ctx.connections is None:
        return None
    kinds = {t.kind.lower() for t in incident.timeline if t.source == Source.DEFENDER.value}
    said = []
    for alert_id in ids:
        ops, level, where = alerts(alert_id, ctx.connections)
        try:
            found = getattr(ops, f"get_{level}_level")(**where)
        except ResourceNotFoundError:
            said.append(f"no alert {where['alert_name']} in Defender")
            continue
        kind = (found.alert_type or "").lower()
        if kinds and kind not in kinds:
            said.append(f"alert {where['alert_name']} is of type {found.alert_type}, not one the incident holds")
            continue
        # a real alert id in a forged message must not vouch for another target: the alert Defender
        # holds must itself name the step's target (its affected resource, entities or compromised entity)
        target = _target_value(step)
        if target and target not in orjson.dumps(found.as_dict(), default=str).decode().lower():
            said.append(f"alert {where['alert_name']} does not name {target}")
            continue
        return Answer("defender", True, f"Defender alert {where['alert_name']} exists ({found.alert_type}) and names "
                                        f"{target or 'the incident'}")  # fmt: skip
    return Answer("defender", False, "; ".join(said))


def _target_value(step: StepRecord) -> str | None:
    """What of the step's target an alert about it would carry: the account's id, the user, the host."""
    p = step.params
    for key in ("account", "user", "machine_id", "host_name", "alert"):
        value = p.get(key)
        if isinstance(value, str) and value:
            return value.lower()
    return None


@source("log_analytics")
def _log_analytics(incident: Incident, step: StepRecord, ctx: Context) -> Answer | None:
    if ctx.connections is None or not ctx.workspace:
        return None
    networks = sorted({e.prefix for e in incident.entities if isinstance(e, Ip) and e.origin is not Origin.APP})
    if "account" in step.params and networks:  # the account's records from the caller network, not just any
        prefix = log_prefix(networks[0])
        query, values = "corroborate_account_network", {"account": step.params["account"], "prefix": prefix}
        what = f"records of the account from {prefix}*"
    elif "account" in step.params:
        query, values, what = "corroborate_account", {"account": step.params["account"]}, "records of the account"
    elif "user" in step.params:
        query, values, what = "corroborate_user", {"user": step.params["user"]}, "sign-ins of the user"
    else:
        return None
    result = logs_client(ctx).query_workspace(  # the worker's client: kept open, not closed here
        ctx.workspace,
        kql.render(query, **values),
        timespan=(incident.first_seen - SLACK, incident.last_seen + SLACK),
    )
    tables = getattr(result, "tables", None) or getattr(result, "partial_data", None) or []
    count = int(tables[0].rows[0][0]) if tables and tables[0].rows and tables[0].rows[0] else 0
    if count > 0:
        return Answer("log_analytics", True, f"Log Analytics holds {count} {what} in the incident's window")
    return Answer("log_analytics", False, f"Log Analytics holds no {what} in the incident's window")


@source("entra")
def _entra(incident: Incident, step: StepRecord, ctx: Context) -> Answer | None:
    user = step.params.get("user")
    if ctx.connections is None or not isinstance(user, str):
        return None
    start = (incident.first_seen - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (incident.last_seen + SLACK).strftime("%Y-%m-%dT%H:%M:%SZ")
    who = f"userId eq '{user}'" if "@" not in user else f"userPrincipalName eq '{user.replace(chr(39), chr(39) * 2)}'"
    query = SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(
        filter=f"{who} and createdDateTime ge {start} and createdDateTime le {end}", top=1
    )

    async def ask(client: GraphServiceClient) -> Any:
        return await client.audit_logs.sign_ins.get(request_configuration=RequestConfiguration(query_parameters=query))

    found = graph.using(ctx.connections, ask)
    rows = found.value if found is not None and found.value else []
    if rows:
        at = rows[0].created_date_time.isoformat() if rows[0].created_date_time else "?"
        return Answer("entra", True, f"Entra ID has a sign-in of {user} ({rows[0].id}, {at})")
    return Answer("entra", False, f"Entra ID has no sign-in of {user} around the incident")


class Corroborator:
    """Settles the pending steps: asks the configured sources, records what they said."""

    def __init__(self, names: Sequence[str], ctx: Context) -> None:
        self.names, self.ctx = SOURCES.require(names), ctx  # UnknownName names the sources there are

    def check(self, incident: Incident, step: StepRecord) -> tuple[bool, str]:
        said = []
        for name in self.names:
            try:
                answer = SOURCES[name](incident, step, self.ctx)
            except kql.UnsafeValue as exc:
                answer = Answer(name, False, str(exc))
            except Exception as exc:  # a fault never corroborates
                answer = Answer(name, False, f"{name} failed: {error_text(exc)}")
            if answer is None:
                continue
            if answer.confirmed:
                return True, answer.detail
            said.append(answer.detail)
        return False, "; ".join(said) or f"no configured source ({', '.join(self.names)}) knows this evidence"

    def run(self, responder: Responder, incidents: Callable[[], Iterable[Incident]]) -> int:
        """Settle every pending step; how many were settled."""
        pending = [s for s in responder.store.steps(status=["awaiting_approval"]) if s.corroboration == planner.PENDING]
        if not pending:
            return 0
        by_id = {i.id: i for i in incidents()}
        settled = 0
        for step in pending:
            incident = by_id.get(step.incident)
            if incident is None:
                continue
            ok, detail = self.check(incident, step)
            responder.settle(step, ok, detail)
            log.info("step_corroborated" if ok else "step_uncorroborated", step=step.key, action=step.action)
            settled += 1
        return settled
