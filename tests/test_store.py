"""One suite, both stores: SQLite (embedded) and Azure Table + Blob Storage (Azurite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aegis.events import DeadLetter, Event, Evidence, Ip, Source, User
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
    counts = Pipeline(store).process([Message(b, hub="replay") for b in bodies])
    assert counts.new_events == counts.events - counts.duplicates > 0
    replay = Pipeline(store).process([Message(b, hub="replay") for b in bodies])
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
