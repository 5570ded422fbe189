"""Detections as data: every built-in file loads, carries tests that pass (in order, shuffled and
one event per batch), and maps only to real ATLAS / OWASP ids."""

from __future__ import annotations

import csv
import random
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from aegis.correlate import detections, mapping, selftest
from aegis.correlate.engine import Correlator
from aegis.correlate.kinds import KINDS
from aegis.store import SqliteStore
from tests.conftest import shared_dir

LOADED = detections.load()


def test_the_built_in_detections_cover_the_required_scenarios():
    ids = {d.id for d in LOADED.detections}
    assert {
        "defender-ai-alert", "ai-prompt-attack-then-exfiltration", "ai-prompt-attack-campaign-by-caller",
        "ai-prompt-attack-campaign-by-user", "ai-denial-of-wallet-resource", "ai-denial-of-wallet-tokens",
        "ai-request-burst-by-caller", "ai-key-brute-force", "ai-control-plane-tampering", "ai-endpoint-involvement",
    } <= ids  # fmt: skip
    assert {d.kind for d in LOADED.detections} >= {"single", "event_count", "value_sum", "temporal", "temporal_ordered"}


@pytest.mark.parametrize("detection", LOADED.detections, ids=lambda d: d.id)
def test_each_detection_passes_its_own_tests(detection):
    failures = [o for o in selftest.run(detection) if not o.passed]
    assert failures == []


@pytest.mark.parametrize("detection", LOADED.detections, ids=lambda d: d.id)
def test_order_and_batching_do_not_change_the_incidents(detection):
    for case in detection.tests:
        events = selftest.build_events(case)

        def incidents(batches, events=events):
            store = SqliteStore(":memory:")
            store.save({}, events, [])
            c = Correlator([detection], store, lateness=timedelta(days=1))
            for batch in batches:
                c.process(batch)
            return sorted((i.id, i.event_ids, i.event_count, i.severity) for i in store.incidents())

        in_order = incidents([events])
        shuffled = events[:]
        random.Random(7).shuffle(shuffled)
        assert incidents([[e] for e in shuffled]) == in_order
        assert incidents([events, events]) == in_order  # redelivered


def test_kinds_in_the_schema_are_the_registered_ones():
    schema = detections.schema()
    assert set(schema["properties"]["kind"]["enum"]) == set(KINDS)
    assert {"single", "event_count", "value_count", "value_sum", "temporal", "temporal_ordered"} <= set(KINDS)


VALID = Path(detections.DETECTIONS_DIR / "ai-key-brute-force.yaml").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("kind: temporal_ordered", "kind: sequence"), "kind"),
        (
            ("window: 15m", "window: fifteen minutes"),
            "bad.yaml:11:1: window: 'fifteen minutes' is not a duration: write it as 15m, 1h, 2d or 1h30m (or in ISO",
        ),
        (
            ("group_by: [entities.ip.prefix, entities.ai_resource]", "group_by: [entities.ipaddress]"),
            "group_by: unknown field path 'entities.ipaddress'",
        ),
        (
            ("atlas: [AML.T0012, AML.T0055, AML.T0040]", "atlas: [AML.T9999]"),
            "unknown ATLAS technique id(s): AML.T9999",
        ),
        (("owasp_llm: []", "owasp_llm: [LLM11]"), "unknown OWASP LLM id(s): LLM11"),
        (
            (
                "match: {field: attributes.http_status, in: [401, 403]}",
                "match: {field: attributes.http_status, within: [401]}",
            ),
            "within",
        ),
        (('title: "Key guessing', 'title: "{ip.__class__} Key guessing'), "title"),
        (("window: 15m\n", "window: 15m\nthreshold: 3\n"), "does not take threshold"),
        (("id: ai-key-brute-force", "id: Bad Id!"), "id"),
    ],
)
def test_an_invalid_file_fails_naming_the_file_and_the_field(tmp_path, change, message):
    old, new = change
    assert old in VALID
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace(old, new, 1))
    with pytest.raises(detections.DetectionError) as info:
        detections.load([bad])
    assert str(bad) in str(info.value)
    assert message in str(info.value)


def test_duplicate_ids_across_files_fail(tmp_path):
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text(VALID)
    with pytest.raises(detections.DetectionError, match="already used"):
        detections.load([tmp_path])


def test_yaml_that_is_not_yaml_fails_clearly(tmp_path):
    (tmp_path / "x.yaml").write_text("id: [unclosed")
    with pytest.raises(detections.DetectionError, match=r"x\.yaml:1:14: not valid YAML: expected ',' or ']'"):
        detections.load([tmp_path])


# --- ATLAS / OWASP against the published data -------------------------------------------------


def test_shipped_atlas_subset_matches_the_published_data():
    with (shared_dir() / "reference/atlas/techniques.tsv").open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f, delimiter="\t")}
    for tid, shown in mapping.atlas_names().items():
        assert tid in rows, f"{tid} is not an ATLAS technique"
        parent = rows[tid]["parent_id"]
        expected = f"{rows[parent]['name']}: {rows[tid]['name']}" if parent else rows[tid]["name"]
        assert shown == expected


def test_shipped_atlas_tactics_match_the_published_data():
    ref = shared_dir() / "reference/atlas"
    with (ref / "techniques.tsv").open() as f:
        published = {r["id"]: r["tactics"].split(",") for r in csv.DictReader(f, delimiter="\t")}
    with (ref / "tactics.tsv").open() as f:
        names = {r["id"]: r["name"] for r in csv.DictReader(f, delimiter="\t")}
    assert mapping.atlas_tactic_names().items() <= names.items()
    for tid in mapping.atlas_names():
        assert mapping.atlas_tactics([tid]) == [names[t] for t in published[tid]], tid


def test_shipped_owasp_ids_match_the_published_list():
    with (shared_dir() / "reference/owasp-llm-top10-2025.tsv").open() as f:
        rows = {r["id"]: r["name"] for r in csv.DictReader(f, delimiter="\t")}
    assert mapping.owasp_names() == rows


def test_every_defender_ai_alert_type_is_mapped_including_renamed_and_retired():
    catalogue = orjson.loads((shared_dir() / "reference/defender-ai-alerts.json").read_bytes())
    types = [a["alert_type"] for a in catalogue["current"] + catalogue["historical"] if a["alert_type"]]
    assert len(types) >= 35
    for alert_type in types:
        m = mapping.mapping_of(alert_type)
        assert not m.generic, f"{alert_type} has no mapping"
        assert m.atlas, f"{alert_type} maps to no ATLAS technique"
        assert set(m.atlas) <= set(mapping.atlas_names())
        assert set(m.owasp_llm) <= set(mapping.owasp_names())
    # the doc writes one id without the AI. prefix; both spellings are mapped
    assert not mapping.mapping_of("AI.Azure_Agentic_BlockedJailbreak").generic


def test_an_unknown_ai_alert_type_gets_the_generic_mapping():
    m = mapping.mapping_of("AI.Azure_NeverSeenBefore")
    assert m.generic
    assert m.atlas


def test_a_small_incident_shows_every_event_and_its_title_names_the_network_it_grouped_on():
    d = next(d for d in detections.load().detections if d.id == "ai-key-brute-force")
    case = next(c for c in d.tests if c.name == "eight denials then success")
    events = selftest.build_events(case)
    store = SqliteStore(":memory:")
    Correlator([d], store, lateness=timedelta(hours=1)).process(events)
    [incident] = store.incidents()
    assert incident.event_count == len(events) == 11
    assert len(incident.timeline) == len(incident.event_ids) == 11  # all eight denials and three successes
    assert sum(t.step == "denied" for t in incident.timeline) == 8
    assert "203.0.113.0/24" in incident.title
    assert incident.why == "8 denied then 3 accepted in 15m (needs 5, 1)"


def test_an_alert_type_nobody_mapped_is_titled_by_its_display_name():
    from dataclasses import replace as copy_with

    d = next(d for d in detections.load().detections if d.id == "defender-ai-alert")
    case = d.tests[0]
    [alert] = [e for e in selftest.build_events(case) if e.source.value == "defender"][:1]
    unknown = copy_with(alert, kind="AI.Azure_NeverSeenBefore", title="A brand-new AI threat was detected")
    store = SqliteStore(":memory:")
    Correlator([d], store, lateness=timedelta(hours=1)).process([alert, copy_with(unknown, id="u-1")])
    titles = sorted(i.title for i in store.incidents())
    assert any(t.startswith("A brand-new AI threat was detected on ") for t in titles)
    assert any(t.startswith(alert.kind) for t in titles)  # a known type keeps its type


@pytest.mark.parametrize("detection", detections.load().detections, ids=lambda d: d.id)
def test_every_incident_says_why_it_fired_against_what_the_rule_asks(detection):
    case = next((c for c in detection.tests if c.expect.incidents > 0), None)
    assert case is not None, "every shipped detection has a test case that fires"
    store = SqliteStore(":memory:")
    Correlator([detection], store, lateness=timedelta(days=1)).process(selftest.build_events(case))
    whys = [i.why for i in store.incidents()]
    assert whys
    assert all(whys)
    if detection.kind == "single":
        assert all(w.endswith("matching event(s)") for w in whys)
    else:
        assert all(" in " in w and "(needs " in w for w in whys), whys
    if detection.threshold:
        reached = [float(w.split(" ", 1)[0].replace(",", "").rstrip("+")) for w in whys]
        assert all(r >= detection.threshold for r in reached), whys


def test_an_escalation_needs_a_count_or_a_duration(tmp_path):
    from aegis.correlate.detections import DetectionError

    source = (detections.DETECTIONS_DIR / "ai-prompt-attack-slow-campaign.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(source.replace("  - {events: 20, severity: high}", "  - {severity: high}"))
    with pytest.raises(DetectionError, match="needs `events`, `lasting` or both"):
        detections.load([bad])


def test_an_error_names_the_line_the_field_as_the_file_writes_it_and_the_key_meant(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(
        VALID.replace("window: 15m", "windw: 15m").replace(
            "{field: attributes.http_status, gte: 200}", "{field: attributes.http_status, gte: 200, lt: 300}", 1
        )
    )
    with pytest.raises(detections.DetectionError) as info:
        detections.load([bad])
    lines = str(info.value).splitlines()
    line_of_typo = VALID.replace("window: 15m", "windw: 15m").splitlines().index("windw: 15m") + 1
    assert lines[0] == f"{bad}:{line_of_typo}:1: windw: unknown field; did you mean window?"
    # no union member names in the path: the steps, the match, the test, as written
    assert any(":" in line and "steps.1.match.all.0: a test needs exactly one operator" in line for line in lines)
    assert not any("all.all" in line or ".test." in line for line in lines)


def test_a_file_that_is_not_there_or_not_yaml_says_so_plainly(tmp_path):
    with pytest.raises(detections.DetectionError, match=r"nope\.yaml: no such file \(check the path"):
        detections.load([tmp_path / "nope.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: x\n  bad: [\n")
    with pytest.raises(detections.DetectionError, match=r"broken\.yaml:2:6: not valid YAML: mapping values"):
        detections.load([broken])
