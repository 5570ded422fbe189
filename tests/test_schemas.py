"""The JSON Schemas `aegis detections schema` and `aegis playbooks schema` print are generated from
the registries in full: what the loaders accept, they accept; an action's parameters and a rule
kind's fields are in them, so an editor flags a wrong parameter before any load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from aegis.correlate import detections
from aegis.respond import playbooks
from aegis.respond.actions import ACTIONS, example
from tests.conftest import ROOT
from tests.test_cli import aegis

DETECTIONS = sorted((ROOT / "detections").glob("*.yaml"))
PLAYBOOKS = sorted(p for p in (ROOT / "playbooks").glob("*.yaml") if p.name != playbooks.PLAN_FILE)


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(schema: dict[str, Any], doc: Any) -> list[str]:
    return [e.message for e in validator(schema).iter_errors(doc)]


@pytest.mark.parametrize("path", DETECTIONS, ids=lambda p: p.stem)
def test_every_shipped_detection_is_valid_under_the_schema(path: Path):
    assert errors(detections.schema(), yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_every_shipped_playbook_is_valid_under_the_schema(path: Path):
    assert errors(playbooks.schema()["playbook"], yaml.safe_load(path.read_text())) == []


def test_the_shipped_plan_is_valid_under_the_schema():
    plan = yaml.safe_load((ROOT / "playbooks" / playbooks.PLAN_FILE).read_text())
    assert errors(playbooks.schema()["response_plan"], plan) == []


@pytest.mark.parametrize("name", list(ACTIONS))
def test_each_actions_own_example_is_valid_and_its_parameters_are_in_the_schema(name: str):
    schema = playbooks.schema()["playbook"]
    step = yaml.safe_load(example(ACTIONS[name]))
    book = {"id": "example", "description": "x", "steps": [step]}
    assert errors(schema, book) == []
    [variant] = [v for v in schema["$defs"]["Step"]["oneOf"] if v["properties"]["action"]["const"] == name]
    assert set(variant["properties"]["params"]["properties"]) == set(ACTIONS[name].params.model_fields)
    wrong = copy.deepcopy(book)
    wrong["steps"][0]["params"]["no_such_parameter"] = "x"
    assert errors(schema, wrong)  # a parameter the action does not take


def test_a_literal_of_the_wrong_type_is_refused_and_a_placeholder_is_taken():
    schema = playbooks.schema()["playbook"]
    step = {"name": "isolate", "action": "isolate_endpoint", "params": {"machine_id": "{{ item.mde_machine_id }}",
                                                                       "comment": "c", "isolation": "Total"}}  # fmt: skip
    assert errors(schema, {"id": "abc", "description": "x", "steps": [step]})  # isolation: Selective or Full
    step["params"]["isolation"] = "{{ incident.isolation }}"
    assert errors(schema, {"id": "abc", "description": "x", "steps": [step]}) == []


def test_a_field_the_kind_forbids_or_a_field_it_needs_missing_is_refused():
    schema = detections.schema()
    single = yaml.safe_load(
        next(p for p in DETECTIONS if yaml.safe_load(p.read_text())["kind"] == "single").read_text()
    )
    assert errors(schema, single) == []
    assert errors(schema, {**single, "threshold": 3})  # single takes no threshold
    counting = yaml.safe_load(
        next(p for p in DETECTIONS if yaml.safe_load(p.read_text())["kind"] == "event_count").read_text()
    )
    assert errors(schema, {k: v for k, v in counting.items() if k != "threshold"})  # event_count needs one


def test_the_cli_prints_both_schemas():
    d = aegis("detections", "schema")
    assert d.returncode == 0, d.stderr
    assert {v["title"] for v in orjson.loads(d.stdout)["oneOf"]} == set(detections.KINDS)
    p = aegis("playbooks", "schema")
    assert p.returncode == 0, p.stderr
    assert len(orjson.loads(p.stdout)["playbook"]["$defs"]["Step"]["oneOf"]) == len(ACTIONS)
