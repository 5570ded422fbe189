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
