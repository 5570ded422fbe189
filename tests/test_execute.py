"""The executor and every action, up to the wire: the real SDK clients (azure-mgmt-cognitiveservices,
azure-keyvault-secrets, azure-mgmt-securityinsight, azure-mgmt-security, msgraph-sdk, azure-core for
Defender for Endpoint, ServiceNow and Jira) against a local HTTPS server with a throwaway CA that
checks each request and answers with the published examples (`../shared/samples/rest-examples/`)
or, where none is published, the documented shape."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.core.credentials import AccessToken
from pydantic import SecretStr

from aegis.events import AiResource, Host, Severity, User
from aegis.records import Incident
from aegis.respond import playbooks
from aegis.respond.connect import Bot, Connections, Tickets
from aegis.respond.execute import Executor, classify
from aegis.respond.record import Responder
from aegis.respond.tickets import sentinel_id
from aegis.store import SqliteStore
from tests.conftest import shared_dir
from tests.helpers import corroborate_all
from tests.wire import Reply, WireServer, http_example

EXAMPLES = "samples/rest-examples"
SUB = "00000000-1111-2222-3333-444444444444"
COG = "/providers/Microsoft.CognitiveServices/accounts"


def example(path: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((shared_dir() / EXAMPLES / path).read_bytes())
    return data


class Token:
    """A credential handing out a fixed token for any scope, remembering the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("test-token", int(time.time()) + 3600)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


BOT_ID, BOT_TENANT = "11111111-2222-4333-8444-555555555555", "0f7c2d1a-5b3e-4c8d-9e6f-1a2b3c4d5e6f"


def connections(server: WireServer, **tickets: Any) -> Connections:
    """Every service at the local server: the Bot Connector under /teams/, Graph under /v1.0."""
    return Connections(Token(), arm=server.url, graph=server.url + "/v1.0", mde=server.url, vault=server.url,
                       ca_file=str(server.ca_file), timeout=2.0, retries=2, tickets=Tickets(**tickets),
                       bot=Bot(BOT_ID, BOT_TENANT, f"{server.url}/teams/"))  # fmt: skip


PLAN = """
mode: {mode}
tiers: {{critical: P1, high: P1, medium: P2, low: P3, informational: P4}}
triggers: [{{playbooks: [test]}}]
approvals: {{isolate_endpoint: 1, contain_ai_resource: 1, rotate_ai_keys: 1, revoke_sessions: 1, disable_user: 1,
             restore_ai_resource: 0}}
rate_limits: {limits}
"""


def response(tmp_path: Path, steps: str, *, mode: str = "execute", limits: str = "{}") -> playbooks.Response:
    folder = tmp_path / "playbooks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / playbooks.PLAN_FILE).write_text(PLAN.format(mode=mode, limits=limits))
    (folder / "test.yaml").write_text(f"id: test\ndescription: under test\nsteps:\n{steps}")
    return playbooks.load(folder)


def incident(account: str, *, iid: str = "inc1", users: tuple[str, ...] = (), hosts: tuple[Host, ...] = ()) -> Incident:
    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    entities = (AiResource(resource_id=account), *(User(upn=u) for u in users), *hosts)
    return Incident(id=iid, detection="ai-credential-theft", bucket="b", group="g", title="Credential theft <b>",
                    severity=Severity.HIGH, first_seen=now, last_seen=now, entities=entities, atlas=(), owasp_llm=(),
                    event_ids=("e1",), event_count=1, timeline=())  # fmt: skip


def plan_and_approve(resp: playbooks.Response, store: SqliteStore, clock: Clock, *incidents: Incident) -> None:
    responder = Responder(resp, store, clock=clock)
    responder.respond(list(incidents))
    corroborate_all(responder)
    for step in store.steps(status=["awaiting_approval"]):
        responder.decide(step.key, "alice@contoso.com", approve=True)


def executor(resp, store, server, clock, **kw) -> Executor:
    return Executor(resp, store, connections(server, **kw.pop("tickets", {})), clock=clock, **kw)


def account_id(group: str, name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{group}{COG}/{name}"


def everything(store: SqliteStore) -> bytes:
    return orjson.dumps([s.summary() for s in store.steps()]) + orjson.dumps([a.summary() for a in store.audit_log()])


# --- contain and restore an AI account (azure-mgmt-cognitiveservices, Accounts_Update) ------------


def updated_account(server: WireServer, props: dict[str, Any]) -> list[Reply]:
    """The published UpdateAccount answer (200, long-running: Azure-AsyncOperation), its operation
    status, and the account as the final GET returns it."""
    spec = example("microsoft-cognitiveservices/UpdateAccount.json")["responses"]["200"]
    body = {**spec["body"], "properties": {**spec["body"]["properties"], **props}}
    headers = {"Azure-AsyncOperation": f"{server.url}/operations/op1?api-version=2025-06-01"}
    return [Reply(200, body, headers), Reply(200, body)]


def test_contain_keeps_the_previous_values_and_restore_puts_them_back(tmp_path, server):
    p = example("microsoft-cognitiveservices/UpdateAccount.json")["parameters"]
    path = account_id(p["resourceGroupName"], p["accountName"]).lower().replace("resourcegroups", "resourceGroups")
    path = path.replace("/microsoft.cognitiveservices/", "/Microsoft.CognitiveServices/")
    account = account_id(p["resourceGroupName"], p["accountName"])
    steps = """  - {name: contain, action: contain_ai_resource, params: {account: "{{ entities.ai_resource }}",
                                                                mode: disable_local_auth}}
"""
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps)
    plan_and_approve(resp, store, clock, incident(account))
    before = example("microsoft-cognitiveservices/UpdateAccount.json")["responses"]["200"]["body"]
    server.expect(
        "GET", path, Reply(200, {**before, "properties": {**before["properties"], "disableLocalAuth": False}})
    )
    patched, final = updated_account(server, {"disableLocalAuth": True})
    server.expect("PATCH", path, patched)
    server.expect("GET", "/operations/op1", Reply(200, {"status": "Succeeded"}))
    server.expect("GET", path, final)
    counts = executor(resp, store, server, clock).run()
    assert counts.succeeded == 1, store.steps()
    patch = next(s for s in server.seen if s.method == "PATCH")
    assert patch.query["api-version"] == [p["api-version"]]
    assert patch.body == {"properties": {"disableLocalAuth": True}}
    [step] = store.steps()
    assert step.status == "succeeded"
    assert step.outcome == {"account": step.target, "previous": {"disableLocalAuth": False},
                            "applied": {"disableLocalAuth": True}}  # fmt: skip

    # restore, from another playbook run (no approval needed in this plan)
    restore = response(tmp_path / "r", """  - {name: restore, action: restore_ai_resource,
                                            params: {account: "{{ entities.ai_resource }}"}}
""")  # fmt: skip
    server.seen.clear()
    patched, final = updated_account(server, {"disableLocalAuth": False})
    server.expect("PATCH", path, patched)
    server.expect("GET", "/operations/op1", Reply(200, {"status": "Succeeded"}))
    server.expect("GET", path, final)
    plan_and_approve(restore, store, clock, incident(account))
    assert executor(restore, store, server, clock).run().succeeded == 1
    assert next(s for s in server.seen if s.method == "PATCH").body == {"properties": {"disableLocalAuth": False}}

    # a second restore finds nothing left to put back: a permanent failure, with the reason
    again = response(tmp_path / "r2", """  - {name: restore again, action: restore_ai_resource,
                                            params: {account: "{{ entities.ai_resource }}"}}
""")  # fmt: skip
    plan_and_approve(again, store, clock, incident(account))
    assert executor(again, store, server, clock).run().failed == 1
    assert "nothing to put back" in (store.steps()[-1].reason or "")


# --- rotate keys with the Key Vault secret consumers read (Accounts_ListKeys / RegenerateKey, Key Vault) ---


def secret_bundle(server: WireServer, name: str, value: str, version: str) -> dict[str, Any]:
    """A SecretBundle as Key Vault documents it (Get Secret / Set Secret, api-version 7.5)."""
    return {"value": value, "id": f"{server.url}/secrets/{name}/{version}", "contentType": "text/plain",
            "attributes": {"enabled": True, "created": 1764140000, "updated": 1764140000,
                           "recoveryLevel": "Recoverable+Purgeable"}}  # fmt: skip


CHALLENGE = Reply(401, {"error": {"code": "Unauthorized"}}, {
    "WWW-Authenticate": 'Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
    'resource="https://vault.azure.net"'})  # fmt: skip


ROTATE = """  - name: rotate
    action: rotate_ai_keys
    params: {account: "{{ entities.ai_resource }}", key: both, secret: "https://kv-ai.vault.azure.net/secrets/oai-key"}
"""


def rotation(tmp_path, server, steps: str, *, held: str, users: tuple[str, ...] = ()):
    """The published ListKeys account, its rotation step(s) approved, and a vault whose secret holds `held`
    (Key Vault answers the first, token-less request with its challenge)."""
    keys = example("microsoft-cognitiveservices/ListKeys.json")
    p = keys["parameters"]
    base = account_id(p["resourceGroupName"].lower(), p["accountName"].lower())
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps)
    plan_and_approve(resp, store, clock, incident(account_id(p["resourceGroupName"], p["accountName"]), users=users))
    server.expect("GET", "/secrets/oai-key/", CHALLENGE, Reply(200, secret_bundle(server, "oai-key", held, "v1")))
    server.expect(
        "GET", base, Reply(200, example("microsoft-cognitiveservices/UpdateAccount.json")["responses"]["200"]["body"])
    )
    server.expect("POST", f"{base}/listKeys", Reply(200, keys["responses"]["200"]["body"]))
    return resp, store, clock, base, p["api-version"]


def test_rotate_moves_the_secret_to_a_fresh_key_before_regenerating_the_key_it_held(tmp_path, server):
    regen = example("microsoft-cognitiveservices/RegenerateKey.json")
    held = example("microsoft-cognitiveservices/ListKeys.json")["responses"]["200"]["body"][
        "key1"
    ]  # consumers read Key1
    resp, store, clock, base, api_version = rotation(tmp_path, server, ROTATE, held=held)
    server.expect("POST", f"{base}/regenerateKey", Reply(200, regen["responses"]["200"]["body"]),
                  Reply(200, regen["responses"]["200"]["body"]))  # fmt: skip
    fresh = regen["responses"]["200"]["body"]["key2"]
    server.expect("PUT", "/secrets/oai-key", Reply(200, secret_bundle(server, "oai-key", fresh, "v2")))
    counts = executor(resp, store, server, clock).run()
    assert counts.succeeded == 1, store.steps()[0].reason
    calls = [
        (s.method, s.path.rsplit("/", 1)[-1] or s.path, s.body) for s in server.seen if s.headers.get("authorization")
    ]
    assert calls == [
        ("GET", last_segment(base), None),  # the account first: a protected tag stops the rotation before any change
        ("GET", "/secrets/oai-key/", None),
        ("POST", "listKeys", None),
        ("POST", "regenerateKey", {"keyName": "Key2"}),  # the key the secret does not hold, first
        ("PUT", "oai-key", {"value": fresh, "contentType": "myaccount Key2"}),
        ("POST", "regenerateKey", {"keyName": "Key1"}),  # the exposed key dies last
    ]
    arm = [s for s in server.seen if s.path.startswith("/subscriptions/")]
    assert all(s.query["api-version"] == [api_version] for s in arm)
    assert all(s.query["api-version"] == ["7.5"] for s in server.seen if s.path.startswith("/secrets/"))
    step = store.steps()[0]
    assert step.outcome == {"account": step.target.split("#")[0], "regenerated": ["Key1", "Key2"],
                            "secret_holds": "Key2", "secret_version": "v2"}  # fmt: skip
    assert held.encode() not in everything(store)
    assert fresh.encode() not in everything(store)


def last_segment(base: str) -> str:
    return base.rsplit("/", 1)[-1]


def test_rotate_refuses_a_secret_that_holds_neither_key_and_the_playbook_stops(tmp_path, server):
    steps = (
        ROTATE
        + """  - {name: revoke, action: revoke_sessions, for_each: entities.user, params: {user: "{{ item.key }}"}}
"""
    )
    resp, store, clock, _, _ = rotation(tmp_path, server, steps, held="stale", users=("mallory@contoso.com",))
    counts = executor(resp, store, server, clock).run()
    assert (counts.failed, counts.skipped) == (1, 1)
    rotate, revoke = store.steps()
    assert rotate.status == "failed"
    assert "holds neither key" in (rotate.reason or "")
    assert revoke.status == "skipped"
    assert "'rotate' failed" in (revoke.reason or "")
    assert not any("regenerateKey" in s.path or "revokeSignInSessions" in s.path for s in server.seen)


# --- Defender for Endpoint isolation (azure-core pipeline; isolate-machine request, machineAction) ----------


def test_isolate_finds_the_machine_by_host_name_then_posts_the_documented_request(tmp_path, server):
    body = orjson.loads(
        (shared_dir() / EXAMPLES / "defender-for-endpoint/isolate-machine.request-body.json").read_bytes()
    )
    action = orjson.loads((shared_dir() / EXAMPLES / "defender-for-endpoint/machineaction.isolate.json").read_bytes())
    route = (shared_dir() / EXAMPLES / "defender-for-endpoint/isolate-machine.request.http").read_text().split()[1]
    machine = route.split("/machines/")[1].split("/")[0]
    steps = f"""  - name: isolate
    action: isolate_endpoint
    for_each: entities.host
    params: {{machine_id: "{{{{ item.mde_machine_id }}}}", host_name: "{{{{ item.name }}}}",
             isolation: {body["IsolationType"]}, comment: "{body["Comment"]}"}}
"""
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps)
    host = Host(name="desktop-test")
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai"), hosts=(host,)))
    listing = {"value": [{"id": machine, "computerDnsName": "desktop-test.contoso.com"},
                         {"id": "0" * 40, "computerDnsName": "desktop-test2.contoso.com"}]}  # fmt: skip
    server.expect("GET", "/api/machines", Reply(200, listing))
    server.expect("POST", f"/api/machines/{machine}/isolate", Reply(201, action))
    counts = executor(resp, store, server, clock).run()
    assert counts.succeeded == 1, store.steps()[0].reason
    lookup, isolate = server.seen
    assert lookup.query["$filter"] == ["startswith(computerDnsName,'desktop-test')"]
    assert isolate.body == body
    assert isolate.headers["authorization"] == "Bearer test-token"
    assert store.steps()[0].outcome == {"machine": machine, "machine_action": action["id"], "type": "Isolate",
                                        "status": action["status"]}  # fmt: skip


def test_a_host_name_that_matches_two_machines_is_not_guessed(tmp_path, server):
    steps = """  - name: isolate
    action: isolate_endpoint
    for_each: entities.host
    params: {host_name: "{{ item.name }}", comment: c}
"""
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps)
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai"), hosts=(Host(name="web"),)))
    listing = {"value": [{"id": "1" * 40, "computerDnsName": "web.contoso.com"},
                         {"id": "2" * 40, "computerDnsName": "web.fabrikam.com"}]}  # fmt: skip
    server.expect("GET", "/api/machines", Reply(200, listing))
    assert executor(resp, store, server, clock).run().failed == 1
    assert "2 Defender for Endpoint machines are named web" in (store.steps()[0].reason or "")
    assert [s.method for s in server.seen] == ["GET"]


# --- tickets: Sentinel (Incidents_CreateOrUpdate), ServiceNow Table API, Jira REST v3, local ----------------


def ticket_steps(system: str) -> str:
    return f"""  - name: ticket
    action: open_ticket
    params: {{system: {system}, title: "{{{{ incident.title }}}}", severity: "{{{{ incident.severity }}}}"}}
"""


def test_sentinel_ticket_is_created_once_then_updated_keeping_the_analysts_status(tmp_path, server):
    spec = example("microsoft-securityinsights/CreateIncident.json")
    p = spec["parameters"]
    workspace = (f"/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
                 f"/providers/Microsoft.OperationalInsights/workspaces/{p['workspaceName']}")  # fmt: skip
    sid = sentinel_id("inc1")
    path = (f"/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName'].lower()}/providers/"
            f"Microsoft.OperationalInsights/workspaces/{p['workspaceName'].lower()}/providers/"
            f"Microsoft.SecurityInsights/incidents/{sid}")  # fmt: skip
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, ticket_steps("sentinel"))
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai")))
    server.expect("GET", path, Reply(404, {"error": {"code": "NotFound", "message": "Incident not found"}}))
    server.expect("PUT", path, Reply(201, spec["responses"]["201"]["body"]))
    tickets = {"sentinel_workspace": workspace}
    assert executor(resp, store, server, clock, tickets=tickets).run().succeeded == 1
    put = server.seen[-1]
    assert put.query["api-version"] == [p["api-version"]]
    assert put.body["properties"]["title"] == "Credential theft <b>"
    assert put.body["properties"]["severity"] == "High"
    assert put.body["properties"]["status"] == "New"
    outcome = store.steps()[0].outcome
    assert outcome == {"system": "sentinel", "ticket": sid, "number": 3177, "created": True,
                       "url": spec["responses"]["201"]["body"]["properties"]["incidentUrl"]}  # fmt: skip

    # the incident grows to critical: a new step updates the same Sentinel incident, keeping its status
    server.seen.clear()
    grown = Incident.from_json(incident(account_id("rg", "oai")).to_json().replace(b'"high"', b'"critical"'))
    server.expect("GET", path, Reply(200, spec["responses"]["200"]["body"]))
    server.expect("PUT", path, Reply(200, spec["responses"]["200"]["body"]))
    plan_and_approve(resp, store, clock, grown)
    assert executor(resp, store, server, clock, tickets=tickets).run().succeeded == 1
    update = server.seen[-1].body
    assert update["etag"] == spec["responses"]["200"]["body"]["etag"]
    assert update["properties"]["status"] == "Closed"  # the analyst's status is kept
    assert (
        update["properties"]["owner"]["objectId"] == spec["parameters"]["incident"]["properties"]["owner"]["objectId"]
    )


def test_servicenow_ticket_is_found_again_by_correlation_id(tmp_path, server):
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, ticket_steps("servicenow"))
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai")))
    tickets = {"servicenow_instance": server.url, "servicenow_user": "aegis", "servicenow_password": SecretStr("pw")}
    # Table API shapes: GET → {"result": [...]}, POST → 201 {"result": {...}}
    server.expect("GET", "/api/now/table/incident", Reply(200, {"result": []}),
                  Reply(200, {"result": [{"sys_id": "9d385017c611228701d22104cc95c371", "number": "INC0010001"}]}))  # fmt: skip
    server.expect("POST", "/api/now/table/incident",
                  Reply(201, {"result": {"sys_id": "9d385017c611228701d22104cc95c371", "number": "INC0010001"}}))  # fmt: skip
    server.expect("PATCH", "/api/now/table/incident/9d385017c611228701d22104cc95c371",
                  Reply(200, {"result": {"sys_id": "9d385017c611228701d22104cc95c371", "number": "INC0010001"}}))  # fmt: skip
    assert executor(resp, store, server, clock, tickets=tickets).run().succeeded == 1
    lookup, create = server.seen
    assert lookup.query["sysparm_query"] == ["correlation_id=inc1"]
    assert lookup.headers["authorization"] == "Basic YWVnaXM6cHc="
    assert create.body["correlation_id"] == "inc1"
    assert (create.body["impact"], create.body["urgency"]) == ("1", "2")
    grown = Incident.from_json(incident(account_id("rg", "oai")).to_json().replace(b'"high"', b'"critical"'))
    plan_and_approve(resp, store, clock, grown)
    assert executor(resp, store, server, clock, tickets=tickets).run().succeeded == 1
    assert server.seen[-1].method == "PATCH"
    assert (server.seen[-1].body["impact"], server.seen[-1].body["urgency"]) == ("1", "1")
    assert b"pw" not in everything(store)


def test_jira_issue_is_created_with_its_label_then_updated(tmp_path, server):
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, ticket_steps("jira"))
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai")))
    tickets = {"jira_site": server.url, "jira_user": "soc@contoso.com", "jira_token": SecretStr("tok"),
               "jira_project": "SOC"}  # fmt: skip
    server.expect("GET", "/rest/api/3/search/jql", Reply(200, {"issues": []}),
                  Reply(200, {"issues": [{"id": "10001", "key": "SOC-7"}]}))  # fmt: skip
    server.expect("POST", "/rest/api/3/issue", Reply(201, {"id": "10001", "key": "SOC-7",
                                                          "self": f"{server.url}/rest/api/3/issue/10001"}))  # fmt: skip
    server.expect("PUT", "/rest/api/3/issue/SOC-7", Reply(204))
    assert executor(resp, store, server, clock, tickets=tickets).run().succeeded == 1
    search, create = server.seen
    assert search.query["jql"] == ['project = "SOC" AND labels = "aegis-inc1"']
    assert create.body["fields"]["labels"] == ["aegis", "aegis-inc1"]
    assert create.body["fields"]["summary"] == "[HIGH] Credential theft <b>"
    assert store.steps()[0].outcome == {"system": "jira", "ticket": "SOC-7", "created": True}
    grown = Incident.from_json(incident(account_id("rg", "oai")).to_json().replace(b'"high"', b'"critical"'))
    plan_and_approve(resp, store, clock, grown)
    assert executor(resp, store, server, clock, tickets=tickets).run().succeeded == 1
    assert server.seen[-1].body["fields"]["summary"] == "[CRITICAL] Credential theft <b>"


def test_a_ticket_system_that_is_not_configured_fails_naming_the_settings(tmp_path, server):
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, ticket_steps("jira"))
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai")))
    assert executor(resp, store, server, clock).run().failed == 1
    assert "AEGIS_JIRA_SITE" in (store.steps()[0].reason or "")
    assert server.seen == []


def test_the_local_ticket_is_one_per_incident(tmp_path, server):
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, ticket_steps("local"))
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai")))
    assert executor(resp, store, server, clock).run().succeeded == 1
    grown = Incident.from_json(incident(account_id("rg", "oai")).to_json().replace(b'"high"', b'"critical"'))
    plan_and_approve(resp, store, clock, grown)
    executor(resp, store, server, clock).run()
    first, second = [s.outcome for s in store.steps()]
    assert first == {"system": "local", "ticket": "AEGIS-1", "created": True}
    assert second == {"system": "local", "ticket": "AEGIS-1", "created": False}


# --- Teams notification (through the bot: the Bot Connector API) ---------------------------------------------


def test_notify_posts_html_escaped_text_to_the_channel(tmp_path, server):
    steps = """  - name: tell
    action: notify
    params: {team: 0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c, channel: "19:abc@thread.tacv2",
             text: "{{ incident.severity }}: {{ incident.title }}"}
"""
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps)
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai")))
    thread = "19:abc@thread.tacv2;messageid=1616990032035"
    server.expect("POST", "/teams/v3/conversations", Reply(201, {"id": thread, "activityId": "1616990032035"}))
    assert executor(resp, store, server, clock).run().succeeded == 1, store.steps()[0].reason
    [seen] = server.seen
    assert seen.body["channelData"]["channel"] == {"id": "19:abc@thread.tacv2"}
    assert seen.body["activity"] == {"type": "message", "textFormat": "xml", "text": "high: Credential theft &lt;b&gt;"}
    assert store.steps()[0].outcome == {"thread": thread, "message": "1616990032035"}


# --- the engine: retries, failures, at most once, order, blast radius ----------------------------------------

GRAPH_EXAMPLES = "microsoft-graph"
REVOKE = """  - {name: revoke, action: revoke_sessions, for_each: entities.user, params: {user: "{{ item.key }}"}}
"""
DISABLE = """  - {name: disable, action: disable_user, for_each: entities.user, params: {user: "{{ item.key }}"}}
"""
USER_PATH = "/v1.0/users/mallory@contoso.com"


def revoked() -> Reply:
    return http_example(shared_dir() / EXAMPLES / GRAPH_EXAMPLES / "user-revokesigninsessions.response.http")


def disabled() -> Reply:
    return http_example(shared_dir() / EXAMPLES / GRAPH_EXAMPLES / "user-update.response.http")


def graph_case(tmp_path, steps=REVOKE + DISABLE, *, store=None, **kw):
    store, clock = store or SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, steps, **kw)
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai"), users=("mallory@contoso.com",)))
    return resp, store, clock


def test_steps_run_in_order_and_a_redelivered_incident_runs_nothing_twice(tmp_path, server, store):
    resp, store, clock = graph_case(tmp_path, store=store)  # on SQLite and on Table Storage (Azurite)
    server.expect("POST", f"{USER_PATH}/revokeSignInSessions", revoked())
    server.expect("PATCH", USER_PATH, disabled())
    counts = executor(resp, store, server, clock).run()
    assert counts.succeeded == 2
    assert [(s.method, s.body and s.body["accountEnabled"]) for s in server.seen] == [("POST", None), ("PATCH", False)]
    # redelivery: the same incident planned and executed again changes nothing and calls nothing
    responder = Responder(resp, store, clock=clock)
    responder.respond([incident(account_id("rg", "oai"), users=("mallory@contoso.com",))])
    corroborate_all(responder)
    assert executor(resp, store, server, clock).run().succeeded == 0
    assert len(server.seen) == 2
    events = [a.event for a in store.audit_log()]
    assert events.count("started") == 2
    assert events.count("succeeded") == 2


def test_a_429_with_retry_after_is_retried_by_the_sdk_and_the_step_succeeds(tmp_path, server):
    resp, store, clock = graph_case(tmp_path, REVOKE)
    server.expect("POST", f"{USER_PATH}/revokeSignInSessions",
                  Reply(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "1"}), revoked())  # fmt: skip
    start = time.monotonic()
    assert executor(resp, store, server, clock).run().succeeded == 1
    assert time.monotonic() - start >= 1.0
    assert len(server.seen) == 2


def test_5xx_after_the_sdk_retries_releases_the_step_for_a_later_run_then_it_fails(tmp_path, server):
    resp, store, clock = graph_case(tmp_path, REVOKE + DISABLE)
    unavailable = Reply(503, {"error": {"code": "ServiceUnavailable"}}, {"Retry-After": "1"})
    path = f"{USER_PATH}/revokeSignInSessions"
    server.expect("POST", path, *[unavailable] * 3)  # the Graph SDK tries 3 times (1 + the 2 retries configured)
    run = executor(resp, store, server, clock, max_attempts=2)
    assert run.run().retrying == 1
    revoke, disable = store.steps()
    assert (revoke.status, revoke.attempts, revoke.started) == ("approved", 1, None)
    assert "HTTP 503" in (revoke.reason or "")
    assert disable.status == "approved"  # waits behind the step before it
    assert not any(s.method == "PATCH" for s in server.seen)
    assert len(server.seen) == 3
    server.expect("POST", path, *[unavailable] * 3)
    counts = run.run()
    assert (counts.failed, counts.skipped) == (1, 1)
    revoke, disable = store.steps()
    assert revoke.status == "failed"
    assert revoke.outcome == {"error": revoke.outcome["error"], "kind": "transient"}
    assert disable.status == "skipped"


def test_a_403_fails_the_step_at_once_and_stops_the_playbook(tmp_path, server):
    resp, store, clock = graph_case(tmp_path)
    server.expect("POST", f"{USER_PATH}/revokeSignInSessions",
                  Reply(403, {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}))  # fmt: skip
    counts = executor(resp, store, server, clock).run()
    assert (counts.failed, counts.skipped, len(server.seen)) == (1, 1, 1)
    revoke, disable = store.steps()
    assert revoke.reason is not None
    assert revoke.reason.startswith("permanent: HTTP 403")
    assert disable.status == "skipped"
    assert [a.event for a in store.audit_log()][-3:] == ["started", "failed", "skipped"]


def test_a_timeout_fails_with_the_outcome_unknown_and_is_not_repeated(tmp_path, server):
    resp, store, clock = graph_case(tmp_path, REVOKE)
    server.expect("POST", f"{USER_PATH}/revokeSignInSessions", Reply(200, {"value": True}, delay=3))
    assert executor(resp, store, server, clock).run().failed == 1
    [step] = store.steps()
    assert step.reason is not None
    assert step.reason.startswith("unknown: no answer")
    assert executor(resp, store, server, clock).run().failed == 0  # never run again by itself


def test_a_claim_left_by_a_dead_worker_is_failed_after_the_lease_not_repeated(tmp_path, server):
    resp, store, clock = graph_case(tmp_path, REVOKE)
    [step] = store.steps()
    assert store.replace_step(step.next(started=clock.now, attempts=1), audit=[])  # a worker claimed it, then died
    assert executor(resp, store, server, clock).run().failed == 0  # within the lease: someone may be running it
    clock.now += timedelta(minutes=16)
    assert executor(resp, store, server, clock).run().failed == 1
    assert "stopped before its outcome was recorded" in (store.steps()[0].reason or "")
    assert server.seen == []


def test_two_executors_at_once_make_the_call_once(tmp_path, server, store):
    resp, store, clock = graph_case(tmp_path, REVOKE, store=store)  # on SQLite and on Table Storage (Azurite)
    server.expect("POST", f"{USER_PATH}/revokeSignInSessions", Reply(200, {"value": True}, delay=0.5))
    results: list[Any] = []

    def go() -> None:
        results.append(executor(resp, store, server, clock).run())

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.succeeded for r in results) == [0, 1]
    assert len(server.seen) == 1


def test_the_hourly_rate_limit_refuses_the_step_over_it(tmp_path, server):
    resp = response(tmp_path, REVOKE, limits="{revoke_sessions: {per_hour: 1, per_incident: 5}}")
    store, clock = SqliteStore(":memory:"), Clock()
    users = ("mallory@contoso.com", "eve@contoso.com")
    plan_and_approve(resp, store, clock, incident(account_id("rg", "oai"), users=users))
    server.expect("POST", f"{USER_PATH}/revokeSignInSessions", revoked())
    counts = executor(resp, store, server, clock).run()
    assert (counts.succeeded, counts.refused) == (1, 1)
    refused = store.steps()[1]
    assert refused.status == "refused"
    assert refused.reason == "rate limit: revoke_sessions started 1 times in the last hour (allowed: 1)"
    assert len(server.seen) == 1


def test_a_target_protected_after_approval_is_refused_when_it_would_run(tmp_path, server):
    _, store, clock = graph_case(tmp_path, REVOKE)
    folder = tmp_path / "playbooks"
    plan = (folder / playbooks.PLAN_FILE).read_text() + "protected: {users: [mallory@contoso.com]}\n"
    (folder / playbooks.PLAN_FILE).write_text(plan)
    counts = executor(playbooks.load(folder), store, server, clock).run()
    assert counts.refused == 1
    assert store.steps()[0].reason == "user mallory@contoso.com is protected by the response plan"
    assert server.seen == []


def test_a_step_awaiting_approval_holds_back_the_later_steps_and_expires(tmp_path, server):
    store, clock = SqliteStore(":memory:"), Clock()
    resp = response(tmp_path, REVOKE + ticket_steps("local"))
    responder = Responder(resp, store, clock=clock)
    responder.respond([incident(account_id("rg", "oai"), users=("mallory@contoso.com",))])
    corroborate_all(responder)
    counts = executor(resp, store, server, clock).run()
    assert (counts.waiting, counts.succeeded) == (1, 0)
    clock.now += timedelta(hours=5)
    counts = executor(resp, store, server, clock).run()
    assert (counts.expired, counts.succeeded) == (1, 1)  # expired is not approval; the ticket step goes on
    assert [s.status for s in store.steps()] == ["expired", "succeeded"]


def test_dry_run_mode_executes_nothing(tmp_path, server):
    resp, store, clock = graph_case(tmp_path, ticket_steps("local"), mode="dry_run")
    assert asdict(executor(resp, store, server, clock).run()) == dict.fromkeys(
        ("succeeded", "failed", "retrying", "refused", "skipped", "expired", "waiting"), 0
    )
    assert store.steps()[0].status == "dry_run"


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "permanent"), (404, "permanent"), (408, "transient"), (429, "transient"),
                         (500, "transient"), (503, "transient")],
)  # fmt: skip
def test_what_a_status_left_after_the_sdk_retries_means(status, kind):
    from azure.core.exceptions import HttpResponseError

    err = HttpResponseError(message="boom key=abcdefghijklmnopqrstuvwxyz0123456789ABCD")
    err.status_code = status
    got, message = classify(err)
    assert got == kind
    assert "abcdefghijklmnopqrstuvwxyz0123456789ABCD" not in message  # secret-looking runs are redacted


def test_a_worker_builds_each_service_client_once_and_reuses_it(server):
    """Clients are kept by the worker's connections, per service and what they are bound to (a
    subscription, a vault): their connection pools outlive the call that built them."""
    from types import SimpleNamespace

    from aegis.enrich import log_analytics
    from aegis.enrich.log_analytics import LogsQueryClient
    from aegis.respond import cognitive, defender, mde, sentinel

    workspace = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/w"
    conn = connections(server, sentinel_workspace=workspace)
    one, two = account_id("rg1", "a1"), account_id("rg2", "a2")
    client = cognitive.account_client
    assert client(conn, one)[0] is client(conn, two)[0]  # one subscription: one client
    elsewhere = one.replace(SUB, "00000000-0000-0000-0000-000000000001")
    assert client(conn, elsewhere)[0] is not client(conn, one)[0]
    assert mde._client(conn) is mde._client(conn)
    assert sentinel.workspace(conn).client is sentinel.workspace(conn).client
    alert = f"/subscriptions/{SUB}/providers/microsoft.security/locations/westeurope/alerts/"
    assert defender.alerts(alert + "a1", conn)[0]._client is defender.alerts(alert + "a2", conn)[0]._client
    asks = SimpleNamespace(connections=conn)
    assert isinstance(log_analytics.client(asks), LogsQueryClient)  # type: ignore[arg-type]
    assert log_analytics.client(asks) is log_analytics.client(asks)  # type: ignore[arg-type]
    assert mde._client(connections(server)) is not mde._client(conn)  # another worker's connections: its own
