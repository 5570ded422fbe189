"""Delivery up to the wire: the Sentinel incident (azure-mgmt-securityinsight, answered with the
published CreateIncident example) and the SOC channel's notice (msgraph-sdk), each made once and
updated as the incident grows, never duplicated."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from aegis.deliver.run import Deliveries
from aegis.events import AiResource, Ip, Severity
from aegis.records import Incident, TimelineEntry
from aegis.respond.connect import Tickets
from aegis.respond.playbooks import Channel
from aegis.respond.tickets import sentinel_id
from tests.test_execute import connections, example
from tests.wire import Reply, WireServer

ACCOUNT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/oai"
SOC = Channel(team="0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c", channel="19:soc0123@thread.tacv2")
CONVERSATIONS = "/teams/v3/conversations"  # the Bot Connector at the local server


def incident(count: int = 2, severity: Severity = Severity.HIGH) -> Incident:
    at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    return Incident(id="inc1", detection="ai-prompt-attack-then-exfiltration", bucket="b", group="g",
                    title="Jailbreak then key theft <img src=x onerror=alert(1)>", severity=severity,
                    first_seen=at, last_seen=at, entities=(AiResource(resource_id=ACCOUNT), Ip(prefix="203.0.113.0/24")),
                    atlas=("AML.T0054",), owasp_llm=("LLM01",), event_ids=("e1",), event_count=count,
                    timeline=(TimelineEntry(at, "e1", "k", "defender"),))  # fmt: skip


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def sentinel_case(server: WireServer):
    spec = example("microsoft-securityinsights/CreateIncident.json")
    p = spec["parameters"]
    workspace = (f"/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
                 f"/providers/Microsoft.OperationalInsights/workspaces/{p['workspaceName']}")  # fmt: skip
    path = (f"/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName'].lower()}/providers/"
            f"Microsoft.OperationalInsights/workspaces/{p['workspaceName'].lower()}/providers/"
            f"Microsoft.SecurityInsights/incidents/{sentinel_id('inc1')}")  # fmt: skip
    conn = dataclasses.replace(connections(server), tickets=Tickets(sentinel_workspace=workspace))
    return spec, path, Deliveries(["sentinel"], conn, "https://aegis.example", None)


def evidence(server: WireServer, path: str) -> tuple[str, str]:
    """The bookmark carrying the incident's entities and tactics, and its relation to the incident."""
    base = path.rsplit("/incidents/", 1)[0]
    bookmark = f"{base}/bookmarks/{sentinel_id('inc1', 'evidence')}"
    relation = f"{path}/relations/{sentinel_id('inc1', 'evidence-relation')}"
    server.expect("PUT", bookmark, Reply(200, {"id": bookmark, "name": bookmark.rsplit("/", 1)[-1], "properties": {}}))
    server.expect("PUT", relation, Reply(200, {"id": relation, "properties": {"relatedResourceId": bookmark}}))
    return bookmark, relation


def test_the_sentinel_incident_is_created_once_and_updated_as_the_incident_grows(server, sqlite_store):
    spec, path, deliveries = sentinel_case(server)
    server.expect("GET", path, Reply(404, {"error": {"code": "NotFound", "message": "Incident not found"}}))
    server.expect("PUT", path, Reply(201, spec["responses"]["201"]["body"]))
    bookmark, relation = evidence(server, path)
    from aegis.records import Enrichment

    found = {"alerts": [{"id": "a", "techniques": ["T1548", "T1078.004", "not-a-technique"]}]}
    sqlite_store.save_enrichment("inc1", [Enrichment("defender", "ok", found, None, datetime.now(UTC), 5, "v")])
    assert deliveries.run([incident()], sqlite_store) == 1
    marked = next(s for s in server.seen if s.path == bookmark).body["properties"]
    assert marked["entityMappings"] == [
        {"entityType": "AzureResource", "fieldMappings": [{"identifier": "ResourceId", "value": ACCOUNT}]},
        {"entityType": "IP", "fieldMappings": [{"identifier": "Address", "value": "203.0.113.0/24"}]},
    ]
    assert marked["tactics"] == ["PrivilegeEscalation", "DefenseEvasion"]  # AML.T0054's ATLAS tactics
    assert marked["techniques"] == ["T1078", "T1548"]  # ATT&CK, from the Defender alerts the enricher read
    assert marked["query"].endswith('print aegis_incident = "inc1"')
    assert next(s for s in server.seen if s.path == relation).body == {"properties": {"relatedResourceId": bookmark}}
    put = next(s for s in server.seen if s.path == path and s.method == "PUT").body["properties"]
    assert (put["title"], put["severity"], put["status"]) == (incident().title, "High", "New")
    assert "&lt;img src=x onerror=alert(1)&gt;" in put["description"]  # the portal renders HTML: escaped
    assert "<img" not in put["description"]
    assert "AML.T0054 LLM Jailbreak" in put["description"]
    assert "https://aegis.example/console/incidents/inc1" in put["description"]
    assert [lab["labelName"] for lab in put["labels"]] == ["aegis", "AML.T0054", "LLM01"]
    [kept] = sqlite_store.enrichment("inc1", kind="deliver")
    # the portal's deep link Sentinel answered with: the console links the incident to it
    assert kept.result["url"] == spec["responses"]["201"]["body"]["properties"]["incidentUrl"]
    from aegis.approvals.web import _sentinel

    assert _sentinel([kept]) == {"number": 3177, "url": kept.result["url"]}
    hostile = dataclasses.replace(kept, result={**kept.result, "url": "javascript:alert(1)"})
    assert _sentinel([hostile]) == {"number": 3177, "url": None}  # only a link into the portal is a link
    assert (kept.status, kept.result["number"], kept.result["created"], kept.result["entities"]) == (
        "ok",
        3177,
        True,
        2,
    )

    seen = len(server.seen)
    assert deliveries.run([incident()], sqlite_store) == 0  # redelivered, unchanged: no call at all
    assert len(server.seen) == seen

    current = spec["responses"]["200"]["body"]  # the analyst has taken it: status Active, an owner, a label
    server.expect("GET", path, Reply(200, current))
    server.expect("PUT", path, Reply(200, current))
    evidence(server, path)
    assert deliveries.run([incident(count=5, severity=Severity.CRITICAL)], sqlite_store) == 1
    update = [s for s in server.seen if s.path == path and s.method == "PUT"][-1].body
    assert update["etag"] == current["etag"]
    assert update["properties"]["status"] == current["properties"]["status"]
    assert update["properties"]["owner"] == current["properties"]["owner"]
    assert update["properties"]["severity"] == "High"  # Sentinel's scale ends at High
    names = [lab["labelName"] for lab in update["properties"]["labels"]]
    assert names[: len(current["properties"]["labels"])] == [
        lab["labelName"] for lab in current["properties"]["labels"]
    ]
    assert names.count("aegis") == 1


def test_the_soc_notice_is_posted_once_then_updated_in_its_thread(server, sqlite_store):
    deliveries = Deliveries(["teams"], connections(server), "https://aegis.example", SOC)
    thread = f"{SOC.channel};messageid=1700000000001"
    server.expect("POST", CONVERSATIONS, Reply(201, {"id": thread, "activityId": "1700000000001"}))
    assert deliveries.run([incident()], sqlite_store) == 1
    first = server.seen[-1].body
    assert first["channelData"]["channel"] == {"id": SOC.channel}
    assert first["activity"]["textFormat"] == "xml"
    assert "&lt;img src=x onerror=alert(1)&gt;" in first["activity"]["text"]
    assert deliveries.run([incident()], sqlite_store) == 0

    replies = f"{CONVERSATIONS}/{thread}/activities"
    server.expect("POST", replies, Reply(503, {"error": {"code": "ServiceUnavailable"}}), Reply(201, {"id": "r2"}))
    deliveries = dataclasses.replace(deliveries, connections=dataclasses.replace(connections(server), retries=0))
    assert deliveries.run([incident(count=3)], sqlite_store) == 1  # the update failed: recorded, thread kept
    [kept] = sqlite_store.enrichment("inc1", kind="deliver")
    assert (kept.status, kept.result["message"]) == ("error", f"{thread}|1700000000001")
    assert deliveries.run([incident(count=3)], sqlite_store) == 1  # tried again, in the same thread
    assert server.seen[-1].body["text"].startswith("Updated:")
    assert [s.path for s in server.seen if s.method == "POST"].count(CONVERSATIONS) == 1  # never a second notice


def test_quiet_incidents_and_unconfigured_deliverers_send_nothing(server, sqlite_store):
    deliveries = Deliveries(["teams"], connections(server), "https://aegis.example", SOC, min_severity="high")
    assert deliveries.run([incident(severity=Severity.MEDIUM)], sqlite_store) == 0
    unconfigured = Deliveries(["sentinel", "teams"], None, "https://aegis.example", None)
    assert unconfigured.run([incident()], sqlite_store) == 1
    assert {(d.name, d.status) for d in sqlite_store.enrichment("inc1", kind="deliver")} == {
        ("sentinel", "skipped"), ("teams", "skipped")}  # fmt: skip
    assert server.seen == []


def test_the_defender_xdr_incident_holding_the_alerts_gets_a_comment(server, sqlite_store):
    from aegis.events import DefenderAlert

    alert = ("/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg/providers/microsoft.security/"
             "locations/westeurope/alerts/2516861511399999999_a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a5b")  # fmt: skip
    with_alert = dataclasses.replace(incident(), entities=(*incident().entities, DefenderAlert(resource_id=alert)))
    listed = {"value": [
        {"id": "dc2516861511399999999_a1b2", "providerAlertId": "2516861511399999999_a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a5b",
         "incidentId": "2547", "serviceSource": "microsoftDefenderForCloud"},
        {"id": "dc-other", "providerAlertId": "someone-else", "incidentId": "99", "serviceSource": "microsoftDefenderForCloud"},
    ]}  # fmt: skip
    server.expect("GET", "/v1.0/security/alerts_v2", Reply(200, listed))
    server.expect("POST", "/v1.0/security/incidents/2547/comments",
                  Reply(200, {"value": [{"comment": "x", "createdByDisplayName": "aegis"}]}))  # fmt: skip
    deliveries = Deliveries(["defender_xdr"], connections(server), "https://aegis.example", None)
    assert deliveries.run([with_alert], sqlite_store) == 1
    [kept] = sqlite_store.enrichment("inc1", kind="deliver")
    assert kept.status == "ok", kept.error
    assert kept.result == {"alerts": ["dc2516861511399999999_a1b2"], "xdr_incidents": ["2547"]}
    listing, comment = server.seen
    assert listing.query["$filter"] == [
        "serviceSource eq 'microsoftDefenderForCloud' and createdDateTime ge 2026-11-19T10:00:00Z"
    ]
    assert comment.headers["authorization"] == "Bearer test-token"
    body = comment.body  # one alertComment, as documented
    assert body["@odata.type"] == "#microsoft.graph.security.alertComment"
    assert body["comment"].startswith("Aegis: HIGH: Jailbreak then key theft")
