"""A group's learned normal (`baseline`): far above normal means above this resource's normal,
learned from the stream in event time, and an attack does not teach itself to be normal."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from aegis.arm import parse_resource_id
from aegis.correlate.detections import Detection
from aegis.correlate.engine import Correlator
from aegis.events import AiResource, Event, Evidence, Source
from aegis.store import SqliteStore
from tests.conftest import ROOT

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
OAI = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/oai-1"


def shipped(name: str) -> dict:
    return yaml.safe_load((ROOT / "detections" / f"{name}.yaml").read_text())


def tokens_rule(**baseline: object) -> Detection:
    """The shipped token rule, with the baseline given (or none)."""
    return Detection.model_validate(shipped("ai-denial-of-wallet-tokens") | {"baseline": baseline or None})


def usage(n: int, at: timedelta, tokens: int, resource: str = OAI) -> Event:
    rid = parse_resource_id(resource)
    return Event(
        id=hashlib.sha256(f"{resource}/{n}".encode()).hexdigest()[:32],
        source=Source.RESOURCE_LOG, normalizer="test", kind="AzureOpenAIRequestUsage:ChatCompletions_Create",
        time=START + at, evidence=Evidence("0" * 64, f"/{n}", "test", "0", n), resource=rid,
        entities=(AiResource(resource_id=rid.id),), attributes={"total_tokens": tokens},
    )  # fmt: skip


def steady_then_spike(*, hours: int = 4, spike_tokens: int = 150_000) -> list[Event]:
    """A resource that always runs heavy (9,000 tokens every 15 s: 360,000 per 10 min, above the
    fixed 200,000), then, at the end, one 10-minute burst of 40 requests of `spike_tokens` more."""
    steady = [usage(n, timedelta(seconds=15 * n), 9_000) for n in range(hours * 240)]
    end = timedelta(hours=hours)
    burst = [usage(100_000 + n, end + timedelta(seconds=15 * n), 9_000 + spike_tokens) for n in range(40)]
    return steady + burst


def run(d: Detection, events: list[Event], batch: int = 120, *, fresh: bool = False) -> list:
    """The incidents of `events` in batches; `fresh`: a new correlator for each batch, so that every
    state is read back from the store (as after a restart, or on another instance)."""
    store = SqliteStore(":memory:")
    c = Correlator([d], store, lateness=timedelta(minutes=2))
    for i in range(0, len(events), batch):
        if fresh:
            c = Correlator([d], store, lateness=timedelta(minutes=2))
        c.process(events[i : i + batch])
    return sorted(store.incidents(), key=lambda i: i.first_seen)


def test_a_resource_that_always_runs_heavy_pages_once_while_its_normal_is_learned_then_only_far_above_it():
    with_normal = run(tokens_rule(factor=3, warmup="1h"), steady_then_spike())
    fixed = run(tokens_rule(), steady_then_spike())
    # the fixed threshold: ordinary work is one incident that never ends, and the burst is lost in it
    assert len(fixed) == 1
    assert fixed[0].last_seen >= START + timedelta(hours=4)
    # learned: the first hour (nothing learned yet) fires, then the resource's normal is 360,000 a
    # window, and only the burst (six times that) is far above it
    first, burst = with_normal
    assert first.last_seen < START + timedelta(hours=2)
    assert burst.first_seen >= START + timedelta(hours=3, minutes=50)  # its window: the burst's 10 minutes
    assert burst.why is not None
    # in the analyst's words: learned near the 360,000 the resource does (its first windows were
    # capped at the 200,000 threshold: nothing learned yet could say they were ordinary)
    assert "needs 9" in burst.why
    assert "3× this group's normal of 3" in burst.why


def test_a_burst_under_the_factor_is_ordinary_for_that_resource():
    (learning,) = run(tokens_rule(factor=3, warmup="1h"), steady_then_spike(spike_tokens=9_000))
    assert learning.last_seen < START + timedelta(hours=2)  # the learning hour only: the burst is twice normal


def test_a_quiet_resource_keeps_the_fixed_threshold_as_its_floor():
    quiet = [usage(n, timedelta(minutes=n), 500) for n in range(240)]  # 5,000 tokens per 10 min
    burst = [usage(10_000 + n, timedelta(hours=4, seconds=15 * n), 6_000) for n in range(40)]  # 240,000
    incidents = run(tokens_rule(factor=3, warmup="1h"), quiet + burst)
    assert len(incidents) == 1  # 240,000 is under 3× nothing much, but over the 200,000 floor: it fires
    assert incidents[0].first_seen >= START + timedelta(hours=3, minutes=50)


def test_a_long_attack_does_not_teach_itself_to_be_normal():
    """After the normal is learned, two hours at ten times it: every window's share of the normal
    is capped at the firing level, so the attack keeps firing to its end."""
    steady = [usage(n, timedelta(seconds=15 * n), 9_000) for n in range(3 * 240)]
    attack = [usage(10_000 + n, timedelta(hours=3, seconds=15 * n), 90_000) for n in range(2 * 240)]
    incidents = run(tokens_rule(factor=3, warmup="1h", half_life="2h"), steady + attack)
    assert incidents[-1].last_seen >= START + timedelta(hours=4, minutes=59)


def test_the_learned_normal_survives_the_store_round_trip_and_each_group_has_its_own():
    other = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/oai-2"
    events = steady_then_spike() + [usage(500_000 + n, timedelta(hours=4, seconds=15 * n), 6_000, other)
                                    for n in range(40)]  # fmt: skip
    incidents = run(tokens_rule(factor=3, warmup="1h"), events, fresh=True)
    on_other = [i for i in incidents if any(getattr(e, "resource_id", "") == other for e in i.entities)]
    assert len(on_other) == 1  # oai-2 has no normal yet: its 240,000 is judged by the fixed floor
    assert len(incidents) - len(on_other) == 2  # oai-1: the learning hour, then the burst alone


def test_a_baseline_is_for_volume_rules_only():
    with pytest.raises(ValueError, match="a baseline needs a volume rule"):
        Detection.model_validate(shipped("ai-key-brute-force") | {"baseline": {"factor": 3}})


# --- weights: what a SOC weighs ---


def test_an_applications_nightly_batch_through_a_private_endpoint_is_ordinary_work_and_disrupts_nothing():
    """The published scenario: a known service principal's nightly embedding batch, thousands of
    200s from a private-endpoint subnet. It is recorded, at the lowest severity, with why; no
    disruptive step is planned for it."""
    import copy

    import orjson

    from aegis.correlate import detections
    from aegis.pipeline import Message, Pipeline
    from aegis.respond import playbooks
    from aegis.respond.planner import plan
    from tests.conftest import SAMPLES

    sp = "5e5e5e5e-1111-4222-8333-444444444444"
    template = orjson.loads((SAMPLES / "diagnostics" / "01-requestresponse-envelope.json").read_bytes())["records"][0]
    records = []
    for n in range(3000):
        r = copy.deepcopy(template)
        r |= {"time": (START + timedelta(milliseconds=150 * n)).isoformat(), "callerIpAddress": "10.20.1.***",
              "resultSignature": "200", "correlationId": f"00000000-0000-0000-0000-{n:012d}",
              "operationName": "Embeddings_Create"}  # fmt: skip
        r["properties"] |= {"objectId": sp, "requestLength": 4000}
        records.append(r)
    store = SqliteStore(":memory:")
    p = Pipeline(store, correlator=Correlator(detections.load().detections, store),
                 clock=lambda: START + timedelta(hours=1))  # fmt: skip
    p.process([Message(orjson.dumps({"records": records[i : i + 100]}), hub="ai-diagnostics")
               for i in range(0, len(records), 100)])  # fmt: skip
    (flood,) = [i for i in store.incidents() if i.detection == "ai-request-burst-by-caller"]
    assert flood.event_count == 3000
    assert flood.severity.value == "informational"  # medium, 3 lower (the escalation to high at 3,000 too)
    assert flood.why is not None
    assert "weighed: Entra identity 100%, ordinary work (successful, private network, Entra identity) 100%" in flood.why
    assert flood.attributes["weighed"].endswith("lower")
    disruptive = {"contain_ai_resource", "rotate_ai_keys", "disable_user", "revoke_sessions", "isolate_host"}
    for incident in store.incidents():
        assert not [s for s in plan(incident, playbooks.load()) if s.action in disruptive and s.status != "refused"]


def test_weights_count_every_event_of_a_long_incident_through_the_store_round_trip():
    """The shares come from counts kept with the panes and with the summary of the panes an
    incident has outlived: an incident longer than the lateness is weighed on all its events."""
    rule = Detection.model_validate(shipped("ai-request-burst-by-caller") | {"baseline": None})
    from aegis.events import Ip, ServicePrincipal

    def call(n: int, private: bool) -> Event:
        ip = Ip(prefix="10.20.1.0/24") if private else Ip(prefix="81.2.69.0/24")
        return Event(id=f"{n:032d}", source=Source.RESOURCE_LOG, normalizer="test",
                     kind="RequestResponse:Embeddings_Create", time=START + timedelta(milliseconds=500 * n),
                     evidence=Evidence("0" * 64, f"/{n}", "test", "0", n),
                     entities=(ip, ServicePrincipal(object_id="5e5e5e5e-1111-4222-8333-444444444444")),
                     attributes={"category": "RequestResponse", "http_status": 200})  # fmt: skip

    # two hours of one application's calls from one private network, in batches read back each time
    (incident,) = run(rule, [call(n, True) for n in range(14_400)], batch=600, fresh=True)
    assert incident.event_count == 14_400
    assert incident.severity.value == "informational"  # high (past 3,000 events), 3 lower
    assert "100%" in incident.attributes["weighed"]


def flood_of(sizes: list[int], *, alert: bool = False) -> Any:
    """320 keyed requests from one public network with these request sizes (in turn), and, with
    `alert`, Defender's wallet alert on the resource among them: the incident of the bytes rule."""
    from aegis.events import Ip

    rid = parse_resource_id(OAI)
    events = [Event(id=f"{n:032d}", source=Source.RESOURCE_LOG, normalizer="test", kind="RequestResponse:Create",
                    time=START + timedelta(milliseconds=500 * n), evidence=Evidence("0" * 64, f"/{n}", "test", "0", n),
                    resource=rid, entities=(Ip(prefix="81.2.69.0/24"), AiResource(resource_id=rid.id)),
                    attributes={"category": "RequestResponse", "http_status": 200,
                                "request_bytes": sizes[n % len(sizes)]})
              for n in range(320)]  # fmt: skip
    if alert:
        events.append(Event(id="1" * 32, source=Source.DEFENDER, normalizer="test", kind="AI.Azure_DOWVolumeAnomaly",
                            time=START + timedelta(minutes=1), evidence=Evidence("0" * 64, "/a", "test"),
                            resource=rid, entities=(AiResource(resource_id=rid.id),)))  # fmt: skip
    rule = Detection.model_validate(shipped("ai-denial-of-wallet-resource") | {"baseline": None, "threshold": 1e6})
    (incident,) = run(rule, events)
    return incident


def test_even_sizes_weigh_a_flood_one_level_down_and_uneven_ones_do_not():
    even = flood_of([4000, 4100, 3900])
    uneven = flood_of([400, 9000, 2500, 12000, 800])
    assert (even.severity.value, uneven.severity.value) == ("low", "medium")
    assert "steady sizes (±" in even.attributes["weighed"]
    assert "weighed" not in uneven.attributes


def test_an_incident_with_defenders_alert_is_never_weighed_down():
    alerted = flood_of([4000, 4100, 3900], alert=True)
    assert alerted.severity.value == "medium"
    assert "weighed" not in alerted.attributes


def test_a_weight_is_one_test_or_the_other():
    with pytest.raises(ValueError, match="either `when` with `share`, or `steady` with `spread`"):
        Detection.model_validate(
            shipped("ai-request-burst-by-caller")
            | {"weigh": [{"name": "x", "steady": "attributes.request_bytes", "share": 0.5, "severity": -1}]}
        )
