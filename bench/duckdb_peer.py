"""The same rules as windowed SQL on DuckDB: the benchmark's peer, and a check on the engine.

Each batch stores its events (as aegis does) and matches them with the detections' own compiled
conditions and group paths (what a match is stays one definition), appends the matches to a
DuckDB table and evaluates every rule
kind as SQL window queries over panes of the same geometry as the engine (`engine.geometry`),
for the groups the batch touched, committing matches and triggers in one transaction. Signals
are the triggers chained into incidents by the detection's suppression, per (detection, group).

    single            panes with a match
    event_count       SUM(events) OVER (RANGE BETWEEN width-1 PRECEDING AND CURRENT ROW) >= threshold
    value_count       COUNT(DISTINCT value) OVER (the same frame) >= threshold
    value_sum         SUM(value) OVER (the same frame) >= threshold
    temporal          SUM(matches of each step) OVER (the same frame) >= min, for every step
    temporal_ordered  one join per step, walking back from the last step's pane (as `kinds.py`)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from aegis.correlate.detections import Detection
from aegis.correlate.engine import geometry
from aegis.events import Event

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id VARCHAR PRIMARY KEY, t BIGINT, doc VARCHAR);
CREATE TABLE IF NOT EXISTS matches (
    det VARCHAR, grp VARCHAR, step INTEGER, t BIGINT, event_id VARCHAR, num DOUBLE, val VARCHAR,
    PRIMARY KEY (det, grp, step, event_id)
);
CREATE TABLE IF NOT EXISTS triggers (det VARCHAR, grp VARCHAR, p BIGINT, t BIGINT, PRIMARY KEY (det, grp, p));
"""


class DuckPeer:
    def __init__(self, path: Path, detections: Sequence[Detection], *, lateness: timedelta) -> None:
        self.db = duckdb.connect(str(path))
        self.db.execute(SCHEMA)
        lateness_us = lateness // _US
        self.detections = [(d, *geometry(d, lateness_us)) for d in detections]

    def process(self, events: Sequence[Event]) -> None:
        rows: list[tuple[str, str, int, int, str, float | None, str | None]] = []
        for d, _, _ in self.detections:
            for e in events:
                steps = [i for i, predicate in enumerate(d.predicates) if predicate(e)]
                if not steps:
                    continue
                value = None
                if d.value_getter is not None:
                    values = d.value_getter(e)
                    value = values[0] if values else None
                num = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
                t = (e.time - EPOCH) // _US
                for parts in itertools.product(*(g(e) for g in d.group_getters)):
                    grp = "|".join(str(p) for p in parts)
                    rows += [(d.id, grp, s, t, e.id, num, None if value is None else str(value)) for s in steps]
        self.db.execute("BEGIN TRANSACTION")
        self.db.execute(
            "INSERT OR IGNORE INTO events SELECT unnest($1), unnest($2)::BIGINT, unnest($3)",
            [[e.id for e in events], [(e.time - EPOCH) // _US for e in events], [e.to_json().decode() for e in events]],
        )
        if not rows:
            self.db.execute("COMMIT")
            return
        columns = [list(c) for c in zip(*rows, strict=True)]
        self.db.execute(
            "CREATE OR REPLACE TEMP TABLE batch AS SELECT unnest($1) det, unnest($2) grp, unnest($3) step, "
            "unnest($4)::BIGINT t, unnest($5) event_id, unnest($6)::DOUBLE num, unnest($7)::VARCHAR val",
            columns,
        )
        self.db.execute("INSERT OR IGNORE INTO matches SELECT * FROM batch")
        for d, pane, width in self.detections:
            self.db.execute(
                f"INSERT OR REPLACE INTO triggers SELECT $1, grp, p, t FROM ({_triggers(d, width)})",
                [d.id, pane, width],
            )
        self.db.execute("COMMIT")

    def signals(self) -> dict[tuple[str, str], int]:
        """Incidents per (detection, group): triggers chained while less than `suppress_for` apart."""
        out: dict[tuple[str, str], int] = {}
        for d, _, _ in self.detections:
            rows = self.db.execute(
                "SELECT grp, count(*) FILTER (WHERE gap IS NULL OR gap > ?) FROM ("
                "  SELECT grp, t - lag(t) OVER (PARTITION BY grp ORDER BY p) AS gap FROM triggers WHERE det = ?"
                ") GROUP BY grp",
                [d.suppress_for // _US, d.id],
            ).fetchall()
            out.update(((d.id, grp), n) for grp, n in rows)
        return out

    def close(self) -> None:
        self.db.close()


def _triggers(d: Detection, width: int) -> str:
    """SQL giving (grp, p, t) for each pane at which `d` fires, among the batch's groups, for panes
    the batch can change. Parameters: $1 detection id, $2 pane length (µs), $3 width in panes."""
    panes = (
        "touched AS (SELECT grp, min(t) AS t0 FROM batch WHERE det = $1 GROUP BY grp), "
        "rows AS (SELECT m.grp, m.t // $2 AS p, m.step, m.t, m.event_id, m.num, m.val, touched.t0 // $2 AS p0 "
        "         FROM matches m JOIN touched USING (grp) WHERE m.det = $1 AND m.t // $2 > touched.t0 // $2 - 2 * $3), "
        "steps AS (SELECT grp, p, step, any_value(p0) AS p0, count(DISTINCT event_id) AS n, min(t) AS first, "
        "          max(t) AS last FROM rows GROUP BY grp, p, step), "
        "panes AS (SELECT grp, p, any_value(p0) AS p0, count(DISTINCT event_id) AS events, max(t) AS t, "
        "          sum(num) AS total FROM (SELECT DISTINCT grp, p, p0, event_id, t, num FROM rows) GROUP BY grp, p)"
    )
    frame = "OVER (PARTITION BY grp ORDER BY p RANGE BETWEEN $3 - 1 PRECEDING AND CURRENT ROW)"
    match d.kind:
        case "single":
            return f"WITH {panes} SELECT grp, p, t FROM panes WHERE p >= p0"
        case "event_count":
            return f"WITH {panes} SELECT grp, p, t FROM (SELECT *, sum(events) {frame} AS w FROM panes) WHERE p >= p0 AND w >= {d.threshold}"
        case "value_sum":
            return f"WITH {panes} SELECT grp, p, t FROM (SELECT *, sum(total) {frame} AS w FROM panes) WHERE p >= p0 AND w >= {d.threshold}"
        case "value_count":
            return (
                f"WITH {panes}, v AS (SELECT grp, p, max(w) AS w FROM (SELECT grp, p, count(DISTINCT val) {frame} AS w "
                f"FROM rows) GROUP BY grp, p) SELECT grp, p, t FROM panes JOIN v USING (grp, p) "
                f"WHERE p >= p0 AND w >= {d.threshold}"
            )
        case "temporal":
            assert d.steps is not None
            pivot = ", ".join(f"sum(n) FILTER (WHERE step = {i}) AS n{i}" for i in range(len(d.steps)))
            sums = ", ".join(f"sum(coalesce(n{i}, 0)) {frame} AS s{i}" for i in range(len(d.steps)))
            need = " AND ".join(f"s{i} >= {s.min}" for i, s in enumerate(d.steps))
            return (
                f"WITH {panes}, per AS (SELECT grp, p, {pivot} FROM steps GROUP BY grp, p), "
                f"w AS (SELECT grp, p, {sums} FROM per) "
                f"SELECT grp, p, t FROM panes JOIN w USING (grp, p) WHERE p >= p0 AND {need}"
            )
        case "temporal_ordered":
            return _ordered(d, panes)
    raise ValueError(f"no SQL for kind {d.kind}")


def _ordered(d: Detection, panes: str) -> str:
    """Walk back from each pane holding the last step: per step, the latest pane at which the
    matches eligible so far (not after the bound) reach the step's minimum."""
    assert d.steps is not None
    last = len(d.steps) - 1
    ctes = [f"c{last + 1} AS (SELECT grp, p, p AS q, last AS bound FROM steps WHERE step = {last} AND p >= p0)"]
    for s in range(last, -1, -1):
        ctes.append(
            f"j{s} AS (SELECT c.grp, c.p, x.p AS q, x.last, sum(x.n) OVER (PARTITION BY c.grp, c.p ORDER BY x.p DESC "
            f"  ROWS UNBOUNDED PRECEDING) AS cum, c.bound FROM c{s + 1} c JOIN steps x ON x.grp = c.grp "
            f"  AND x.step = {s} AND x.p <= c.q AND x.p > c.p - $3 AND x.first <= c.bound), "
            f"c{s} AS (SELECT grp, p, max(q) AS q, arg_max(least(bound, last), q) AS bound FROM j{s} "
            f"  WHERE cum >= {d.steps[s].min} GROUP BY grp, p)"
        )
    return f"WITH {panes}, {', '.join(ctes)} SELECT c0.grp, c0.p, panes.t FROM c0 JOIN panes USING (grp, p)"
