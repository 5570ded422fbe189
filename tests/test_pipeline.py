"""The pipeline end to end on SQLite: outcomes, dead letters, idempotence, and the invariant
messages = with events + ignored + dead-lettered under generated hostile input."""

from __future__ import annotations

import copy
import gc
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis import normalize
from aegis.decode import Limits
from aegis.normalize.registry import REGISTRY, Normalizer
from aegis.pipeline import Message, Pipeline
from aegis.store import SqliteStore
from tests.conftest import SAMPLES
from tests.helpers import body

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SEEDS = [p.read_bytes() for p in sorted(SAMPLES.rglob("*.json"))]


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


VALID_SEEDS = [s for s in SEEDS if _parses(s)]
ENVELOPE = (SAMPLES / "diagnostics" / "01-requestresponse-envelope.json").read_bytes()
ALERT = (SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes()
ASSESSMENT = (SAMPLES / "defender" / "05-assessment-export.json").read_bytes()


def make_pipeline(limits: Limits | None = None) -> Pipeline:
    return Pipeline(SqliteStore(":memory:"), limits=limits, keep_events=True, clock=lambda: NOW)


def msg(data: bytes, **kw: Any) -> Message:
    return Message(body=data, hub=kw.pop("hub", "ai-diagnostics"), **kw)


def test_a_good_batch_is_stored_and_counted():
    p = make_pipeline()
    counts = p.process([msg(ENVELOPE), msg(ALERT, hub="defender-alerts"), msg(ASSESSMENT, hub="defender-alerts")])
    assert (counts.messages, counts.with_events, counts.ignored, counts.dead_lettered) == (3, 2, 1, 0)
    assert counts.events == 26
    assert counts.new_events == 26
    assert counts.by_normalizer == {"diagnostics.ai": 25, "defender.alert.arm": 1}
    stored = p.store.events()
    assert len(stored) == 26
    alert = next(e for e in stored if e.normalizer == "defender.alert.arm")
    assert alert.evidence.hub == "defender-alerts"
    assert p.store.raw(alert.evidence.message) == ALERT


def test_replaying_a_batch_twice_stores_nothing_new():
    p = make_pipeline()
    batch = [msg(ENVELOPE), msg(ALERT), msg(b"{broken")]
    first = p.process(batch)
    second = p.process(batch)
    assert first.new_events == 26
    assert (second.new_events, second.duplicates, second.new_dead_letters) == (0, 26, 0)
    assert len(p.store.events()) == 26
    assert len(p.store.dead_letters()) == 1


def test_garbage_in_reference_cycles_made_during_batches_waits_for_the_full_collection(monkeypatch):
    """What survives a batch is frozen (no collection walks it again); a cycle that became garbage
    is still reclaimed, by the full collection once its interval has passed, and not before."""
    import weakref

    from aegis import pipeline

    class Node:
        other: Any = None

    def batch_leaving_a_cycle() -> weakref.ref[Node]:
        with pipeline.cycle_collector_paused():
            a, b = Node(), Node()
            a.other, b.other = b, a  # a cycle: reference counting alone never frees it
            return weakref.ref(a)

    monkeypatch.setattr(pipeline, "_full_collection_at", pipeline.time.monotonic())
    kept = [batch_leaving_a_cycle() for _ in range(200)]
    assert all(r() is not None for r in kept)  # within the interval: frozen, not walked
    monkeypatch.setattr(pipeline, "_full_collection_at", pipeline.time.monotonic() - pipeline.FULL_COLLECTION_EVERY)
    last = batch_leaving_a_cycle()
    assert all(r() is None for r in kept)
    assert last() is not None  # made in the batch that ran it: frozen, for the next one
    assert pipeline._full_collection_at > pipeline.time.monotonic() - 60


def _cyclic_garbage(run: Any) -> list[str]:
    """What `run` leaves in reference cycles: the types of the objects only the cyclic collector
    could free (none, or the full collection's clock is all that bounds memory)."""
    run()  # once first: what a first run imports lazily (and leaves in cycles) happens once a process
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        found = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage})
        for o in gc.garbage:
            if callable(o) and hasattr(o, "__qualname__"):
                found.append(f"{o.__module__}:{o.__qualname__}")
        return found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _process_all(bodies: list[bytes], batch: int = 8) -> None:
    import tempfile
    from pathlib import Path

    from aegis import settings
    from aegis.runtime import build_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "a.db"
        store = SqliteStore(db)
        p = build_pipeline(settings.load(db=db), store, respond=True)  # correlation and the response, recorded
        for n in range(0, len(bodies), batch):
            p.process([Message(b, hub="h", partition="0", sequence_number=n + k)
                       for k, b in enumerate(bodies[n : n + batch])])  # fmt: skip
        store.close()


def test_a_batch_leaves_no_garbage_in_reference_cycles():
    """Every sample of ours (the malformed too) and a bench stream that raises incidents and plans
    their response: nothing is left for the cyclic collector, which is why it can run on a clock."""
    from datetime import timedelta

    from bench.generate import BodyGenerator

    stream = BodyGenerator(5, accounts=3, callers=4, span=timedelta(hours=2)).bodies(300)
    assert _cyclic_garbage(lambda: _process_all([*SEEDS, *stream])) == []


def test_a_batch_of_published_payloads_leaves_no_garbage_in_reference_cycles(shared):
    bodies = [p.read_bytes() for p in sorted((shared / "samples").rglob("*")) if p.is_file() and p.suffix != ".md"]
    assert len(bodies) > 25
    assert _cyclic_garbage(lambda: _process_all(bodies)) == []


def test_the_garbage_check_sees_a_cycle():
    class Node:
        other: Any = None

    def leave_a_cycle() -> None:
        a = Node()
        a.other = a

    assert any("Node" in t for t in _cyclic_garbage(leave_a_cycle))


def test_the_cycle_collector_is_paused_during_a_batch_and_restored_after(monkeypatch):
    seen: list[bool] = []
    p = make_pipeline()
    original = p.store.save
    monkeypatch.setattr(p.store, "save", lambda *a, **kw: (seen.append(gc.isenabled()), original(*a, **kw))[1])
    assert gc.isenabled()
    p.process([msg(ENVELOPE)])
    assert seen == [False]
    assert gc.isenabled()

    def failing(*a: Any, **kw: Any) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(p.store, "save", failing)
    with pytest.raises(RuntimeError):
        p.process([msg(ENVELOPE)])
    assert gc.isenabled()  # restored whatever happened
    gc.disable()  # a caller that manages the collector itself keeps it as it set it
    try:
        monkeypatch.setattr(p.store, "save", original)
        p.process([msg(ALERT)])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_same_event_twice_in_one_batch_is_one_event():
    counts = make_pipeline().process([msg(ALERT), msg(ALERT)])
    assert (counts.events, counts.new_events, counts.duplicates) == (2, 1, 1)


BAD_BODIES = {
    "malformed JSON": b'{"records": [{"time": ',
    "not valid UTF-8": b'{"records": [], "x": "\xc3\x28"}',
    "'records' is a string": b'{"records": "nope"}',
    "exceeds the limit": b'{"pad": "' + b"x" * 50_000 + b'"}',
    "nesting deeper than 16": b'{"records": ' + b"[" * 20 + b"]" * 20 + b"}",
    "body is a number": b"42",
    "unrecognized item": b'{"hello": "world"}',
}


@pytest.mark.parametrize("reason", BAD_BODIES)
def test_each_bad_message_gives_one_dead_letter_with_reason_position_and_bytes(reason):
    p = make_pipeline(Limits(max_body_bytes=40_000, max_depth=16))
    bad = BAD_BODIES[reason]
    enqueued = datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
    counts = p.process(
        [
            msg(ENVELOPE, partition="2", sequence_number=10),
            msg(bad, partition="2", sequence_number=11, offset="4096", enqueued_time=enqueued),
        ]
    )
    assert (counts.with_events, counts.dead_lettered, counts.dead_letters) == (1, 1, 1)
    [dl] = p.store.dead_letters()
    assert reason in dl.reason
    assert (dl.hub, dl.partition, dl.sequence_number, dl.offset) == ("ai-diagnostics", "2", 11, "4096")
    assert dl.enqueued_time == enqueued
    assert dl.received == NOW
    assert dl.size == len(bad)
    assert dl.message == hashlib.sha256(bad).hexdigest()
    assert p.store.raw(dl.message) == bad
    assert len(p.store.events()) == 25  # the good message beside it is whole


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("time", 1763629200, "'time' is a number, not a string"),
        ("time", "yesterday", "'time' is not a time"),
        (
            "resourceId",
            "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/..",
            "invalid segment",
        ),
        ("properties", 5, "'properties' is a number, not an object"),
        ("properties", "{not json", "'properties' is a string but not valid JSON"),
        ("operationName", ["a"], "'operationName' is an array, not a string"),
    ],
)
def test_a_bad_record_is_dead_lettered_and_its_neighbours_kept(field, value, reason):
    envelope = orjson.loads(ENVELOPE)
    envelope["records"][3][field] = value
    p = make_pipeline()
    counts = p.process([msg(body(envelope))])
    assert (counts.with_events, counts.dead_lettered, counts.events) == (1, 0, 24)
    [dl] = p.store.dead_letters()
    assert dl.pointer == "/records/3"
    assert reason in dl.reason
    assert dl.normalizer == "diagnostics.ai"


def test_a_message_whose_every_item_fails_is_dead_lettered():
    counts = make_pipeline().process(
        [msg(body({"records": [{"time": 1, "resourceId": "/subscriptions/s", "category": "X"}, 7]}))]
    )
    assert (counts.with_events, counts.ignored, counts.dead_lettered, counts.dead_letters) == (0, 0, 1, 2)


def test_an_empty_envelope_is_ignored():
    counts = make_pipeline().process([msg(b'{"records": []}')])
    assert (counts.ignored, counts.dead_lettered) == (1, 0)


def test_a_normalizer_bug_dead_letters_the_item_and_names_the_normalizer():
    original = REGISTRY["defender.alert.arm"]

    def broken(item, evidence):
        raise KeyError("boom")

    p = make_pipeline()
    with REGISTRY.substituted(
        "defender.alert.arm", Normalizer(original.name, original.source, original.accepts, broken, "", original.hub)
    ):
        counts = p.process([msg(ALERT), msg(ENVELOPE)])
    assert (counts.with_events, counts.dead_lettered) == (1, 1)
    [dl] = p.store.dead_letters()
    assert dl.reason == "normalizer failed: KeyError"
    assert dl.normalizer == "defender.alert.arm"


def test_registering_a_duplicate_name_fails_at_import():
    with pytest.raises(ValueError, match="registered twice"):
        normalize.normalizer("diagnostics.ai", source=REGISTRY["diagnostics.ai"].source, accepts=lambda i: False)(
            lambda i, e: []
        )


# --- the invariant, under generated input --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def structural_mutation(draw: st.DrawFn) -> bytes:
    doc = orjson.loads(draw(st.sampled_from(VALID_SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return orjson.dumps(doc)


@st.composite
def byte_mutation(draw: st.DrawFn) -> bytes:
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    op = draw(st.sampled_from(["truncate", "flip", "insert"]))
    i = draw(st.integers(0, len(seed) - 1))
    if op == "truncate":
        return bytes(seed[:i])
    if op == "flip":
        seed[i] = draw(st.integers(0, 255))
        return bytes(seed)
    return bytes(seed[:i]) + draw(st.binary(max_size=8)) + bytes(seed[i:])


messages = st.one_of(
    st.sampled_from(SEEDS),
    structural_mutation(),
    byte_mutation(),
    json_values.map(orjson.dumps),
    json_values.map(lambda v: orjson.dumps({"records": v})),
    st.binary(max_size=64),
    st.integers(1, 40).map(lambda n: b"[" * n + b"]" * n),
)


@given(st.lists(messages, min_size=1, max_size=6))
def test_every_message_ends_as_events_ignored_or_dead_letters(bodies):
    p = make_pipeline(Limits(max_body_bytes=64_000, max_depth=24))
    batch = [msg(b, sequence_number=i) for i, b in enumerate(bodies)]
    counts = p.process(batch)
    assert counts.messages == len(batch) == counts.with_events + counts.ignored + counts.dead_lettered

    by_digest = {hashlib.sha256(b).hexdigest(): b for b in bodies}
    dead_letters = p.store.dead_letters()
    assert len(dead_letters) == counts.dead_letters == counts.new_dead_letters >= counts.dead_lettered
    # events and dead letters point at original bytes that the store kept
    for ref in [e.evidence.message for e in p.store.events()] + [d.message for d in dead_letters]:
        assert p.store.raw(ref) == by_digest[ref]
    # a message's outcome does not depend on the batch it came in
    alone = [make_pipeline(Limits(max_body_bytes=64_000, max_depth=24)).process([m]) for m in batch]
    assert sum(c.with_events for c in alone) == counts.with_events
    assert sum(c.ignored for c in alone) == counts.ignored
    assert sum(c.dead_lettered for c in alone) == counts.dead_lettered
    # replaying the same batch changes nothing
    again = p.process(copy.copy(batch))
    assert (again.new_events, again.new_dead_letters) == (0, 0)
    assert again.with_events == counts.with_events
    assert again.dead_lettered == counts.dead_lettered


def test_an_event_dated_past_its_receive_time_is_dead_lettered_not_correlated():
    record = orjson.loads(ENVELOPE)["records"][0]
    future = {**record, "time": "2026-11-25T14:00:00.0000000Z"}  # two hours after NOW
    body = orjson.dumps({"records": [record, future]})
    p = make_pipeline()
    counts = p.process([msg(body)])
    assert (counts.events, counts.dead_letters) == (1, 1)
    [dead] = p.store.dead_letters()
    assert dead.pointer == "/records/1"
    assert "after the message was received" in dead.reason
    soon = {**record, "time": "2026-11-25T12:04:00Z"}  # a clock minutes ahead is skew, and fine
    assert make_pipeline().process([msg(orjson.dumps({"records": [soon]}))]).events == 1
    forged = {**record, "time": "2026-11-25T12:59:00Z"}  # 59 minutes ahead is not (the old bound was an hour)
    assert make_pipeline().process([msg(orjson.dumps({"records": [forged]}))]).dead_letters == 1


XDR_STREAMING = b"""{"records": [
  {"time": "2026-11-20T09:00:00.0000000Z", "tenantId": "11111111-2222-3333-4444-555555555555",
   "operationName": "Publish", "category": "AdvancedHunting-AlertInfo",
   "properties": {"Timestamp": "2026-11-20T08:59:58Z", "AlertId": "da638000000000000000_1", "Title": "Suspicious",
                  "Category": "Execution", "Severity": "High", "ServiceSource": "Microsoft Defender for Endpoint",
                  "DetectionSource": "EDR", "AttackTechniques": "[\\"T1059\\"]"}},
  {"time": "2026-11-20T09:00:00.0000000Z", "tenantId": "11111111-2222-3333-4444-555555555555",
   "operationName": "Publish", "category": "AdvancedHunting-AlertEvidence",
   "properties": {"Timestamp": "2026-11-20T08:59:58Z", "AlertId": "da638000000000000000_1", "EntityType": "Ip",
                  "EvidenceRole": "Related", "RemoteIP": "203.0.113.9"}}]}"""


@pytest.mark.parametrize("hub", ["defender-alerts", "ai-diagnostics"])
def test_defender_xdr_streaming_records_are_ignored_and_counted_on_either_hub(hub):
    from aegis.store import SqliteStore

    p = Pipeline(SqliteStore(":memory:"), hubs={"defender-alerts": "alerts", "ai-diagnostics": "diagnostics"})
    c = p.process([Message(XDR_STREAMING, hub=hub)])
    assert (c.ignored, c.dead_lettered, c.events) == (1, 0, 0)
    assert c.ignored_items == {"defender.xdr.streaming": 2}
