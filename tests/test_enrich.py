"""Enrichment: KQL literals that no value can break out of, enrichers within a time budget that never
lose an incident, results kept per incident on both stores, and the real SDK clients (Log Analytics,
Defender for Cloud, Graph) against the local HTTPS server."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis.enrich import kql
from aegis.enrich.base import ENRICHERS, Context, Skip, enrich, enricher, version
from aegis.enrich.log_analytics import questions
from aegis.enrich.run import Enrichers
from aegis.events import AiResource, DefenderAlert, Ip, Severity, User
from aegis.records import Incident, TimelineEntry
from tests.test_execute import Token, connections
from tests.wire import Reply, WireServer

ACCOUNT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai-prod/providers/microsoft.cognitiveservices/accounts/oai-contoso-prod"
ALERT = ("/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai-prod/providers/microsoft.security"
         "/locations/westeurope/alerts/2516861511399999999_a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a5b")  # fmt: skip
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
WORKSPACE = "7e2b0c1d-3f4a-4b5c-8d6e-9f0a1b2c3d4e"


def incident(*entities, count: int = 3) -> Incident:
    at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    return Incident(id="inc1", detection="d", bucket="b", group="g", title="t", severity=Severity.HIGH,
                    first_seen=at - timedelta(minutes=30), last_seen=at, entities=tuple(entities), atlas=(),
                    owasp_llm=(), event_ids=("e1",), event_count=count,
                    timeline=(TimelineEntry(at, "e1", "k", "defender"),))  # fmt: skip


# --- KQL literals ---------------------------------------------------------------------------------------


def read_kql_literal(text: str) -> tuple[str, str]:
    """A reader of one double-quoted KQL string literal as the KQL reference defines it: the value,
    and whatever query text follows the closing quote."""
    assert text[0] == '"'
    out, i = [], 1
    escapes = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}
    while True:
        ch = text[i]
        if ch == "\\":
            out.append(escapes[text[i + 1]])
            i += 2
        elif ch == '"':
            return "".join(out), text[i + 1 :]
        else:
            assert ch not in "\n\r", "a raw line break would end the literal early"
            out.append(ch)
            i += 1


@pytest.mark.parametrize(
    "value",
    [
        'x" | take 1000000 //',
        'x\\" or 1==1 | project secrets',
        "x\n| union SecurityEvent",
        "x\r\n| where true",
        "x // the rest is a comment",
        "x /* block */ | count",
        "a\\",
        '"',
        "'; .drop table SigninLogs //",
        "x\t| evaluate bag_unpack(y)",
        "203.0.113.' or '1'=='1",
        "ünïcødé → ジェイルブレイク",
        "x\\n",
    ],
)
def test_a_hostile_value_stays_one_literal(value):
    text = kql.literal(value)
    decoded, rest = read_kql_literal(text + " | rest")
    assert decoded == value
    assert rest == " | rest"
    assert "\n" not in text
    assert "\r" not in text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), max_size=200))
def test_any_printable_value_round_trips_and_ends_where_it_should(value):
    decoded, rest = read_kql_literal(kql.literal(value) + "|")
    assert decoded == value
    assert rest == "|"


@pytest.mark.parametrize("value", ["a\x00b", "a\u202eb", "a\u2028b", "a\x1bb", "x" * 1025])
def test_control_and_format_characters_and_huge_values_are_refused(value):
    with pytest.raises(kql.UnsafeValue):
        kql.literal(value)


def test_templates_take_values_only_as_literals():
    query = kql.render("account_control_plane", account='x" | take 1')
    assert '_ResourceId =~ "x\\" | take 1"' in query
    assert "{" not in query
    with pytest.raises(KeyError, match="needs account"):
        kql.render("account_control_plane")
    for name in ("ai_requests_from_network", "user_sign_ins", "account_control_plane", "account_key_callers"):
        placeholders = re.findall(r"\{([a-z_]+)\}", kql.template(name))
        assert placeholders, name  # each template takes its entity value, and only as a placeholder


def test_questions_follow_the_incidents_entities():
    inc = incident(Ip(prefix="203.0.113.0/24"), User(upn="mallory@contoso.com"), AiResource(resource_id=ACCOUNT))
    asked = {(name, tuple(values.values())) for _, name, values in questions(inc)}
    assert asked == {
        ("ai_requests_from_network", ("203.0.113.",)),  # the logs mask the last octet: match the prefix
        ("user_sign_ins", ("mallory@contoso.com",)),
        ("account_control_plane", (ACCOUNT,)),
        ("account_key_callers", (ACCOUNT,)),  # who a key rotation breaks
    }


# --- the runner: budget, failure, skip ----------------------------------------------------------------------


@pytest.fixture
def test_enrichers():
    @enricher("t_ok")
    def ok(i, ctx):
        """Answers."""
        return {"seen": i.id}

    @enricher("t_slow")
    def slow(i, ctx):
        """Too slow."""
        time.sleep(3)
        return {}

    @enricher("t_boom")
    def boom(i, ctx):
        """Fails, with a key in its message."""
        raise RuntimeError("upstream said no; key=" + "A" * 40)

    @enricher("t_skip")
    def skip(i, ctx):
        """Does not apply."""
        raise Skip("nothing to look at")

    yield
    for n in ("t_ok", "t_slow", "t_boom", "t_skip"):
        ENRICHERS.remove(n)


def test_a_slow_or_failing_enricher_is_recorded_and_holds_nothing_back(test_enrichers):
    started = time.monotonic()
    got = {e.name: e for e in enrich(incident(), ["t_ok", "t_slow", "t_boom", "t_skip"], Context(now=NOW), budget=0.5)}
    assert time.monotonic() - started < 2  # the budget, not the slow enricher, decides
    assert (got["t_ok"].status, got["t_ok"].result) == ("ok", {"seen": "inc1"})
    assert (got["t_slow"].status, got["t_slow"].error) == ("timeout", "no answer within 0.5 s")
    assert got["t_boom"].status == "error"
    assert "AAAAAAAA" not in (got["t_boom"].error or "")
    assert "[redacted]" in (got["t_boom"].error or "")
    assert (got["t_skip"].status, got["t_skip"].error) == ("skipped", "nothing to look at")
    assert {e.version for e in got.values()} == {version(incident())}


def test_results_are_kept_per_incident_and_redone_only_when_the_incident_changed(test_enrichers, store):
    runner = Enrichers(["t_ok"], Context(now=NOW))
    assert runner.run([incident()], store) == 1
    assert [(e.name, e.status) for e in store.enrichment("inc1")] == [("t_ok", "ok")]
    assert runner.run([incident()], store) == 0  # unchanged: nothing to do
    assert runner.run([incident(count=4)], store) == 1  # more evidence: again
    assert len(store.enrichment("inc1")) == 1  # replaced, not added
    assert Enrichers(["t_ok", "t_skip"], Context(now=NOW)).run([incident(count=4)], store) == 1  # a new enricher


def test_an_unknown_enricher_in_the_settings_is_named(tmp_path):
    from aegis import settings
    from aegis.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="AEGIS_ENRICHERS: no enricher nope"):
        Enrichers.from_settings(settings.load(db=tmp_path / "x.db", enrichers="local,nope"), None)


def test_the_local_enricher_answers_from_the_stores_own_events(sqlite_store):
    from aegis import runtime, settings
    from aegis.pipeline import Message
    from tests.conftest import SAMPLES

    cfg = settings.load(db=sqlite_store.path)
    runtime.build_pipeline(cfg, sqlite_store).process(
        [Message(p.read_bytes(), hub="demo") for p in sorted(SAMPLES.rglob("*.json"))]
    )
    runner = Enrichers.from_settings(cfg, lambda a, b: sqlite_store.events(since=a, until=b))
    assert runner.names == ["local"]
    runner.run(sqlite_store.incidents(), sqlite_store)
    tampering = next(i for i in sqlite_store.incidents() if i.detection == "ai-control-plane-tampering")
    [kept] = sqlite_store.enrichment(tampering.id)
    net = next(n for n in kept.result["networks"] if n["network"] == "203.0.113.0/24")
    assert net["failures"] > 0
    assert net["ai_accounts"][0]["account"] == ACCOUNT
    ops = [o["operation"] for o in kept.result["control_plane"][0]["operations"]]
    assert any("listkeys" in o for o in ops)
    assert any("regeneratekey" in o for o in ops)


# --- up to the wire ----------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def cloud(server: WireServer) -> Context:
    conn = connections(server)
    from dataclasses import replace

    return Context(connections=replace(conn, logs=server.url), workspace=WORKSPACE, now=NOW)


def logs_answer(columns, rows) -> Reply:
    """The documented answer of POST /v1/workspaces/{id}/query."""
    return Reply(200, {"tables": [{"name": "PrimaryResult", "columns": [{"name": c, "type": t} for c, t in columns],
                                   "rows": rows}]})  # fmt: skip


def test_log_analytics_queries_go_out_with_escaped_values_and_their_answers_come_back(server):
    path = f"/v1/workspaces/{WORKSPACE}/query"
    server.expect("POST", path,
                  logs_answer([("user", "string"), ("sign_ins", "long"), ("failures", "long")],
                              [["mallory@contoso.com", 12, 9]]),
                  Reply(429, {"error": {"code": "ThrottledError"}}, {"Retry-After": "1"}),
                  logs_answer([("time", "datetime"), ("operation", "string")],
                              [["2026-11-20T09:58:03Z", "MICROSOFT.COGNITIVESERVICES/ACCOUNTS/REGENERATEKEY/ACTION"]]),
                  logs_answer([("caller_ip", "string"), ("deployment", "string"), ("user_agent", "string"),
                               ("requests", "long"), ("last_seen", "datetime")],
                              [["198.51.100.***", "gpt-4o", "openai-python/1.40", 310, "2026-11-20T09:40:00Z"]]))  # fmt: skip
    inc = incident(User(upn='mallory"@contoso.com'), AiResource(resource_id=ACCOUNT))
    [got] = enrich(inc, ["log_analytics"], cloud(server), budget=15)
    assert got.status == "ok", got.error
    sent = [s for s in server.seen if s.path == path]
    assert sent[0].headers["authorization"] == "Bearer test-token"
    assert 'UserPrincipalName =~ "mallory\\"@contoso.com"' in sent[0].body["query"]
    assert sent[0].body["timespan"].startswith("2026-11-19T10:00:00")  # 24 h before the newest evidence
    answers = {a["query"]: a for a in got.result["answers"]}
    assert answers["user_sign_ins"]["rows"][0]["failures"] == 9
    assert len(sent) == 4  # the 429 was retried after Retry-After
    assert answers["account_control_plane"]["rows"][0]["operation"].endswith("REGENERATEKEY/ACTION")
    assert answers["account_key_callers"]["rows"][0]["caller_ip"] == "198.51.100.***"
    assert "isempty(tostring(props.objectId))" in sent[3].body["query"]


def test_a_failing_query_is_recorded_beside_the_answers(server):
    path = f"/v1/workspaces/{WORKSPACE}/query"
    server.expect("POST", path, Reply(400, {"error": {"code": "BadArgumentError", "message": "bad query"}}),
                  logs_answer([("requests", "long")], [[5]]), logs_answer([("requests", "long")], []))  # fmt: skip
    inc = incident(Ip(prefix="203.0.113.0/24"), AiResource(resource_id=ACCOUNT))
    [got] = enrich(inc, ["log_analytics"], cloud(server), budget=15)
    answers = {a["query"]: a for a in got.result["answers"]}
    assert "bad query" in answers["ai_requests_from_network"]["error"]  # asked first, refused
    assert answers["account_control_plane"]["rows"] == [{"requests": 5}]  # still asked, still answered


def test_a_hung_service_is_a_timeout_not_a_lost_incident(server):
    path = f"/v1/workspaces/{WORKSPACE}/query"
    server.expect("POST", path, Reply(200, {"tables": []}, delay=3))
    [got] = enrich(incident(AiResource(resource_id=ACCOUNT)), ["log_analytics"], cloud(server), budget=0.5)
    assert got.status == "timeout"


def test_the_defender_alert_comes_back_in_full(server):
    body = {
        "id": ALERT, "name": ALERT.rsplit("/", 1)[-1], "type": "Microsoft.Security/Locations/alerts",
        "properties": {"alertType": "AI.Azure_CredentialTheftAttempt", "alertDisplayName": "Credential theft attempt",
                       "status": "Active", "severity": "High", "intent": "CredentialAccess",
                       "alertUri": "https://portal.azure.com/#blade/x", "remediationSteps": ["Rotate the keys"],
                       "compromisedEntity": "oai-contoso-prod", "startTimeUtc": "2026-11-20T09:30:00Z"},
    }  # fmt: skip
    path = ("/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourceGroups/rg-ai-prod/providers/Microsoft.Security"
            "/locations/westeurope/alerts/2516861511399999999_a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a5b")  # fmt: skip
    server.expect("GET", path, Reply(200, body))
    [got] = enrich(incident(DefenderAlert(resource_id=ALERT)), ["defender"], cloud(server), budget=15)
    assert got.status == "ok", got.error
    [alert] = got.result["alerts"]
    assert (alert["status"], alert["remediation"], alert["link"]) == (
        "Active",
        ["Rotate the keys"],
        "https://portal.azure.com/#blade/x",
    )
    assert server.seen[0].query["api-version"] == ["2022-01-01"]


def test_graph_gives_the_user_with_department_and_manager(server):
    user = {"id": "7d3e9a61-2c4b-4f1e-8a5d-6b9c0e1f2a3b", "displayName": "Mallory", "userPrincipalName": "mallory@contoso.com",
            "department": "Research", "jobTitle": "Engineer", "accountEnabled": True}  # fmt: skip
    manager = {
        "@odata.type": "#microsoft.graph.user",
        "id": "m1",
        "displayName": "Alice",
        "userPrincipalName": "alice@contoso.com",
    }
    server.expect("GET", "/v1.0/users/mallory@contoso.com", Reply(200, user))
    server.expect("GET", "/v1.0/users/mallory@contoso.com/manager", Reply(200, manager))
    [got] = enrich(incident(User(upn="mallory@contoso.com")), ["graph"], cloud(server), budget=15)
    assert got.status == "ok", got.error
    [u] = got.result["users"]
    assert (u["department"], u["account_enabled"], u["manager"]["name"]) == ("Research", True, "Alice")
    assert server.seen[0].query["$select"] == ["id,displayName,userPrincipalName,department,jobTitle,accountEnabled"]


def test_enrichers_without_configuration_say_so():
    got = {
        e.name: e for e in enrich(incident(User(upn="a@b.c")), ["log_analytics", "defender", "graph"], Context(now=NOW))
    }
    assert got["log_analytics"].status == "skipped"
    assert "AEGIS_LOG_ANALYTICS_WORKSPACE" in (got["log_analytics"].error or "")
    assert got["defender"].error == "the incident has no Defender alert"
    assert got["graph"].error == "no Graph connection configured"
    assert Token  # the offline credential used by `connections`


def test_graph_gives_the_service_principal_and_its_owners(server):
    from aegis.events import ServicePrincipal

    sp = {"id": "5e1c0b2a-9f3d-4e6a-8b7c-1d2e3f4a5b6c", "appId": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
          "displayName": "chat-frontend", "accountEnabled": True, "servicePrincipalType": "Application"}  # fmt: skip
    owners = {"value": [{"@odata.type": "#microsoft.graph.user", "id": "o1", "displayName": "Owner One"}]}
    server.expect("GET", "/v1.0/servicePrincipals/5e1c0b2a-9f3d-4e6a-8b7c-1d2e3f4a5b6c", Reply(200, sp))
    server.expect("GET", "/v1.0/servicePrincipals/5e1c0b2a-9f3d-4e6a-8b7c-1d2e3f4a5b6c/owners", Reply(200, owners))
    [got] = enrich(incident(ServicePrincipal(object_id=sp["id"])), ["graph"], cloud(server), budget=15)
    assert got.status == "ok", got.error
    [app] = got.result["service_principals"]
    assert (app["name"], app["enabled"], app["owners"]) == ("chat-frontend", True, [{"id": "o1", "name": "Owner One"}])
    assert got.result["users"] == []
