"""The correlator on both stores: idempotent under redelivery, independent of arrival order within
the allowed lateness, and correct with several processes writing the same state at once."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.events import entity_from_dict
from aegis.pipeline import Message, Pipeline
from aegis.store import Store
from aegis.store.base import BucketWrite
from bench.generate import BodyGenerator
from tests.conftest import ROOT, SAMPLES, azurite_connection

DETECTIONS = detections.load().detections
LATENESS = timedelta(hours=3)


def stream(n: int = 60, seed: int = 11) -> list[bytes]:
    """Alerts and 25-record envelopes whose event times fall within two hours."""
    return BodyGenerator(seed, accounts=3, callers=4, span=timedelta(hours=2)).bodies(n)


def run(store: Store, bodies: list[bytes], batch: int) -> None:
    p = Pipeline(store, correlator=Correlator(DETECTIONS, store, lateness=LATENESS))
    for i in range(0, len(bodies), batch):
        p.process([Message(b, hub="test") for b in bodies[i : i + batch]])


def snapshot(store: Store) -> list[tuple]:
    return sorted(
        (i.id, i.detection, i.event_ids, i.severity.value, i.first_seen, i.last_seen) for i in store.incidents()
    )


def test_samples_correlate_into_the_expected_incidents(store: Store):
    bodies = [p.read_bytes() for p in sorted(SAMPLES.rglob("*.json"))]
    run(store, bodies, 100)
    by_detection = {i.detection for i in store.incidents()}
    assert {
        "ai-prompt-attack-then-exfiltration", "ai-key-brute-force", "ai-endpoint-involvement",
        "ai-control-plane-tampering", "defender-ai-alert",
    } <= by_detection  # fmt: skip
    [attack] = [i for i in store.incidents() if i.detection == "ai-prompt-attack-then-exfiltration"]
    assert attack.event_ids == (
        "2516861522999999999_a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b",
        "2516861511399999999_a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a5b",
    )
    assert {"LLM01", "LLM02"} <= set(attack.owasp_llm)
    [endpoint] = [i for i in store.incidents() if i.detection == "ai-endpoint-involvement"]
    assert "4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2f" in {e.key for e in endpoint.entities}


def test_replaying_the_same_input_gives_the_identical_incident_set(store: Store):
    bodies = stream()
    run(store, bodies, 20)
    first = snapshot(store)
    assert first
    run(store, bodies, 7)
    assert snapshot(store) == first


def test_input_shuffled_within_the_lateness_gives_the_same_incidents(sqlite_store, tmp_path):
    from aegis.store import SqliteStore

    bodies = stream()
    run(sqlite_store, bodies, 1000)
    shuffled = bodies[:]
    random.Random(3).shuffle(shuffled)
    other = SqliteStore(tmp_path / "shuffled.db")
    run(other, shuffled, 1)
    assert snapshot(other) == snapshot(sqlite_store)


def test_incidents_built_on_what_a_worker_kept_are_those_built_from_the_stored_panes(tmp_path):
    """A worker keeps each state it wrote, with what its incidents' spans have folded so far, and
    builds them again from there. The same stream through a new worker at every batch (each state
    read back, nothing kept) gives the same incidents to the byte: a stream shuffled within the
    lateness (late events change panes already folded), and one in order with a short lateness
    (panes made final and dropped, incidents carried past them)."""
    from aegis.store import SqliteStore

    shuffled = stream(400, seed=5)
    random.Random(5).shuffle(shuffled)
    in_order = BodyGenerator(7, accounts=3, callers=4, span=timedelta(hours=6)).bodies(400)
    for name, bodies, lateness in (("shuffled", shuffled, LATENESS), ("in-order", in_order, timedelta(minutes=5))):
        out, late = [], 0
        for fresh in (False, True):
            store = SqliteStore(tmp_path / f"{name}-{fresh}.db")
            p = Pipeline(store, correlator=Correlator(DETECTIONS, store, lateness=lateness))
            for i in range(0, len(bodies), 8):
                if fresh:
                    p = Pipeline(store, correlator=Correlator(DETECTIONS, store, lateness=lateness))
                late += p.process([Message(b, hub="test") for b in bodies[i : i + 8]]).late
            out.append(sorted(i.to_json() for i in store.incidents()))
        assert len(out[0]) > 50
        assert out[0] == out[1], name
        assert (late > 0) == (name == "in-order")  # there, panes were made final on the way


def test_a_kept_state_holds_the_json_only_of_the_pane_chunks_its_last_write_rewrote(tmp_path):
    """A pane keeps its JSON while its chunk is rewritten batch after batch, and lets it go once a
    write leaves that chunk as it was: on a stream in event-time order, the panes of a state's
    older chunks never change again, and their JSON would double what a kept state takes. The
    chunks written stay those a state read back from the store would write."""
    from aegis.correlate.engine import PANES_PER_CHUNK, State
    from aegis.store import SqliteStore

    bodies = BodyGenerator(7, accounts=3, callers=4, span=timedelta(hours=6)).bodies(600)
    store = SqliteStore(tmp_path / "kept.db")
    correlator = Correlator(DETECTIONS, store, lateness=timedelta(hours=3))
    p = Pipeline(store, correlator=correlator)
    for i in range(0, len(bodies), 8):
        p.process([Message(b, hub="test") for b in bodies[i : i + 8]])
    states = [state for _, state in correlator._cache.values()]
    panes = sum(len(s.panes) for s in states)
    holding = [(n, i // PANES_PER_CHUNK) for n, s in enumerate(states) for i, pane in s.panes.items()
               if pane._json is not None]  # fmt: skip
    assert set(holding) <= {(n, c) for n, s in enumerate(states) for c in s.warm}
    assert sum(len(s.panes) > PANES_PER_CHUNK for s in states) > 10  # states of several chunks
    assert len(holding) < panes / 2, (len(holding), panes)
    stored = store.load_buckets(list(correlator._cache))
    for key, bucket in stored.items():
        again = State.load(bucket.doc, bucket.chunks, bucket.entities)
        again.dirty = set(bucket.chunks)
        assert again.dump()[1] == bucket.chunks, key  # what was written is what a state read back writes


def test_a_stale_bucket_write_is_a_conflict_and_changes_nothing(store: Store):
    bodies = stream(10)
    run(store, bodies, 100)
    key = next(iter(store.load_buckets([i.bucket for i in store.incidents()])))
    bucket = store.load_buckets([key])[key]
    stale = bucket.version
    assert bucket.chunks  # the panes, stored apart from the head
    chunk = min(bucket.chunks)
    fresh = BucketWrite(key, stale, orjson.dumps(bucket.doc), chunks={chunk: b"[]"})
    first = store.commit_buckets([fresh])
    assert first.conflicts == set()
    assert first.versions[key] != stale
    lost = BucketWrite(key, stale, b"{}", chunks={chunk: b"[1]"}, drop_chunks=[c for c in bucket.chunks if c != chunk])
    assert store.commit_buckets([lost]).conflicts == {key}  # the version moved on: the second write loses
    assert store.commit_buckets([BucketWrite(key, None, b"{}")]).conflicts == {key}
    reread = store.load_buckets([key])[key]
    assert reread.version == first.versions[key]
    assert reread.doc == bucket.doc
    assert reread.chunks == {**bucket.chunks, chunk: b"[]"}  # nothing of the losing write landed


class _Writes:
    """A store that remembers the bucket writes it was given, and the buckets it was asked to read."""

    def __init__(self, store: Store) -> None:
        self.store, self.writes, self.reads, self.conflicts = store, [], [], 0

    def commit_buckets(self, writes):
        self.writes += writes
        committed = self.store.commit_buckets(writes)
        self.conflicts += len(committed.conflicts)
        return committed

    def load_buckets(self, keys):
        self.reads += keys
        return self.store.load_buckets(keys)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_copy_a_worker_holds_is_not_read_again_and_a_stale_one_is_a_conflict_applied_again(store: Store):
    """A worker applies a batch to the states it wrote last without reading them again. Two workers
    taking turns over one stream (each one's copies go stale as the other writes) find those writes
    refused, read the buckets again and apply the batch again: the incidents are those of one worker."""
    from aegis.store import SqliteStore

    bodies = stream(80, seed=13)
    alone = _Writes(SqliteStore(":memory:"))
    run(alone, bodies, 8)  # type: ignore[arg-type]
    assert len(alone.reads) == len(set(alone.reads)) > 10  # each bucket read once, when new to it
    assert alone.conflicts == 0
    spy = _Writes(store)
    workers = [Pipeline(spy, correlator=Correlator(DETECTIONS, spy, lateness=LATENESS)) for _ in range(2)]  # type: ignore[arg-type]
    for n, i in enumerate(range(0, len(bodies), 8)):
        workers[n % 2].process([Message(b, hub="test") for b in bodies[i : i + 8]])
    assert spy.conflicts > 0
    assert len(spy.reads) > len(set(spy.reads))  # read again after a conflict
    assert snapshot(store) == snapshot(alone.store)


def test_a_buckets_entities_are_records_of_their_own_written_only_when_they_change(store: Store):
    spy = _Writes(store)
    run(spy, stream(), 5)  # type: ignore[arg-type]
    assert len({w.key for w in spy.writes}) < len(spy.writes)  # buckets written in several batches
    assert 0 < sum(bool(w.entities) for w in spy.writes) < len(spy.writes) / 2
    incident = next(i for i in store.incidents() if i.entities)
    bucket = store.load_buckets([incident.bucket])[incident.bucket]
    assert "entities" not in bucket.doc  # the head is small: the entities are apart, each once
    kept = {r: e for record in bucket.entities.values() for r, e in orjson.loads(record).items()}
    assert set(incident.entities) <= {entity_from_dict(v) for v in kept.values()}


def test_a_bucket_of_many_entities_rewrites_only_the_records_a_batch_changed(tmp_path):
    """A busy account called by thousands of networks and user agents: its per-resource buckets
    hold thousands of entities, more than one table entity holds (about 1 MiB) as a single record.
    In records of at most `ENTITIES_PER_RECORD`, new ones in the newest, no record outgrows a table
    entity, and a batch that brings a few new entities rewrites about one record, not all."""
    from aegis.correlate.engine import ENTITIES_PER_RECORD
    from aegis.store import SqliteStore

    bodies = BodyGenerator(7, accounts=1, callers=50_000, span=timedelta(hours=3)).bodies(1_500)
    store = SqliteStore(tmp_path / "busy.db")
    spy = _Writes(store)
    p = Pipeline(spy, correlator=Correlator(DETECTIONS, spy, lateness=LATENESS))  # type: ignore[arg-type]
    for i in range(0, len(bodies), 50):
        p.process([Message(b, hub="test") for b in bodies[i : i + 50]])
    buckets = store.load_buckets(list({w.key for w in spy.writes}))
    held = {k: [orjson.loads(r) for r in b.entities.values()] for k, b in buckets.items()}
    assert all(len(record) <= ENTITIES_PER_RECORD for records in held.values() for record in records)
    largest = max(buckets.values(), key=lambda b: sum(map(len, b.entities.values())))
    assert sum(map(len, largest.entities.values())) > 1_100_000  # one record would not fit in a table entity
    assert max(map(len, largest.entities.values())) < 32_000
    for records in held.values():  # each entity of a bucket once
        refs = [r for record in records for r in record]
        assert len(refs) == len(set(refs))
    written = [w for w in spy.writes if w.key == largest.key and w.entities]
    ever = {r for w in written for record in w.entities.values() for r in orjson.loads(record)}
    assert len(written) > 10
    # records of new entities, and about one more a write: not every record it holds at each write
    assert sum(len(w.entities) for w in written) < len(ever) / ENTITIES_PER_RECORD + 3 * len(written)


def twin_databases(tmp_path, bodies: list[bytes]):
    """`old.db` and `new.db`, each with `bodies` run through it; a connection to `old.db`, to lay it out as before."""
    import sqlite3

    from aegis.store import SqliteStore

    for name in ("old", "new"):
        store = SqliteStore(tmp_path / f"{name}.db")
        run(store, bodies, 10)
        store.close()
    return sqlite3.connect(tmp_path / "old.db", isolation_level=None)


def test_entities_stored_as_one_record_are_read_and_written_again_in_records(tmp_path):
    """A database from before records (a bucket's entities in one row of `bucket_entities`) opens:
    each bucket's entities are read, its next write puts them in records and drops the old one, and
    the incidents are those of a database that never had the old layout."""

    from aegis.store import SqliteStore

    bodies = stream(120, seed=3)
    db = twin_databases(tmp_path, bodies[:60])
    rows = db.execute("SELECT key, record, doc FROM bucket_entity_records").fetchall()
    merged: dict[str, dict] = {}
    for key, _, doc in rows:
        merged.setdefault(key, {}).update(orjson.loads(doc))
    db.execute("CREATE TABLE bucket_entities (key TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID")
    db.executemany("INSERT INTO bucket_entities VALUES (?, ?)", [(k, orjson.dumps(m)) for k, m in merged.items()])
    db.execute("DELETE FROM bucket_entity_records")
    db.close()
    old, new = SqliteStore(tmp_path / "old.db"), SqliteStore(tmp_path / "new.db")
    loaded = old.load_buckets(list(merged))
    assert len(merged) > 5
    assert all(set(b.entities) == {-1} for b in loaded.values())
    run(old, bodies[60:], 10)
    run(new, bodies[60:], 10)
    assert snapshot(old) == snapshot(new)
    rewritten = old.load_buckets(list(merged))
    assert any(-1 not in b.entities and b.entities for b in rewritten.values())


def test_chunks_and_entity_records_of_a_without_rowid_database_move_into_rowid_tables(tmp_path):
    """A database whose pane chunks and entity records are WITHOUT ROWID tables (as written before)
    opens with them moved into rowid tables, every row kept; the incidents go on as those of a
    database that never had the old layout."""
    import sqlite3

    from aegis.store import SqliteStore
    from aegis.store.sqlite import PARTS

    bodies = stream(120, seed=5)
    db = twin_databases(tmp_path, bodies[:60])
    before = {}
    for table, ddl in PARTS.items():
        before[table] = sorted(db.execute(f"SELECT * FROM {table}").fetchall())
        db.execute(f"ALTER TABLE {table} RENAME TO moved")
        db.execute(ddl.removesuffix(";") + " WITHOUT ROWID")
        db.execute(f"INSERT INTO {table} SELECT * FROM moved")
        db.execute("DROP TABLE moved")
    layout = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert all("WITHOUT ROWID" in layout[t] and before[t] for t in PARTS)
    db.close()
    old, new = SqliteStore(tmp_path / "old.db"), SqliteStore(tmp_path / "new.db")
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    layout = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert not any("WITHOUT ROWID" in layout[t] for t in PARTS)
    assert not any(t.endswith("_before") for t in layout)
    assert {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in PARTS} == before
    db.close()
    run(old, bodies[60:], 10)
    run(new, bodies[60:], 10)
    assert snapshot(old) == snapshot(new)


def test_a_legacy_or_overfull_entity_record_is_packed_again(store: Store):
    """Entities stored otherwise than in records of the newest layout (one record -1, as Table
    Storage's `bucket-entities` row held them; a record with more than `ENTITIES_PER_RECORD`; one
    entity in two records) are read whole and written again in full records from 0."""
    from aegis.correlate.engine import ENTITIES_PER_RECORD, State

    run(store, stream(40, seed=9), 10)
    incident = next(i for i in store.incidents() if i.entities)
    bucket = store.load_buckets([incident.bucket])[incident.bucket]
    entities = {r: e for record in bucket.entities.values() for r, e in orjson.loads(record).items()}
    many = {**entities, **{f"{n:012x}": {"type": "ip", "prefix": f"10.0.{n}.0/24"} for n in range(40)}}
    one = orjson.dumps(many)
    for records in ({-1: one}, {0: one}, {0: one, 1: orjson.dumps(dict(list(entities.items())[:1]))}):
        doc = {**bucket.doc}
        write = BucketWrite(incident.bucket, bucket.version, orjson.dumps(doc), entities=records,
                            drop_entities=[n for n in bucket.entities if n not in records])  # fmt: skip
        committed = store.commit_buckets([write])
        bucket = store.load_buckets([incident.bucket])[incident.bucket]
        assert bucket.version == committed.versions[incident.bucket]
        assert set(bucket.entities) == set(records)  # as written: the store keeps records by number
        state = State.load(bucket.doc, bucket.chunks, bucket.entities)
        assert state.entities.keys() == many.keys()
        _, _, _, rewritten, gone = state.dump()
        assert sorted(rewritten) == list(range(len(rewritten)))
        assert all(len(orjson.loads(r)) <= ENTITIES_PER_RECORD for r in rewritten.values())
        assert {r for doc_ in rewritten.values() for r in orjson.loads(doc_)} == many.keys()
        assert set(gone) == set(records) - set(rewritten)


def test_events_too_late_for_a_bucket_are_counted_not_merged(sqlite_store):
    from aegis.correlate import selftest

    d = next(d for d in DETECTIONS if d.id == "ai-prompt-attack-campaign-by-caller")
    events = selftest.build_events(d.tests[3])  # three attempts, twenty minutes apart
    sqlite_store.save({}, events, [])
    c = Correlator([d], sqlite_store, lateness=timedelta(minutes=5))
    c.process(events[-1:])
    late = c.process(events[:1])  # 40 minutes older than the newest: beyond suppression + lateness
    assert late.too_late == 1


PROCESS = """
import sys
from datetime import timedelta

import orjson
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.events import entity_from_dict
from aegis.pipeline import Message, Pipeline
from aegis.store.tables import TableStore
from bench.generate import BodyGenerator
conn, prefix, part = sys.argv[1], sys.argv[2], int(sys.argv[3])
bodies = BodyGenerator(11, accounts=3, callers=4, span=timedelta(hours=2)).bodies(60)[part::2]
store = TableStore.from_connection_string(conn, prefix=prefix)
p = Pipeline(store, correlator=Correlator(detections.load().detections, store, lateness=timedelta(hours=3)))
for i in range(0, len(bodies), 3):
    p.process([Message(b, hub="test") for b in bodies[i : i + 3]])
print("done")
"""


def test_two_processes_on_interleaved_halves_agree_with_one(table_store):
    from azure.data.tables import TableServiceClient

    from aegis.store.tables import TableStore

    conn = azurite_connection()
    run(table_store, stream(), 3)  # one process, the whole stream
    expected = snapshot(table_store)
    prefix = "t" + uuid.uuid4().hex[:12]
    TableStore.from_connection_string(conn, prefix=prefix).close()  # create the tables first
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, conn, prefix, str(part)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for part in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    together = TableStore.from_connection_string(conn, prefix=prefix)
    try:
        assert snapshot(together) == expected
        assert sorted(e.id for e in together.events()) == sorted(e.id for e in table_store.events())
    finally:
        together.close()
        service = TableServiceClient.from_connection_string(conn)
        for name in ("events", "deadletters", "state"):
            service.delete_table(f"{prefix}{name}")


def flood(hours: float, per_second: int, *, partition: str | None = "0") -> list:
    """A steady flood of requests from one caller network, with Event Hubs positions."""
    from datetime import UTC, datetime

    from aegis.events import Event, Evidence, Source, make_ip

    start = datetime(2026, 3, 1, tzinfo=UTC)
    ip = make_ip("198.51.100.***")
    return [
        Event(
            id=f"{n:032x}",
            source=Source.RESOURCE_LOG,
            normalizer="test",
            kind="RequestResponse:ChatCompletions_Create",
            time=start + timedelta(seconds=n / per_second),
            evidence=Evidence("0" * 64, "", "hub", partition, n if partition else None),
            entities=(ip,),
            attributes={"category": "RequestResponse"},
        )
        for n in range(int(hours * 3600 * per_second))
    ]


def burst_detection():
    return next(d for d in DETECTIONS if d.id == "ai-request-burst-by-caller")


def feed(correlator: Correlator, events: list, batch: int = 500) -> None:
    for i in range(0, len(events), batch):
        correlator.process(events[i : i + batch])


def test_a_flood_keeps_bounded_state_and_one_incident_with_one_id(sqlite_store):
    events = flood(hours=3, per_second=2)
    c = Correlator([burst_detection()], sqlite_store, lateness=timedelta(minutes=30))
    hour = len(events) // 3
    feed(c, events[:hour])
    [early] = sqlite_store.incidents()
    sizes = []
    for part in (events[hour : 2 * hour], events[2 * hour :]):
        feed(c, part)
        [(doc,)] = sqlite_store._db.execute("SELECT doc FROM buckets").fetchall()
        sizes.append(len(doc))
    [late] = sqlite_store.incidents()
    assert late.id == early.id  # a campaign longer than the lateness stays one incident
    assert late.event_count == len(events)
    assert late.first_seen == events[0].time
    assert late.last_seen == events[-1].time
    assert len(late.event_ids) <= 100  # the evidence sample is bounded, the count is exact
    assert late.severity.value == "high"  # escalated past 3,000 events
    assert sizes[1] < 256 * 1024
    assert sizes[1] < sizes[0] * 1.2


def test_a_redelivered_batch_is_not_counted_twice_even_in_dense_panes(sqlite_store):
    events = flood(hours=0.5, per_second=5)  # 50 events a 10 s pane: past the exact-ids limit
    c = Correlator([burst_detection()], sqlite_store, lateness=timedelta(minutes=30))
    feed(c, events, batch=300)
    before = sqlite_store.incidents()
    feed(c, events[1000:2500], batch=250)  # Event Hubs redelivers from an older checkpoint
    assert sqlite_store.incidents() == before
    assert before[0].event_count == len(events)


def test_a_flood_shuffled_within_the_lateness_gives_the_same_incident(sqlite_store, tmp_path):
    from aegis.store import SqliteStore

    events = flood(hours=2, per_second=1)
    feed(Correlator([burst_detection()], sqlite_store, lateness=timedelta(minutes=30)), events)
    rng = random.Random(5)
    jittered = sorted(events, key=lambda e: e.time.timestamp() + rng.uniform(-600, 600))  # ten minutes late or early
    # Event Hubs numbers a partition in arrival order
    jittered = [replace(e, evidence=replace(e.evidence, sequence_number=n)) for n, e in enumerate(jittered)]
    other = SqliteStore(tmp_path / "jittered.db")
    feed(Correlator([burst_detection()], other, lateness=timedelta(minutes=30)), jittered, batch=97)
    assert [(i.id, i.event_count, i.first_seen, i.last_seen, i.severity) for i in other.incidents()] == [
        (i.id, i.event_count, i.first_seen, i.last_seen, i.severity) for i in sqlite_store.incidents()
    ]
    other.close()


def test_idle_buckets_expire_and_their_incidents_stay(store: Store):
    from dataclasses import replace as copy

    d = burst_detection()
    c = Correlator([d], store, lateness=timedelta(minutes=30))
    first = flood(hours=0.2, per_second=1)
    feed(c, first)
    [incident] = store.incidents()
    key = incident.bucket
    assert store.load_buckets([key])
    later = [copy(e, id=f"later-{e.id}", time=e.time + timedelta(hours=6), entities=(make_other_ip(),)) for e in first]
    counts = c.process(later[:50])
    assert counts.expired == 1  # six hours idle: past window + suppression + lateness
    assert store.load_buckets([key]) == {}
    assert incident in store.incidents()  # the incident is the product: it stays


def test_on_table_storage_the_ingest_path_makes_no_expiry_scan_and_the_timer_expires(table_store, monkeypatch):
    """Expiry is a scan of the bucket heads on Table Storage: `process` never runs it there; the
    response timer does (`Correlator.expire`), by the event time the worker has seen."""
    from dataclasses import replace as copy

    scans = []
    real = table_store.expire_buckets
    monkeypatch.setattr(table_store, "expire_buckets", lambda before: scans.append(before) or real(before))
    c = Correlator([burst_detection()], table_store, lateness=timedelta(minutes=30), expire_in_batch=False)
    first = flood(hours=0.1, per_second=1)
    feed(c, first)
    [incident] = table_store.incidents()
    later = [copy(e, id=f"later-{e.id}", time=e.time + timedelta(hours=6), entities=(make_other_ip(),)) for e in first]
    assert c.process(later[:50]).expired == 0
    assert scans == []  # no scan on the ingest path
    assert c.expire() == 1  # the timer: six hours idle in event time
    assert table_store.load_buckets([incident.bucket]) == {}
    assert c.expire() == 0  # at most once per ten minutes of event time


def make_other_ip():
    from aegis.events import make_ip

    return make_ip("192.0.2.***")


def test_a_database_from_an_older_schema_is_refused_with_how_to_fix(tmp_path):
    import sqlite3

    import pytest

    from aegis.errors import StoreError
    from aegis.store import SqliteStore

    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE events (id TEXT PRIMARY KEY)").connection.close()
    with pytest.raises(StoreError, match=r"older Aegis.*replay"):
        SqliteStore(path)
    SqliteStore(tmp_path / "new.db").close()
    SqliteStore(tmp_path / "new.db").close()  # reopening a current one is fine


def test_a_bucket_created_again_after_expiry_never_repeats_a_version(store: Store):
    """One instance expires a bucket and creates it again while another holds a copy cached at the old
    version: that copy must not pass for current, and a write over it must be a conflict (SQLite gave
    the new bucket version 1 again, and the stale instance overwrote it)."""
    first = store.commit_buckets([BucketWrite("ai-x.k", None, b'{"n": 1}', watermark=1)]).versions["ai-x.k"]
    assert store.expire_buckets(10) == 1
    again = store.commit_buckets([BucketWrite("ai-x.k", None, b'{"n": 2}', watermark=100)]).versions["ai-x.k"]
    assert again != first
    assert store.load_buckets(["ai-x.k"])["ai-x.k"].version == again
    assert store.commit_buckets([BucketWrite("ai-x.k", first, b'{"n": 3}', watermark=200)]).conflicts == {"ai-x.k"}
    assert store.load_buckets(["ai-x.k"])["ai-x.k"].doc == {"n": 2}


def test_one_alert_in_a_poor_and_a_rich_shape_ends_in_its_richest_form_whatever_the_order():
    """An alert's activity-log copy (no type, no entities) and its export (type, entities) share its
    id: the incident that holds it shows the richer copy, in either order, in one batch or two."""
    from dataclasses import replace as copy_with

    from aegis.correlate.detections import Detection
    from aegis.events import UNKNOWN_KIND, Ip
    from aegis.store import SqliteStore

    any_alert = Detection.model_validate({
        "id": "any-defender-alert", "title": "{kind}", "description": "d", "kind": "single", "severity": "low",
        "group_by": ["resource.name"], "match": {"field": "source", "equals": "defender"},
        "tests": [{"name": "t", "events": [{"kind": "AI.x"}], "expect": {"incidents": 1}}],
    })  # fmt: skip
    body = (SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes()
    [rich] = Pipeline(SqliteStore(":memory:"))._one(Message(body, hub="t"), "d" * 64, datetime.now(UTC))[0]
    poor = copy_with(
        rich, kind=UNKNOWN_KIND, title=None, entities=(), attributes={}, normalizer="defender.alert.activity_log"
    )
    shown = []
    for batches in ([[poor], [rich]], [[rich], [poor]], [[poor, rich]], [[rich, poor]]):
        store = SqliteStore(":memory:")
        correlator = Correlator([any_alert], store, lateness=LATENESS)
        for batch in batches:
            correlator.process(batch)
        [incident] = store.incidents()
        shown.append((incident.title, incident.timeline[0].kind, incident.event_count,
                      sorted(e.key for e in incident.entities)))  # fmt: skip
    assert shown[0][1] == rich.kind
    assert shown[0][2] == 1
    assert any(isinstance(e, Ip) for e in rich.entities)
    assert len(set(map(repr, shown))) == 1, shown


def test_the_evidence_kept_is_the_richest_copy_of_an_alert_on_both_stores(store: Store):
    """The activity-log copy first, then the export: the store keeps (and shows the analyst) the
    export, not the copy it happened to write first."""
    from dataclasses import replace as copy_with

    from aegis.events import UNKNOWN_KIND
    from aegis.records import alert_details

    body = (SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes()
    [rich] = Pipeline(store)._one(Message(body, hub="t"), "d" * 64, datetime.now(UTC))[0]
    poor = copy_with(rich, kind=UNKNOWN_KIND, title=None, entities=(), attributes={},
                     normalizer="defender.alert.activity_log")  # fmt: skip
    correlator = Correlator(detections.load().detections, store, lateness=LATENESS)
    correlator.process([poor])
    correlator.process([rich])
    [incident] = [i for i in store.incidents() if rich.id in i.event_ids]
    [kept] = store.evidence(incident)
    assert (kept.kind, kept.title) == (rich.kind, rich.title)
    assert [a.kind for a in alert_details([kept])] == [rich.kind]
