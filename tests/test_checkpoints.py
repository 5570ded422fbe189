"""The SQLite WAL copied into the database by a thread of its own (`aegis/store/checkpoints.py`)."""

from __future__ import annotations

import gc
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from aegis.store import SqliteStore, checkpoints

MB = 1 << 20


def threads(path: Path | str) -> list[threading.Thread]:
    """The threads copying the WAL of the database at `path` (those of other tests' stores aside)."""
    return [t for t in threading.enumerate() if t.name == f"aegis-checkpoint {path}"]


def commits(store: SqliteStore, n: int, *, size: int = MB) -> list[str]:
    """`n` write transactions of about `size` bytes (some 256 pages each); between them, the time a
    batch's computing gives the thread to copy what is due (30 s in all, at most); the digests written."""
    written = []
    deadline = time.monotonic() + 30
    for _ in range(n):
        body = os.urandom(size)
        digest = hashlib.sha256(body).hexdigest()
        store.save({digest: body}, [], [])
        written.append(digest)
        while store._checkpoints is not None and store._checkpoints.due() and time.monotonic() < deadline:
            time.sleep(0.001)
    return written


def wal(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


@pytest.fixture
def two_processors(monkeypatch):
    monkeypatch.setattr(checkpoints, "wanted", lambda: True)


@pytest.fixture
def opened(tmp_path):
    """Stores at `tmp_path / name`, closed after the test whatever it asserted."""
    stores: list[SqliteStore] = []

    def open_store(name: str = "a.db") -> SqliteStore:
        stores.append(SqliteStore(tmp_path / name))
        return stores[-1]

    yield open_store
    for store in stores:
        store.close()


def test_the_wal_is_copied_beside_the_writer_and_starts_again_from_its_beginning(tmp_path, opened, two_processors):
    store = opened()
    written = commits(store, 80)  # 80 MB through the WAL: twice what the commit's own checkpoint waits for
    # the WAL file is as long as it ever was: the frames that make a copy due (about 16 MB) and the
    # commit that came as it ran, not the 10,000 frames (40 MB) of the inline checkpoint
    assert wal(tmp_path / "a.db") < checkpoints.FRAMES * 4096 + 3 * MB
    assert [d for d in written if store.raw(d) is None] == []
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_without_the_thread_the_commit_copies_the_wal_itself_once_it_is_long(tmp_path, opened, monkeypatch):
    monkeypatch.setattr(checkpoints, "wanted", lambda: False)  # one processor
    store = opened()
    commits(store, 80)
    assert threads(tmp_path / "a.db") == []
    assert wal(tmp_path / "a.db") > 39 * MB  # the same writes as above: the WAL grew to the inline bound


def test_the_wal_index_says_what_sqlite_says_of_the_frames_it_holds_and_has_copied(tmp_path, opened, monkeypatch):
    monkeypatch.setattr(checkpoints, "wanted", lambda: False)
    path = tmp_path / "a.db"
    commits(opened(), 3)
    reader = checkpoints.Checkpointer(path)  # not woken: it only reads the index here
    try:
        frames, copied = reader.waiting() or (0, 0)
        other = sqlite3.connect(path)
        busy, log, done = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        other.close()
        assert (busy, frames, copied) == (0, log, 0)
        assert frames > 3 * 256
        assert reader.waiting() == (log, done) == (log, log)
    finally:
        reader.close()


def test_the_thread_ends_with_the_store_closed_or_collected(tmp_path, opened, two_processors):
    path = tmp_path / "a.db"
    store = opened()
    store.raw("0" * 64)
    assert threads(path) == []  # a store only read starts none
    commits(store, 1, size=1000)
    assert len(threads(path)) == 1
    store.close()
    assert threads(path) == []
    store = SqliteStore(path)
    commits(store, 1, size=1000)
    assert len(threads(path)) == 1
    del store
    gc.collect()
    deadline = time.monotonic() + 5
    while threads(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads(path) == []


def test_a_database_in_memory_has_no_wal_to_copy(two_processors):
    store = SqliteStore(":memory:")
    commits(store, 1, size=1000)
    assert threads(":memory:") == []
    store.close()
