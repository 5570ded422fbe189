"""One suite, both stores: SQLite (embedded) and Azure Table + Blob Storage (Azurite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from aegis.events import DeadLetter, Event, Evidence, Ip, Severity, Source, User
from aegis.pipeline import Message, Pipeline
from aegis.store import Store
from tests.conftest import SAMPLES

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def event(i: int, *, day: int = 0, entities: int = 1) -> Event:
    return Event(
        id=f"ev{i:04d}",
        source=Source.RESOURCE_LOG,
        normalizer="diagnostics.ai",
        kind="RequestResponse:ChatCompletions_Create",
        time=T0 + timedelta(days=day, seconds=i),
        evidence=Evidence(f"{i:064x}", f"/records/{i}", "ai-diagnostics", "0", i, str(i * 100)),
        entities=(*tuple(Ip(prefix=f"10.{n // 256 % 256}.{n % 256}.0/24") for n in range(entities)), User(upn="a@b.c")),
        attributes={"http_status": 200, "request_bytes": 1000 + i},
    )


def dead_letter(i: int) -> DeadLetter:
    return DeadLetter(
        id=f"dl{i:04d}", reason="malformed JSON: unexpected end of data", message=f"{i:064x}", pointer="",
        hub="ai-diagnostics", received=T0 + timedelta(seconds=i), size=12, partition="1", sequence_number=i,
    )  # fmt: skip


def test_events_are_stored_once_and_read_back_equal(store: Store):
    events = [event(i, day=i % 3) for i in range(120)]  # several partitions, more than one transaction
    first = store.save({}, events, [])
    again = store.save({}, [*events[:50], event(500)], [])
    assert first.new_events == 120
    assert again.new_events == 1
    stored = store.events()
    assert len(stored) == 121
    assert stored == sorted([*events, event(500)], key=lambda e: (e.time, e.id))
    assert store.events(limit=5) == stored[:5]


def test_dead_letters_and_raw_bodies(store: Store):
    raws = {"a" * 64: b'{"records": [', "b" * 64: b"\xff\xfe not utf-8"}
    result = store.save(raws, [], [dead_letter(1), dead_letter(2)])
    assert result.new_dead_letters == 2
    assert store.save(raws, [], [dead_letter(1)]).new_dead_letters == 0
    assert [d.id for d in store.dead_letters()] == ["dl0001", "dl0002"]
    assert store.dead_letters()[0] == dead_letter(1)
    assert store.raw("a" * 64) == b'{"records": ['
    assert store.raw("b" * 64) == b"\xff\xfe not utf-8"
    assert store.raw("c" * 64) is None


def test_an_event_too_large_for_one_table_property_is_kept_whole(store: Store):
    big = event(7, entities=1500)
    assert len(big.to_json()) > 32_000
    assert store.save({}, [big], []).new_events == 1
    assert store.events() == [big]


def test_the_pipeline_on_each_store_gives_the_same_result(store: Store):
    bodies = [p.read_bytes() for p in sorted(SAMPLES.rglob("*.json"))]
    counts = Pipeline(store, keep_events=True).process([Message(b, hub="replay") for b in bodies])
    assert counts.new_events == counts.events - counts.duplicates > 0
    replay = Pipeline(store, keep_events=True).process([Message(b, hub="replay") for b in bodies])
    assert (replay.new_events, replay.new_dead_letters) == (0, 0)
    assert len(store.events()) == counts.new_events
    assert len(store.dead_letters()) == counts.dead_letters


def test_table_store_reports_an_unreachable_service_as_transient():
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from aegis.errors import StoreUnavailable
    from aegis.store.tables import TableStore

    # nothing listens on port 9 of the loopback address: a connection fault, retried by the SDK once
    conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1"
    with pytest.raises(StoreUnavailable, match="unreachable"):
        TableStore(
            TableServiceClient.from_connection_string(conn, retry_total=0),
            BlobServiceClient.from_connection_string(conn, retry_total=0),
        )


def test_sqlite_reports_a_locked_database_as_transient(tmp_path):
    import sqlite3

    from aegis.errors import StoreUnavailable
    from aegis.store import SqliteStore

    store = SqliteStore(tmp_path / "a.db")
    store._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(StoreUnavailable, match="busy"):
            store.save({}, [event(1)], [])
    finally:
        other.execute("ROLLBACK")
    assert store.save({}, [event(1)], []).new_events == 1


# --- response records: the same contract on both stores ---------------------------------------------


def step(n: int, *, incident: str = "inc1", action: str = "revoke_sessions", status: str = "approved"):
    from aegis.records import StepRecord

    return StepRecord(key=f"k{n:03d}", incident=incident, playbook="pb", step=f"s{n}", action=action,
                      target=f"user:u{n}@contoso.com", params={"user": f"u{n}@contoso.com"}, approvals=1, status=status,
                      reason=None, aliases=(), corroboration="", requested_by="aegis", created=T0, expires=T0 + timedelta(hours=4))  # fmt: skip


def entry(s, event: str, minute: int = 0):
    from aegis.records import AuditEntry

    return AuditEntry(T0 + timedelta(minutes=minute), "aegis", event, s.key, s.action, s.target, event)


def test_steps_are_recorded_once_in_planned_order_and_found_by_filters(store):
    steps = [step(1), step(2, action="disable_user", status="awaiting_approval"), step(3, incident="inc2")]
    assert store.add_steps(steps, [entry(s, "planned") for s in steps]) == 3
    assert store.add_steps([*steps, step(4)], [entry(s, "planned") for s in [*steps, step(4)]]) == 1
    assert [s.key for s in store.steps()] == ["k001", "k002", "k003", "k004"]
    assert [s.key for s in store.steps(incident="inc1")] == ["k001", "k002", "k004"]
    assert [s.key for s in store.steps(action="disable_user")] == ["k002"]
    assert [s.key for s in store.steps(status=["awaiting_approval", "failed"])] == ["k002"]
    assert [s.key for s in store.steps(incident="inc1", action="revoke_sessions", status=["approved"])] == [
        "k001",
        "k004",
    ]
    assert store.step("k003") == step(3, incident="inc2")
    assert store.step("nope") is None
    assert [a.step for a in store.audit_log()] == ["k001", "k002", "k003", "k004"]  # one each: repeats add none


def test_a_step_is_written_only_over_the_revision_it_was_read_at(store):
    s = step(1)
    store.add_steps([s], [])
    mine = s.next(status="succeeded", started=T0, attempts=1, outcome={"ok": True})
    theirs = s.next(status="failed", reason="no")
    assert store.replace_step(mine, audit=[entry(s, "started"), entry(s, "succeeded")])
    assert not store.replace_step(theirs, audit=[entry(s, "failed")])  # read the same revision: loses
    assert store.step("k001") == mine
    assert [a.event for a in store.audit_log()] == ["started", "succeeded"]
    assert store.replace_step(mine.next(status="skipped"), audit=[])


def test_started_steps_are_counted_by_action_since_a_time(store):
    steps = [step(n) for n in range(1, 5)]
    store.add_steps(steps, [])
    for n, s in enumerate(steps[:3]):
        assert store.replace_step(s.next(started=T0 + timedelta(minutes=20 * n)), audit=[])
    assert store.started_since("revoke_sessions", T0 + timedelta(minutes=20)) == 2
    assert store.started_since("revoke_sessions", T0) == 3
    assert store.started_since("disable_user", T0) == 0


def test_the_local_ticket_is_one_per_incident_numbered_in_order(store):
    assert store.save_ticket("inc1", "t", "high", T0) == ("AEGIS-1", True)
    assert store.save_ticket("inc1", "t grown", "critical", T0) == ("AEGIS-1", False)
    assert store.save_ticket("inc2", "u", "low", T0) == ("AEGIS-2", True)


def test_a_buckets_entities_beyond_what_one_table_entity_holds_are_written_and_read_back(store: Store):
    """Records of entities, by number: more of them than one table entity (about 1 MiB) holds in
    all, a later write that changes one and drops another, and expiry that removes them all."""
    from aegis.store.base import BucketWrite

    records = {n: orjson.dumps({f"{n:04x}{k:08x}": {"type": "user_agent", "value": "x" * 900} for k in range(16)})
               for n in range(80)}  # fmt: skip
    assert sum(map(len, records.values())) > 1_100_000
    first = store.commit_buckets([BucketWrite("d.many", None, b"{}", watermark=5, entities=records)])
    assert store.load_buckets(["d.many"])["d.many"].entities == records
    changed = {3: orjson.dumps({"00030000000a": {"type": "ip", "prefix": "10.0.0.0/24"}})}
    store.commit_buckets([BucketWrite("d.many", first.versions["d.many"], b"{}", watermark=5, entities=changed,
                                      drop_entities=[7])])  # fmt: skip
    after = {n: doc for n, doc in {**records, **changed}.items() if n != 7}
    assert store.load_buckets(["d.many"])["d.many"].entities == after
    assert store.expire_buckets(6) == 1
    assert store.load_buckets(["d.many"]) == {}
    assert store.commit_buckets([BucketWrite("d.many", None, b"{}", watermark=9)]).versions  # nothing of it was left


def test_a_bucket_write_keeps_its_evidence_in_one_transaction_and_reads_it_back(store: Store):
    """Eighty events an incident holds, one bucket write: on Table Storage one entity-group
    transaction (the evidence is one row, not eighty), and the events read back, filtered and
    purged one by one."""
    from aegis.records import Incident
    from aegis.store.base import BucketWrite

    events = [event(i) for i in range(80)]
    incident = Incident(id="inc-1", detection="d", bucket="d.k", group="g", title="t", severity=Severity.HIGH,
                        first_seen=events[0].time, last_seen=events[-1].time, entities=(), atlas=(), owasp_llm=(),
                        event_ids=tuple(e.id for e in events), event_count=80, timeline=())  # fmt: skip
    calls = []
    state = getattr(store, "_state", None)
    if state is not None:  # Table Storage: count the round trips the write makes
        real = state.submit_transaction
        state.submit_transaction = lambda ops, **kw: calls.append(len(ops)) or real(ops, **kw)
    write = BucketWrite("d.k", None, b"{}", chunks={0: b"[]"}, entities={0: b"{}"}, upsert=[incident], evidence=events)
    assert store.commit_buckets([write]).versions
    if state is not None:
        assert calls == [6]  # head, chunk, entities, incident, outbox entry, evidence
    assert store.events() == events
    assert store.events(since=events[40].time) == events[40:]
    assert store.events(until=events[9].time) == events[:10]
    assert store.purge(events[-1].time + timedelta(seconds=1)) >= 80
    assert store.events() == []


def test_an_incidents_evidence_is_read_back_by_its_event_ids(store: Store):
    from dataclasses import replace as copy_with

    from aegis.records import Incident, TimelineEntry
    from aegis.store.base import BucketWrite

    events = [event(i) for i in range(5)]
    incident = Incident(id="inc-2", detection="d", bucket="d.k2", group="g", title="t", severity=Severity.HIGH,
                        first_seen=events[0].time, last_seen=events[-1].time, entities=(), atlas=(), owasp_llm=(),
                        event_ids=tuple(e.id for e in events[:3]), event_count=5,
                        timeline=tuple(TimelineEntry(time=e.time, event_id=e.id, kind=e.kind, source="resource_log")
                                       for e in events[:3]))  # fmt: skip
    store.commit_buckets([BucketWrite("d.k2", None, b"{}", upsert=[incident], evidence=events[:2])])
    assert store.evidence(incident) == events[:2]  # the third is not kept: not there, not guessed
    assert store.evidence(copy_with(incident, event_ids=())) == []


def test_the_outbox_holds_each_change_until_cleared_and_its_incidents_latest_state(store: Store):
    """Two changes of one incident are two entries; each gives the incident at least as it stood
    then (SQLite: as it stands now), and clearing one leaves the other. On SQLite an incident
    deleted (found again under another id) takes its entries with it."""
    from dataclasses import replace as copy_with

    from aegis.records import Incident, Pending
    from aegis.store.base import BucketWrite

    first = Incident(id="inc-3", detection="d", bucket="d.k3", group="g", title="t", severity=Severity.HIGH,
                     first_seen=T0, last_seen=T0, entities=(), atlas=(), owasp_llm=(), event_ids=("e1",),
                     event_count=1, timeline=())  # fmt: skip
    grown = copy_with(first, last_seen=T0 + timedelta(minutes=1), event_ids=("e1", "e2"), event_count=2)
    v1 = store.commit_buckets([BucketWrite("d.k3", None, b"{}", watermark=1, upsert=[first])]).versions["d.k3"]
    v2 = store.commit_buckets([BucketWrite("d.k3", v1, b"{}", watermark=2, upsert=[grown])]).versions["d.k3"]
    entries = store.outbox()
    assert [p.fingerprint for p in entries] == [Pending.of(first).fingerprint, Pending.of(grown).fingerprint]
    assert all(p.incident.event_count >= 1 for p in entries)
    assert entries[-1].incident == grown
    store.clear_outbox(entries[:1])
    assert [p.fingerprint for p in store.outbox()] == [Pending.of(grown).fingerprint]
    store.clear_outbox(store.outbox())
    assert store.outbox() == []
    if getattr(store, "_state", None) is None:  # SQLite
        store.commit_buckets([BucketWrite("d.k3", v2, b"{}", watermark=3, upsert=[copy_with(grown, event_count=3)])])
        assert len(store.outbox()) == 1
        store.commit_buckets([BucketWrite("d.k3", v2 + 1, b"{}", watermark=4, delete=["inc-3"])])
        assert store.outbox() == []
        assert store.incidents() == []
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(store.path)) as db:  # and none of its entries is left behind
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)


def test_a_sqlite_outbox_that_held_incidents_names_them_after_opening(tmp_path):
    """A database from before (its outbox rows held the incident's JSON) opens with each entry kept,
    in order, the incident read from where the same commit wrote it."""
    import sqlite3

    from aegis.records import Incident
    from aegis.store import SqliteStore
    from aegis.store.base import BucketWrite

    incidents = [Incident(id=f"inc-{n}", detection="d", bucket=f"d.k{n}", group="g", title="t",
                          severity=Severity.HIGH, first_seen=T0, last_seen=T0, entities=(), atlas=(), owasp_llm=(),
                          event_ids=(f"e{n}",), event_count=1, timeline=()) for n in range(3)]  # fmt: skip
    store = SqliteStore(tmp_path / "old.db")
    for inc in reversed(incidents):
        store.commit_buckets([BucketWrite(inc.bucket, None, b"{}", watermark=1, upsert=[inc])])
    store.close()
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    rows = db.execute("SELECT seq, incident, fingerprint FROM outbox").fetchall()
    db.execute("DROP TABLE outbox")
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, incident TEXT NOT NULL, "
               "fingerprint TEXT NOT NULL, doc BLOB NOT NULL, UNIQUE (incident, fingerprint))")  # fmt: skip
    db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?)",
                   [(*r, next(i.to_json() for i in incidents if i.id == r[1])) for r in rows])  # fmt: skip
    db.close()
    store = SqliteStore(tmp_path / "old.db")
    assert [(p.incident, p.fingerprint) for p in store.outbox()] == [(i, i.fingerprint()) for i in reversed(incidents)]
    store.commit_buckets([BucketWrite("d.k9", None, b"{}", watermark=1, upsert=[incidents[0]])])
    assert len(store.outbox()) == 3  # its uniqueness kept: the same change again is no new entry
