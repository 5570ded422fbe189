"""Defender for Cloud actions on the official SDK (azure-mgmt-security): move an alert to in
progress, resolved, dismissed or active as the response advances (`Alerts` API 2022-01-01)."""

from __future__ import annotations

import re
from typing import Any

from azure.mgmt.security import SecurityCenter

from aegis.respond.actions import UpdateDefenderAlert
from aegis.respond.connect import Context

_ALERT = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?/providers/microsoft\.security"
    r"/locations/(?P<location>[^/]+)/alerts/(?P<name>[^/]+)$"
)
_STATE = {"inProgress": "in_progress", "resolve": "resolve", "dismiss": "dismiss", "activate": "activate"}


def update_alert(p: UpdateDefenderAlert, ctx: Context) -> dict[str, Any]:
    """POST {alert id}/{inProgress | resolve | dismiss | activate}?api-version=2022-01-01 (204)."""
    m = _ALERT.match(p.alert)
    if m is None:
        raise ValueError(f"not a Defender for Cloud alert id: {p.alert}")
    conn = ctx.connections
    alerts = SecurityCenter(conn.credential, m["sub"], base_url=conn.arm, **conn.sdk_options()).alerts
    level = "resource_group" if m["rg"] else "subscription"
    operation = getattr(alerts, f"update_{level}_level_state_to_{_STATE[p.state]}")
    if m["rg"]:
        operation(resource_group_name=m["rg"], asc_location=m["location"], alert_name=m["name"])
    else:
        operation(asc_location=m["location"], alert_name=m["name"])
    return {"alert": p.alert, "state": p.state}
