"""The Event Hubs handlers, called as the Functions host calls them, with `func.EventHubEvent`s."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.meta import Datum

from aegis import runtime
from aegis.errors import StoreUnavailable
from tests.conftest import SAMPLES

ENVELOPE = (SAMPLES / "diagnostics" / "01-requestresponse-envelope.json").read_bytes()
ALERT = (SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes()


class Invocation:
    """What the host passes as `context`: here, an invocation with no trace of the host's."""

    trace_context: Any = None


INVOCATION: Any = Invocation()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AEGIS_DB", str(tmp_path / "ingest.db"))
    runtime.reset()
    yield tmp_path / "ingest.db"
    runtime.pipeline().store.close()
    runtime.reset()


def hub_events(bodies: list[bytes], partition: str = "3", first_seq: int = 100) -> list[func.EventHubEvent]:
    meta = {"PartitionContext": Datum(f'{{"PartitionId": "{partition}", "ConsumerGroup": "aegis"}}', "json")}
    return [
        func.EventHubEvent(
            body=b,
            trigger_metadata=meta,
            enqueued_time=datetime(2026, 11, 20, 10, 0, i, tzinfo=UTC),
            sequence_number=first_seq + i,
            offset=str(4096 * i),
        )
        for i, b in enumerate(bodies)
    ]


@pytest.mark.parametrize(
    ("name", "hub_setting"), [("defender_alerts", "AEGIS_DEFENDER_HUB"), ("ai_diagnostics", "AEGIS_DIAGNOSTICS_HUB")]
)
def test_each_hub_has_a_batch_trigger_with_identity_connection_and_retry(functions, name, hub_setting):
    fn = functions[name]
    [binding] = json.loads(fn.get_function_json())["bindings"]  # what the host indexes
    assert binding["type"] == "eventHubTrigger"
    assert binding["cardinality"].lower() == "many"
    assert binding["dataType"].lower() == "binary"
    assert binding["eventHubName"] == f"%{hub_setting}%"
    assert binding["consumerGroup"] == "%AEGIS_CONSUMER_GROUP%"
    # a connection *prefix*: the host reads AEGIS_EVENTHUB__fullyQualifiedNamespace (identity-based)
    assert binding["connection"] == "AEGIS_EVENTHUB"
    retry = fn.get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff"
    assert int(retry["max_retry_count"]) >= 3


def test_a_batch_with_a_bad_message_stores_the_good_ones_and_dead_letters_the_bad(functions, db, monkeypatch):
    from handlers import ingest

    monkeypatch.setenv("AEGIS_KEEP_EVENTS", "all")  # every event kept, to see each with its Event Hubs position
    runtime.reset()

    ingest.ai_diagnostics(hub_events([ENVELOPE, b'{"records": [', ENVELOPE]), INVOCATION)
    store = runtime.pipeline().store
    events = store.events()
    assert len(events) == 25
    assert events[0].evidence.hub == "ai-diagnostics"
    assert events[0].evidence.partition == "3"
    assert events[0].evidence.sequence_number == 100
    [dl] = store.dead_letters()
    assert (dl.hub, dl.partition, dl.sequence_number, dl.offset) == ("ai-diagnostics", "3", 101, "4096")
    assert dl.enqueued_time == datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)
    assert store.raw(dl.message) == b'{"records": ['


def test_a_redelivered_batch_changes_nothing(functions, db):
    from handlers import ingest

    batch = hub_events([ALERT, b"not json"])
    ingest.defender_alerts(batch, INVOCATION)
    ingest.defender_alerts(batch, INVOCATION)  # Event Hubs delivers at least once
    store = runtime.pipeline().store
    assert len(store.events()) == 1
    assert len(store.dead_letters()) == 1


def test_hub_names_come_from_settings(functions, db, monkeypatch):
    from handlers import ingest

    monkeypatch.setenv("AEGIS_DEFENDER_HUB", "export-prod")
    runtime.reset()
    ingest.defender_alerts(hub_events([ALERT]), INVOCATION)
    assert runtime.pipeline().store.events()[0].evidence.hub == "export-prod"


def test_a_transient_store_fault_fails_the_batch_for_the_retry_policy(functions, db, monkeypatch):
    from handlers import ingest

    def unavailable(*args, **kwargs):
        raise StoreUnavailable("storage answered 503")

    monkeypatch.setattr(runtime.pipeline().store, "commit_buckets", unavailable)  # the batch's correlation commit
    with pytest.raises(StoreUnavailable):
        ingest.ai_diagnostics(hub_events([ENVELOPE]), INVOCATION)


def test_the_core_does_not_import_azure_functions():
    import subprocess
    import sys

    code = "import sys, aegis.cli, aegis.pipeline, aegis.runtime; print('azure.functions' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert out.stdout.strip() == "False"


def test_the_response_timer_runs_every_minute(functions):
    fn = functions["respond_timer"]
    [binding] = json.loads(fn.get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == "0 * * * * *"
    assert binding["useMonitor"] is True


def test_ingested_alerts_get_their_response_planned_and_the_timer_runs_nothing_in_dry_run(functions, db):
    from handlers import ingest, respond

    bodies = [p.read_bytes() for p in sorted((SAMPLES / "defender").glob("*.json"))]
    ingest.defender_alerts(hub_events(bodies), INVOCATION)
    store = runtime.pipeline().store
    steps = store.steps()
    assert steps, "the incidents the batch created have no response recorded"
    assert {s.status for s in steps} <= {"dry_run", "awaiting_approval", "refused"}
    assert {s.incident for s in steps} <= {i.id for i in store.incidents()}
    before = store.audit_log()
    respond.respond_timer(None)  # the plan is a dry run: nothing executes, nothing is written
    assert store.audit_log() == before


def test_a_worker_builds_its_plan_and_its_connections_once(db, monkeypatch):
    """The timers run every minute or two: the plan is read and validated once per worker, and one
    credential (with its token cache) serves every call, not a new one per run."""
    from aegis.respond import connect, playbooks

    built, loaded = [], []
    real_connect, real_load = connect.from_settings, playbooks.load
    monkeypatch.setattr(connect, "from_settings", lambda *a, **k: built.append(1) or real_connect(*a, **k))
    monkeypatch.setattr(playbooks, "load", lambda *a, **k: loaded.append(1) or real_load(*a, **k))
    monkeypatch.setenv("AEGIS_CORROBORATORS", "defender")  # the response timer asks a source: it needs connections
    runtime.reset()
    for _ in range(3):
        runtime.executor_run()
        runtime.sweep()
        runtime.enrich_run()
    assert (len(built), len(loaded)) == (1, 1)


def test_each_other_region_gets_its_own_diagnostics_trigger_on_its_own_connection(tmp_path):
    """AEGIS_DIAGNOSTICS_REGIONS (infra sets it): a trigger per region's namespace, the same hub
    and consumer group, the connection AEGIS_EVENTHUB_<REGION>; none without it."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import json, function_app\n"
        "fns = {f.get_function_name(): json.loads(f.get_function_json())['bindings'][0] "
        "for f in function_app.app.get_functions()}\n"
        "print(json.dumps({n: b for n, b in fns.items() if n.startswith('ai_diagnostics')}))"
    )
    env = {**os.environ, "AEGIS_DIAGNOSTICS_REGIONS": "EastUS, swedencentral", "AEGIS_DB": str(tmp_path / "f.db")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120, check=True)  # fmt: skip
    bindings = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(bindings) == ["ai_diagnostics", "ai_diagnostics_eastus", "ai_diagnostics_swedencentral"]
    east = bindings["ai_diagnostics_eastus"]
    assert (east["connection"], east["eventHubName"], east["consumerGroup"]) == (
        "AEGIS_EVENTHUB_EASTUS",
        "%AEGIS_DIAGNOSTICS_HUB%",
        "%AEGIS_CONSUMER_GROUP%",
    )
    assert east["cardinality"].lower() == "many"
    env["AEGIS_DIAGNOSTICS_REGIONS"] = "east us"
    refused = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=120)  # fmt: skip
    assert refused.returncode != 0
    assert "AEGIS_DIAGNOSTICS_REGIONS" in refused.stderr
