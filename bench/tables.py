"""The Table store (Azurite): what a batch costs the worker's CPU, and what a layout with fewer
transactions would cost.

1. The bench stream through the pipeline on a `TableStore`: events/s of CPU and of wall time,
   bucket writes a batch (each one entity-group transaction in the bucket's partition) and the
   CPU each costs. That CPU is the SDK's (azure-data-tables and azure-core build each transaction
   as a multipart request, each operation as a request of its own, and parse the multipart
   answer), and it is what bounds a worker: Azurite answers in a fraction of it.
2. A prototype of the write pattern alone, not of the store: one batch's bucket changes (a head, a
   pane chunk and a record of entities each, the sizes of the bench stream's) written three ways
   with the same SDK calls: a transaction per bucket (the store's layout), the buckets spread
   over 16 partitions by a hash of their key (a transaction per partition, at most 100
   operations), and the same with one row per bucket change. Each row written is read back and
   counted.

    make bench-tables    # or, with Azurite running: .venv/bin/python -m bench.tables
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient

from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.pipeline import Message, Pipeline, cycle_collector_paused
from aegis.store.base import BucketWrite, Committed
from aegis.store.tables import PARALLEL, TableStore
from bench.generate import BodyGenerator

ROWS = {"bucket": 400, "chunk-1": 1700, "entities-0": 1400}  # bytes: the bench stream's averages


class Counted(TableStore):
    """The store, counting the bucket writes it commits."""

    writes = 0

    def commit_buckets(self, writes: Sequence[BucketWrite]) -> Committed:
        self.writes += len(writes)
        return super().commit_buckets(writes)


def pipeline_on_tables(conn: str, messages: int, batch: int) -> dict[str, float]:
    bodies = BodyGenerator(step=timedelta(milliseconds=250)).bodies(messages)
    items = [Message(b, hub="bench", partition="0", sequence_number=n) for n, b in enumerate(bodies)]
    prefix = "b" + uuid.uuid4().hex[:12]
    store = Counted.from_connection_string(conn, prefix=prefix)
    pipe = Pipeline(store, correlator=Correlator(detections.load().detections, store, lateness=timedelta(hours=1)))
    events = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, len(items), batch):
        with cycle_collector_paused():
            events += pipe.process(items[i : i + batch]).events
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    batches = -(-len(items) // batch)
    store.close()
    _drop(conn, prefix)
    return {"events": events, "cpu_rate": events / cpu, "wall_rate": events / wall,
            "writes_per_batch": store.writes / batches, "cpu_per_write_ms": cpu / max(store.writes, 1) * 1000}  # fmt: skip


def _drop(conn: str, prefix: str) -> None:
    service = TableServiceClient.from_connection_string(conn)
    for table in [t for t in service.list_tables() if t.name.startswith(prefix)]:
        service.delete_table(table.name)
    blobs = BlobServiceClient.from_connection_string(conn)
    for container in blobs.list_containers(name_starts_with=prefix):
        blobs.delete_container(container.name)


Ops = list[tuple[str, dict[str, Any], dict[str, Any]]]


def per_bucket(buckets: int, batch: int) -> list[Ops]:
    return [[("upsert", {"PartitionKey": f"k{batch}-{i}", "RowKey": row, "doc": _doc(row)}, {"mode": UpdateMode.REPLACE})
             for row in ROWS] for i in range(buckets)]  # fmt: skip


def sharded(shards: int, rows: Sequence[str]) -> Callable[[int, int], list[Ops]]:
    def layout(buckets: int, batch: int) -> list[Ops]:
        by: dict[str, Ops] = collections.defaultdict(list)
        for i in range(buckets):
            key = f"k{batch}-{i}"
            pk = f"s{shard(key, shards)}"
            for row in rows:
                op = {"PartitionKey": pk, "RowKey": f"{key}-{row}", "doc": _doc(row)}
                by[pk].append(("upsert", op, {"mode": UpdateMode.REPLACE}))
        return [ops[j : j + 100] for ops in by.values() for j in range(0, len(ops), 100)]

    return layout


def shard(key: str, shards: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % shards


def _doc(row: str) -> str:
    return "x" * ROWS[row]


LAYOUTS: dict[str, Callable[[int, int], list[Ops]]] = {
    "a transaction per bucket (3 rows)": per_bucket,
    "16 partitions by hash (3 rows)": sharded(16, list(ROWS)),
    "16 partitions by hash (1 row)": sharded(16, ["bucket"]),
}


def layouts(conn: str, *, buckets: int = 280, batches: int = 4) -> dict[str, dict[str, float]]:
    """Per layout: CPU and wall time a batch of `buckets` bucket changes takes, the transactions it
    makes, and the rows it wrote (read back)."""
    service = TableServiceClient.from_connection_string(conn)
    out = {}
    with ThreadPoolExecutor(PARALLEL) as pool:
        for name, layout in LAYOUTS.items():
            table_name = "p" + uuid.uuid4().hex[:12]
            table: TableClient = service.create_table(table_name)
            try:
                groups = [layout(buckets, b) for b in range(batches)]
                cpu, wall = time.process_time(), time.perf_counter()
                for ops in groups:
                    list(pool.map(table.submit_transaction, ops))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                rows = sum(1 for _ in table.list_entities(select=["RowKey"]))
                out[name] = {"cpu_ms": cpu / batches * 1000, "wall_ms": wall / batches * 1000,
                             "transactions": len(groups[0]), "rows": rows}  # fmt: skip
            finally:
                service.delete_table(table_name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=240, help="bench messages through the pipeline")
    parser.add_argument("--batch", type=int, default=8, help="messages a batch (8: about 100 events)")
    args = parser.parse_args()
    conn = os.environ.get("AEGIS_TEST_STORAGE", "UseDevelopmentStorage=true")
    got = pipeline_on_tables(conn, args.messages, args.batch)
    print(f"pipeline on the Table store, {args.messages} messages in batches of {args.batch}: "
          f"{got['events']:,.0f} events, {got['cpu_rate']:,.0f} events/s of CPU, {got['wall_rate']:,.0f} of wall time; "
          f"{got['writes_per_batch']:.0f} bucket transactions a batch, {got['cpu_per_write_ms']:.1f} ms of CPU each")  # fmt: skip
    buckets = round(got["writes_per_batch"])
    print(f"\nthe write pattern of {buckets} bucket changes a batch, three layouts (same SDK, same Azurite):")
    print(f"{'layout':>36} {'transactions':>13} {'cpu ms':>8} {'wall ms':>8} {'rows':>6} {'cpu ratio':>10}")
    measured = layouts(conn, buckets=buckets)
    base = measured[next(iter(LAYOUTS))]["cpu_ms"]
    for name, m in measured.items():
        print(f"{name:>36} {m['transactions']:>13,.0f} {m['cpu_ms']:>8,.0f} {m['wall_ms']:>8,.0f} {m['rows']:>6,.0f} "
              f"{m['cpu_ms'] / base:>9.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
