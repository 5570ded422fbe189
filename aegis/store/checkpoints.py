"""Copying a SQLite WAL into its database beside the ingest path, not inside it.

SQLite's own checkpoint runs inside the commit that fills the WAL past `wal_autocheckpoint`: that
batch waits while some 40 MB of pages are copied and synced (about 100 ms, a batch's p99). Here a
thread with a connection of its own copies them instead, woken by each commit, while the next
batch is computed: a PASSIVE checkpoint never blocks the writer, and once it has copied every
frame, the writer's next transaction starts the WAL again from its beginning, so the WAL stays
about as long as the frames that make a copy due (`FRAMES`). The inline checkpoint stays the bound
if this thread falls behind.

It copies once the WAL holds `frames` not yet copied, or to finish what a checkpoint before left
(the commits that came while it ran): copying after every commit would copy a page that every
batch rewrites once a batch, not once in several (CPU ×1.14 at 1,000 frames against 2,000, ×0.97
at 4,000, the p99 the same). How many frames are waiting it reads from the WAL index
(the `-shm` file, https://www.sqlite.org/walformat.html#the_wal_index_file_format): `mxFrame` in
its header and `nBackfill` in the checkpoint information after the header's two copies.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from pathlib import Path

import structlog

log = structlog.get_logger("aegis.store")

FRAMES = 4_000  # about 16 MB of 4 KB pages: three to five batches of 100 events
_MX_FRAME, _N_BACKFILL = 16, 96  # byte offsets in the WAL index (native byte order, 32 bits)


def wanted() -> bool:
    """Whether a second thread helps: on one processor it only adds work to the one that ingests."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return len(cpus) > 1


class Checkpointer:
    def __init__(self, path: Path, *, frames: int = FRAMES) -> None:
        self.path, self.frames = path, frames
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"aegis-checkpoint {path}", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def waiting(self) -> tuple[int, int] | None:
        """(frames in the WAL, frames of them copied), or None when the WAL index cannot be read."""
        try:
            with open(f"{self.path}-shm", "rb") as shm:
                head = shm.read(_N_BACKFILL + 4)
        except OSError:
            return None
        if len(head) < _N_BACKFILL + 4:
            return None
        return (int.from_bytes(head[_MX_FRAME : _MX_FRAME + 4], sys.byteorder),
                int.from_bytes(head[_N_BACKFILL:], sys.byteorder))  # fmt: skip

    def due(self) -> bool:
        """Whether the WAL holds enough frames not yet copied, or a copy before left some."""
        state = self.waiting()
        if state is None:
            return True
        frames, copied = state
        return frames - copied >= self.frames or 0 < copied < frames

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                if not self.due():
                    continue
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the commit's own checkpoint still bounds the WAL
                    log.warning("wal_checkpoint_failed", database=str(self.path), error=str(exc))
        finally:
            db.close()
