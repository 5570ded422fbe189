"""The same rules as SQL on DuckDB: the benchmark's peer, and a check on the engine.

Written as a DuckDB user would write it. Each batch of normalized events becomes one Arrow table
(a column per field path the detections name: its string, number and boolean values as lists);
each detection's conditions and group paths are compiled once into SQL over that table, so the
matching, the grouping and the aggregation all run in DuckDB, with no Python per event beyond
decode, normalize and the columns. Matches are its only state: appended to a table, and pruned
to what the window and the lateness can still reach. Every rule kind is a window query over
panes of the same geometry as the engine (`engine.geometry`), for the groups the batch touched;
matches, triggers and the pruning are one transaction per batch. Signals are the triggers
chained into incidents by the detection's suppression, per (detection, group).

    single            panes with a match
    event_count       SUM(events) OVER (RANGE BETWEEN width-1 PRECEDING AND CURRENT ROW) >= threshold
    value_count       COUNT(DISTINCT value) OVER (the same frame) >= threshold
    value_sum         SUM(value) OVER (the same frame) >= threshold
    temporal          SUM(matches of each step) OVER (the same frame) >= min, for every step
    temporal_ordered  one join per step, walking back from the last step's pane (as `kinds.py`)

Conditions compile as `conditions.py` evaluates them (a test holds when any value of the path
does; string operators compare case-insensitively, numeric ones only numbers); the bench checks
that both find the same incidents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute

from aegis.correlate.conditions import All, AnyOf, Condition, FieldTest, Not
from aegis.correlate.detections import Detection
from aegis.correlate.engine import geometry
from aegis.correlate.paths import compile_path
from aegis.events import Event
from aegis.tenancy import TENANT_PART

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

SCHEMA = """
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
        self.paths = sorted({p for d in detections for p in _paths(d)})
        self.getters = [(p, compile_path(p)) for p in self.paths]
        self.matching = " UNION ALL ".join(_matches(d) for d in detections)
        # how far back a match can still count: the window and the lateness, and a pane each side
        self.reach = {
            d.id: (d.window or timedelta(0)) // _US + lateness_us + 2 * pane for d, pane, _ in self.detections
        }
        self.newest: int | None = None

    def process(self, events: Sequence[Event]) -> None:
        if not events:
            return
        batch = self._columns(events)
        self.newest = max(self.newest or 0, pa.compute.max(batch.column("#t")).as_py())
        self.db.register("ev", batch)
        self.db.execute("BEGIN TRANSACTION")
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE batch AS {self.matching}")
        self.db.execute("INSERT OR IGNORE INTO matches SELECT * FROM batch")
        for d, pane, width in self.detections:
            self.db.execute(
                f"INSERT OR REPLACE INTO triggers SELECT $1, grp, p, t FROM ({_triggers(d, width)})",
                [d.id, pane, width],
            )
            self.db.execute("DELETE FROM matches WHERE det = $1 AND t < $2", [d.id, self.newest - self.reach[d.id]])
        self.db.execute("COMMIT")
        self.db.unregister("ev")

    def _columns(self, events: Sequence[Event]) -> pa.Table:
        """The batch as Arrow: id, time (µs) and, per field path, its values split by type."""
        # the event's own columns are named as no field path can be
        cols: dict[str, list[object]] = {"#id": [e.id for e in events], "#t": [(e.time - EPOCH) // _US for e in events],
                                         "#tenant": [e.tenant for e in events]}  # fmt: skip
        for path, get in self.getters:
            strings: list[object] = []
            numbers: list[object] = []
            flags: list[object] = []
            for e in events:
                values = get(e)
                strings.append([str(v.value if isinstance(v, Enum) else v) for v in values if isinstance(v, str)])
                numbers.append([float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)])
                flags.append([v for v in values if isinstance(v, bool)])
            cols[path], cols[f"{path}#n"], cols[f"{path}#b"] = strings, numbers, flags
        types = {"#id": pa.string(), "#t": pa.int64(), "#tenant": pa.string(),
                 **{c: _LIST_TYPES.get(c[-2:], pa.list_(pa.string())) for c in cols if not c.startswith("#")}}  # fmt: skip
        return pa.table({c: pa.array(v, type=types[c]) for c, v in cols.items()})

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


_LIST_TYPES = {"#n": pa.list_(pa.float64()), "#b": pa.list_(pa.bool_())}


def _conditions(d: Detection) -> list[Condition]:
    return [s.match for s in d.steps] if d.steps else [d.match] if d.match is not None else []


def _paths(d: Detection) -> set[str]:
    def walk(c: Condition) -> Iterable[str]:
        if isinstance(c, FieldTest):
            yield c.field
        elif isinstance(c, All | AnyOf):
            for part in c.all if isinstance(c, All) else c.any:
                yield from walk(part)
        elif isinstance(c, Not):
            yield from walk(c.not_)

    return {*d.group_by, *([d.field] if d.field else []), *(p for c in _conditions(d) for p in walk(c))}


def _matches(d: Detection) -> str:
    """SQL over the batch `ev`: (det, grp, step, t, event_id, num, val) per match of `d`, one row
    per step it matches and group it falls in (the product of the group paths' values)."""
    conditions = [_sql(c) for c in _conditions(d)]
    steps = ", ".join(f"CASE WHEN {c} THEN {i} END" for i, c in enumerate(conditions))
    groups = ", ".join(f"unnest(ev.{_q(p)}) AS g{i}(v)" for i, p in enumerate(d.group_by))
    grp = " || '|' || ".join(f"g{i}.v" for i in range(len(d.group_by)))
    if d.by_tenant:  # the group carries the event's tenant, as the engine's does (`aegis.tenancy`)
        grp = f"""coalesce({_literal(TENANT_PART)} || ev."#tenant" || '|', '') || {grp}"""
    if d.field:
        s, n = f"ev.{_q(d.field)}", f"ev.{_q(d.field + '#n')}"
        num, val = f"{n}[1]", f"coalesce({s}[1], CAST({n}[1] AS VARCHAR))"
    else:
        num, val = "NULL::DOUBLE", "NULL::VARCHAR"
    return (
        f"SELECT {_literal(d.id)} AS det, grp, step, t, event_id, num, val FROM ("
        f'  SELECT {grp} AS grp, ev."#t" AS t, ev."#id" AS event_id,'
        f" {num} AS num, {val} AS val,"
        f"    unnest(list_filter([{steps}], lambda x: x IS NOT NULL)) AS step"
        f"  FROM ev, {groups} WHERE {' OR '.join(f'({c})' for c in conditions)})"
    )


def _sql(c: Condition) -> str:
    """A condition as a SQL boolean over the batch's columns."""
    if isinstance(c, All):
        return "(" + " AND ".join(_sql(x) for x in c.all) + ")"
    if isinstance(c, AnyOf):
        return "(" + " OR ".join(_sql(x) for x in c.any) + ")"
    if isinstance(c, Not):
        return f"(NOT {_sql(c.not_)})"
    s, n, b = (f"ev.{_q(c.field + suffix)}" for suffix in ("", "#n", "#b"))
    given = c.model_fields_set

    def strings(function: str, needle: str | None) -> str:  # any string value, lowered, for which it holds
        return f"len(list_filter({s}, lambda x: {function}(lower(x), {_literal((needle or '').lower())}))) > 0"

    def any_of(values: Iterable[object]) -> str:
        parts = []
        for v in values:
            if isinstance(v, bool):
                parts.append(f"list_contains({b}, {str(v).lower()})")
            elif isinstance(v, int | float):
                parts.append(f"list_contains({n}, {float(v)!r})")
            elif isinstance(v, str):
                parts.append(f"list_contains(list_transform({s}, lambda x: lower(x)), {_literal(v.lower())})")
        return "(" + " OR ".join(parts) + ")" if parts else "FALSE"

    if "equals" in given:
        return any_of([c.equals])
    if "in_" in given:
        return any_of(c.in_ or [])
    if "prefix" in given:
        return strings("starts_with", c.prefix)
    if "suffix" in given:
        return strings("ends_with", c.suffix)
    if "contains" in given:
        return strings("contains", c.contains)
    if "regex" in given:
        return f"len(list_filter({s}, lambda x: regexp_matches(x, {_literal(c.regex or '')}, 'i'))) > 0"
    if "exists" in given:
        return f"((len({s}) + len({n}) + len({b}) > 0) = {str(bool(c.exists)).lower()})"
    op = next(o for o in ("gt", "gte", "lt", "lte") if o in given)
    sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    return f"len(list_filter({n}, lambda x: x {sign} {float(getattr(c, op))!r})) > 0"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
