"""The state store: one interface, two implementations (SQLite embedded, Azure Table Storage).

Writes are idempotent: events and dead letters are keyed by deterministic ids, raw bodies by their
SHA-256, so replaying a batch stores nothing new. A transient fault raises `StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aegis.events import DeadLetter, Event


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
