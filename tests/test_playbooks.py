"""The response plan, playbooks and the action registry: validated as data, failing with the file
and the field; every value an action takes parsed into the one form it accepts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from aegis.correlate import detections
from aegis.respond import playbooks, templates
from aegis.respond.actions import ACTIONS, example
from aegis.respond.params import AccountId, Guid, IpRange, MachineId, SecretUri, UserRef
from tests.helpers import corroborate_all
from tests.test_cli import aegis

DETECTION_IDS = [d.id for d in detections.load().detections]


def test_the_shipped_plan_and_playbooks_are_valid():
    loaded = playbooks.load(detection_ids=DETECTION_IDS)
    assert loaded.plan.mode == "dry_run"  # the embedded default executes nothing
    used = {s.action for p in loaded.playbooks.values() for s in p.steps}
    assert {"contain_ai_resource", "rotate_ai_keys", "isolate_endpoint", "disable_user"} <= used
    for name in ("isolate_endpoint", "rotate_ai_keys", "disable_user"):  # irreversible or wide: two people
        assert loaded.plan.approvals_for(name) == 2


@pytest.mark.parametrize("name", list(ACTIONS))
def test_each_action_documents_a_step_that_loads_through_the_real_loader(name):
    spec = ACTIONS[name]
    text = example(spec)
    assert text, f"{name}: no `Example:` in the parameter model's docstring"
    step = playbooks.load_step(text, origin=f"{name} docstring")
    assert step.action == name
    assert spec.permission
    assert re.search(r"\b(POST|PATCH|PUT) (https://|\.\.\.|/)", spec.rest), spec.rest  # names its exact calls
    assert spec.inverse is None or spec.inverse in ACTIONS


def test_the_schemas_follow_the_action_registry():
    schema = playbooks.schema()
    step = schema["playbook"]["$defs"]["Step"]["properties"]["action"]
    assert set(step["enum"]) == set(ACTIONS)
    plan_approvals = schema["response_plan"]["properties"]["approvals"]
    assert set(plan_approvals["propertyNames"]["enum"]) == set(ACTIONS)


def bad_folder(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "playbooks"
    shutil.copytree(playbooks.PLAYBOOKS_DIR, folder)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


STEP = "id: bad-book\ndescription: d\nsteps:\n  - name: s\n"


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        (STEP + "    action: format_disk\n", "steps.0.action", "Input should be"),
        (STEP + "    action: notify\n    params: {team: 0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c, channel: '19:a@thread.tacv2', "
         "text: hi, cc: x}\n", "steps.0", "has no parameter cc"),
        (STEP + "    action: disable_user\n", "steps.0", "needs user"),
        (STEP + "    action: contain_ai_resource\n    params: {account: /subscriptions/x/../y, mode: deny_public_network}\n",
         "steps.0", "params.account"),
        (STEP + "    action: disable_user\n    params: {user: '{{ incident.password }}'}\n", "steps.0",
         "unknown placeholder 'incident.password'"),
        (STEP + "    action: disable_user\n    params: {user: '{{ item.upn }}'}\n", "steps.0", "needs the step's for_each"),
        (STEP + "    action: isolate_endpoint\n    for_each: entities.host\n    params: {machine_id: '{{ item.serial }}', "
         "comment: c}\n", "steps.0", "has no field 'serial'"),
        (STEP + "    action: revoke_sessions\n    params: {user: 'mallory@contoso.com; DROP TABLE'}\n", "steps.0",
         "params.user"),
    ],
)  # fmt: skip
def test_a_bad_playbook_fails_naming_the_file_and_the_field(tmp_path, text, where, why):
    folder = bad_folder(tmp_path, "bad-book.yaml", text)
    with pytest.raises(playbooks.PlaybookError) as err:
        playbooks.load(folder)
    message = str(err.value)
    assert message.startswith(str(folder / "bad-book.yaml"))
    assert f": {where}:" in message or f": {where} " in message or where in message
    assert why in message


def test_a_plan_that_lets_a_disruptive_action_run_alone_is_refused(tmp_path):
    plan = (playbooks.PLAYBOOKS_DIR / playbooks.PLAN_FILE).read_text().replace("disable_user: 2", "disable_user: 0")
    folder = bad_folder(tmp_path, playbooks.PLAN_FILE, plan)
    with pytest.raises(playbooks.PlaybookError, match=r"response-plan\.yaml: .*disable_user .*need 1 or 2"):
        playbooks.load(folder)


def test_a_plan_naming_a_missing_playbook_or_detection_is_refused(tmp_path):
    plan = (playbooks.PLAYBOOKS_DIR / playbooks.PLAN_FILE).read_text()
    folder = bad_folder(tmp_path, playbooks.PLAN_FILE, plan.replace("[soc-ticket]", "[soc-tickets]", 1))
    with pytest.raises(playbooks.PlaybookError, match=r"triggers\.\d\.playbooks: no playbook 'soc-tickets'"):
        playbooks.load(folder)
    folder = bad_folder(tmp_path / "2", playbooks.PLAN_FILE, plan.replace("ai-key-brute-force", "ai-key-brute"))
    with pytest.raises(playbooks.PlaybookError, match=r"triggers\.0\.detections: no detection 'ai-key-brute'"):
        playbooks.load(folder, detection_ids=DETECTION_IDS)


def test_protected_assets_are_parsed_like_action_parameters(tmp_path):
    plan = (playbooks.PLAYBOOKS_DIR / playbooks.PLAN_FILE).read_text()
    folder = bad_folder(tmp_path, playbooks.PLAN_FILE, plan.replace("breakglass-01@contoso.com", "break glass"))
    with pytest.raises(playbooks.PlaybookError, match=r"protected\.users\.0"):
        playbooks.load(folder)


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (AccountId, "/subscriptions/S/resourceGroups/RG/providers/Microsoft.CognitiveServices/accounts/OAI",
         ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
          "/subscriptions/s/../providers/Microsoft.CognitiveServices/accounts/a", "oai-1"]),
        (UserRef, "Mallory@Contoso.com", ["mallory", "a@b", "x@contoso.com\nBcc: y", "' or 1=1 --@x.com"]),
        (Guid, "0F9A1B2C-3D4E-4F5A-8B6C-7D8E9F0A1B2C", ["0f9a1b2c", "0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c'"]),
        (IpRange, "81.2.69.0/24", ["81.2.69.***", "10.0.0.1; rm -rf /", "999.1.1.1"]),
        (MachineId, "4F1C0B9E2D7A6E3F8B5C1D0A9E8F7A6B5C4D3E2F", ["vm-chat-frontend", "4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2"]),
        (SecretUri, "https://kv-contoso-ai.vault.azure.net/secrets/oai-key2",
         ["https://evil.example.com/secrets/x", "https://kv.vault.azure.net/keys/x"]),
    ],
)  # fmt: skip
def test_parameter_types_accept_one_form_and_refuse_the_rest(kind, good, bad):
    adapter = TypeAdapter(kind)
    parsed = adapter.validate_python(good)
    assert parsed == adapter.validate_python(parsed)  # canonical: parsing again changes nothing
    for value in bad:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


def test_templates_fill_whole_values_and_text_safely():
    context = {"incident.title": "Jailbreak\x1b[31m on oai\u202e", "entities.ai_resource": ["/subscriptions/s/x"]}
    assert templates.render("{{ entities.ai_resource }}", context) == "/subscriptions/s/x"  # a list of one: its value
    assert templates.render("Aegis: {{ incident.title }}", context) == "Aegis: Jailbreak[31m on oai"
    assert templates.render(["{{ incident.title }}", 3], context)[1] == 3
    with pytest.raises(templates.TemplateError):
        templates.check_path("incident.__class__", item=None)


def test_the_playbooks_cli(tmp_path):
    ok = aegis("playbooks", "validate")
    assert ok.returncode == 0, ok.stderr
    assert "5 playbook(s) valid" in ok.stdout
    assert "contain_ai_resource" in aegis("playbooks", "list").stdout
    actions = aegis("playbooks", "actions").stdout
    assert "Machine.Isolate" in actions
    assert "User.RevokeSessions.All" in actions
    folder = bad_folder(tmp_path, "bad-book.yaml", STEP + "    action: format_disk\n")
    bad = aegis("playbooks", "validate", "--dir", str(folder))
    assert bad.returncode == 1
    assert "bad-book.yaml:5:5: steps.0.action" in bad.stderr


@pytest.fixture(scope="module")
def demo_incidents():
    from aegis.correlate.engine import Correlator
    from aegis.pipeline import Message, Pipeline
    from aegis.store import SqliteStore
    from tests.conftest import SAMPLES

    store = SqliteStore(":memory:")
    pipeline = Pipeline(store, correlator=Correlator(detections.load().detections, store))
    pipeline.process([Message(p.read_bytes(), hub="demo") for p in sorted(SAMPLES.rglob("*.json"))])
    return {i.detection: i for i in store.incidents()}


def test_the_plan_for_a_prompt_attack_then_credential_theft(demo_incidents):
    from aegis.respond import planner
    from aegis.respond.planner import plan

    incident = demo_incidents["ai-prompt-attack-then-exfiltration"]
    steps = plan(incident, playbooks.load())
    assert steps[0].playbook == "ai-credential-compromise"
    contain = next(s for s in steps if s.action == "contain_ai_resource")
    assert contain.target.endswith("/providers/microsoft.cognitiveservices/accounts/oai-contoso-prod")
    assert contain.params["mode"] == "disable_local_auth"
    # no corroboration source is configured (the embedded default): one approval more than the plan says
    assert (contain.approvals, contain.status, contain.corroboration) == (2, "awaiting_approval", planner.NO_SOURCE)
    rotate = next(s for s in steps if s.action == "rotate_ai_keys")
    assert (rotate.approvals, rotate.status) == (3, "awaiting_approval")
    people = planner.people([e for e in incident.entities if e.type == "user"])
    revokes = [s for s in steps if s.action == "revoke_sessions"]
    assert people
    assert [s.target for s in revokes] == [f"user:{u.key.lower()}" for u in people]  # one step per person
    # her UPN-only entity (an alert's extended property) and her object id are one user: the
    # directory learned the pairing from another alert, and the planner would merge them too
    (mallory,) = [e for e in incident.entities if e.type == "user"]
    assert (mallory.upn, mallory.object_id) == ("mallory@contoso.com", "7d3e9a61-2c4b-4f1e-8a5d-6b9c0e1f2a3b")
    ticket = next(s for s in steps if s.action == "open_ticket")
    assert (ticket.status, ticket.params["title"]) == ("dry_run", incident.title)
    again = plan(incident, playbooks.load())
    assert [s.key for s in again] == [s.key for s in steps]  # idempotency keys are stable
    assert len({s.key for s in steps}) == len(steps)


def test_protected_assets_and_bad_values_refuse_a_step_with_the_reason(demo_incidents, tmp_path):
    from aegis.respond.planner import plan

    incident = demo_incidents["ai-prompt-attack-then-exfiltration"]
    account = next(e.key for e in incident.entities if e.type == "ai_resource")
    text = (playbooks.PLAYBOOKS_DIR / playbooks.PLAN_FILE).read_text()
    folder = bad_folder(tmp_path, playbooks.PLAN_FILE, text.replace("  resources: [", f"  resources: [{account}, ", 1))
    steps = plan(incident, playbooks.load(folder))
    contain = next(s for s in steps if s.action == "contain_ai_resource")
    assert contain.status == "refused"
    assert "protected by the response plan" in (contain.reason or "")
    assert all(s.status != "awaiting_approval" for s in steps if s.target == account)


def test_an_entity_value_an_action_cannot_take_refuses_that_step_only():
    from datetime import UTC, datetime

    from aegis.events import Severity, User
    from aegis.records import Incident
    from aegis.respond.planner import plan

    now = datetime(2026, 11, 20, tzinfo=UTC)
    incident = Incident(
        id="i1", detection="ai-prompt-attack-campaign-by-user", bucket="b", group="g", title="t",
        severity=Severity.HIGH, first_seen=now, last_seen=now,
        entities=(User(name="Robert'); DROP TABLE users;--"), User(upn="mallory@contoso.com")),
        atlas=(), owasp_llm=(), event_ids=("e1",), event_count=1, timeline=(),
    )  # fmt: skip
    steps = [s for s in plan(incident, playbooks.load()) if s.action == "revoke_sessions"]
    assert [s.status for s in steps] == ["refused", "awaiting_approval"]
    assert "parameters: user" in (steps[0].reason or "")
    assert steps[1].target == "user:mallory@contoso.com"


def test_aegis_playbooks_plan_shows_the_steps_of_a_replayed_incident(tmp_path):
    import orjson

    from tests.conftest import SAMPLES

    db = str(tmp_path / "p.db")
    assert aegis("replay", "--db", db, str(SAMPLES)).returncode == 0
    incidents = orjson.loads(aegis("incidents", "--db", db, "--json").stdout)
    attack = next(i for i in incidents if i["detection"] == "ai-prompt-attack-then-exfiltration")
    shown = aegis("playbooks", "plan", attack["id"], "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert "awaiting_approval" in shown.stdout
    assert "rotate_ai_keys" in shown.stdout
    steps = orjson.loads(aegis("playbooks", "plan", attack["id"], "--db", db, "--json").stdout)
    assert {s["status"] for s in steps} <= {"dry_run", "awaiting_approval", "refused"}
    missing = aegis("playbooks", "plan", "nope", "--db", db)
    assert missing.returncode == 1
    assert "no incident nope" in missing.stderr


class Clock:
    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

    def __call__(self):
        return self.now


@pytest.fixture
def responder(demo_incidents, tmp_path):
    from aegis.respond.record import Responder
    from aegis.store import SqliteStore

    store = SqliteStore(tmp_path / "r.db")
    clock = Clock()
    r = Responder(playbooks.load(), store, clock=clock)
    r.respond([demo_incidents["ai-prompt-attack-then-exfiltration"]])
    corroborate_all(r)
    yield r, store, clock
    store.close()


def waiting(store, action):
    return next(s for s in store.steps() if s.action == action and s.status == "awaiting_approval")


def test_recording_a_plan_twice_records_nothing_new(responder, demo_incidents):
    r, store, _ = responder
    before = (store.steps(), store.audit_log())
    assert r.respond([demo_incidents["ai-prompt-attack-then-exfiltration"]]) == 0
    assert (store.steps(), store.audit_log()) == before


def test_two_approvals_from_two_people_not_the_requester(responder):
    from aegis.respond.record import DecisionRefused

    r, store, _ = responder
    step = waiting(store, "rotate_ai_keys")
    with pytest.raises(DecisionRefused, match="requested this step"):
        r.decide(step.key, "aegis", approve=True)
    first = r.decide(step.key, "Alice@Contoso.com", approve=True)
    assert (first.status, first.approvers) == ("awaiting_approval", ("alice@contoso.com",))
    with pytest.raises(DecisionRefused, match="already approved"):
        r.decide(step.key, "alice@contoso.com", approve=True)  # a double click, or the same person again
    done = r.decide(step.key, "bob@contoso.com", approve=True)
    assert done.status == "dry_run"
    events = [(a.actor, a.event) for a in store.audit_log() if a.step == step.key]
    assert events[-3:] == [("alice@contoso.com", "approved"), ("bob@contoso.com", "approved"), ("aegis", "dry_run")]
    assert "/regenerateKey?api-version=2025-06-01" in store.audit_log()[-1].detail
    with pytest.raises(DecisionRefused, match="not awaiting approval"):
        r.decide(step.key, "carol@contoso.com", approve=True)


def test_an_expired_step_never_runs_and_says_so(responder):
    from datetime import timedelta

    from aegis.respond.record import DecisionRefused

    r, store, clock = responder
    step = waiting(store, "contain_ai_resource")
    clock.now += timedelta(hours=5)  # the plan's approval expiry is 4 h
    with pytest.raises(DecisionRefused, match="expired"):
        r.decide(step.key, "alice@contoso.com", approve=True)
    assert next(s for s in store.steps() if s.key == step.key).status == "expired"
    assert store.audit_log()[-1].event == "expired"


def test_a_denial_needs_a_reason_and_stops_the_step(responder):
    from aegis.respond.record import DecisionRefused

    r, store, _ = responder
    step = waiting(store, "disable_user")
    with pytest.raises(DecisionRefused, match="reason"):
        r.decide(step.key, "alice@contoso.com", approve=False)
    denied = r.decide(step.key, "alice@contoso.com", approve=False, reason="known tester account")
    assert denied.status == "denied"
    with pytest.raises(DecisionRefused):
        r.decide(step.key, "bob@contoso.com", approve=True)


def test_two_deciders_at_once_cannot_both_win(responder):
    _, store, _ = responder
    step = waiting(store, "contain_ai_resource")
    mine = step.next(status="dry_run", approvers=("alice@contoso.com",))
    theirs = step.next(status="denied", reason="no")
    assert store.replace_step(mine, audit=[])
    assert not store.replace_step(theirs, audit=[])  # read the same revision: loses
    assert next(s for s in store.steps() if s.key == step.key).status == "dry_run"


def test_the_audit_log_is_append_only(responder):
    import sqlite3

    _, store, _ = responder
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("UPDATE audit SET doc = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM audit")


def test_in_execute_mode_automatic_and_fully_approved_steps_are_approved_not_dry_run(tmp_path, demo_incidents):
    from aegis.respond.record import Responder
    from aegis.store import SqliteStore

    plan = (playbooks.PLAYBOOKS_DIR / playbooks.PLAN_FILE).read_text().replace("mode: dry_run", "mode: execute")
    store = SqliteStore(":memory:")
    responder = Responder(playbooks.load(bad_folder(tmp_path, playbooks.PLAN_FILE, plan)), store)
    responder.respond([demo_incidents["ai-prompt-attack-then-exfiltration"]])
    corroborate_all(responder)
    by_action = {s.action: s for s in store.steps()}
    assert by_action["open_ticket"].status == "approved"  # automatic: approved by the plan itself
    contain = by_action["contain_ai_resource"]
    assert contain.status == "awaiting_approval"
    assert responder.decide(contain.key, "alice@contoso.com", approve=True).status == "approved"


ACCOUNT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai"
ARM = "https://management.azure.com" + ACCOUNT.lower()
ALERT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/providers/Microsoft.Security/locations/westeurope/alerts/2516_a1"
MACHINE = "4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2f"
REQUESTS = {
    "isolate_endpoint": ({"machine_id": MACHINE, "comment": "c"},
                         f'POST https://api.security.microsoft.com/api/machines/{MACHINE}/isolate '
                         '{"Comment":"c","IsolationType":"Selective"}'),
    "release_endpoint": ({"machine_id": MACHINE, "comment": "c"},
                         f'POST https://api.security.microsoft.com/api/machines/{MACHINE}/unisolate {{"Comment":"c"}}'),
    "contain_ai_resource": ({"account": ACCOUNT, "mode": "allow_only", "allow": ["81.2.69.7"]},
                            f'GET {ARM}?api-version=2025-06-01 (the values kept for the restore); '
                            f'PATCH {ARM}?api-version=2025-06-01 '
                            '{"properties":{"networkAcls":{"defaultAction":"Deny","ipRules":[{"value":"81.2.69.7/32"}]}}}'),
    "restore_ai_resource": ({"account": ACCOUNT}, f"PATCH {ARM}?api-version=2025-06-01 (the values kept)"),
    "rotate_ai_keys": ({"account": ACCOUNT, "key": "Key2"},
                       f'POST {ARM}/regenerateKey?api-version=2025-06-01 {{"keyName":"Key2"}}'),
    "revoke_sessions": ({"user": "Mallory@Contoso.com"},
                        "POST https://graph.microsoft.com/v1.0/users/mallory@contoso.com/revokeSignInSessions"),
    "disable_user": ({"user": "mallory@contoso.com"},
                     'PATCH https://graph.microsoft.com/v1.0/users/mallory@contoso.com {"accountEnabled":false}'),
    "enable_user": ({"user": "mallory@contoso.com"},
                    'PATCH https://graph.microsoft.com/v1.0/users/mallory@contoso.com {"accountEnabled":true}'),
    "open_ticket": ({"title": "t", "severity": "high"}, "open or update the incident's ticket in local: high: t"),
    "notify": ({"team": "0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c", "channel": "19:a@thread.tacv2", "text": "x"},
               "POST https://graph.microsoft.com/v1.0/teams/0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c/channels/"
               "19:a@thread.tacv2/messages (text, HTML-escaped)"),
    "update_defender_alert": ({"alert": ALERT, "state": "inProgress"},
                              f"POST https://management.azure.com{ALERT.lower()}/inProgress?api-version=2022-01-01"),
}  # fmt: skip


def test_every_action_states_its_exact_request():
    from aegis.respond.record import call

    assert set(REQUESTS) == set(ACTIONS)
    for name, (params, expected) in REQUESTS.items():
        assert call(name, params) == expected, name


def test_aegis_respond_in_execute_mode_runs_the_automatic_steps_and_holds_the_rest(tmp_path):
    import orjson

    from tests.conftest import SAMPLES

    folder = tmp_path / "playbooks"
    shutil.copytree(playbooks.PLAYBOOKS_DIR, folder)
    plan = folder / playbooks.PLAN_FILE
    plan.write_text(plan.read_text().replace("mode: dry_run", "mode: execute"))
    db = str(tmp_path / "x.db")
    assert aegis("replay", "--db", db, "--dir", str(folder), str(SAMPLES)).returncode == 0  # records under that plan
    ran = aegis("respond", "--db", db, "--dir", str(folder))
    assert ran.returncode == 0, ran.stderr
    assert "executed: succeeded " in ran.stdout
    incidents = orjson.loads(aegis("incidents", "--db", db, "--json").stdout)
    steps = [s for i in incidents for s in i["response"]]
    tickets = [s for s in steps if s["action"] == "open_ticket"]
    assert tickets
    assert {s["status"] for s in tickets} == {"succeeded"}  # automatic: the local ticket was opened
    assert {s["status"] for s in steps if s["action"] == "disable_user"} == {"awaiting_approval"}
    again = aegis("respond", "--db", db, "--dir", str(folder))
    assert "executed: succeeded 0" in again.stdout  # nothing runs twice


def test_the_defender_alerts_of_an_incident_are_marked_in_progress(demo_incidents):
    from aegis.events import DefenderAlert
    from aegis.respond.planner import plan

    incident = demo_incidents["ai-prompt-attack-then-exfiltration"]
    alerts = sorted(e.key for e in incident.entities if isinstance(e, DefenderAlert))
    assert len(alerts) >= 2  # the jailbreak (ARM id) and the credential theft (read off its AlertUri)
    steps = [s for s in plan(incident, playbooks.load()) if s.action == "update_defender_alert"]
    assert sorted(s.target for s in steps) == alerts
    assert {(s.status, s.params["state"]) for s in steps} == {("dry_run", "inProgress")}  # automatic
    assert all("/providers/microsoft.security/locations/westeurope/alerts/" in a for a in alerts)


def burst(*, ips: tuple[str, ...], sp: str | None = "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f", user: str | None = None):
    """A request-burst incident at high severity, of an embedding batch's shape."""
    from datetime import UTC, datetime

    from aegis.events import AiResource, Ip, ServicePrincipal, Severity, User
    from aegis.records import Incident

    now = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    entities = [AiResource(resource_id=ACCOUNT.lower(), name="oai"), *(Ip(prefix=p) for p in ips)]
    entities += [ServicePrincipal(app_id=sp)] if sp else []
    entities += [User(upn=user)] if user else []
    return Incident(id="burst-1", detection="ai-request-burst-by-caller", bucket="b", group=ips[0], title="burst",
                    severity=Severity.HIGH, first_seen=now, last_seen=now, entities=tuple(entities), atlas=(),
                    owasp_llm=(), event_ids=("e1",), event_count=4000, timeline=())  # fmt: skip


def plan_with_expected(tmp_path: Path, entry: str):
    folder = tmp_path / "playbooks"
    shutil.copytree(playbooks.PLAYBOOKS_DIR, folder)
    plan = folder / playbooks.PLAN_FILE
    plan.write_text(plan.read_text() + f"\nexpected:\n  - {entry}\n")
    return playbooks.load(folder)


NIGHTLY = ("{name: nightly embedding batch, service_principals: [0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f], "
           "networks: [10.20.0.0/16], severity: low}")  # fmt: skip


def test_known_ordinary_work_is_held_low_and_never_disrupted_but_keeps_its_evidence(tmp_path):
    from aegis.respond import planner

    resp = plan_with_expected(tmp_path, NIGHTLY)
    ours = burst(ips=("10.20.1.0/24",))
    assert planner.expected_work(ours, resp.plan).name == "nightly embedding batch"
    assert planner.playbooks_for(ours, resp.plan) == []  # held to low: no P1 trigger fires
    disruptive = [s for s in planner.plan(ours, resp, playbooks=None) if ACTIONS[s.action].disruptive]
    assert disruptive == []
    asked = planner.plan(ours, resp, playbooks=["ai-cost-containment"])  # an engineer asks: their call
    assert asked
    assert all("expected work" not in (s.reason or "") for s in asked)
    # anyone else in the incident, or a network outside the list, and it is not that work
    assert planner.expected_work(burst(ips=("10.20.1.0/24",), user="mallory@contoso.com"), resp.plan) is None
    assert planner.expected_work(burst(ips=("10.20.1.0/24", "81.2.69.0/24")), resp.plan) is None
    assert (
        planner.expected_work(burst(ips=("10.20.1.0/24",), sp="11111111-2222-3333-4444-555555555555"), resp.plan)
        is None
    )
    assert planner.playbooks_for(burst(ips=("81.2.69.0/24",)), resp.plan)  # the same burst from outside: paged
    # held at high, its playbooks still run their tickets and notices, and nothing disruptive
    loud = plan_with_expected(tmp_path / "loud", NIGHTLY.replace("severity: low", "severity: high"))
    steps = planner.plan(ours, loud)
    assert any(not ACTIONS[s.action].disruptive and s.status != "refused" for s in steps)
    refused = [s for s in steps if ACTIONS[s.action].disruptive]
    assert refused
    assert all(s.status == "refused" and "expected work (nightly embedding batch" in s.reason for s in refused)


def test_a_containment_that_would_not_stop_the_traffic_is_refused_with_the_reason(tmp_path):
    from aegis.respond import planner

    resp = playbooks.load()
    private = planner.plan(burst(ips=("10.20.1.0/24",), sp=None), resp, playbooks=["ai-cost-containment"])
    [contain] = [s for s in private if s.action == "contain_ai_resource"]
    assert contain.status == "refused"
    assert "private networks" in contain.reason
    public = planner.plan(burst(ips=("81.2.69.0/24",), sp=None), resp, playbooks=["ai-cost-containment"])
    [contain] = [s for s in public if s.action == "contain_ai_resource"]
    assert contain.status == "awaiting_approval"


def test_expected_work_must_name_its_callers(tmp_path):
    with pytest.raises(playbooks.PlaybookError, match="names its callers"):
        plan_with_expected(tmp_path, "{name: everything, detections: [ai-request-burst-by-caller]}")


def test_one_person_named_by_upn_and_by_object_id_gets_one_step_per_action():
    from dataclasses import replace as copy_with

    from aegis.events import User
    from aegis.respond import planner

    oid = "7f3e2d1c-0b9a-4c8d-9e7f-6a5b4c3d2e1f"
    named = (User(upn="mallory@contoso.com", object_id=oid, name="Mallory"), User(object_id=oid),
             User(upn="mallory@contoso.com"), User(upn="bob@contoso.com"))  # fmt: skip
    base = burst(ips=("81.2.69.0/24",), sp=None)
    incident = copy_with(base, detection="ai-key-brute-force", entities=(*base.entities, *named))
    steps = planner.plan(incident, playbooks.load(), playbooks=["ai-credential-compromise"])
    for action in ("revoke_sessions", "disable_user"):
        targets = sorted(s.target for s in steps if s.action == action)
        assert len(targets) == 2, (action, targets)  # mallory once (all three of her), bob once
    other = User(upn="mallory@contoso.com", object_id="00000000-0000-0000-0000-0000000000aa")
    assert len(planner.people([named[0], other])) == 2  # one UPN, two object ids: two accounts, not guessed one
