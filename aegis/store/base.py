"""The state store: one interface, two implementations (SQLite embedded, Azure Table Storage).

Writes are idempotent: events and dead letters are keyed by deterministic ids, raw bodies by their
SHA-256, so replaying a batch stores nothing new. A transient fault raises `StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
        self, raws: Mapping[str, bytes], events: Sequence[Event], dead_letters: Sequence[DeadLetter]
    ) -> SaveResult:
        """Store raw bodies, events and dead letters; return how many events and dead letters
        were new (the rest were already stored)."""
        ...

    def events(self, *, limit: int | None = None) -> list[Event]:
        """Events, oldest event time first."""
        ...

    def dead_letters(self, *, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    def raw(self, digest: str) -> bytes | None:
        """The original bytes of a message, by SHA-256 hex digest."""
        ...

    def close(self) -> None: ...

    # --- correlation state: one bucket per (detection, group), and the incidents ---

    def load_buckets(self, keys: Sequence[str]) -> dict[str, Bucket]: ...

    def commit_buckets(self, writes: Sequence[BucketWrite]) -> set[str]:
        """Write each bucket whose version still matches, with its incident changes, atomically;
        return the keys that conflicted."""
        ...

    def events_by_id(self, refs: Mapping[str, datetime]) -> dict[str, Event]:
        """Stored events by id (with each one's event time, which locates it in partitioned stores)."""
        ...

    def incidents(self) -> list[Incident]: ...


@dataclass(frozen=True, slots=True)
class Bucket:
    """Correlation state of one (detection, group), with its version for optimistic concurrency
    (a counter in SQLite, an ETag in Table Storage)."""

    key: str
    version: int | str
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BucketWrite:
    key: str
    expected: int | str | None  # None: the bucket must not exist yet
    doc: bytes
    upsert: Sequence[Incident]  # the bucket's incidents that are new or changed
    delete: Sequence[str] = ()  # ids of the bucket's incidents that no longer exist
