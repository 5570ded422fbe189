"""The correlator against an independent implementation of the same rule kinds: windowed SQL on
DuckDB (`bench/duckdb_peer.py`). Both must find the same incidents per (detection, group)."""

from __future__ import annotations

import collections
from datetime import timedelta

import pytest

from aegis.correlate import detections
from bench.e2e import Run, run_aegis, run_duckdb, run_floor
from bench.generate import BodyGenerator

DETECTIONS = detections.load().detections


@pytest.mark.parametrize("batch", [7, 120])
def test_the_engine_and_the_sql_peer_find_the_same_incidents(tmp_path, batch):
    from aegis.pipeline import Message

    bodies = BodyGenerator(31, accounts=3, callers=6, step=timedelta(milliseconds=400)).bodies(240)
    messages = [Message(b, hub="t", partition="0", sequence_number=n) for n, b in enumerate(bodies)]
    ours = run_aegis(Run(messages, batch, float("inf")), tmp_path, DETECTIONS)
    theirs = run_duckdb(Run(messages, batch, float("inf")), tmp_path, DETECTIONS)
    assert ours == theirs
    kinds = {d.kind for d in DETECTIONS if any(name == d.id for name, _ in ours)}
    assert {"single", "event_count", "value_sum", "temporal_ordered"} <= kinds


@pytest.mark.parametrize("detection", DETECTIONS, ids=lambda d: d.id)
def test_the_sql_peer_agrees_on_every_detection_test_case(tmp_path, detection):
    """Every rule kind, through the detections' own test events (which include the near misses)."""
    from aegis.correlate import selftest
    from aegis.correlate.engine import Correlator
    from aegis.store import SqliteStore
    from bench.duckdb_peer import DuckPeer

    for n, case in enumerate(detection.tests):
        events = selftest.build_events(case)
        store = SqliteStore(":memory:")
        Correlator([detection], store, lateness=timedelta(days=1)).process(events)
        peer = DuckPeer(tmp_path / f"{n}.duckdb", [detection], lateness=timedelta(days=1))
        peer.process(events)
        ours = dict(collections.Counter((i.detection, i.group) for i in store.incidents()))
        assert peer.signals() == ours, case.name
        assert len(ours) == case.expect.incidents or case.expect.incidents > 1
        peer.close()
        store.close()


def test_the_floor_counts_the_events_the_pipeline_counts(tmp_path):
    """The floor's rate is comparable only if it counts what the pipeline counts: one per event."""
    from aegis.pipeline import Message

    bodies = BodyGenerator(7, accounts=2, callers=4).bodies(40)
    messages = [Message(b, hub="t", partition="0", sequence_number=n) for n, b in enumerate(bodies)]
    floor, ours = Run(messages, 9, float("inf")), Run(messages, 9, float("inf"))
    run_floor(floor, tmp_path, DETECTIONS)
    run_aegis(ours, tmp_path, DETECTIONS)
    assert floor.complete
    assert floor.events == ours.events == 20 + 20 * 25


CONDITIONS = [
    {"field": "kind", "regex": "chat.*create$"},
    {"field": "kind", "suffix": "_CREATE"},
    {"field": "resource.name", "prefix": "OAI-1"},
    {"not": {"field": "entities.user", "exists": True}},
    {"field": "attributes.http_status", "in": [401, "403", 200]},
    {"any": [{"field": "severity", "equals": "HIGH"}, {"field": "attributes.http_status", "lte": 399}]},
    {"all": [{"field": "source", "equals": "resource_log"}, {"field": "attributes.total_tokens", "gt": 100}]},
    {"field": "entities.ip.address", "exists": True},
]


@pytest.mark.parametrize("raw", CONDITIONS, ids=lambda c: str(c)[:60])
def test_the_sql_peer_compiles_every_operator_as_the_engine_evaluates_it(tmp_path, raw):
    """The peer is an oracle only if its SQL means what `conditions.py` means, operator by operator."""
    import hashlib
    from datetime import UTC, datetime

    from pydantic import TypeAdapter

    from aegis.correlate.conditions import Condition
    from aegis.correlate.paths import compile_path
    from aegis.pipeline import Message, Pipeline
    from aegis.store import SqliteStore
    from bench.duckdb_peer import DuckPeer, _paths, _sql

    condition = TypeAdapter(Condition).validate_python(raw)
    decoder = Pipeline(SqliteStore(":memory:"))
    bodies = BodyGenerator(5, accounts=2, callers=3).bodies(30)
    events = [e for b in bodies for e in decoder._one(Message(b, hub="t"), hashlib.sha256(b).hexdigest(),
                                                        datetime.now(UTC))[0]]  # fmt: skip
    peer = DuckPeer(tmp_path / "c.duckdb", [], lateness=timedelta(hours=1))
    detection = DETECTIONS[0].model_copy(update={"match": condition, "steps": None, "group_by": ["id"]})
    peer.getters = [(p, compile_path(p)) for p in _paths(detection)]
    peer.db.register("ev", peer._columns(events))
    held = {i for (i,) in peer.db.execute(f'SELECT "#id" FROM ev WHERE {_sql(condition)}').fetchall()}
    expected = {e.id for e in events if condition.compile()(e)}
    assert held == expected
    assert 0 < len(expected) < len(events) or raw.get("not")  # each condition splits the stream
    peer.close()


def test_the_table_layouts_write_what_they_say_and_the_pipeline_on_tables_counts_its_writes():
    from bench import tables
    from tests.conftest import azurite_connection

    conn = azurite_connection()
    got = tables.layouts(conn, buckets=7, batches=2)
    shards = len({tables.shard(f"k0-{i}", 16) for i in range(7)})  # the partitions the first batch touches
    assert [(m["transactions"], m["rows"]) for m in got.values()] == [(7, 42), (shards, 42), (shards, 14)]
    run = tables.pipeline_on_tables(conn, messages=16, batch=8)
    assert run["events"] > 0
    assert run["writes_per_batch"] > 0
