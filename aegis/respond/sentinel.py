"""Microsoft Sentinel through its documented REST API (api-version 2024-09-01, GA) on azure-core:
the Python SDK's only releases on that API are betas (azure-mgmt-securityinsight 2.0.0bN), and the
four calls Aegis makes need no model classes.

    GET/PUT {workspace}/providers/Microsoft.SecurityInsights/incidents/{id}
    PUT     {workspace}/providers/Microsoft.SecurityInsights/bookmarks/{id}
    PUT     {workspace}/providers/Microsoft.SecurityInsights/incidents/{id}/relations/{name}

The client keeps the SDKs' retry policy and transport (`Connections.rest_client`), with a token for
Azure Resource Manager from the app's identity; a worker builds it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from aegis.arm import parse_resource_id
from aegis.respond.connect import CannotRun, Connections, send

API = "2024-09-01"
# Sentinel's tactic names (its AttackTactic enumeration): an ATLAS tactic ATT&CK also names is one of them
TACTICS = frozenset({
    "Reconnaissance", "ResourceDevelopment", "InitialAccess", "Execution", "Persistence", "PrivilegeEscalation",
    "DefenseEvasion", "CredentialAccess", "Discovery", "LateralMovement", "Collection", "Exfiltration",
    "CommandAndControl", "Impact", "PreAttack", "ImpairProcessControl", "InhibitResponseFunction",
})  # fmt: skip


@dataclass(frozen=True)
class Sentinel:
    """The configured workspace's Sentinel: `get` and `put` of its resources by relative path."""

    client: Any
    base: str  # /subscriptions/S/resourceGroups/G/providers/Microsoft.OperationalInsights/workspaces/W/providers/...

    def get(self, path: str) -> dict[str, Any] | None:
        """The resource, or None when Sentinel has none there (404)."""
        try:
            found = send(self.client, HttpRequest("GET", f"{self.base}/{path}", params={"api-version": API}))
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        saved = send(self.client, HttpRequest("PUT", f"{self.base}/{path}", params={"api-version": API}, json=body))
        return saved if isinstance(saved, dict) else {}


def workspace(conn: Connections) -> Sentinel:
    """The Sentinel of `AEGIS_SENTINEL_WORKSPACE` (the Log Analytics workspace's ARM id)."""
    raw = conn.tickets.sentinel_workspace
    if not raw:
        raise CannotRun("Microsoft Sentinel: set AEGIS_SENTINEL_WORKSPACE to the workspace's ARM id")
    ws = parse_resource_id(raw)
    if ws.type != "microsoft.operationalinsights/workspaces" or not ws.subscription or not ws.resource_group:
        raise CannotRun(f"AEGIS_SENTINEL_WORKSPACE {raw[:200]!r} is not a Log Analytics workspace's ARM id")
    base = (f"/subscriptions/{ws.subscription}/resourceGroups/{ws.resource_group}/providers/"
            f"Microsoft.OperationalInsights/workspaces/{ws.name}/providers/Microsoft.SecurityInsights")  # fmt: skip
    return Sentinel(conn.arm_rest(), base)
