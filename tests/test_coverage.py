"""Detection coverage: the ATLAS matrix over the shipped subset and over a full ATLAS release (read in
place from shared/), the OWASP LLM Top 10, the ATLAS Navigator layer, the CLI and the console page."""

from __future__ import annotations

import json

import pytest

from aegis.correlate import coverage, detections
from aegis.errors import InputNotFound, MalformedInput
from tests.conftest import shared_dir


def loaded():
    return detections.load().detections


def test_coverage_counts_a_detections_own_ids_and_those_of_the_alert_types_it_maps():
    cov = coverage.coverage(loaded())
    assert "ai-key-brute-force" in cov.atlas["AML.T0012"]  # its own `atlas`
    # defender-ai-alert names no technique itself: it covers what the Defender alert types it matches map to
    assert "defender-ai-alert" in cov.atlas["AML.T0054"]
    assert cov.owasp["LLM10"]  # unbounded consumption: the denial-of-wallet detections


def test_the_matrix_over_a_full_atlas_release_shows_every_tactic_and_every_gap():
    atlas = coverage.atlas_file(shared_dir() / "reference" / "atlas" / "ATLAS.yaml")
    assert atlas.complete
    assert len(atlas.tactics) == 16
    assert atlas.tactics[0] == ("AML.TA0002", "Reconnaissance")
    assert len(atlas.techniques) == 170
    # sub-techniques inherit their parent's tactics (ATLAS lists tactics on parents only)
    assert atlas.techniques["AML.T0051.000"].tactics == atlas.techniques["AML.T0051"].tactics
    columns = coverage.matrix(coverage.coverage(loaded()), atlas)
    recon = next(c for c in columns if c.name == "Reconnaissance")
    assert recon.covered == 0  # nothing here watches reconnaissance: a gap the matrix must show
    execution = next(c for c in columns if c.tactic == "AML.TA0005")
    prompt = next(cell for cell in execution.cells if cell.technique.id == "AML.T0051")
    assert [s.technique.id for s in prompt.subs][:2] == ["AML.T0051.000", "AML.T0051.001"]
    assert prompt.covered
    # each shipped technique id and name is the release's (the subset is not a private dialect)
    shipped = coverage.shipped_atlas()
    for ident, t in shipped.techniques.items():
        assert atlas.techniques[ident].name == t.name, ident
        assert set(t.tactics) == set(atlas.techniques[ident].tactics), ident


def test_the_navigator_layer_is_an_atlas_layer_scoring_what_is_covered():
    atlas = coverage.atlas_file(shared_dir() / "reference" / "atlas" / "ATLAS.yaml")
    cov = coverage.coverage(loaded())
    layer = coverage.navigator_layer(cov, atlas)
    assert layer["domain"] == "atlas-atlas"
    assert layer["versions"]["layer"] == "4.5"
    by_id = {t["techniqueID"]: t for t in layer["techniques"]}
    assert set(by_id) == set(atlas.techniques)
    assert by_id["AML.T0054"]["score"] == 1
    assert "ai-prompt-attack-then-exfiltration" in by_id["AML.T0054"]["comment"]
    assert by_id["AML.T0000"]["score"] == 0
    # a parent covered only through a sub-technique is scored and opened to show it
    assert by_id["AML.T0010"]["score"] == 1
    assert by_id["AML.T0010"]["showSubtechniques"] is True
    json.dumps(layer)  # plain JSON


def test_bad_atlas_data_is_a_clear_error(tmp_path):
    with pytest.raises(InputNotFound, match=r"give the ATLAS\.yaml of a mitre-atlas/atlas-data release"):
        coverage.atlas_file(tmp_path / "nope.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("just: text\n")
    with pytest.raises(MalformedInput, match=r"is not an ATLAS.yaml \(no matrices\[0\].tactics"):
        coverage.atlas_file(wrong)


def test_the_cli_writes_a_navigator_layer_and_prints_json(tmp_path):
    from tests.test_cli import aegis

    atlas = shared_dir() / "reference" / "atlas" / "ATLAS.yaml"
    layer = tmp_path / "layer.json"
    done = aegis("detections", "coverage", "--atlas", str(atlas), "--navigator", str(layer))
    assert done.returncode == 0, done.stderr
    assert "ATLAS 5.6.0: " in done.stdout
    assert "of the 170 techniques in the full data covered" in done.stdout
    assert f"ATLAS Navigator layer written to {layer}" in done.stderr
    assert json.loads(layer.read_text())["domain"] == "atlas-atlas"
    printed = aegis("detections", "coverage", "--json")
    doc = json.loads(printed.stdout)
    assert doc["atlas_source"] == "shipped"
    assert doc["owasp_llm"]["LLM10"]
    missing = aegis("detections", "coverage", "--atlas", str(tmp_path / "none.yaml"))
    assert missing.returncode == 1
    assert "no ATLAS data at" in missing.stderr
    unwritable = aegis("detections", "coverage", "--navigator", str(tmp_path / "no" / "such" / "dir.json"))
    assert unwritable.returncode == 1
    assert "cannot write" in unwritable.stderr
