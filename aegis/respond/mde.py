"""Defender for Endpoint machine isolation. The API has no Python SDK: this is azure-core's pipeline
(the one under every Azure SDK) with its bearer-token and retry policies — 429 and 5xx retried with
backoff honouring `Retry-After` — against the documented REST routes (`/api/machines/{id}/isolate`,
`/unisolate`, `/api/machines?$filter=`). Rate limits of the API: 100 calls a minute, 1,500 an hour.
"""

from __future__ import annotations

from typing import Any

from azure.core import PipelineClient
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest

from aegis.respond.actions import IsolateEndpoint, ReleaseEndpoint, runs
from aegis.respond.connect import CannotRun, Connections, Context, send

SCOPE = "https://api.securitycenter.microsoft.com/.default"  # the API's app id URI, whatever its host name


def _client(conn: Connections) -> PipelineClient[HttpRequest, Any]:
    def build() -> PipelineClient[HttpRequest, Any]:
        return conn.rest_client(conn.mde, BearerTokenCredentialPolicy(conn.credential, SCOPE))

    return conn.kept("mde", build=build)


def machine(client: PipelineClient[HttpRequest, Any], p: IsolateEndpoint | ReleaseEndpoint) -> str:
    """The machine id: the step's, or the one machine whose DNS name is the host name (or starts `name.`)."""
    if p.machine_id:
        return p.machine_id
    name = p.host_name or ""  # validated: letters, digits, hyphens and dots, so no quote can close the string
    query = {"$filter": f"startswith(computerDnsName,'{name}')"}
    found = send(client, HttpRequest("GET", "/api/machines", params=query)) or {}
    dns = {str(m.get("id")): str(m.get("computerDnsName") or "").lower() for m in found.get("value", [])}
    ids = [mid for mid, d in dns.items() if d == name or d.startswith(name + ".")]
    if len(ids) != 1:
        raise CannotRun(f"{len(ids)} Defender for Endpoint machines are named {name}: give the machine id")
    return str(ids[0])


@runs("isolate_endpoint")
def isolate(p: IsolateEndpoint, ctx: Context) -> dict[str, Any]:
    """POST /api/machines/{id}/isolate {"Comment", "IsolationType"} → 201 with a machine action."""
    client = _client(ctx.connections)
    mid = machine(client, p)
    body = {"Comment": p.comment, "IsolationType": p.isolation}
    action = send(client, HttpRequest("POST", f"/api/machines/{mid}/isolate", json=body))
    return _summary(mid, action)


@runs("release_endpoint")
def release(p: ReleaseEndpoint, ctx: Context) -> dict[str, Any]:
    """POST /api/machines/{id}/unisolate {"Comment"} → 201 with a machine action."""
    client = _client(ctx.connections)
    mid = machine(client, p)
    action = send(client, HttpRequest("POST", f"/api/machines/{mid}/unisolate", json={"Comment": p.comment}))
    return _summary(mid, action)


def _summary(mid: str, action: Any) -> dict[str, Any]:
    a = action or {}
    return {"machine": mid, "machine_action": a.get("id"), "type": a.get("type"), "status": a.get("status")}
