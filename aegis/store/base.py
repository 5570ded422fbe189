"""The state store: one port, two implementations (SQLite embedded, `:memory:` for tests and
`aegis detections test`; Azure Table Storage in the cloud). It keeps records (`aegis.records`,
`aegis.events`) and knows no stage: no rule, no playbook.

Writes are idempotent: events and dead letters are keyed by deterministic ids, raw bodies by their
SHA-256, so replaying a batch stores nothing new. A transient fault raises `StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aegis.assets import Asset, AssetChange, Finding, KeyCaller
from aegis.events import DeadLetter, Event
from aegis.records import AuditEntry, Enrichment, Incident, Pending, Principal, StepRecord, Triage


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

    def load_buckets(self, keys: Sequence[str]) -> dict[str, Bucket]:
        """The buckets that exist, each with its version (a caller holding a copy does not ask: its
        write at that version is a conflict if the bucket moved on)."""
        ...

    def commit_buckets(self, writes: Sequence[BucketWrite]) -> Committed:
        """Write each bucket whose version still matches, with its incident changes and an outbox
        entry for each incident upserted, atomically. A bucket's version never repeats, not even
        after it expired and was created again (a copy cached at an old version is never current)."""
        ...

    def outbox(self) -> list[Pending]:
        """The incident changes the response has not planned yet, oldest first: each with the incident
        as that change left it, or as it stands since (SQLite reads it from the incidents, written in
        the same transaction, and drops the entries of one deleted since: a later batch found it under
        another id); the response plans an incident's latest state either way."""
        ...

    def clear_outbox(self, done: Sequence[Pending]) -> None:
        """Remove these entries (a change written since, with another fingerprint, stays)."""
        ...

    def expire_buckets(self, before: int) -> int:
        """Delete the correlation state of buckets whose newest event (µs since the epoch) is older
        than `before`, unless written meanwhile; keep their incidents. Returns how many went."""
        ...

    def incidents(self) -> list[Incident]: ...

    def evidence(self, incident: Incident) -> list[Event]:
        """The events of the incident's timeline that are kept (stored with it as evidence, or with
        every event kept), by its `event_ids`: what the console and the CLI show of its alerts."""
        ...

    # --- the response: planned steps, the audit log, local tickets, learned protected identifiers ---

    def add_steps(self, steps: Sequence[StepRecord], audit: Sequence[AuditEntry]) -> int:
        """Record steps not recorded yet (by key) with their audit entries; return how many were new."""
        ...

    def steps(
        self, *, incident: str | None = None, action: str | None = None, status: Sequence[str] | None = None
    ) -> list[StepRecord]:
        """Steps in the order they were planned, optionally of one incident, one action, some statuses."""
        ...

    def step(self, key: str) -> StepRecord | None: ...

    def replace_step(self, step: StepRecord, *, audit: Sequence[AuditEntry]) -> bool:
        """Write `step` (made by `StepRecord.next`) if the stored one is still at the revision before it;
        False if another writer (a decision, an executor) got there first."""
        ...

    def started_since(self, action: str, since: datetime) -> int:
        """How many steps of `action` the executor started at or after `since` (rate limits)."""
        ...

    def save_ticket(self, incident: str, title: str, severity: str, now: datetime) -> tuple[str, bool]:
        """Open the incident's local ticket, or update it: its number, and whether it is new."""
        ...

    def audit_log(self) -> list[AuditEntry]: ...

    def protected_aliases(self) -> set[str]:
        """The other identifiers of protected users that incidents have shown (an alert pairing a
        protected UPN with an object id): protected like the plan's own entries."""
        ...

    def add_protected_aliases(self, identifiers: Iterable[str], now: datetime) -> None: ...

    # --- triage: an incident's analyst state, written apart from the incident ---

    def triage(self, incident: str) -> Triage | None: ...

    def triages(self) -> dict[str, Triage]:
        """Every incident's triage that exists, by incident id."""
        ...

    def save_triage(self, triage: Triage, *, audit: Sequence[AuditEntry]) -> bool:
        """Write `triage` (made by `Triage.next`) with its audit entries if the stored one is still at
        the revision before it (or, at revision 1, if there is none); False if another got there first."""
        ...

    # --- the directory: principals by object id and UPN (`aegis.directory`) ---

    def principals(self, keys: Sequence[str]) -> dict[str, Principal]:
        """The directory's entries under these keys (`oid:<guid>`, `upn:<upn>`), those there are."""
        ...

    def save_principals(self, entries: Mapping[str, Principal]) -> None:
        """Write (replace) the directory's entries under these keys."""
        ...

    # --- enrichment and delivery ---

    def save_enrichment(self, incident: str, items: Sequence[Enrichment], *, kind: str = "enrich") -> None:
        """Replace what is kept for these enrichers (`kind="enrich"`) or deliverers (`"deliver"`) of `incident`."""
        ...

    def enrichment(self, incident: str, *, kind: str = "enrich") -> list[Enrichment]:
        """What was kept for `incident`, by name."""
        ...

    # --- the AI estate (`aegis.inventory`): assets, their findings, what changed, key callers ---

    def assets(self) -> list[Asset]:
        """The assets of the latest inventory refresh, by id."""
        ...

    def save_inventory(
        self, assets: Sequence[Asset], findings: Sequence[Finding], changes: Sequence[AssetChange],
        *, gone: Sequence[str] = (),
    ) -> None:  # fmt: skip
        """Write (replace) these assets and findings, delete the assets `gone` (by id) and append the changes."""
        ...

    def findings(self) -> list[Finding]:
        """Every finding, open and closed, by asset."""
        ...

    def asset_changes(self, *, limit: int | None = None) -> list[AssetChange]:
        """What the refreshes saw change, newest first (retention purges the old ones)."""
        ...

    def key_callers(self, account: str) -> list[KeyCaller]:
        """Who the logs showed calling `account` (an ARM id) with its keys, most recent first."""
        ...

    def save_key_callers(self, callers: Sequence[KeyCaller]) -> None:
        """Write (replace) these callers' rows."""
        ...


Version = int | str  # a counter in SQLite, an ETag in Table Storage


@dataclass(frozen=True, slots=True)
class Bucket:
    """Correlation state of one (detection, group), with its version for optimistic concurrency."""

    key: str
    version: Version
    doc: dict[str, Any]  # the head: everything but the panes and the entities
    chunks: dict[int, bytes] = field(default_factory=dict)  # the panes, in chunks, as stored
    # the entities its panes refer to, each once, in records by number, as stored
    entities: dict[int, bytes] = field(default_factory=dict)


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
    entities: Mapping[int, bytes] = field(default_factory=dict)  # records of the bucket's entities that changed
    drop_entities: Sequence[int] = ()  # records of its entities that are now empty
    upsert: Sequence[Incident] = ()  # the bucket's incidents that are new or changed
    delete: Sequence[str] = ()  # ids of the bucket's incidents that no longer exist
    evidence: Sequence[Event] = ()  # events of the batch that its changed incidents hold: kept with them
