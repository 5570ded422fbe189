"""Ingest throughput: decode + normalize + store on the embedded default (SQLite, WAL), in events/s,
at batch sizes 1, 100 and 500, beside a naive baseline measured in the same run: the same
normalizers, but stdlib `json` (body and stored document) and one INSERT + COMMIT per event, which
is what a first version of an Event Hubs handler usually does.

Both write to a fresh SQLite file in WAL mode with synchronous=NORMAL, so the ratio measures the
I/O choices (orjson, one transaction per batch, raw bodies kept), not the pragmas. The pipeline
also does work the baseline skips (depth check, raw-body evidence, dead-letter bookkeeping).
Each figure is the median of 3 runs.

    make bench            # or: .venv/bin/python -m bench.ingest [--messages N]; end to end: bench/e2e.py
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aegis import normalize
from aegis.decode import Limits, items
from aegis.events import Evidence
from aegis.pipeline import Message, Pipeline
from aegis.store import SqliteStore
from bench.generate import BodyGenerator

BATCH_SIZES = (1, 100, 500)
RUNS = 3


def run_aegis(bodies: list[bytes], batch_size: int, db: Path) -> int:
    store = SqliteStore(db)
    pipeline = Pipeline(store, keep_events=True)  # every event and body stored: what this bench measures
    events = 0
    for i in range(0, len(bodies), batch_size):
        counts = pipeline.process([Message(b, hub="bench") for b in bodies[i : i + batch_size]])
        events += counts.new_events
    store.close()
    return events


def run_baseline(bodies: list[bytes], batch_size: int, db: Path) -> int:
    """The naive handler: the same normalizers, but stdlib `json` for the body and the stored
    document (`dataclasses.asdict`), and one INSERT + COMMIT per event."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE events (id TEXT PRIMARY KEY, time TEXT, kind TEXT, resource TEXT, doc TEXT)")
    limits = Limits()
    events = 0
    for start in range(0, len(bodies), batch_size):
        for body in bodies[start : start + batch_size]:
            evidence = Evidence(hashlib.sha256(body).hexdigest(), "", "bench")
            for _, item in items(json.loads(body), limits):
                chosen = normalize.select(item)
                if chosen is None:
                    continue
                for event in chosen.normalize(item, evidence):
                    doc = json.dumps(dataclasses.asdict(event), default=str)
                    resource = event.resource.id if event.resource else None
                    conn.execute("BEGIN")
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                        (event.id, event.time.isoformat(), event.kind, resource, doc),
                    )
                    conn.execute("COMMIT")
                    events += cur.rowcount
    conn.close()
    return events


def measure(fn: Callable[[list[bytes], int, Path], int], bodies: list[bytes], batch_size: int) -> tuple[float, int]:
    rates, events = [], 0
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            events = fn(bodies, batch_size, Path(tmp) / "bench.db")
            rates.append(events / (time.perf_counter() - t0))
    return statistics.median(rates), events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--messages", type=int, default=2000, help="message bodies per run (half alerts, half envelopes)"
    )
    args = parser.parse_args()
    bodies = BodyGenerator().bodies(args.messages)
    alert_sizes = [len(b) for b in bodies[0::2]]
    print(f"{len(bodies)} bodies: {len(bodies) // 2} alerts (mean {statistics.mean(alert_sizes):.0f} B), "
          f"{len(bodies) - len(bodies) // 2} envelopes of 25 records; {RUNS} runs each, median")  # fmt: skip
    print(f"{'batch':>6} {'aegis events/s':>15} {'baseline events/s':>18} {'ratio':>7} {'events':>8}")
    for size in BATCH_SIZES:
        ours, n_ours = measure(run_aegis, bodies, size)
        base, n_base = measure(run_baseline, bodies, size)
        print(f"{size:>6} {ours:>15,.0f} {base:>18,.0f} {ours / base:>6.2f}x {n_ours:>8}")
        if n_ours != n_base:
            print(f"       note: aegis stored {n_ours} events, the baseline {n_base}")


if __name__ == "__main__":
    main()
