"""Defender for Cloud actions on the official SDK (azure-mgmt-security): move an alert to in
progress, resolved, dismissed or active as the response advances (`Alerts` API 2022-01-01)."""

from __future__ import annotations

import re
from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.security import SecurityCenter

from aegis.respond.actions import UpdateDefenderAlert

ARM = "https://management.azure.com"
_ALERT = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?/providers/microsoft\.security"
    r"/locations/(?P<location>[^/]+)/alerts/(?P<name>[^/]+)$"
)
_STATE = {"inProgress": "in_progress", "resolve": "resolve", "dismiss": "dismiss", "activate": "activate"}


def client(
    credential: TokenCredential, subscription: str, *, base_url: str = ARM, ca_file: str | None = None
) -> SecurityCenter:
    """A Security Center client; `ca_file` trusts another CA (tests), the system's store is used otherwise."""
    extra: dict[str, Any] = {"connection_verify": ca_file} if ca_file else {}
    return SecurityCenter(credential, subscription, base_url=base_url, **extra)


def update_alert(credential: TokenCredential, p: UpdateDefenderAlert, **options: Any) -> dict[str, Any]:
    """POST {alert id}/{inProgress | resolve | dismiss | activate}?api-version=2022-01-01 (204)."""
    m = _ALERT.match(p.alert)
    if m is None:
        raise ValueError(f"not a Defender for Cloud alert id: {p.alert}")
    alerts = client(credential, m["sub"], **options).alerts
    level = "resource_group" if m["rg"] else "subscription"
    operation = getattr(alerts, f"update_{level}_level_state_to_{_STATE[p.state]}")
    if m["rg"]:
        operation(resource_group_name=m["rg"], asc_location=m["location"], alert_name=m["name"])
    else:
        operation(asc_location=m["location"], alert_name=m["name"])
    return {"alert": p.alert, "state": p.state}
