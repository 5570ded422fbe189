"""Log Analytics (azure-monitor-query `LogsQueryClient`): what else the incident's entities did.

Four KQL templates (`kql/*.kql`): requests from each caller network to every AI account, each
user's sign-ins, control-plane operations on each AI account, and who called each AI account with
a key (what a key rotation breaks), in the 24 h before the newest evidence. Entity values enter
the queries only through `kql.literal`. A query that fails or comes back partial is recorded
beside the ones that answered.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryStatus

from aegis.enrich import kql
from aegis.enrich.base import Context, Skip, enricher, error_text, window
from aegis.events import AiResource, Ip, User
from aegis.records import Incident

LOGS = "https://api.loganalytics.io"
MAX_ROWS = 50


def client(ctx: Context) -> LogsQueryClient:
    assert ctx.connections is not None
    conn = ctx.connections
    # the base endpoint: azure-monitor-query 2.x adds the API version (`/v1`) itself
    return conn.kept("logs", build=lambda: LogsQueryClient(conn.credential, endpoint=conn.logs.rstrip("/"),
                                                           audience=LOGS, **conn.sdk_options()))  # fmt: skip


def questions(incident: Incident) -> list[tuple[str, str, dict[str, str]]]:
    """(label, template, values) for each question the incident's entities raise (at most 5 of a kind)."""
    asked: list[tuple[str, str, dict[str, str]]] = []
    for ip in sorted({e.prefix for e in incident.entities if isinstance(e, Ip)})[:5]:
        asked.append((f"network {ip}", "ai_requests_from_network", {"prefix": log_prefix(ip)}))
    for user in sorted({e.key for e in incident.entities if isinstance(e, User)})[:5]:
        asked.append((f"user {user}", "user_sign_ins", {"user": user}))
    for account in sorted({e.key for e in incident.entities if isinstance(e, AiResource)})[:5]:
        asked.append((f"account {account}", "account_control_plane", {"account": account}))
        asked.append((f"key callers of {account}", "account_key_callers", {"account": account}))
    return asked


@enricher("log_analytics")
def log_analytics(incident: Incident, ctx: Context) -> dict[str, Any]:
    """Requests from the caller networks to all AI accounts, the users' sign-ins, control-plane operations."""
    if ctx.connections is None or not ctx.workspace:
        raise Skip("no Log Analytics workspace configured (AEGIS_LOG_ANALYTICS_WORKSPACE)")
    asked = questions(incident)
    if not asked:
        raise Skip("no network, user or AI account to ask about")
    start, end = window(incident, ctx)
    out: dict[str, Any] = {"workspace": ctx.workspace, "window": [start.isoformat(), end.isoformat()], "answers": []}
    logs = client(ctx)  # the worker's client: kept open, not closed here
    for label, name, values in asked:
        answer: dict[str, Any] = {"question": label, "query": name}
        try:
            query = kql.render(name, **values)
            result = logs.query_workspace(ctx.workspace, query, timespan=(start, end))
        except kql.UnsafeValue as exc:
            answer["error"] = str(exc)
        except Exception as exc:
            answer["error"] = error_text(exc)
        else:
            if result.status == LogsQueryStatus.PARTIAL and isinstance(result, LogsQueryPartialResult):
                tables, answer["partial"] = result.partial_data, str(result.partial_error)[:300]
            else:
                tables = result.tables
            answer["rows"] = [dict(zip(t.columns, row, strict=False)) for t in tables[:1] for row in t.rows[:MAX_ROWS]]
        out["answers"].append(answer)
    return out


def log_prefix(prefix: str) -> str:
    """How a network appears at the start of CallerIPAddress: `203.0.113.` for an IPv4 /24 (the logs
    mask the last octet), the address for a single address, the network's leading groups otherwise."""
    net = ipaddress.ip_network(prefix, strict=False)
    if net.num_addresses == 1:
        return str(net.network_address)
    if net.version == 4:
        return ".".join(str(net.network_address).split(".")[: max(net.prefixlen // 8, 1)]) + "."
    return str(net.network_address).removesuffix("::") + ":"
