"""Soak: a long live-like stream through one pipeline (SQLite, correlation, the response recorded),
printing the process's resident memory as it goes, to show whether state stays bounded.

The stream advances in event time as a live one does (250 ms a message, two minutes of jitter),
so buckets go idle and expire and panes become final: what a worker that runs for days sees.
Bodies are generated batch by batch, never held all at once. Each line: messages and events so
far, events/s of CPU over the last stretch, RSS now (MiB), and the correlation state's size.

    make bench-soak       # or: .venv/bin/python -m bench.soak [--events N] [--batch B] [--every K]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from aegis import settings
from aegis.pipeline import Message
from aegis.runtime import build_pipeline
from aegis.store import SqliteStore
from bench.generate import BodyGenerator


def rss_mib() -> float:
    """Resident memory now (not the peak): from /proc, where there is one."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to run (13 a message on average)")
    parser.add_argument("--batch", type=int, default=100, help="messages a batch (host.json's maxEventBatchSize)")
    parser.add_argument("--every", type=int, default=100, help="print a line every this many batches")
    args = parser.parse_args()
    gen = BodyGenerator(step=timedelta(milliseconds=250))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "soak.db"
        store = SqliteStore(db)
        pipeline = build_pipeline(settings.load(db=db), store, respond=True)
        print(f"soak: {args.events:,} events in batches of {args.batch} messages; RSS in MiB")
        print(f"{'messages':>10} {'events':>11} {'events/s cpu':>13} {'rss':>7} {'buckets':>8} {'db MiB':>7}")
        messages = events = batches = 0
        mark_events, mark_cpu = 0, time.process_time()
        while events < args.events:
            bodies = gen.bodies(args.batch)
            batch = [Message(b, hub="soak", partition="0", sequence_number=messages + n) for n, b in enumerate(bodies)]
            events += pipeline.process(batch).events
            messages += len(batch)
            batches += 1
            if batches % args.every == 0 or events >= args.events:
                cpu = time.process_time()
                rate = (events - mark_events) / max(cpu - mark_cpu, 1e-9)
                mark_events, mark_cpu = events, cpu
                conn = sqlite3.connect(db)
                buckets = conn.execute("SELECT count(*) FROM buckets").fetchone()[0]
                conn.close()
                size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
                print(f"{messages:>10,} {events:>11,} {rate:>13,.0f} {rss_mib():>7.0f} {buckets:>8,} {size:>7.0f}",
                      flush=True)  # fmt: skip
        store.close()


if __name__ == "__main__":
    main()
