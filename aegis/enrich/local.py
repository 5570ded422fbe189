"""The embedded default's enricher: the questions the cloud enrichers ask, answered from the
events Aegis itself stored (no Azure needed)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aegis.enrich.base import Context, Skip, enricher, window
from aegis.events import AiResource, Event, Ip, Source, User
from aegis.records import Incident

AI_PROVIDER = "microsoft.cognitiveservices"


@enricher("local")
def local(incident: Incident, ctx: Context) -> dict[str, Any]:
    """Related activity in the stored events: caller networks, users, AI accounts' control plane."""
    if ctx.events is None:
        raise Skip("no event store to read")
    start, end = window(incident, ctx)
    events: list[Event] = ctx.events(start, end)
    nets = {e.prefix for e in incident.entities if isinstance(e, Ip)}
    users = {e.key.lower() for e in incident.entities if isinstance(e, User)}
    accounts = {e.key for e in incident.entities if isinstance(e, AiResource)}
    out: dict[str, Any] = {"window": [start.isoformat(), end.isoformat()], "events_read": len(events)}
    for net in sorted(nets)[:5]:
        mine = [e for e in events if any(ip.prefix == net for ip in e.entities_of(Ip))]
        by_account = Counter(e.resource.id for e in mine if e.resource and e.resource.provider == AI_PROVIDER)
        failures = sum(1 for e in mine if int(e.attributes.get("http_status") or 0) >= 400)
        out.setdefault("networks", []).append({
            "network": net, "events": len(mine), "failures": failures,
            "ai_accounts": [{"account": a, "requests": n} for a, n in by_account.most_common(10)],
            "alerts": sorted({e.kind for e in mine if e.source == Source.DEFENDER})[:20],
        })  # fmt: skip
    for user in sorted(users)[:5]:
        mine = [e for e in events if any(u.key.lower() == user for u in e.entities_of(User))]
        out.setdefault("users", []).append({
            "user": user, "events": len(mine),
            "networks": sorted({ip.prefix for e in mine for ip in e.entities_of(Ip)})[:10],
            "kinds": [k for k, _ in Counter(e.kind for e in mine).most_common(10)],
        })  # fmt: skip
    for account in sorted(accounts)[:5]:
        ops = [e for e in events if e.source == Source.ACTIVITY_LOG and e.resource and e.resource.id == account.lower()]
        out.setdefault("control_plane", []).append({
            "account": account,
            "operations": [{"time": e.time.isoformat(), "operation": e.kind} for e in ops[-50:]],
        })  # fmt: skip
    return out
