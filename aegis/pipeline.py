"""The one pipeline every front door drives: Event Hubs triggers, `aegis replay`, the tests.

    message bytes ─► decode ─► items ─► normalizer ─► events ─► correlator ─► one commit per batch:
                         │          │                                      panes, incidents, the events
                         │          │                                      they hold, the outbox ─► respond
                         └──────────┴──► dead letters, with their bytes ─► store

The stream itself is not stored again (it stays in Event Hubs, and in Capture or Log Analytics
where the customer keeps it): only dead letters with their original bytes, and the events that
incidents hold as evidence, written in the correlation commit. `keep_events` keeps every event
and body too (a row per event, for local investigation: `AEGIS_KEEP_EVENTS=all`).

Outcome of each message, exactly one of:
- `with_events`: at least one item gave events (items of it that failed are dead-lettered too);
- `ignored`: every item was a valid message with nothing to watch (or the body held no items);
- `dead_lettered`: nothing usable; one dead letter per failed item, or one for the whole body.
So `messages == with_events + ignored + dead_lettered` always. Only a store fault escapes
`process()` (`StoreUnavailable`, for the trigger's retry policy); nothing about a message does.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta

import structlog

from aegis import normalize, tracing
from aegis.assets import AssetBook
from aegis.correlate.engine import Correlator
from aegis.decode import Limits, decode, items, kind_of
from aegis.directory import Directory
from aegis.errors import MalformedInput
from aegis.events import DeadLetter, Event, Evidence, richer
from aegis.keyuse import KeyUse
from aegis.normalize import Ignored
from aegis.normalize.registry import HubKind
from aegis.records import Incident
from aegis.store import Store
from aegis.tenancy import Tenancy

log = structlog.get_logger("aegis.pipeline")


@dataclass(frozen=True, slots=True)
class Message:
    """One Event Hubs message body and where it came from."""

    body: bytes
    hub: str
    partition: str | None = None
    sequence_number: int | None = None
    offset: str | None = None
    enqueued_time: datetime | None = None


@dataclass(slots=True)
class Counts:
    messages: int = 0
    with_events: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    events: int = 0
    new_events: int = 0  # with every event kept (`keep_events`): those not stored before
    duplicates: int = 0  # with every event kept: those stored before (redelivered or replayed)
    evidence: int = 0  # events written with the incidents that hold them
    dead_letters: int = 0
    new_dead_letters: int = 0
    by_normalizer: dict[str, int] = field(default_factory=dict)
    ignored_items: dict[str, int] = field(default_factory=dict)  # normalizer → valid items it had nothing to take from
    matches: int = 0
    incident_updates: int = 0
    late: int = 0
    detection_errors: dict[str, int] = field(default_factory=dict)  # detection id → failures (its state unchanged)
    error_reasons: dict[str, str] = field(default_factory=dict)  # detection id → the first reason

    def add(self, other: Counts) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "error_reasons":
                for k, v in theirs.items():
                    mine.setdefault(k, v)
            elif isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0) + v
            else:
                setattr(self, f.name, mine + theirs)


class Pipeline:
    def __init__(
        self,
        store: Store,
        *,
        limits: Limits | None = None,
        correlator: Correlator | None = None,
        respond: Callable[[list[Incident], list[Event]], None] | None = None,
        hubs: Mapping[str, HubKind] | None = None,
        keep_events: bool = False,
        tenancy: Tenancy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        assets: Callable[[], AssetBook] | None = None,
    ) -> None:
        self.store = store
        # every event and raw body kept (a row per event: local investigation), or, by default, only
        # the dead letters with their bodies and the events incidents hold (written with the incidents)
        self.keep_events = keep_events
        # hub name → what it carries: an item of the other kind on a hub named here is dead-lettered
        # (anyone holding one hub's Send key must not pass as the other source); other hub names, such
        # as `aegis replay`'s, take both
        self.hubs = dict(hubs or {})
        self.limits = limits or Limits()
        self.correlator = correlator
        # given the incidents a batch created or changed, and its events (the response plan learns
        # from every event which identities belong to protected users before it plans)
        self.respond = respond
        self.tenancy = tenancy or Tenancy()  # which tenant each event belongs to (`tenancy.py`)
        self.directory = Directory(store, clock=clock)  # one entity per principal (`directory.py`)
        self.key_use = KeyUse(store)  # who calls each AI account with its keys (`keyuse.py`)
        self.assets = assets  # the inventory: a hub-based Foundry project stands as its hub (`AssetBook.parents`)
        self.clock = clock

    def process(self, messages: Sequence[Message]) -> Counts:
        sequences = [m.sequence_number for m in messages if m.sequence_number is not None]
        first = messages[0] if messages else None
        with cycle_collector_paused(), tracing.span(
            "aegis.batch", **{"messaging.batch.message_count": len(messages)}, hub=first.hub if first else None,
            partition=first.partition if first else None, **{"aegis.sequence.first": min(sequences, default=None),
                                                             "aegis.sequence.last": max(sequences, default=None)},
        ):  # fmt: skip
            return self._process(messages)

    def _process(self, messages: Sequence[Message]) -> Counts:
        counts = Counts(messages=len(messages))
        raws: dict[str, bytes] = {}
        events: dict[str, Event] = {}
        dead_letters: list[DeadLetter] = []
        received = self.clock()
        with tracing.span("aegis.normalize") as normalizing:
            for message in messages:
                digest = hashlib.sha256(message.body).hexdigest()
                produced, failed = self._one(message, digest, received, counts.ignored_items)
                if produced:
                    counts.with_events += 1
                elif failed:
                    counts.dead_lettered += 1
                else:
                    counts.ignored += 1
                if failed or (produced and self.keep_events):
                    raws[digest] = message.body
                for event in produced:
                    counts.events += 1
                    counts.by_normalizer[event.normalizer] = counts.by_normalizer.get(event.normalizer, 0) + 1
                    known = events.get(event.id)
                    events[event.id] = event if known is None else richer(known, event)  # one alert in two shapes
                dead_letters += failed
            if events:  # each principal as the directory knows it, before anything is kept or correlated
                events = {e.id: e for e in self.directory.apply(list(events.values()))}
            if events and self.assets is not None and (book := self.assets()):
                events = {i: replace(e, entities=moved) if (moved := book.parents(e.entities)) else e
                          for i, e in events.items()}  # fmt: skip
            normalizing.set_attributes({"aegis.events": len(events), "aegis.dead_letters": len(dead_letters)})
        if raws or dead_letters or self.keep_events:
            kept = list(events.values()) if self.keep_events else []
            result = self.store.save(raws, kept, dead_letters, received=received)
            counts.new_dead_letters = result.new_dead_letters
            if self.keep_events:
                counts.new_events = result.new_events
                counts.duplicates = counts.events - result.new_events
        counts.dead_letters = len(dead_letters)
        if self.correlator is not None and events:
            with tracing.span("aegis.correlate") as correlating:
                correlated = self.correlator.process(list(events.values()))
                correlating.set_attributes({"aegis.incidents": tracing.ids([i.id for i in correlated.changed]),
                                            "aegis.matches": correlated.matches})  # fmt: skip
            counts.matches = correlated.matches
            counts.incident_updates = correlated.incidents
            counts.evidence = correlated.evidence
            counts.late = correlated.too_late
            counts.detection_errors = {d: n for d, (n, _) in correlated.errors.items()}
            counts.error_reasons = {d: reason for d, (_, reason) in correlated.errors.items()}
        if events:  # after the correlation's commit: the WAL copied while the next batch is computed holds both
            self.key_use.observe(events.values())
        if self.correlator is not None and events and self.respond is not None:  # it plans with the callers too
            with tracing.span("aegis.respond", incidents=tracing.ids([i.id for i in correlated.changed])):
                self.respond(correlated.changed, list(events.values()))
        return counts

    def _one(
        self, message: Message, digest: str, received: datetime, ignored: dict[str, int] | None = None
    ) -> tuple[list[Event], list[DeadLetter]]:
        """The events and dead letters of one message (neither: it was ignored); the items ignored
        are counted in `ignored`, by normalizer."""

        def dead(reason: str, pointer: str = "", normalizer: str | None = None) -> DeadLetter:
            log.warning("dead_lettered", reason=reason, pointer=pointer, message=digest, normalizer=normalizer)
            return DeadLetter(
                id=_dead_letter_id(message, digest, pointer),
                reason=reason,
                message=digest,
                pointer=pointer,
                hub=message.hub,
                received=received,
                size=len(message.body),
                normalizer=normalizer,
                partition=message.partition,
                sequence_number=message.sequence_number,
                offset=message.offset,
                enqueued_time=message.enqueued_time,
            )

        try:
            pairs = list(items(decode(message.body, self.limits), self.limits))
        except MalformedInput as exc:
            return [], [dead(str(exc))]

        produced: list[Event] = []
        failed: list[DeadLetter] = []
        ignored = {} if ignored is None else ignored
        carries = self.hubs.get(message.hub)  # the kind of hub the message came on, when configured
        # Event Hubs stamps the enqueue time; an event cannot have happened after it (beyond clock skew)
        arrived = (
            (min(message.enqueued_time, received), "enqueued") if message.enqueued_time else (received, "received")
        )
        for pointer, item in pairs:
            if not isinstance(item, dict):
                failed.append(dead(f"item is {kind_of(item)}, not an object", pointer))
                continue
            chosen = normalize.select(item)
            if chosen is None:
                failed.append(dead("unrecognized item: not a Defender alert, export message or log record", pointer))
                continue
            evidence = Evidence(
                digest, pointer, message.hub, message.partition, message.sequence_number, message.offset,
                message.enqueued_time,
            )  # fmt: skip
            try:
                made = chosen.normalize(item, evidence)
                if made and carries is not None and chosen.hub != carries:  # an item to ignore may come on any hub
                    failed.append(dead(f"wrong hub: {chosen.name} items arrive on the {chosen.hub} hub, and "
                                       f"{message.hub} is the {carries} hub", pointer, chosen.name))  # fmt: skip
                    continue
                for e in made:
                    _check_time(e, arrived, self.limits.max_skew)
                produced += map(self.tenancy.assign, made)
            except Ignored:
                ignored[chosen.name] = ignored.get(chosen.name, 0) + 1
            except MalformedInput as exc:
                failed.append(dead(str(exc), pointer, chosen.name))
            except Exception as exc:  # a normalizer bug: keep the item, say which normalizer failed
                failed.append(dead(f"normalizer failed: {type(exc).__name__}", pointer, chosen.name))
        return produced, failed


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch; then freeze what survived it, and at most
    once in `FULL_COLLECTION_EVERY` (seconds, wall clock) collect everything.

    A batch allocates hundreds of thousands of short-lived objects (items, events, matches) and
    frees nearly all of them by reference counting; left on, the collector would run every 700
    allocations and, every so often, walk the whole correlation state cache (measured in
    `bench/e2e.py`: about a quarter of the time of a batch of 500). What survives a batch is
    long-lived (cached states, panes): frozen, no collection walks it again, and what of it dies
    later is freed by reference counting all the same.

    Only garbage in reference cycles waits for the full collection, and a batch makes none (tested
    on every sample and the bench stream: `test_a_batch_leaves_no_garbage_in_reference_cycles`).
    The full collection walks the whole heap (0.3 s at 2,000 bench messages, more as the cache
    grows): once every 64 batches it was the slowest batch of all; on a clock it is a safety net
    whose cost no longer follows the batch rate."""
    global _full_collection_at  # noqa: PLW0603 - one clock per process, as the collector itself is
    if not gc.isenabled():  # already paused by the caller (nested use, or an embedding that manages it)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        now = time.monotonic()
        if now - _full_collection_at >= FULL_COLLECTION_EVERY:
            _full_collection_at = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        gc.enable()


FULL_COLLECTION_EVERY = 600.0
_full_collection_at = time.monotonic()


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # no Azure log or alert is older: an earlier time is broken


def _check_time(e: Event, arrived: tuple[datetime, str], skew: timedelta) -> None:
    """A forged or broken time would move event-time windows and expiry forward (or back before
    anything Azure wrote): such an item is malformed."""
    when, how = arrived
    if e.time > when + skew:
        raise MalformedInput(
            f"event time {e.time.isoformat()} is more than {_duration(skew)} after the message was "
            f"{how} ({when.isoformat()}): a forged or broken clock"
        )
    if e.time < EARLIEST:
        raise MalformedInput(f"event time {e.time.isoformat()} is before {EARLIEST.year}: not a real Azure time")


def _duration(t: timedelta) -> str:
    seconds = int(t.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 and seconds >= 60 else f"{seconds} s"


def _dead_letter_id(message: Message, digest: str, pointer: str) -> str:
    """Deterministic: a redelivery (same hub, partition and sequence number) or a replay of the same
    bytes gives the same id; two messages that merely carry the same bytes get two records."""
    position = f"{message.hub}\x00{message.partition}\x00{message.sequence_number}"
    return hashlib.sha256(f"{digest}\x00{pointer}\x00{position}".encode()).hexdigest()[:32]
