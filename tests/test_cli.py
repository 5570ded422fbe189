"""`aegis` as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, SAMPLES


def aegis(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    full_env.update(env or {})
    full_env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "aegis.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=60,
    )


def test_replay_a_folder_then_again(tmp_path):
    db = str(tmp_path / "a.db")
    keep = {"AEGIS_KEEP_EVENTS": "all"}  # every event kept: each is listed, and a replay finds them all again
    first = aegis("replay", "--db", db, str(SAMPLES), env=keep)
    assert first.returncode == 0, first.stderr
    assert "Replayed 16 messages from 16 file(s)" in first.stdout
    assert re.search(r"dead-lettered\s+4", first.stdout)
    second = aegis("replay", "--db", db, str(SAMPLES), env=keep)
    assert "0 new" in second.stdout
    assert "duplicates" in second.stdout
    events = orjson.loads(aegis("events", "--db", db, "--json").stdout)
    assert len(events) == 43
    assert {"id", "source", "kind", "time", "resource", "entities", "evidence"} <= set(events[0])
    assert events == sorted(events, key=lambda e: (e["time"], e["id"]))


def test_replay_records_the_response_as_the_event_hubs_path_does(tmp_path):
    """A body in a file is processed as the same body from Event Hubs: the plan's steps are recorded
    (a dry run by default) with no `aegis respond`, and replaying again records none twice."""
    db = str(tmp_path / "a.db")
    assert aegis("replay", "--db", db, str(SAMPLES)).returncode == 0
    incidents = orjson.loads(aegis("incidents", "--db", db, "--json").stdout)
    steps = [s["id"] for i in incidents for s in i["response"]]
    assert steps
    assert len(steps) == len(set(steps))
    assert aegis("replay", "--db", db, str(SAMPLES)).returncode == 0
    again = orjson.loads(aegis("incidents", "--db", db, "--json").stdout)
    assert sorted(s["id"] for i in again for s in i["response"]) == sorted(steps)
    respond = aegis("respond", "--db", db)
    assert respond.stdout.startswith("0 new step(s)"), respond.stdout


def test_by_default_the_stream_is_not_stored_again_and_the_evidence_says_where_its_bytes_are(tmp_path):
    """No row per event and no raw body per message: the events incidents hold are kept as they
    arrive with them, dead letters with their bytes, and every event an incident shows names the
    message and JSON pointer its bytes are at (here, a file; from Event Hubs, with the position)."""
    import hashlib

    from aegis.decode import Limits, decode
    from aegis.events import Evidence
    from aegis.normalize import select
    from aegis.store import SqliteStore

    db = str(tmp_path / "a.db")
    replayed = aegis("replay", "--db", db, str(SAMPLES))
    assert "kept as incidents' evidence" in replayed.stdout
    kept = {e["id"] for e in orjson.loads(aegis("events", "--db", db, "--json").stdout)}
    bodies = {hashlib.sha256(b).hexdigest(): b for b in (p.read_bytes() for p in sorted(SAMPLES.rglob("*.json")))}
    store = SqliteStore(tmp_path / "a.db")
    try:
        incidents = store.incidents()
        held = {i for incident in incidents for i in incident.event_ids}
        assert kept <= held  # evidence only, and not the whole stream
        assert len(kept) < 43
        assert all(store.raw(d.message) is not None for d in store.dead_letters())
        for entry in (t for incident in incidents for t in incident.timeline):
            assert entry.evidence is not None
            digest, rest = entry.evidence[:64], entry.evidence[64:]
            pointer, hub = rest.split("@")
            assert hub == "replay"
            item = decode(bodies[digest], Limits())  # the pointer leads to the item the event came from
            for part in filter(None, pointer.split("/")):
                item = item[int(part)] if isinstance(item, list) else item[part]
            chosen = select(item)
            assert chosen is not None
            assert entry.event_id in {e.id for e in chosen.normalize(item, Evidence(digest, pointer, hub))}
    finally:
        store.close()


def test_jsonl_files_hold_one_body_per_line_and_lines_forces_it(tmp_path):
    records = orjson.loads((SAMPLES / "diagnostics" / "01-requestresponse-envelope.json").read_bytes())["records"]
    jsonl = tmp_path / "export.jsonl"
    jsonl.write_bytes(b"\n".join(orjson.dumps(r) for r in records[:5]) + b"\n\n")
    out = aegis("replay", "--db", str(tmp_path / "a.db"), str(jsonl))
    assert "Replayed 5 messages" in out.stdout
    pt1h = tmp_path / "PT1H.json"  # a storage export: one record per line despite the suffix
    pt1h.write_bytes(b"\n".join(orjson.dumps(r) for r in records[5:8]))
    assert re.search(r"dead-lettered\s+1", aegis("replay", "--db", str(tmp_path / "b.db"), str(pt1h)).stdout)
    assert "Replayed 3 messages" in aegis("replay", "--db", str(tmp_path / "c.db"), "--lines", str(pt1h)).stdout


def test_deadletters_json_keeps_reason_and_original_bytes(tmp_path):
    db = str(tmp_path / "a.db")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"records": [\n\xff\xfe{}\n')
    aegis("replay", "--db", db, "--hub", "ai-diagnostics", str(bad))
    rows = orjson.loads(aegis("deadletters", "--db", db, "--json").stdout)
    assert [r["reason"].split(":")[0] for r in rows] == ["malformed JSON", "body is not valid UTF-8 (byte 0)"]
    assert rows[0]["body"] == '{"records": ['
    assert rows[1]["body"] is None
    assert base64.b64decode(rows[1]["body_base64"]) == b"\xff\xfe{}"
    assert all(r["hub"] == "ai-diagnostics" for r in rows)
    table = aegis("deadletters", "--db", db)
    assert "malformed JSON" in table.stdout
    assert "2 dead letter(s)" in table.stdout


def test_demo_summarizes_the_bundled_samples(tmp_path):
    out = aegis("demo", "--db", str(tmp_path / "demo.db"))
    assert out.returncode == 0, out.stderr
    for expected in (
        "AI resources:  oai-contoso-prod",
        "203.0.113.0/24",
        "AI.Azure_CredentialTheftAttempt",
        "dead letter:",
        "Next:",
    ):
        assert expected in out.stdout


def test_default_database_is_aegis_db_or_AEGIS_DB(tmp_path):
    aegis("replay", str(SAMPLES / "defender"), cwd=tmp_path)
    assert (tmp_path / "aegis.db").exists()
    aegis("replay", str(SAMPLES / "defender"), env={"AEGIS_DB": str(tmp_path / "env.db")}, cwd=tmp_path)
    assert (tmp_path / "env.db").exists()


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["replay", "/no/such/file.json"], {}, 1, "error: no such file or folder: /no/such/file.json"),
        (["events", "--db", "/no/such/dir/a.db"], {}, 1, "error: no database at /no/such/dir/a.db"),
        (["events", "--db", "NOTADB"], {}, 1, "file is not a database"),
        (["events", "--limit", "0"], {}, 2, "Invalid value for '--limit'"),
        (["replay"], {}, 2, "Missing argument"),
        (["frobnicate"], {}, 2, "No such command 'frobnicate'"),
        (["events"], {"AEGIS_STORE": "table"}, 1, "AEGIS_TABLE_ENDPOINT and AEGIS_BLOB_ENDPOINT must be set"),
    ],
)
def test_errors_are_one_clear_line_and_a_nonzero_exit(tmp_path, args, env, code, message):
    (tmp_path / "NOTADB").write_text("this is not sqlite")
    out = aegis(*args, env=env, cwd=tmp_path)
    assert out.returncode == code
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    if code == 1:
        assert len(out.stderr.strip().splitlines()) == 1


def test_incidents_json_and_show(tmp_path):
    db = str(tmp_path / "a.db")
    aegis("replay", "--db", db, str(SAMPLES))
    incidents = orjson.loads(aegis("incidents", "--db", db, "--json").stdout)
    assert incidents
    for i in incidents:
        assert {
            "id",
            "detection",
            "title",
            "severity",
            "status",
            "first_seen",
            "last_seen",
            "entities",
            "atlas",
            "owasp_llm",
            "event_ids",
        } <= set(i)
        assert all(set(e) >= {"kind", "id"} for e in i["entities"])
        assert i["status"] in ("open", "closed")
    attack = next(i for i in incidents if i["detection"] == "ai-prompt-attack-then-exfiltration")
    assert "2516861522999999999_a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b" in attack["event_ids"]
    assert {
        "kind": "ai_resource",
        "id": "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai-prod/providers/microsoft.cognitiveservices/accounts/oai-contoso-prod",
    } in attack["entities"]
    everything = orjson.loads(aegis("incidents", "--db", db, "--json", "--all").stdout)
    assert len(everything) > len(incidents)
    assert any(i["status"] == "superseded" for i in everything)
    shown = aegis("incidents", "show", attack["id"], "--db", db)
    assert shown.returncode == 0
    for text in ("AML.T0054 LLM Jailbreak", "LLM01 Prompt Injection", "timeline (2 events)", "[prompt attack]",
                 f"group       {attack['group']}", "why         1 prompt attack then 1 credential theft",
                 "alerts (2)", "ATT&CK: TA0006 Credential Access"):  # fmt: skip
        assert text in shown.stdout
    missing = aegis("incidents", "show", "nope", "--db", db)
    assert missing.returncode == 1
    assert "no incident nope" in missing.stderr

    enriched = aegis("enrich", "--db", db)  # the local enricher on the embedded default
    assert enriched.returncode == 0, enriched.stderr
    assert "incident(s) enriched, 0 delivered" in enriched.stdout
    again = orjson.loads(aegis("incidents", "--db", db, "--json").stdout)
    kept = next(i for i in again if i["id"] == attack["id"])["enrichment"]
    assert [(e["name"], e["status"]) for e in kept] == [("local", "ok")]
    assert kept[0]["result"]["networks"][0]["network"] == "203.0.113.0/24"
    shown = aegis("incidents", "show", attack["id"], "--db", db).stdout
    assert "local         ok" in shown
    assert "recommended next steps (tier: P1 - page on-call now)" in shown
    assert "ai-credential-compromise: " in shown


def test_detections_commands(tmp_path):
    assert "detection(s) valid" in aegis("detections", "validate").stdout
    listed = aegis("detections", "list").stdout
    assert "ai-key-brute-force" in listed
    tested = aegis("detections", "test")
    assert tested.returncode == 0
    assert re.search(r"\d+ passed, 0 failed", tested.stdout)
    coverage = aegis("detections", "coverage").stdout
    for text in ("AML.T0054", "LLM10", "NOT covered"):
        assert text in coverage
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\n")
    out = aegis("detections", "validate", "--path", str(bad))
    assert out.returncode == 1
    assert str(bad) in out.stderr


def test_the_cli_loads_the_pipeline_and_the_sdks_only_for_the_commands_that_need_them():
    """`aegis --help` answers without importing the pipeline, the response or any Azure SDK (they
    cost seconds of start-up); checked by what is loaded, not by a timing."""
    import subprocess
    import sys

    probe = (
        "import sys, aegis.cli\n"
        "heavy = ['aegis.pipeline', 'aegis.runtime', 'aegis.respond.execute', 'aegis.correlate.engine', "
        "'msgraph', 'azure.mgmt.security', 'azure.monitor.query', 'azure.data.tables']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def _commands() -> list[list[str]]:
    """Every command path of the CLI, as a user types it (`incidents show`, `detections coverage`...)."""
    import typer.main

    from aegis.cli import app

    paths: list[list[str]] = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_version_and_help_read_as_command_line_help_on_every_command():
    version = aegis("--version")
    assert version.returncode == 0
    assert re.fullmatch(r"aegis \d+\.\d+\.\d+ \(Python 3\.\d+\.\d+\)\n", version.stdout)
    top = " ".join(aegis("--help").stdout.split())
    assert "correlates them into incidents mapped to MITRE ATLAS" in top
    assert "Exit status: 0 done; 1 a problem" in top
    commands = _commands()
    assert len(commands) > 25
    for path in commands:
        shown = aegis(*path, "--help")
        assert shown.returncode == 0, path
        text = " ".join(shown.stdout.split())
        for raw in ("<bool>", "<str>", "<path>", "<int>", "<list[", "{", "[default: ]"):
            assert raw not in text, (path, raw, text)
        assert not re.search(r" [.,;:](\s|$)", text), (path, text)  # a stray space before a stop: markup eaten
        assert "Usage: aegis " + " ".join(path) in text


def test_every_command_that_prints_data_prints_json_too(tmp_path):
    db = tmp_path / "j.db"
    replayed = aegis("replay", str(ROOT / "samples"), "--db", str(db), "--json")
    assert replayed.returncode == 0, replayed.stderr
    counts = json.loads(replayed.stdout)
    assert counts["messages"] > 0
    assert counts["files"] > 0
    incident = json.loads(aegis("incidents", "--db", str(db), "--json").stdout)[0]
    shown = json.loads(aegis("incidents", "show", incident["id"], "--db", str(db), "--json").stdout)
    assert shown["id"] == incident["id"]
    assert shown["timeline"]
    assert shown["triage"] is None
    for args in (("detections", "list"), ("detections", "test"), ("detections", "coverage"), ("playbooks", "list"),
                 ("respond", "--db", str(db)), ("enrich", "--db", str(db)), ("audit", "--db", str(db)),
                 ("approvals", "list", "--db", str(db))):  # fmt: skip
        done = aegis(*args, "--json")
        assert done.returncode == 0, (args, done.stderr)
        json.loads(done.stdout)


def test_a_replay_that_kept_nothing_exits_1_and_says_where_to_look(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "an alert"}')
    done = aegis("replay", str(bad), "--db", str(tmp_path / "x.db"))
    assert done.returncode == 1
    assert "every one of the 1 message(s) was dead-lettered: nothing was kept" in done.stderr
    assert "aegis deadletters --db" in done.stderr


def test_a_detection_path_that_is_not_there_is_said_plainly():
    done = aegis("detections", "validate", "--path", "/nonexistent")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: /nonexistent: no such file (check the path; a folder is read file by file)"
