"""End to end: decode → normalize → correlate → durable state, in events/s and p50 / p99 batch
latency, at batch sizes 1, 8, 100 and 500 messages (8 messages are about 100 events, the batch
#15's latency target is set for), for three implementations of the same rules over the same stream
and a floor that runs no rules:

- aegis:  the pipeline (SQLite: correlation panes, incidents, the events they hold and the
          outbox committed every batch);
- naive:  what a first version does: stdlib json, one INSERT + COMMIT per event, and per batch the
          rules re-run from scratch over every stored event within reach (window + lateness), as a
          scheduled query would;
- duckdb: the same decode and normalization, then each batch as an Arrow table: matching,
          grouping and every rule kind in SQL, matches pruned to the window's reach, matches and
          triggers committed every batch in a DuckDB file (`duckdb_peer.py`);
- floor:  what this contract cannot avoid: decode and normalize each body into events with their
          ids (the pipeline's own code: hash, orjson, bounds, normalizers), with no correlation and
          no store at all. Its rate bounds what aegis can reach on this machine with these
          normalizers, whatever the rules and the store.

The stream is time-ordered with up to two minutes of jitter (within the one-hour lateness): half
Defender alerts, half diagnostic envelopes of 25 records, with Event Hubs positions. Each run
stops after `--budget` seconds; its rate counts what it processed by then (a slower
implementation thus runs on a shorter prefix, with less state: the comparison favours it).
At batch 500 aegis and duckdb run the whole stream, and their incidents per (detection, group)
must be identical (the bench fails otherwise).

    make bench            # or: .venv/bin/python -m bench.e2e [--messages N] [--budget S]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aegis import normalize
from aegis.correlate import detections
from aegis.correlate.detections import Detection
from aegis.correlate.engine import Correlator
from aegis.decode import Limits, items
from aegis.events import Event, Evidence, richer
from aegis.pipeline import Message, Pipeline, cycle_collector_paused
from aegis.store import SqliteStore
from bench.duckdb_peer import DuckPeer
from bench.generate import BodyGenerator

BATCH_SIZES = (1, 8, 100, 500)  # messages; 8 of this stream's are about 100 events
TARGET = 150_000  # events/s on one core, the goal set for the whole path
LATENESS = timedelta(hours=1)
Signals = dict[tuple[str, str], int]


class Run:
    """One implementation over one stream at one batch size."""

    def __init__(self, messages: Sequence[Message], batch: int, budget: float) -> None:
        self.messages, self.batch, self.budget = messages, batch, budget
        self.events = 0
        self.done = 0  # messages
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.complete = False

    def drive(self, step: Callable[[Sequence[Message]], int]) -> None:
        start = time.perf_counter()
        for i in range(0, len(self.messages), self.batch):
            t0 = time.perf_counter()
            with cycle_collector_paused():  # as the pipeline does for itself: the same for every implementation
                self.events += step(self.messages[i : i + self.batch])
            self.latencies.append(time.perf_counter() - t0)
            self.done = i + self.batch
            if time.perf_counter() - start > self.budget:
                break
        else:
            self.complete = True
        self.elapsed = time.perf_counter() - start

    @property
    def rate(self) -> float:
        return self.events / self.elapsed

    @property
    def p99_ms(self) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000
        return statistics.quantiles(self.latencies, n=100)[98] * 1000

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def run_aegis(run: Run, tmp: Path, dets: list[Detection]) -> Signals:
    store = SqliteStore(tmp / "aegis.db")
    pipeline = Pipeline(store, correlator=Correlator(dets, store, lateness=LATENESS))
    run.drive(lambda batch: pipeline.process(batch).events)
    signals = collections.Counter((i.detection, i.group) for i in store.incidents())
    store.close()
    return dict(signals)


def run_duckdb(run: Run, tmp: Path, dets: list[Detection]) -> Signals:
    peer = DuckPeer(tmp / "peer.duckdb", dets, lateness=LATENESS)
    # only its decode + normalize step and its directory are used: the events the correlator gets
    decoder = Pipeline(SqliteStore(tmp / "peer-directory.db"))

    def step(batch: Sequence[Message]) -> int:
        events: dict[str, Event] = {}
        now = datetime.now(UTC)
        for m in batch:
            for e in decoder._one(m, hashlib.sha256(m.body).hexdigest(), now)[0]:
                events[e.id] = richer(events[e.id], e) if e.id in events else e
        peer.process(decoder.directory.apply(list(events.values())))
        return len(events)

    run.drive(step)
    signals = peer.signals()
    peer.close()
    return signals


def _sqlite(path: Path, *schema: str) -> sqlite3.Connection:
    """A SQLite file in WAL mode, set up as the pipeline's store sets up its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-65536", *schema):
        conn.execute(statement)
    return conn


def run_naive(run: Run, tmp: Path, dets: list[Detection]) -> Signals:
    """Throughput only: its re-runs count an incident again each time, so it has no signals to compare."""
    conn = _sqlite(
        tmp / "naive.db",
        "CREATE TABLE events (id TEXT PRIMARY KEY, time TEXT, doc TEXT)",
        "CREATE INDEX events_by_time ON events (time)",
    )
    limits = Limits()
    reach = max(d.window or timedelta(0) for d in dets) + LATENESS

    def step(batch: Sequence[Message]) -> int:
        new, latest = 0, None
        for m in batch:
            evidence = Evidence(hashlib.sha256(m.body).hexdigest(), "", m.hub, m.partition, m.sequence_number)
            for _, item in items(json.loads(m.body), limits):
                chosen = normalize.select(item)
                if chosen is None:
                    continue
                for e in chosen.normalize(item, evidence):
                    conn.execute("BEGIN")
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?)",
                        (e.id, e.time.isoformat(), json.dumps(e.to_dict(), default=str)),
                    )
                    conn.execute("COMMIT")
                    new += cur.rowcount
                    latest = e.time if latest is None else max(latest, e.time)
        if latest is None:
            return new
        rows = conn.execute("SELECT doc FROM events WHERE time >= ?", ((latest - reach).isoformat(),)).fetchall()
        scratch = SqliteStore(":memory:")
        Correlator(dets, scratch, lateness=LATENESS).process([Event.from_dict(json.loads(r[0])) for r in rows])
        scratch.close()
        return new

    run.drive(step)
    conn.close()
    return {}


def run_floor(run: Run, tmp: Path, dets: list[Detection]) -> Signals:
    """What the contract cannot avoid: decode and normalize every body into events with their ids,
    through the pipeline's own code, and nothing else (no correlation, no store)."""
    decoder = Pipeline(SqliteStore(":memory:"))  # only its decode + normalize step is used

    def step(batch: Sequence[Message]) -> int:
        now = datetime.now(UTC)
        return len({e.id for m in batch for e in decoder._one(m, hashlib.sha256(m.body).hexdigest(), now)[0]})

    run.drive(step)
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="message bodies (half alerts, half envelopes)")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds at most per implementation and batch size")
    args = parser.parse_args()
    bodies = BodyGenerator(step=timedelta(milliseconds=250)).bodies(args.messages)
    messages = [Message(b, hub="bench", partition="0", sequence_number=n) for n, b in enumerate(bodies)]
    dets = detections.load().detections
    print(f"end to end: {len(messages)} bodies, time-ordered with jitter, {len(dets)} detections, "
          f"lateness {LATENESS}; at most {args.budget:.0f} s per run")  # fmt: skip
    print(f"{'batch':>6} {'impl':>7} {'events/s':>10} {'p50 batch ms':>13} {'p99 batch ms':>13} {'events':>8} "
          f"{'of stream':>10}")  # fmt: skip
    rates: dict[tuple[int, str], float] = {}
    small: Run | None = None
    for size in BATCH_SIZES:
        signals = {}
        for name, fn in (("aegis", run_aegis), ("naive", run_naive), ("duckdb", run_duckdb), ("floor", run_floor)):
            whole = size == BATCH_SIZES[-1] and name in ("aegis", "duckdb")  # the signal check needs the whole stream
            run = Run(messages, size, float("inf") if whole else args.budget)
            with tempfile.TemporaryDirectory() as tmp:
                signals[name] = fn(run, Path(tmp), dets)
            rates[size, name] = run.rate
            if size == 8 and name == "aegis":
                small = run
            share = "all" if run.complete else f"{run.done / len(messages):.0%}"
            print(f"{size:>6} {name:>7} {run.rate:>10,.0f} {run.p50_ms:>13.1f} {run.p99_ms:>13.1f} {run.events:>8} "
                  f"{share:>10}")  # fmt: skip
        if size == BATCH_SIZES[-1]:
            check(signals)
    print(f"ratios at batch {BATCH_SIZES[-1]}: " + ", ".join(
        f"{rates[BATCH_SIZES[-1], 'aegis'] / rates[BATCH_SIZES[-1], n]:.2f}x {n}" for n in ("naive", "duckdb", "floor")))  # fmt: skip
    if small is not None:
        per = small.events / max(len(small.latencies), 1)
        print(f"latency at about 100 events a batch (8 messages, {per:.0f} events): aegis p50 {small.p50_ms:.0f} ms, "
              f"p99 {small.p99_ms:.0f} ms (target: p99 under 50 ms)")  # fmt: skip
    top = BATCH_SIZES[-1]
    print(
        f"target {TARGET:,} events/s: the floor (decode + normalize + ids: no correlation, no store) reaches "
        f"{rates[top, 'floor']:,.0f} = {rates[top, 'floor'] / TARGET:.2f}× the target; aegis "
        f"{rates[top, 'aegis'] / TARGET:.3f}× the target"
    )
    print(
        f"end-to-end: {rates[top, 'aegis']:,.0f} events/s, {rates[top, 'aegis'] / rates[top, 'naive']:.2f}× naive, "
        f"{rates[top, 'aegis'] / rates[top, 'duckdb']:.2f}× duckdb"
    )


def check(signals: dict[str, Signals]) -> None:
    """aegis and duckdb must find the same incidents per (detection, group)."""
    ours, theirs = signals["aegis"], signals["duckdb"]
    if theirs != ours:
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise SystemExit(f"aegis and duckdb disagree on {len(diff)} (detection, group) pairs, e.g. {diff[:3]}")
    print(f"       same signals: {sum(ours.values())} incidents in {len(ours)} (detection, group) pairs")


if __name__ == "__main__":
    main()
