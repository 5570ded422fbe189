"""Defender for Cloud actions on the official SDK (azure-mgmt-security): move an alert to in
progress, resolved, dismissed or active as the response advances (`Alerts` API 2022-01-01)."""

from __future__ import annotations

import re
from typing import Any

from azure.mgmt.security import SecurityCenter
from azure.mgmt.security.v2022_01_01.operations import AlertsOperations

from aegis.respond.actions import UpdateDefenderAlert, runs
from aegis.respond.connect import Connections, Context

_ALERT = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?/providers/microsoft\.security"
    r"/locations/(?P<location>[^/]+)/alerts/(?P<name>[^/]+)$"
)
_STATE = {"inProgress": "in_progress", "resolve": "resolve", "dismiss": "dismiss", "activate": "activate"}


def alerts(alert: str, conn: Connections) -> tuple[AlertsOperations, str, dict[str, str]]:
    """The Alerts operations for a Defender alert's ARM id: (operations, `subscription` or
    `resource_group` (the level its operations are named by), their keyword arguments)."""
    m = _ALERT.match(alert)
    if m is None:
        raise ValueError(f"not a Defender for Cloud alert id: {alert}")
    sub = m["sub"]
    ops = conn.kept("security", sub, build=lambda: SecurityCenter(conn.credential, sub, base_url=conn.arm,
                                                                  **conn.sdk_options())).alerts  # fmt: skip
    where = {"asc_location": m["location"], "alert_name": m["name"]}
    if m["rg"]:
        return ops, "resource_group", {"resource_group_name": m["rg"], **where}
    return ops, "subscription", where


@runs("update_defender_alert")
def update_alert(p: UpdateDefenderAlert, ctx: Context) -> dict[str, Any]:
    """POST {alert id}/{inProgress | resolve | dismiss | activate}?api-version=2022-01-01 (204)."""
    ops, level, where = alerts(p.alert, ctx.connections)
    getattr(ops, f"update_{level}_level_state_to_{_STATE[p.state]}")(**where)
    return {"alert": p.alert, "state": p.state}
