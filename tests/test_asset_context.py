"""Asset context everywhere: the inventory's owner and criticality on incidents (and what they weigh),
in deliveries and on the approvals page; containment chosen by what the account exposes; protected
tags from the inventory; a key rotation that lists who uses the keys; findings delivered."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from aegis import runtime, settings
from aegis.assets import AssetBook, KeyCaller
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.deliver.run import DeliveryContext, finding_incident, summary
from aegis.events import Severity
from aegis.inventory import refresh as inv
from aegis.pipeline import Message, Pipeline
from aegis.records import SEVERITY_ORDER
from aegis.respond import planner, playbooks
from aegis.store import SqliteStore
from tests.conftest import SAMPLES

ESTATE = SAMPLES.parent / "demo" / "estate.json"
PROD = ("/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai-prod/providers/"
        "microsoft.cognitiveservices/accounts/oai-contoso-prod")  # fmt: skip


def demo_bodies() -> list[Message]:
    return [Message(p.read_bytes(), hub="demo") for p in sorted(SAMPLES.rglob("*.json"))]


def rows(**changes: object) -> list[dict]:
    """The demo estate's rows, the production account's properties and tags changed."""
    found = copy.deepcopy(inv.rows_from_file(ESTATE))
    prod = next(r for r in found if r["name"] == "oai-contoso-prod")
    for key, value in changes.items():
        (prod["tags"] if key in ("criticality", "owner", "aegis-protected") else prod["properties"])[key] = value
    return found


def correlated(store: SqliteStore, book: AssetBook | None) -> dict[str, object]:
    pipeline = Pipeline(store, correlator=Correlator(detections.load().detections, store,
                                                     assets=(lambda: book) if book is not None else None))  # fmt: skip
    pipeline.process(demo_bodies())
    return {i.detection: i for i in store.incidents()}


@pytest.fixture
def store():
    s = SqliteStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def deployed(tmp_path):
    """The runtime's own path on a file database: the demo estate refreshed, then the demo replayed."""
    cfg = settings.load(db=tmp_path / "a.db", inventory_file=ESTATE)
    s = SqliteStore(tmp_path / "a.db")
    done = runtime.refresh_inventory(cfg, s)
    runtime.build_pipeline(cfg, s, respond=True).process(demo_bodies())
    yield cfg, s, done
    s.close()


def test_incidents_carry_their_assets_owner_and_criticality_and_are_weighed_by_it(store):
    inv.refresh(store, rows())
    incidents = correlated(store, AssetBook(store.assets()))
    touched = [i for i in incidents.values() if i.attributes.get("asset")]
    assert touched, "no incident on the inventoried account carries its asset"
    for i in touched:
        assert i.attributes["asset"]["owner"] == "ai-platform@contoso.com"
        assert i.attributes["asset"]["criticality"] == "critical"
        assert i.attributes["asset"]["data_classification"] == "Confidential"

    bare = SqliteStore(":memory:")
    plain = correlated(bare, None)
    moved = [d for d, i in incidents.items() if i.severity != plain[d].severity]
    assert moved, "a critical asset moved no incident's severity"
    for d in moved:
        assert SEVERITY_ORDER.index(incidents[d].severity) == SEVERITY_ORDER.index(plain[d].severity) + 1
        assert "asset oai-contoso-prod is critical: 1 higher" in (incidents[d].why or "")
    bare.close()


def test_a_low_criticality_asset_weighs_down_only_incidents_no_defender_alert_holds(store):
    inv.refresh(store, rows(criticality="low"))
    incidents = correlated(store, AssetBook(store.assets()))
    bare = SqliteStore(":memory:")
    plain = correlated(bare, None)
    for d, i in incidents.items():
        alerted = any(t.source == "defender" for t in plain[d].timeline)
        if alerted:
            assert i.severity == plain[d].severity, d  # Defender judged it an attack: never weighed down
        elif i.attributes.get("asset"):
            assert SEVERITY_ORDER.index(i.severity) >= SEVERITY_ORDER.index(plain[d].severity) - 1
    bare.close()


def plan_for(store: SqliteStore, detection: str = "ai-prompt-attack-then-exfiltration"):
    incidents = correlated(store, AssetBook(store.assets()))
    return planner.plan(incidents[detection], playbooks.load(), assets=AssetBook(store.assets()),
                        key_callers=store.key_callers)  # fmt: skip


def test_containment_is_chosen_by_what_the_account_exposes(store):
    inv.refresh(store, rows(disableLocalAuth=True))
    steps = plan_for(store)
    cut = next(s for s in steps if s.action == "contain_ai_resource")
    rotate = next(s for s in steps if s.action == "rotate_ai_keys")
    assert cut.status == "refused"
    assert "already refuses keys" in (cut.reason or "")
    assert rotate.status == "refused"
    assert "rotating them stops no caller" in (rotate.reason or "")

    inv.refresh(store, rows(disableLocalAuth=False))
    steps = plan_for(store)
    assert next(s for s in steps if s.action == "contain_ai_resource").status == "awaiting_approval"


def test_an_account_with_no_public_endpoint_gets_no_public_network_containment(store):
    inv.refresh(store, rows(publicNetworkAccess="Disabled"))
    book = AssetBook(store.assets())
    asset = book.get(PROD)
    assert asset is not None
    from aegis.respond.actions import ContainAiResource

    for mode in ("deny_public_network", "allow_only"):
        params = ContainAiResource(account=PROD, mode=mode, allow=["203.0.113.0/24"] if mode == "allow_only" else [])
        assert "has no public endpoint" in (planner._no_effect(params, asset) or "")
    assert planner._no_effect(ContainAiResource(account=PROD, mode="disable_local_auth"), asset) is None


def test_a_tag_the_plan_protects_protects_the_account_as_the_inventory_shows_it(store):
    response = playbooks.load()
    assert response.plan.protected.tags == {"aegis-protected": "true"}  # the shipped plan's
    inv.refresh(store, rows(**{"aegis-protected": "True"}))
    incidents = correlated(store, AssetBook(store.assets()))
    steps = planner.plan(incidents["ai-prompt-attack-then-exfiltration"], response, assets=AssetBook(store.assets()))
    on_account = [s for s in steps if s.action in ("contain_ai_resource", "rotate_ai_keys")]
    assert on_account
    for s in on_account:
        assert s.status == "refused"
        assert "the inventory shows its tag aegis-protected=True" in (s.reason or "")
    assert any(s.status == "awaiting_approval" for s in steps if s.action == "revoke_sessions")  # only the account


def test_a_key_rotation_lists_who_uses_the_keys_from_the_request_logs(store):
    inv.refresh(store, rows())
    steps = plan_for(store)
    callers = store.key_callers(PROD)
    assert callers, "the demo's key-authenticated requests named no caller"
    assert {c.ip for c in callers} >= {"203.0.113.0/24"}
    rotate = next(s for s in steps if s.action == "rotate_ai_keys")
    assert rotate.dependents
    assert rotate.dependents[0].startswith("from ")
    assert any("203.0.113.0/24" in d for d in rotate.dependents)
    assert next(s for s in steps if s.action == "contain_ai_resource").dependents  # keys off breaks them too
    assert all(not s.dependents for s in steps if s.action in ("revoke_sessions", "open_ticket"))


def test_key_callers_are_bounded_per_batch_and_rewritten_only_after_a_while(store):
    from aegis.arm import parse_resource_id
    from aegis.events import AiResource, Event, Evidence, Ip, Source
    from aegis.keyuse import KeyUse

    t = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    rid = parse_resource_id(PROD)

    def ev(n: int, at: datetime) -> Event:
        return Event(id=f"e{n}-{at.timestamp()}", source=Source.RESOURCE_LOG, normalizer="diagnostics.ai", kind="k",
                     time=at, evidence=Evidence(message="0" * 64, pointer="", hub="t"), resource=rid,
                     entities=(AiResource(resource_id=rid.id), Ip(prefix=f"10.{n // 256}.{n % 256}.0/24")),
                     attributes={"auth": "key"})  # fmt: skip

    use = KeyUse(store, per_batch=50)
    assert use.observe([ev(n, t) for n in range(500)]) == 50  # a forged flood of networks: 50 a batch
    assert use.observe([ev(0, t + timedelta(minutes=1))]) == 0  # written a minute ago: not again
    assert use.observe([ev(0, t + timedelta(minutes=20))]) == 1
    assert use.observe([ev(1, t)]) == 0  # the first batch wrote it
    assert len(store.key_callers(PROD)) == 50


def test_deliveries_name_the_asset_and_findings_are_delivered_with_their_fix(store):
    inv.refresh(store, rows())
    incidents = correlated(store, AssetBook(store.assets()))
    ctx = DeliveryContext(None, "https://aegis.example", None)
    top = incidents["ai-prompt-attack-then-exfiltration"]
    lines = summary(top, ctx)
    assert "Asset: oai-contoso-prod: owner ai-platform@contoso.com, criticality critical, data Confidential" in lines
    finding = next(f for f in store.findings() if f.kind == "no_diagnostics")
    as_incident = finding_incident(finding)
    assert as_incident.detection == "inventory.no_diagnostics"
    assert as_incident.severity == Severity.LOW
    lines = summary(as_incident, ctx)
    assert any(line.startswith("Fix: add ") and "aiAccountIds" in line for line in lines)
    assert lines[-1] == "Console: https://aegis.example/console/inventory"


def test_the_deliveries_take_open_findings_whatever_the_minimum_severity(store, monkeypatch):
    from aegis.deliver.run import DELIVERERS, Deliveries

    seen: list[str] = []

    @DELIVERERS.register("test_sink")
    def sink(incident, ctx):  # type: ignore[no-untyped-def]
        seen.append(incident.id)
        return {"ok": True}

    try:
        inv.refresh(store, rows())
        deliveries = Deliveries(["test_sink"], None, "https://aegis.example", None, min_severity="high")
        assert deliveries.run([], store, findings=store.findings()) == 2
        assert sorted(seen) == sorted(f.id for f in store.findings() if f.open)
        assert deliveries.run([], store, findings=store.findings()) == 0  # delivered once per change
    finally:
        DELIVERERS.remove("test_sink")


def test_the_settings_read_tag_names_weights_and_subscriptions_and_refuse_bad_ones():
    from aegis.errors import ConfigurationError

    cfg = settings.load(criticality_weights="critical=1, tier0=+1 ,low=-1", criticality_tags="tier",
                        inventory_subscriptions="6B1F3B8E-0C3A-4A8E-9D4F-2F7C1E5A9B10", finding_severity="medium")  # fmt: skip
    assert cfg.criticality_weights == {"critical": 1, "tier0": 1, "low": -1}
    assert cfg.tag_names.criticality == ("tier",)
    assert cfg.inventory_subscriptions == ["6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10"]
    with pytest.raises(ConfigurationError, match=r"CRITICALITY_WEIGHTS.*CRITICALITY=STEPS"):
        settings.load(criticality_weights="critical=5")
    with pytest.raises(ConfigurationError, match=r"INVENTORY_SUBSCRIPTIONS.*not a subscription id"):
        settings.load(inventory_subscriptions="prod")


def test_aegis_namespaces_come_from_the_functions_connections(monkeypatch):
    monkeypatch.setenv("AEGIS_EVENTHUB__fullyQualifiedNamespace", "evhns-aegis-x.servicebus.windows.net")
    monkeypatch.setenv("AEGIS_EVENTHUB_EASTUS__fullyQualifiedNamespace", "evhns-aegis-eastus.servicebus.windows.net")
    assert settings.load().event_hub_namespaces == ["evhns-aegis-eastus", "evhns-aegis-x"]


def test_the_runtime_refreshes_from_a_file_and_the_pipeline_reads_the_inventory(deployed):
    _, store, done = deployed
    assert [a.name for a in done.assets] == ["oai-contoso-lab", "oai-contoso-prod"]
    assert sorted(f.kind for f in done.open) == ["local_auth", "no_diagnostics"]
    assert any(i.attributes.get("asset", {}).get("owner") == "ai-platform@contoso.com" for i in store.incidents())
    rotate = next(s for s in store.steps(action="rotate_ai_keys"))
    assert rotate.dependents


def test_a_key_caller_round_trips_and_says_itself():
    c = KeyCaller(PROD, "203.0.113.0/24", "openai-python/1.40", "gpt-4o", datetime(2026, 11, 20, 9, 5, tzinfo=UTC))
    assert KeyCaller.from_json(c.to_json()) == c
    assert c.describe() == "from 203.0.113.0/24 as 'openai-python/1.40' on gpt-4o, last 2026-11-20 09:05 UTC"


def test_the_console_shows_the_estate_the_owner_to_call_and_who_uses_the_keys(deployed):
    from starlette.testclient import TestClient

    from aegis.approvals import web

    cfg, store, _ = deployed
    plan = runtime.load_response(cfg)
    client = TestClient(web.create_app(web.Console.over(store, plan, web.local_identity("me@contoso.com", plan))))
    page = client.get("/console/inventory")
    assert page.status_code == 200
    html = page.text
    assert html.count('class="finding"') == 2
    assert "Its logs do not reach Aegis: oai-contoso-lab" in html
    assert "aiAccountIds" in html
    assert 'data-asset="oai-contoso-prod"' in html
    assert "ai-platform@contoso.com" in html
    approvals = client.get("/console/approvals").text
    assert "Owner to call: <strong>ai-platform@contoso.com</strong>" in approvals
    assert "Who uses the keys" in approvals
    assert "from 203.0.113.0/24" in approvals
    top = next(i for i in store.incidents() if i.attributes.get("asset"))
    incident = client.get(f"/console/incidents/{top.id}").text
    assert 'class="asset"' in incident
    assert "owner <strong>ai-platform@contoso.com</strong>" in incident


def test_the_inventory_cli_refreshes_lists_and_says_what_is_wrong(tmp_path):
    import json

    from tests.test_cli import aegis

    db = str(tmp_path / "i.db")
    done = aegis("inventory", "refresh", "--db", db, "--file", str(ESTATE))
    assert done.returncode == 0, done.stderr
    assert "2 AI asset(s); 2 open finding(s); 2 change(s)" in done.stdout
    listed = json.loads(aegis("inventory", "list", "--db", db, "--json").stdout)
    assert [a["name"] for a in listed] == ["oai-contoso-lab", "oai-contoso-prod"]
    shown = aegis("inventory", "findings", "--db", db)
    assert "Key (local) authentication is on: oai-contoso-prod" in shown.stdout
    assert "fix: give its callers Entra ID roles" in shown.stdout
    changes = aegis("inventory", "changes", "--db", db)
    assert changes.returncode == 0, changes.stderr
    assert "oai-contoso-prod: asset absent -> listed" in changes.stdout
    relaxed = copy.deepcopy(inv.rows_from_file(ESTATE))
    next(r for r in relaxed if r["name"] == "oai-contoso-lab")["properties"]["disableLocalAuth"] = False
    lab = tmp_path / "lab-keys-on.json"
    lab.write_text(json.dumps(relaxed))
    assert aegis("inventory", "refresh", "--db", db, "--file", str(lab)).returncode == 0
    newest = json.loads(aegis("inventory", "changes", "--db", db, "--json", "--limit", "1").stdout)
    assert [(c["what"], c["before"], c["after"], c["weaker"]) for c in newest] == [
        ("local (key) auth", "off", "on", True)
    ]
    assert "WEAKER oai-contoso-lab: local (key) auth off -> on" in aegis("inventory", "changes", "--db", db).stdout
    again = json.loads(aegis("inventory", "refresh", "--db", db, "--file", str(lab), "--json").stdout)
    assert again["changes"] == []
    assert len(again["open_findings"]) == 3  # the lab's keys are on now too
    missing = aegis("inventory", "refresh", "--db", db, "--file", str(tmp_path / "nope.json"))
    assert missing.returncode != 0
    assert "no such file" in missing.stderr
    assert "Resource Graph rows" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": 3}')
    refused = aegis("inventory", "refresh", "--db", db, "--file", str(bad))
    assert refused.returncode != 0
    assert 'expected a list of rows, or an object with the rows under "data"' in refused.stderr


def test_the_teams_card_names_the_owner_to_call_and_who_uses_the_keys(deployed):
    from aegis.approvals import teams

    _, store, _ = deployed
    step = next(s for s in store.steps(action="rotate_ai_keys"))
    incident = next(i for i in store.incidents() if i.id == step.incident)
    card = teams.card(step, incident, "https://aegis.example")
    facts = {b["inlines"][0]["text"]: b["inlines"][1]["text"] for b in card["body"] if b["type"] == "RichTextBlock"}
    assert facts["Owner to call: "] == "ai-platform@contoso.com (oai-contoso-prod, critical)"
    assert "from 203.0.113.0/24" in facts["Who uses the keys: "]


HUB = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourceGroups/rg-ai-prod/providers/Microsoft.MachineLearningServices/workspaces/hub-contoso"
PROJECT = HUB.replace("hub-contoso", "proj-support")


def hub_rows() -> list[dict]:
    def ws(rid: str, kind: str, props: dict) -> dict:
        return {"id": rid, "name": rid.rsplit("/", 1)[1], "type": "microsoft.machinelearningservices/workspaces",
                "kind": kind, "location": "swedencentral", "subscriptionId": rid.split("/")[2],
                "resourceGroup": "rg-ai-prod", "tags": {"owner": "support-ai@contoso.com"}, "properties": props}  # fmt: skip

    return [ws(HUB, "Hub", {"publicNetworkAccess": "Disabled"}), ws(PROJECT, "Project", {"hubResourceId": HUB})]


def test_a_hub_based_foundry_project_stands_as_its_hub_so_its_alerts_join_the_hubs(store):
    import orjson

    inv.refresh(store, hub_rows())
    book = AssetBook(store.assets())
    alert = orjson.loads((SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes())
    text = orjson.dumps(alert).decode().replace(
        "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourceGroups/rg-ai-prod/providers/Microsoft.CognitiveServices/accounts/oai-contoso-prod",
        PROJECT,
    )  # fmt: skip
    pipeline = Pipeline(store, keep_events=True, assets=lambda: book)
    pipeline.process([Message(text.encode(), hub="demo")])
    [event] = store.events()
    kinds = {(e.type, e.key) for e in event.entities}
    assert ("ai_project", PROJECT.lower()) in kinds
    assert ("ai_resource", HUB.lower()) in kinds
    assert ("ai_resource", PROJECT.lower()) not in kinds  # the project is not an account of its own
    project = next(e for e in event.entities if e.type == "ai_project")
    assert project.account == HUB.lower()
    # without the inventory the project stays what the stream says: its own resource
    bare = SqliteStore(":memory:")
    Pipeline(bare, keep_events=True).process([Message(text.encode(), hub="demo")])
    assert ("ai_resource", PROJECT.lower()) in {(e.type, e.key) for e in bare.events()[0].entities}
    bare.close()


def test_the_inventory_timer_is_bound_hourly_and_not_at_every_instances_start(functions):
    import json

    [timer] = json.loads(functions["inventory_timer"].get_function_json())["bindings"]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "0 41 * * * *"
    assert timer["runOnStartup"] is False


def test_the_response_timer_asks_log_analytics_who_uses_the_keys_once_per_waiting_step(deployed, tmp_path):
    from dataclasses import replace

    from aegis.enrich.base import Context
    from aegis.enrich.keycallers import CHECKED, KeyCallers
    from aegis.respond.actions import cuts_keys
    from tests.test_enrich import WORKSPACE, logs_answer
    from tests.test_execute import connections
    from tests.wire import WireServer

    _, store, _ = deployed
    waiting = [s for s in store.steps(status=["awaiting_approval"]) if cuts_keys(s.action, s.params)]
    assert {s.action for s in waiting} == {"rotate_ai_keys", "contain_ai_resource"}
    path = f"/v1/workspaces/{WORKSPACE}/query"
    columns = [("caller_ip", "string"), ("deployment", "string"), ("user_agent", "string"), ("requests", "long"),
               ("last_seen", "datetime")]  # fmt: skip
    with WireServer(tmp_path) as server:
        for _ in waiting:
            server.expect("POST", path, logs_answer(columns, [["198.51.100.***", "gpt-4o", "billing-batch/2.1", 912,
                                                               "2026-11-19T22:10:00Z"]]))  # fmt: skip
        ctx = Context(connections=replace(connections(server), logs=server.url), workspace=WORKSPACE,
                      now=datetime(2026, 11, 20, 11, 0, tzinfo=UTC))  # fmt: skip
        touched = KeyCallers(ctx).run(store)
        again = KeyCallers(ctx).run(store)  # asked once a step: no second query
        queries = [s for s in server.seen if s.path == path]
    assert touched == len(waiting)
    assert again == 0
    assert len(queries) == len(waiting)
    assert "isempty(tostring(props.objectId))" in queries[0].body["query"]
    assert queries[0].body["timespan"].startswith("2026-11-13T11:00:00")  # seven days back
    step = store.step(next(s.key for s in waiting if s.action == "rotate_ai_keys"))
    assert step is not None
    assert any(d.startswith("from 203.0.113.0/24") for d in step.dependents)  # the stream's, kept
    assert "from 198.51.100.*** as 'billing-batch/2.1' on gpt-4o, last 2026-11-19 22:10 UTC" in step.dependents
    assert step.dependents[-1] == f"{CHECKED} over 7 days: 1 caller(s)"
    assert any(a.event == "dependents" and a.step == step.key for a in store.audit_log())
    assert any(c.user_agent == "billing-batch/2.1" for c in store.key_callers(PROD))  # the next plans see it
