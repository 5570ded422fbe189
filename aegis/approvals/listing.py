"""The incidents list as an analyst narrows it: query parameters in; the incidents to show, their
counts and the volume over time out.

Every filter is a query parameter, so that a link shares the exact view (`?severity=high&status=open
&q=203.0.113`). Times are event time, as incident status is: "the last 24 h" is the 24 hours up to
the newest evidence any incident holds, which in a live deployment is now and in a replayed
investigation is the end of what was replayed.

The order is the one a queue is worked in: open incidents first (neither closed by an analyst nor
past the reach of new evidence; superseded last), then by the response tier
(`tiers` of the plan: the tier of the most severe level first), then by severity, then the oldest
first (the SLA clock runs from the first event). `sort=recent` orders by the latest evidence instead.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aegis.approvals.names import label
from aegis.events import Severity
from aegis.records import SEVERITY_ORDER, TRIAGE_STATUSES, Triage, View

STATUSES = ("open", "closed", "superseded")
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SORTS = ("priority", "recent")
MAX_TEXT = 200  # a filter longer than this is cut (it comes from a URL anyone can write)


@dataclass(frozen=True)
class Query:
    severity: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    detection: str = ""
    resource: str = ""
    tenant: str = ""
    range: str = ""  # a key of RANGES, or "" for all time
    q: str = ""
    superseded: bool = False  # shown too (hidden by default: another incident holds all their events)
    sort: str = "priority"
    triage: tuple[str, ...] = ()  # new | active | closed, as analysts left it
    owner: str = ""  # a UPN, or "me"

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Query:
        """From the request's query parameters (a Starlette `QueryParams`, or a dict of lists);
        values it does not know are ignored, never an error: a link may be old or hand-written."""

        def many(name: str, allowed: Sequence[str]) -> tuple[str, ...]:
            got = params.getlist(name) if hasattr(params, "getlist") else params.get(name, [])
            return tuple(v for v in allowed if v in {str(x).strip().lower() for x in got})

        def one(name: str) -> str:
            got = params.get(name, "")
            value = got[0] if isinstance(got, list) and got else got if isinstance(got, str) else ""
            return value.strip()[:MAX_TEXT]

        severities = [s.value for s in reversed(SEVERITY_ORDER)]
        return cls(
            severity=many("severity", severities), status=many("status", STATUSES), detection=one("detection"),
            resource=one("resource").lower(), tenant=one("tenant").lower(),
            range=one("range") if one("range") in RANGES else "", q=one("q"),
            superseded=one("superseded") in {"1", "true", "on", "yes"} or "superseded" in many("status", STATUSES),
            sort=one("sort") if one("sort") in SORTS else "priority", triage=many("triage", TRIAGE_STATUSES),
            owner=one("owner").lower(),
        )  # fmt: skip

    def link(self, **changes: Any) -> str:
        """This view's URL with `changes` (a value of None or "" drops the parameter)."""
        values = {**self.__dict__, **changes}
        pairs: list[tuple[str, str]] = []
        for name in ("severity", "status", "triage"):
            pairs += [(name, v) for v in values[name]]
        for name in ("detection", "resource", "tenant", "range", "q", "owner"):
            if values[name]:
                pairs.append((name, values[name]))
        if values["superseded"]:
            pairs.append(("superseded", "1"))
        if values["sort"] != "priority":
            pairs.append(("sort", values["sort"]))
        return "/console" + (f"?{urlencode(pairs)}" if pairs else "")

    @property
    def narrowed(self) -> bool:
        return self != Query(superseded=self.superseded, sort=self.sort)


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    parts: list[tuple[float, float, str, int]]  # (y, height, severity, events) from the bottom up
    label: str  # on hover: the slot and its events


@dataclass(frozen=True)
class Volume:
    """Events over time of the incidents shown, stacked by severity, as inline SVG geometry.
    An incident's events are spread over the slots in proportion to its evidence timeline (its
    samples: every event of a small incident, the first and last of a big one)."""

    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    peak: int
    slot: str  # "1 h", "1 d"
    total: int


@dataclass(frozen=True)
class Listing:
    views: list[View]
    query: Query
    by_severity: list[tuple[str, int]]  # facet counts: every filter applied but severity and status
    by_status: list[tuple[str, int]]
    detections: list[str]
    tenants: list[str]
    hidden: int  # superseded incidents not shown
    total: int  # incidents in the store
    volume: Volume | None
    tiers: dict[str, str] = field(default_factory=dict)  # severity → tier


def listing(
    views: Sequence[View], query: Query, tiers: Mapping[Severity, str], triages: Mapping[str, Triage] | None = None,
    *, me: str = "",
) -> Listing:  # fmt: skip
    """`triages`: the analysts' state by incident; `me`: who asks (what `owner=me` means)."""
    triages = triages or {}
    newest = max((v.incident.last_seen for v in views), default=None)
    since = newest - RANGES[query.range] if newest is not None and query.range else None
    owner = me if query.owner == "me" else query.owner
    base = [
        v for v in views
        if _matches(v, query, since) and _triaged(triages.get(v.incident.id), query.triage, owner)
    ]  # fmt: skip
    by_severity = Counter(v.incident.severity.value for v in base if _status_ok(v, query))
    by_status = Counter(v.status for v in base if not query.severity or v.incident.severity.value in query.severity)
    shown = [
        v for v in base
        if (not query.severity or v.incident.severity.value in query.severity) and _status_ok(v, query)
    ]  # fmt: skip
    rank = _tier_rank(tiers)
    if query.sort == "recent":
        shown.sort(key=lambda v: v.incident.last_seen, reverse=True)
    else:

        def closed(v: View) -> bool:
            t = triages.get(v.incident.id)
            return t is not None and t.status == "closed"

        shown.sort(key=lambda v: (v.status == "superseded", closed(v), v.status == "closed", rank[v.incident.severity],
                                  -SEVERITY_ORDER.index(v.incident.severity), v.incident.first_seen))  # fmt: skip
    return Listing(
        views=shown, query=query,
        by_severity=[(s.value, by_severity[s.value]) for s in reversed(SEVERITY_ORDER)],
        by_status=[(s, by_status[s]) for s in STATUSES],
        detections=sorted({v.incident.detection for v in views} | ({query.detection} if query.detection else set())),
        tenants=sorted({v.incident.tenant for v in views if v.incident.tenant}),
        hidden=0 if query.superseded or query.status else sum(1 for v in base if v.status == "superseded"),
        total=len(views), volume=volume(shown), tiers={s.value: t for s, t in tiers.items()},
    )  # fmt: skip


def _triaged(t: Triage | None, statuses: tuple[str, ...], owner: str) -> bool:
    if statuses and (t.status if t else "new") not in statuses:
        return False
    return not owner or (t is not None and t.owner == owner)


def _status_ok(v: View, query: Query) -> bool:
    if query.status:
        return v.status in query.status
    return query.superseded or v.status != "superseded"


def _matches(v: View, query: Query, since: datetime | None) -> bool:
    i = v.incident
    if query.detection and i.detection != query.detection:
        return False
    if query.tenant and (i.tenant or "") != query.tenant:
        return False
    if since is not None and i.last_seen < since:
        return False
    if query.resource and not any(
        query.resource in e.key.lower() or query.resource in label(e).lower()
        for e in i.entities if e.type in ("ai_resource", "ai_project", "model_deployment", "host")
    ):  # fmt: skip
        return False
    if query.q:
        needle = query.q.lower()
        haystack = [i.id, i.title, i.detection, i.group, *i.atlas, *i.owasp_llm, *(e.key for e in i.entities),
                    *(label(e) for e in i.entities)]  # fmt: skip
        if not any(needle in h.lower() for h in haystack):
            return False
    return True


def _tier_rank(tiers: Mapping[Severity, str]) -> dict[Severity, int]:
    """Each severity's place by its tier: tiers in the order of the most severe level that has them."""
    order: list[str] = []
    for s in reversed(SEVERITY_ORDER):
        if tiers.get(s, "") not in order:
            order.append(tiers.get(s, ""))
    return {s: order.index(tiers.get(s, "")) for s in SEVERITY_ORDER}


WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 760, 150, 40, 22, 10
MAX_SLOTS = 48
SLOTS = tuple(timedelta(minutes=m) for m in (1, 5, 15, 60, 360, 1440))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def volume(views: Sequence[View]) -> Volume | None:
    """The events of these incidents per slot of time (an hour, or a day over a longer span)."""
    if not views:
        return None
    start = min(v.incident.first_seen for v in views)
    end = max(v.incident.last_seen for v in views)
    span = max(end - start, timedelta(minutes=1))
    coarsest = timedelta(days=math.ceil(span / timedelta(days=MAX_SLOTS)))
    slot = next((s for s in SLOTS if span / s <= MAX_SLOTS), coarsest)
    origin = EPOCH + ((start - EPOCH) // slot) * slot if slot <= timedelta(days=1) else start.replace(
        hour=0, minute=0, second=0, microsecond=0)  # fmt: skip
    slots = max(1, math.ceil((end - origin) / slot + 1e-9))
    counts: list[dict[str, float]] = [{} for _ in range(slots)]
    for v in views:
        i = v.incident
        times = [t.time for t in i.timeline] or [i.first_seen]
        share = i.event_count / len(times)
        for t in times:
            n = min(max(int((t - origin) / slot), 0), slots - 1)
            counts[n][i.severity.value] = counts[n].get(i.severity.value, 0.0) + share
    peak = max(1, math.ceil(max(sum(c.values()) for c in counts)))
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    step = plot_w / slots
    bars = []
    for n, c in enumerate(counts):
        y, parts = float(HEIGHT - BOTTOM), list[tuple[float, float, str, int]]()
        for s in SEVERITY_ORDER:  # the least severe at the bottom
            events = round(c.get(s.value, 0.0))
            if events:
                h = max(plot_h * events / peak, 1.0)
                y -= h
                parts.append((round(y, 1), round(h, 1), s.value, events))
        at = origin + slot * n
        when = f"{at:%Y-%m-%d %H:%M}Z" if slot < timedelta(days=1) else f"{at:%Y-%m-%d}"
        detail = ", ".join(f"{e} {s}" for _, _, s, e in reversed(parts)) or "no events"
        bars.append(Bar(round(LEFT + step * n + 1, 1), round(max(step - 2, 1.0), 1), parts, f"{when}: {detail}"))
    every = max(1, slots // 6)
    fmt = "%H:%M" if slot < timedelta(days=1) else "%m-%d"
    ticks = [(round(LEFT + step * n, 1), f"{origin + slot * n:{fmt}}") for n in range(0, slots, every)]
    minutes = slot // timedelta(minutes=1)
    unit = f"{minutes // 1440} d" if minutes >= 1440 else f"{minutes // 60} h" if minutes >= 60 else f"{minutes} min"
    return Volume(WIDTH, HEIGHT, bars, ticks, peak, unit, sum(v.incident.event_count for v in views))
