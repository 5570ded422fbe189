"""Defender for Cloud (azure-mgmt-security): each of the incident's alerts in full, as the Alerts API
has it now: status, remediation steps, the portal link, the resources and the kill-chain intent."""

from __future__ import annotations

from typing import Any

from aegis.enrich.base import Context, Skip, enricher, error_text
from aegis.events import DefenderAlert
from aegis.records import Incident
from aegis.respond.defender import alerts

MAX_ALERTS = 10


@enricher("defender")
def defender(incident: Incident, ctx: Context) -> dict[str, Any]:
    """The incident's Defender alerts in full: status, remediation steps, the alert link."""
    ids = sorted({e.key for e in incident.entities if isinstance(e, DefenderAlert)})
    if not ids:
        raise Skip("the incident has no Defender alert")
    if ctx.connections is None:
        raise Skip("no Azure connection (execute-mode settings) configured")
    found: list[dict[str, Any]] = []
    for alert_id in ids[:MAX_ALERTS]:
        ops, level, where = alerts(alert_id, ctx.connections)
        try:
            a = getattr(ops, f"get_{level}_level")(**where)
        except Exception as exc:
            found.append({"id": alert_id, "error": error_text(exc)})
            continue
        found.append({
            "id": alert_id, "name": a.alert_display_name, "type": a.alert_type, "status": a.status,
            "severity": a.severity, "intent": a.intent, "link": a.alert_uri,
            "remediation": list(a.remediation_steps or [])[:20], "description": a.description,
            "compromised_entity": a.compromised_entity, "techniques": list(a.techniques or []),
            "start": a.start_time_utc.isoformat() if a.start_time_utc else None,
        })  # fmt: skip
    return {"alerts": found}
