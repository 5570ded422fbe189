"""The state store: one interface, two implementations (SQLite embedded, Azure Table Storage).

Writes are idempotent: events and dead letters are keyed by deterministic ids, raw bodies by their
SHA-256, so replaying a batch stores nothing new. A transient fault raises `StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from aegis.events import DeadLetter, Event

if TYPE_CHECKING:
    from aegis.correlate.incidents import Incident


@dataclass(frozen=True, slots=True)
class SaveResult:
    new_events: int
    new_dead_letters: int


class Store(Protocol):
    def save(
        self,
        raws: Mapping[str, bytes],
        events: Sequence[Event],
        dead_letters: Sequence[DeadLetter],
        *,
        received: datetime | None = None,
    ) -> SaveResult:
        """Store raw bodies, events and dead letters; return how many events and dead letters
        were new (the rest were already stored). `received`: when the batch arrived (raw bodies age
        from it, for retention; default now)."""
        ...

    def events(
        self, *, limit: int | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[Event]:
        """Events, oldest event time first; with `since` / `until`, those in that window of event time."""
        ...

    def dead_letters(self, *, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    def raw(self, digest: str) -> bytes | None:
        """The original bytes of a message, by SHA-256 hex digest."""
        ...

    def purge(self, before: datetime) -> int:
        """Retention: delete the events dated, and the dead letters and raw bodies received, before
        `before`; return how many records went. Correlation state and incidents are not touched."""
        ...

    def close(self) -> None: ...

    # --- correlation state: one bucket per (detection, group), and the incidents ---

    def load_buckets(self, keys: Sequence[str], known: Mapping[str, Version] | None = None) -> dict[str, Bucket]:
        """The buckets that exist; for a key whose version is still `known[key]`, without its
        document (`doc` None: the caller's copy is current)."""
        ...

    def commit_buckets(self, writes: Sequence[BucketWrite]) -> Committed:
        """Write each bucket whose version still matches, with its incident changes, atomically."""
        ...

    def expire_buckets(self, before: int) -> int:
        """Delete the correlation state of buckets whose newest event (µs since the epoch) is older
        than `before`, unless written meanwhile; keep their incidents. Returns how many went."""
        ...

    def incidents(self) -> list[Incident]: ...


Version = int | str  # a counter in SQLite, an ETag in Table Storage


@dataclass(frozen=True, slots=True)
class Bucket:
    """Correlation state of one (detection, group), with its version for optimistic concurrency."""

    key: str
    version: Version
    doc: dict[str, Any] | None  # the head: everything but the panes
    chunks: dict[int, bytes] = field(default_factory=dict)  # the panes, in chunks, as stored


@dataclass(frozen=True, slots=True)
class Committed:
    versions: dict[str, Version]  # the new version of each bucket written
    conflicts: set[str]  # the buckets another writer changed first: nothing of them was written


@dataclass(frozen=True, slots=True)
class BucketWrite:
    key: str
    expected: Version | None  # None: the bucket must not exist yet
    doc: bytes  # the head
    watermark: int = 0  # the newest event time merged, µs since the epoch: for expiry
    chunks: Mapping[int, bytes] = field(default_factory=dict)  # pane chunks that changed
    drop_chunks: Sequence[int] = ()  # pane chunks that are now empty
    upsert: Sequence[Incident] = ()  # the bucket's incidents that are new or changed
    delete: Sequence[str] = ()  # ids of the bucket's incidents that no longer exist
