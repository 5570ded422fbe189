"""The evidence timeline as a chart: one lane per kind of evidence, a mark per event, on event time.

Computed here and drawn by the template as inline SVG (no script, no external asset): the page
stays readable under a Content-Security-Policy that forbids scripts. Labels are data, escaped by
the template like every other incident field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aegis.records import Incident

WIDTH, LANE, LEFT, TOP = 760, 28, 210, 24
MAX_LANES = 12


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    label: str  # shown on hover (an SVG <title>)


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    lanes: list[tuple[float, str]]  # (y, the lane's label)
    marks: list[Mark]
    ticks: list[tuple[float, str, str]]  # (x, time, text-anchor)
    count: int  # events drawn (the incident's evidence sample)


def chart(incident: Incident) -> Chart:
    entries = sorted(incident.timeline, key=lambda t: t.time)
    names: list[str] = []
    for t in entries:
        name = _lane(t.step, t.kind)
        if name not in names:
            names.append(name)
    shown = names if len(names) <= MAX_LANES else [*names[: MAX_LANES - 1], "other"]
    start, end = incident.first_seen, max(incident.last_seen, incident.first_seen)
    span = max((end - start).total_seconds(), 1.0)
    plot = WIDTH - LEFT - 20

    def x(at: datetime) -> float:
        return round(LEFT + plot * min(max((at - start).total_seconds() / span, 0.0), 1.0), 1)

    lanes = [(TOP + LANE * n + LANE / 2, name) for n, name in enumerate(shown)]
    row = {name: y for y, name in lanes}
    marks = []
    for t in entries:
        name = _lane(t.step, t.kind)
        y = row.get(name) or row["other"]
        marks.append(Mark(x(t.time), y, f"{t.time:%Y-%m-%d %H:%M:%S}Z {t.source} {t.kind} {t.title or ''}".strip()))
    height = TOP + LANE * max(len(lanes), 1) + 30
    ticks = [(x(at), f"{at:%H:%M:%S}", anchor)
             for at, anchor in ((start, "start"), (start + (end - start) / 2, "middle"), (end, "end"))]  # fmt: skip
    return Chart(WIDTH, height, LEFT, lanes, marks, ticks, len(marks))


def _lane(step: str | None, kind: str) -> str:
    """A lane per step of the detection (what the evidence means), else per kind of event."""
    name = step or kind.rsplit("/", 1)[-1]
    return name if len(name) <= 30 else name[:29] + "…"
