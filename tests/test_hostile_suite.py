"""The hostile-input suite: 10,000 generated bodies through the real pipeline (every built-in
detection, the response plan recorded) on SQLite, and the invariants an attacker must not break.

The bodies are mutations of real shapes (our samples, and the published ones in ../shared when it
is there): poison numbers, type swaps, deep nesting, huge strings, invalid UTF-8, truncation, wrong
hubs, forged times, and entity-steering attempts (a protected user by UPN or object id, a protected
host, a protected AI account, an end user named only by the app). The generator is seeded, so a
failure names the seed and replays exactly. Invariants, checked batch by batch and at the end:

- nothing escapes `process()`, and `messages == with_events + ignored + dead_lettered`;
- no step other than a refused one acts on a protected asset, on a target only an application
  named, or without the corroboration mark and its extra approval;
- processing every batch again (Event Hubs redelivery) changes no incident, event or step.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from aegis import runtime, settings
from aegis.events import Origin
from aegis.pipeline import Message
from aegis.records import Incident
from aegis.respond import planner, playbooks
from aegis.respond.actions import ACTIONS
from aegis.store import SqliteStore
from tests.conftest import ROOT, SAMPLES

BODIES = int(os.environ.get("AEGIS_HOSTILE_BODIES", "10000"))
SEED = int(os.environ.get("AEGIS_HOSTILE_SEED", "1414"))
BATCH = 100
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HUBS = ("defender-alerts", "ai-diagnostics")
BREAK_GLASS = ("breakglass-01@contoso.com", "0b0b0b0b-1111-4222-8333-444444444444")
PROTECTED_ACCOUNT = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-ai-core/providers/"
    "Microsoft.CognitiveServices/accounts/oai-core-prod"
)
POISON: list[Any] = [
    "18446744073709551616", 1.5e308, -1.5e308, "inf", "-inf", "nan", "NaN", "1e400", -1, "@BIG@", "@NEGBIG@",
    "0x10", "1_000", [1, 2], [], {"a": 1}, True, None, "", " ", "٣", "1" * 500,
]  # fmt: skip
TIMES = ["2099-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
         "not a time", "11/14/2025 1:48:53 AM", 1700000000, "2026-11-20T12:59:00Z", "2026-11-20T11:59:00+14:00"]  # fmt: skip


def seeds() -> list[tuple[str, Any]]:
    """(the hub its shape belongs on, decoded body) for every sample we can read."""
    found: list[tuple[str, Any]] = []
    folders = [SAMPLES / "defender", SAMPLES / "diagnostics"]
    shared = Path(os.environ.get("AEGIS_SHARED", ROOT.parent / "shared")) / "samples"
    if shared.is_dir():
        folders += [shared / "defender", shared / "diagnostics"]
    for folder in folders:
        hub = HUBS[0] if folder.name == "defender" else HUBS[1]
        for path in sorted(folder.rglob("*")):
            if path.suffix not in {".json", ".log"} or not path.is_file() or "schema" in path.name.lower():
                continue
            lines = [path.read_bytes()] if path.suffix == ".json" else path.read_bytes().splitlines()
            for line in lines:
                try:
                    found.append((hub, orjson.loads(line)))
                except orjson.JSONDecodeError:
                    continue
    return found


def _walk(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) for every value in a decoded body."""
    if isinstance(node, dict):
        for k in list(node):
            yield node, k
            yield from _walk(node[k])
    elif isinstance(node, list):
        for i in range(len(node)):
            yield node, i
            yield from _walk(node[i])


def _set_where(body: Any, rng: random.Random, names: tuple[str, ...], value: Any) -> bool:
    spots = [(c, k) for c, k in _walk(body) if isinstance(k, str) and k.lower() in names]
    if not spots:
        return False
    container, key = rng.choice(spots)
    container[key] = value
    return True


NUMERIC = ("durationms", "resultsignature", "requestlength", "responselength", "prompttokens", "completiontokens",
           "totaltokens", "statuscode", "errorcode", "severity")  # fmt: skip
TIMEY = ("time", "starttimeutc", "timegeneratedutc", "eventtimestamp", "createddatetime", "timegenerated", "starttime")


def mutate(rng: random.Random, hub: str, body: Any) -> tuple[str, bytes]:
    b = copy.deepcopy(body)
    how = rng.randrange(14)
    if how == 0:
        _set_where(b, rng, NUMERIC, rng.choice(POISON))
    elif how == 1:  # a type swap anywhere
        spots = list(_walk(b))
        if spots:
            c, k = rng.choice(spots)
            c[k] = rng.choice([*POISON, "x" * rng.randrange(1, 70_000), {"nested": {"deeper": [1]}}])
    elif how == 2:  # deep nesting (written as text below: orjson will not write it, a hostile sender will)
        pass
    elif how == 3:  # wrong hub
        hub = HUBS[1] if hub == HUBS[0] else HUBS[0]
    elif how == 4:  # forged time
        _set_where(b, rng, TIMEY, rng.choice(TIMES))
    elif how == 5:  # a protected user, by UPN or object id, in an alert's account entity or a log's claims
        name, oid = BREAK_GLASS
        for c, k in list(_walk(b)):
            if isinstance(k, str) and k.lower() in {"aaduserid", "objectid", "userid", "principalid"}:
                c[k] = oid
                if isinstance(c, dict) and "upnSuffix" in c:  # an account entity: pair the object id with the UPN
                    c["name"], c["upnSuffix"] = name.split("@")
            elif isinstance(k, str) and k.lower() in {"userprincipalname", "upn", "caller", "username"}:
                c[k] = name
    elif how == 6:  # a protected host or AI account named as the target
        for c, k in list(_walk(b)):
            if isinstance(k, str) and k.lower() in {"hostname", "netbiosname", "computername"}:
                c[k] = rng.choice(["DC01", "dc01.contoso.local", "dc02"])
            elif isinstance(k, str) and k.lower() in {"resourceid", "azureresourceid"} and isinstance(c[k], str):
                c[k] = PROTECTED_ACCOUNT
    elif how == 7:  # the app's end-user context naming someone
        for c, k in list(_walk(b)):
            if isinstance(k, str) and k.lower() in {"extendedproperties"} and isinstance(c[k], dict):
                c[k]["End user ID"] = f"victim{rng.randrange(100)}@contoso.com"
                c[k]["End user IP address"] = f"198.51.100.{rng.randrange(256)}"
    elif how == 8:  # huge strings in every text field
        for c, k in list(_walk(b)):
            if isinstance(c[k], str) and rng.random() < 0.3:
                c[k] = c[k] * rng.randrange(1, 2000)
    elif how == 9:  # drop fields
        spots = [(c, k) for c, k in _walk(b) if isinstance(c, dict)]
        for c, k in rng.sample(spots, min(len(spots), rng.randrange(1, 6))):
            c.pop(k, None)
    # integers past 64 bits as JSON numbers (orjson will not write them; a hostile sender will)
    data = orjson.dumps(b).replace(b'"@BIG@"', b"18446744073709551616").replace(b'"@NEGBIG@"', b"-9223372036854775809")
    if how == 2:
        depth = rng.choice([30, 62, 63, 65, 200, 5000])
        opener, closer = (b'{"records":[', b"]}") if rng.random() < 0.5 else (b"[", b"]")
        data = opener * depth + data + closer * depth
    elif how == 10:  # invalid UTF-8 or truncation
        cut = rng.randrange(1, max(len(data), 2))
        data = data[:cut] + (b"\xff\xfe" if rng.random() < 0.5 else b"")
    elif how == 11:  # a huge body
        data = b'{"records": [' + b",".join([data] * 1500) + b"]}"
    elif how == 12:  # a secret in a field
        data = data.replace(
            b'"userAgent":"', b'"userAgent":"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghij ', 1
        )
    # how == 13: the body as it is (repeats, so redelivery within the stream too)
    return hub, data


def stream(rng: random.Random) -> list[list[Message]]:
    found = seeds()
    assert found
    batches, batch = [], []
    for seq in range(1, BODIES + 1):
        hub, data = mutate(rng, *rng.choice(found))
        enq = NOW - timedelta(minutes=rng.randrange(0, 600))
        batch.append(Message(data, hub=hub, partition=str(seq % 4), sequence_number=seq, enqueued_time=enq))
        if len(batch) == BATCH:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def snapshot(store: SqliteStore) -> tuple[Any, ...]:
    incidents = sorted((i.id, i.event_count, i.last_seen, i.severity) for i in store.incidents())
    steps = sorted((s.key, s.status, s.approvals) for s in store.steps())
    return incidents, steps, len(store.events()), len(store.dead_letters())


def test_ten_thousand_hostile_bodies_break_no_invariant(tmp_path):
    rng = random.Random(SEED)
    batches = stream(rng)
    cfg = settings.load(db=tmp_path / "hostile.db")
    store = SqliteStore(cfg.db)
    pipeline = runtime.build_pipeline(cfg, store, respond=True)
    pipeline.clock = lambda: NOW
    plan = playbooks.load().plan
    totals = {"messages": 0, "with_events": 0, "ignored": 0, "dead_lettered": 0, "events": 0}
    for n, batch in enumerate(batches):
        counts = pipeline.process(batch)  # nothing may escape: a crash here fails with the seed below
        assert counts.messages == counts.with_events + counts.ignored + counts.dead_lettered, (SEED, n)
        assert not counts.detection_errors, (SEED, n, counts.error_reasons)
        for k in totals:
            totals[k] += getattr(counts, k)
    assert totals["messages"] == BODIES
    assert totals["with_events"] > BODIES // 10  # the mutations leave much of the stream usable
    assert totals["dead_lettered"] > BODIES // 10  # and much of it is refused, with a reason
    assert all(d.reason for d in store.dead_letters())

    incidents = {i.id: i for i in store.incidents()}
    steps = store.steps()
    # the object id is the break-glass user's only where the stream itself paired the two (an alert's
    # account entity, a log's claims): the oracle reads that from the stored events, not from the planner
    upn, oid = BREAK_GLASS
    paired = any(getattr(e, "upn", None) == upn and getattr(e, "object_id", None) == oid and e.origin is not Origin.APP
                 for ev in store.events() for e in ev.entities)  # fmt: skip
    protected_users = {upn, oid} if paired else {upn}
    assert steps, "the stream should give incidents with a response plan"
    for step in steps:
        if step.status == "refused":
            continue
        spec = ACTIONS[step.action]
        params = spec.params.model_validate(step.params)
        assert not _touches_what_the_stream_protected(step, incidents.get(step.incident), protected_users), (
            SEED, step.key, step.target,
        )  # fmt: skip
        assert planner.protected(params, plan, step.aliases) is None, (SEED, step.key, step.target)
        if spec.disruptive:
            assert step.corroboration == planner.NO_SOURCE, (SEED, step.key)
            assert step.approvals == planner.uncorroborated_approvals(plan.approvals_for(step.action)), step.key
            incident = incidents.get(step.incident)  # an incident re-formed under another id is gone
            assert incident is None or not _only_the_app_named(incident, step.target), (SEED, step.key, step.target)
    refused_protected = [s for s in steps if s.status == "refused" and "protected" in (s.reason or "")]
    assert refused_protected, "the steering attempts should have reached the plan and been refused"

    before = snapshot(store)
    for batch in batches:  # Event Hubs redelivers everything
        pipeline.process(batch)
    assert snapshot(store) == before, f"redelivery changed something (seed {SEED})"
    store.close()


def _only_the_app_named(incident: Incident, target: str) -> bool:
    value = target.split(":", 1)[-1]
    named = [e for e in incident.entities if e.key.lower() == value or value in planner.identifiers(e)]
    return bool(named) and all(e.origin is Origin.APP for e in named)


PROTECTED_HOSTS = {"dc01", "dc01.contoso.local", "dc02", "dc02.contoso.local"}  # the shipped plan's, short names too


def _touches_what_the_stream_protected(step: Any, incident: Incident | None, users: set[str]) -> bool:
    """An oracle that does not ask the planner: does this step act on an asset the generator made
    protected (the break-glass user under the names the stream gave it, a domain controller, the core account)?"""
    p = step.params
    if p.get("user") in users:
        return True
    if str(p.get("account", "")).lower() == PROTECTED_ACCOUNT.lower():
        return True
    if str(p.get("host_name", "")).lower() in PROTECTED_HOSTS:
        return True
    if p.get("machine_id") and incident is not None:
        hosts = [e for e in incident.entities if getattr(e, "mde_machine_id", None) == p["machine_id"]]
        if any((getattr(h, "name", None) or "").lower() in PROTECTED_HOSTS for h in hosts):
            return True
    return False
