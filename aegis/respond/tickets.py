"""`open_ticket`: one ticket per incident and system, opened the first time and updated after (a
grown incident plans a new step with its new title or severity; it updates the same ticket).

- local: the store's own ticket table (the embedded default);
- sentinel: a Microsoft Sentinel incident (its REST API, 2024-09-01: `sentinel.py`), its
  id derived from the Aegis incident id; an existing one keeps its status, owner and classification;
- servicenow: the Table API, the incident found again by `correlation_id`;
- jira: REST v3, the issue found again by its `aegis-<incident>` label.

ServiceNow and Jira have no Azure SDK: they go through azure-core's pipeline with its retry policy.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core import PipelineClient
from azure.core.pipeline.policies import HeadersPolicy
from azure.core.rest import HttpRequest
from pydantic import SecretStr

from aegis.respond.actions import OpenTicket, runs
from aegis.respond.connect import CannotRun, Connections, Context, send
from aegis.respond.sentinel import workspace

_NAMESPACE = uuid.UUID("5d9f3b1e-6a0c-4e57-9d2a-ae9150000000")  # Aegis incidents, as Sentinel incident ids
_SENTINEL_SEVERITY = {"critical": "High", "high": "High", "medium": "Medium", "low": "Low",
                      "informational": "Informational"}  # fmt: skip
_SERVICENOW_IMPACT_URGENCY = {"critical": (1, 1), "high": (1, 2), "medium": (2, 2), "low": (3, 2),
                              "informational": (3, 3)}  # fmt: skip


@runs("open_ticket")
def open_ticket(p: OpenTicket, ctx: Context) -> dict[str, Any]:
    incident = ctx.step.incident
    if p.system == "local":
        number, created = ctx.store.save_ticket(incident, p.title, p.severity, datetime.now(UTC))
        return {"system": "local", "ticket": number, "created": created}
    return {"sentinel": _sentinel, "servicenow": _servicenow, "jira": _jira}[p.system](p, incident, ctx.connections)


def sentinel_id(incident: str, part: str = "") -> str:
    """The Sentinel incident id of an Aegis incident (or of its `part`, a bookmark): the same every
    time, so a retry updates it."""
    return str(uuid.uuid5(_NAMESPACE, f"{incident}/{part}" if part else incident))


def _sentinel(p: OpenTicket, incident: str, conn: Connections) -> dict[str, Any]:
    return upsert_sentinel(conn, incident, title=p.title, severity=p.severity, description=_description(p, incident))


def upsert_sentinel(
    conn: Connections, incident: str, *, title: str, severity: str, description: str, labels: Sequence[str] = ()
) -> dict[str, Any]:
    """Create or update the Sentinel incident of an Aegis incident (its id is `sentinel_id`): GET, then
    PUT with the etag read. An existing incident keeps its status, owner, classification and the
    labels people added; ours are added to them."""
    sentinel = workspace(conn)
    sid = sentinel_id(incident)
    props: dict[str, Any] = {"title": title[:250], "severity": _SENTINEL_SEVERITY[severity],
                             "description": description[:5000]}  # fmt: skip
    ours = [{"labelName": n[:256], "labelType": "User"} for n in ("aegis", *labels)]
    body: dict[str, Any]
    current = sentinel.get(f"incidents/{sid}")
    if current is not None:
        keep = {k: v for k, v in current.get("properties", {}).items() if k in ("status", "owner", "classification",
                "classificationReason", "classificationComment")}  # fmt: skip
        had = current.get("properties", {}).get("labels") or []
        names = {lab.get("labelName") for lab in had}
        merged = [*had, *[lab for lab in ours if lab["labelName"] not in names]]
        body = {"etag": current.get("etag"), "properties": {**keep, **props, "labels": merged}}
        created = False
    else:
        body = {"properties": {**props, "status": "New", "labels": ours}}
        created = True
    result = sentinel.put(f"incidents/{sid}", body)
    props = result.get("properties", {})
    number, url = props.get("incidentNumber"), props.get("incidentUrl")  # the portal deep link, when Sentinel gives it
    return {"system": "sentinel", "ticket": sid, "number": number, "created": created,
            **({"url": url} if isinstance(url, str) else {})}  # fmt: skip


def _rest(base: str, user: str, secret: SecretStr, conn: Connections) -> PipelineClient[HttpRequest, Any]:
    token = base64.b64encode(f"{user}:{secret.get_secret_value()}".encode()).decode()
    auth = HeadersPolicy({"Authorization": f"Basic {token}", "Accept": "application/json"})
    return conn.kept("basic", base, user, build=lambda: conn.rest_client(base, auth))


def _servicenow(p: OpenTicket, incident: str, conn: Connections) -> dict[str, Any]:
    t = conn.tickets
    if not (t.servicenow_instance and t.servicenow_user and t.servicenow_password):
        raise CannotRun("open_ticket system servicenow: set AEGIS_SERVICENOW_INSTANCE, _USER and _PASSWORD")
    client = _rest(t.servicenow_instance, t.servicenow_user, t.servicenow_password, conn)
    impact, urgency = _SERVICENOW_IMPACT_URGENCY[p.severity]
    fields = {"short_description": p.title[:160], "description": _description(p, incident),
              "impact": str(impact), "urgency": str(urgency)}  # fmt: skip
    query = {"sysparm_query": f"correlation_id={incident}", "sysparm_fields": "sys_id,number", "sysparm_limit": "1"}
    found = (send(client, HttpRequest("GET", "/api/now/table/incident", params=query)) or {}).get("result", [])
    if found:
        sys_id = found[0]["sys_id"]
        result = send(client, HttpRequest("PATCH", f"/api/now/table/incident/{sys_id}", json=fields))["result"]
    else:
        body = {**fields, "correlation_id": incident, "correlation_display": "Aegis"}
        result = send(client, HttpRequest("POST", "/api/now/table/incident", json=body))["result"]
    return {"system": "servicenow", "ticket": result.get("number"), "sys_id": result.get("sys_id"),
            "created": not found}  # fmt: skip


def _jira(p: OpenTicket, incident: str, conn: Connections) -> dict[str, Any]:
    t = conn.tickets
    if not (t.jira_site and t.jira_user and t.jira_token and t.jira_project):
        raise CannotRun("open_ticket system jira: set AEGIS_JIRA_SITE, _USER, _TOKEN and _PROJECT")
    client = _rest(t.jira_site, t.jira_user, t.jira_token, conn)
    label = f"aegis-{incident}"
    summary = f"[{p.severity.upper()}] {p.title}"[:255]
    jql = f'project = "{t.jira_project}" AND labels = "{label}"'  # the label is hex: nothing to escape
    query = {"jql": jql, "fields": "key", "maxResults": "1"}
    issues = (send(client, HttpRequest("GET", "/rest/api/3/search/jql", params=query)) or {}).get("issues", [])
    description = {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
        {"type": "text", "text": _description(p, incident)}]}]}  # fmt: skip
    if issues:
        key = issues[0]["key"]
        update = {"fields": {"summary": summary, "description": description}}
        send(client, HttpRequest("PUT", f"/rest/api/3/issue/{key}", json=update))
        return {"system": "jira", "ticket": key, "created": False}
    fields = {"project": {"key": t.jira_project}, "issuetype": {"name": "Task"}, "summary": summary,
              "labels": ["aegis", label], "description": description}  # fmt: skip
    created = send(client, HttpRequest("POST", "/rest/api/3/issue", json={"fields": fields}))
    return {"system": "jira", "ticket": created["key"], "created": True}


def _description(p: OpenTicket, incident: str) -> str:
    return f"{p.description}\n\nAegis incident {incident}".strip()
