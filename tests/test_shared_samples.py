"""Every published payload under ../shared/samples/defender and ../shared/samples/diagnostics,
read as it is, gives the events its content implies. The files are not ours: read in place only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from aegis.events import (
    AiResource,
    DefenderAlert,
    Event,
    Host,
    Ip,
    Model,
    ModelDeployment,
    ServicePrincipal,
    Severity,
    Source,
    User,
    UserAgent,
)
from aegis.pipeline import Counts, Message, Pipeline
from aegis.store import SqliteStore
from tests.conftest import shared_dir

COVERED: set[str] = set()


def run(bodies: list[bytes], covers: str) -> tuple[Counts, list[Event], Pipeline]:
    COVERED.add(covers)
    p = Pipeline(SqliteStore(":memory:"), keep_events=True)
    counts = p.process([Message(b, hub="shared") for b in bodies])
    return counts, p.store.events(), p


def file_body(rel: str) -> bytes:
    return (shared_dir() / "samples" / rel).read_bytes()


def lines(rel: str) -> list[bytes]:
    return [line for line in file_body(rel).splitlines() if line.strip()]


def example_response(rel: str) -> bytes:
    """An x-ms-example file holds the response body under responses.200.body."""
    return orjson.dumps(orjson.loads(file_body(rel))["responses"]["200"]["body"])


def from_schema_examples(schema: dict[str, Any]) -> Any:
    """An instance built from a JSON Schema's `examples` (nested objects recursively)."""
    if schema.get("type") == "object" or "properties" in schema:
        return {k: from_schema_examples(v) for k, v in schema.get("properties", {}).items()}
    if schema.get("type") == "array":
        return []
    return (schema.get("examples") or [schema.get("default")])[0]


def one(events: list[Event], **match: Any) -> Event:
    found = [e for e in events if all(getattr(e, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} events match {match}"
    return found[0]


# --- Defender ----------------------------------------------------------------------------------


def test_rest_api_get_alert_example():
    counts, events, _ = run(
        [example_response("defender/azure-rest-api-specs/GetAlertSubscriptionLocation_example.json")],
        "defender/azure-rest-api-specs/GetAlertSubscriptionLocation_example.json",
    )
    assert counts.with_events == 1
    e = one(events, kind="VM_EICAR")
    assert e.id == "2518298467986649999_4d25bfef-2d77-4a08-adc0-3e35715cc92a"
    assert e.normalizer == "defender.alert.arm"
    assert e.source is Source.DEFENDER
    assert e.severity is Severity.HIGH
    assert e.time == datetime(2020, 2, 22, tzinfo=UTC)
    assert e.resource is not None
    assert (
        e.resource.id
        == "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourcegroups/myrg1/providers/microsoft.compute/virtualmachines/vm1"
    )
    assert e.resource.type == "microsoft.compute/virtualmachines"
    assert e.entities_of(Ip) == [Ip(prefix="192.0.2.0/24", address="192.0.2.1")]
    assert e.attributes["intent"] == "Execution"
    assert e.attributes["techniques"] == "T1059,T1053,T1072"
    assert e.attributes["ext.Property1"] == "Property1 information"
    assert e.title == "Azure Security Center test alert (not a threat)"
    # the alert itself, for the response to update: its ARM `id` (which, in this published example, names
    # another alert than its systemAlertId; the id is the address the API takes)
    assert e.entities_of(DefenderAlert) == [DefenderAlert(
        "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourcegroups/myrg1/providers/microsoft.security"
        "/locations/westeurope/alerts/2518770965529163669_f144ee95-a3e5-42da-a279-967d115809aa")]  # fmt: skip


def test_rest_api_list_alerts_example():
    counts, listed, _ = run(
        [example_response("defender/azure-rest-api-specs/GetAlertsSubscription_example.json")],
        "defender/azure-rest-api-specs/GetAlertsSubscription_example.json",
    )
    # the two example alerts share one systemAlertId, with different names, types and hosts: two
    # alerts, kept apart (the second by its own name, saying which id it shares)
    assert (counts.events, counts.new_events, counts.duplicates) == (2, 2, 0)
    shared = [e for e in listed if e.attributes.get("shares_alert_id")]
    assert [(e.kind, e.attributes["shares_alert_id"]) for e in shared] == [
        ("VM_SuspiciousScreenSaver", "2518298467986649999_4d25bfef-2d77-4a08-adc0-3e35715cc92a")
    ]
    assert shared[0].id.startswith("2518298467986649999_4d25bfef-2d77-4a08-adc0-3e35715cc92a~")
    _, [screensaver], _ = run(
        [
            orjson.dumps(
                orjson.loads(example_response("defender/azure-rest-api-specs/GetAlertsSubscription_example.json"))[
                    "value"
                ][1]
            )
        ],
        "defender/azure-rest-api-specs/GetAlertsSubscription_example.json",
    )
    assert screensaver.kind == "VM_SuspiciousScreenSaver"
    assert screensaver.severity is Severity.MEDIUM
    # the published example names vm1 as the affected resource (resourceIdentifiers) and vm2 in its
    # entities: each VM is a host, the resource id's as much as the entity's
    hosts = {h.name: h for h in screensaver.entities_of(Host)}
    assert set(hosts) == {"vm1", "vm2"}
    assert hosts["vm1"].azure_id
    assert hosts["vm1"].azure_id.endswith("/virtualmachines/vm1")
    host = hosts["vm2"]
    assert (
        host.azure_id
        == "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourcegroups/myrg2/providers/microsoft.compute/virtualmachines/vm2"
    )
    assert host.os == "Unknown"
    assert User(name="contosoUser") in screensaver.entities_of(User)


def test_activity_log_security_alert():
    rel = "defender/azure-security-docs/activity-log-security-alert.sample.json"
    counts, [e], _ = run([file_body(rel)], rel)
    assert counts.with_events == 1
    assert e.normalizer == "defender.alert.activity_log"
    assert e.id == "2518250008431989649_e7313e05-edf4-466d-adfd-35974921aeff"
    assert e.severity is Severity.LOW
    assert e.title == "PREVIEW - Role binding to the cluster-admin role detected"
    assert e.attributes["intent"] == "Persistence"
    assert e.attributes["compromised_entity"] == "ASC-IGNITE-DEMO"
    assert e.time == datetime(2019, 12, 25, 18, 52, 36, 801035, tzinfo=UTC)
    assert e.entities_of(User) == [User(name="masterclient")]
    assert e.entities_of(DefenderAlert) == [DefenderAlert(  # its id goes on to /events/…/ticks/…: the alert is the head
        "/subscriptions/subscription_id/resourcegroups/resource_group_name/providers/microsoft.security"
        "/locations/centralus/alerts/2518250008431989649_e7313e05-edf4-466d-adfd-35974921aeff")]  # fmt: skip


def test_continuous_export_ndjson_alert_and_non_alerts():
    rel = "defender/elastic-integrations/test-alert.log"
    counts, events, _ = run(lines(rel), rel)
    assert (counts.messages, counts.with_events, counts.ignored, counts.dead_lettered) == (5, 1, 4, 0)
    [e] = events
    assert e.normalizer == "defender.alert.export"
    assert e.kind == "ARM_AnomalousServiceOperation.CredentialAccess"
    assert e.id == "2517184898549829577_cdcf9f94-ec53-47a6-ab87-76130f87218d"
    assert e.severity is Severity.MEDIUM
    assert e.resource is not None
    assert (
        e.resource.id
        == "/subscriptions/12cabcb4-86e8-404f-a3d2-1dc9982f45ca/resourcegroups/sample-rg/providers/microsoft.compute/virtualmachines/sample-vm"
    )
    assert {ip.address for ip in e.entities_of(Ip)} == {"81.2.69.142"}
    [host] = e.entities_of(Host)
    assert (host.name, host.os) == ("Sample-VM", "Linux")
    assert host.azure_id == e.resource.id
    upns = {u.upn for u in e.entities_of(User)}
    assert "sample@contoso.com" in upns
    assert "Sample-app" in {sp.name for sp in e.entities_of(ServicePrincipal)}  # "Client application"
    assert e.attributes["ext.Client IP address"] == "81.2.69.142"
    assert e.attributes["status"] == "New"
    assert e.entities_of(DefenderAlert) == [DefenderAlert(  # read off the portal link (AlertUri)
        "/subscriptions/12cabcb4-86e8-404f-a3d2-1dc9982f45ca/resourcegroups/sample-rg/providers/microsoft.security"
        "/locations/centralus/alerts/2517184898549829577_cdcf9f94-ec53-47a6-ab87-76130f87218d")]  # fmt: skip


@pytest.mark.parametrize(
    ("rel", "normalizer", "kind"),
    [
        ("defender/microsoft-defender-for-cloud/SecurityAlert.schema.json", "defender.alert.export", "SUSPECT_SVCHOST"),
        (
            "defender/microsoft-defender-for-cloud/ActivityLogAlert.schema.json",
            "defender.alert.activity_log",
            "unknown",
        ),
    ],
)
def test_published_schemas(rel, normalizer, kind):
    # The schema document itself is not a message: it is dead-lettered, not mistaken for one.
    counts, events, p = run([file_body(rel)], rel)
    assert (counts.dead_lettered, events) == (1, [])
    assert "unrecognized" in p.store.dead_letters()[0].reason
    # An instance built from the schema's own examples is a message, and normalizes.
    instance = from_schema_examples(orjson.loads(file_body(rel)))
    counts, [e], _ = run([orjson.dumps(instance)], rel)
    assert (e.normalizer, e.kind) == (normalizer, kind)
    assert e.severity is not None
    # the export schema requires ReportedSeverity without defining it; Severity is read first
    assert set(orjson.loads(file_body(rel))["required"]) - set(instance) <= {"ReportedSeverity"}


# --- diagnostics --------------------------------------------------------------------------------


def test_activity_log_envelope_from_docs():
    rel = "diagnostics/azure-monitor-docs/activity-log.eventhub-records.sample.json"
    _counts, [e], _ = run([file_body(rel)], rel)
    assert e.normalizer == "diagnostics.activity"
    assert e.source is Source.ACTIVITY_LOG
    assert e.kind == "Write:microsoft.support/supporttickets/write"
    assert e.entities_of(User) == [User(upn="admin@contoso.com", name="John Smith")]
    assert e.entities_of(Ip)[0].address == "111.111.111.11"
    assert e.attributes["result_type"] == "Success"
    assert e.attributes["role"] == "Subscription Admin"


def test_resource_log_envelope_from_docs():
    rel = "diagnostics/azure-monitor-docs/resource-logs.eventhub-records.sample.json"
    counts, events, _ = run([file_body(rel)], rel)
    assert (counts.with_events, counts.events) == (1, 2)
    assert {e.normalizer for e in events} == {"diagnostics.resource"}
    assert {e.kind for e in events} == {
        "WorkflowRuntime:Microsoft.Logic/workflows/workflowActionCompleted",
        "WorkflowRuntime:Microsoft.Logic/workflows/workflowActionStarted",
    }
    assert all(e.resource and e.resource.id == e.resource.id.lower() for e in events)
    assert all(e.resource and e.resource.subscription == "aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e" for e in events)


def test_activity_log_records_from_event_hubs():
    rel = "diagnostics/elastic-integrations-azure/activitylogs/test-activitylogs-raw.log"
    counts, events, _ = run(lines(rel), rel)
    assert (counts.with_events, counts.events, counts.dead_lettered) == (3, 3, 0)
    listkeys = one(events, kind="Action:microsoft.eventhub/namespaces/authorizationrules/listkeys/action")
    [sp] = listkeys.entities_of(ServicePrincipal)
    assert sp.app_id == sp.object_id == "8a4de8b5-095c-47d0-a96f-a75130c61d53"
    assert listkeys.entities_of(User) == []
    assert listkeys.entities_of(Ip)[0].address == "81.2.69.144"
    health = [e for e in events if e.kind.startswith("ResourceHealth:")]
    assert len(health) == 2  # properties with string vs object bodies: two records


def test_entra_sign_in_record():
    rel = "diagnostics/elastic-integrations-azure/activitylogs/test-activitylogs-identity.log"
    _, [e], _ = run(lines(rel), rel)
    assert e.normalizer == "diagnostics.signin"
    assert e.source is Source.SIGNIN_LOG
    assert e.kind == "NonInteractiveUserSignInLogs:Sign-in activity"
    [user] = e.entities_of(User)
    assert user.object_id == "bc9c1bee-4c9b-499f-bbbb-11ec68546d75"
    assert user.upn == "michell lan@zzzz.com"
    assert e.entities_of(Ip)[0].address == "81.2.69.143"
    assert e.entities_of(UserAgent)[0].value.startswith("Mozilla/5.0")
    assert e.attributes["success"] is True
    assert e.attributes["app_name"] == "Microsoft Office"
    assert e.resource is not None
    assert e.resource.tenant == "c7f1e3ce-ba66-40a7-91bd-9594b36223fc"


def test_azure_openai_audit_record():
    rel = "diagnostics/elastic-integrations-azure_openai/test-open-ai-audit.log"
    _, [e], _ = run(lines(rel), rel)
    assert (e.normalizer, e.kind) == ("diagnostics.ai", "Audit:ListKey")
    assert e.entities_of(User) == [User(object_id="b610ab05-ce06-4cc1-a6dd-174b9f80468a")]
    [ai] = e.entities_of(AiResource)
    assert ai.name == "obs-openai-test-01"
    assert ai.resource_id == (
        "/subscriptions/12cabcb4-86e8-404f-a3d2-1dc9982f45ca/resourcegroups/obs-openai-service-rs"
        "/providers/microsoft.cognitiveservices/accounts/obs-openai-test-01"
    )


def test_azure_openai_request_response_records():
    rel = "diagnostics/elastic-integrations-azure_openai/test-open-ai-request-response.log"
    counts, events, _ = run(lines(rel), rel)
    assert (counts.events, counts.new_events) == (3, 3)
    thread = one(events, kind="RequestResponse:Create_Thread")  # properties as a JSON string
    assert thread.attributes["request_bytes"] == 2
    assert thread.attributes["http_status"] == 200
    assert thread.entities_of(Ip) == [Ip(prefix="81.2.69.0/24")]
    chat = [e for e in events if e.kind == "RequestResponse:ChatCompletions_Create"]
    assert {d.name for e in chat for d in e.entities_of(ModelDeployment)} == {"gpt-chat-pilot", "dall-e-3"}
    assert Model(name="gpt-35-turbo", version="0301") in chat[0].entities + chat[1].entities
    assert {e.attributes["duration_ms"] for e in chat} == {1021, -1021}  # kept as sent
    assert all(e.entities_of(User) == [] for e in events)  # key auth: empty objectId


def test_storage_export_of_azure_openai_requests():
    rel = "diagnostics/ptu-paygo-openai-simulator/sample_log.json"
    counts, events, _ = run(lines(rel), rel)  # a PT1H.json export: one record per line
    assert (counts.messages, counts.with_events, counts.new_events) == (41, 41, 41)
    ops = {
        k: sum(e.kind == f"RequestResponse:{k}" for e in events)
        for k in ("ChatCompletions_Create", "Embeddings_Create")
    }
    assert ops == {"ChatCompletions_Create": 19, "Embeddings_Create": 22}
    assert sorted(e.attributes["http_status"] for e in events).count(400) == 1
    prefixes = {ip.prefix for e in events for ip in e.entities_of(Ip)}
    assert "20.236.11.0/24" in prefixes  # from both "20.236.11.***" and "20.236.11.**"
    assert all(p.endswith(".0/24") and p.startswith("20.") for p in prefixes)
    assert all(ip.masked for e in events for ip in e.entities_of(Ip))
    assert all(e.resource and e.resource.name == "openai-eastus" for e in events)
    assert all(e.time.tzinfo is UTC for e in events)


def test_every_shared_sample_file_is_read():
    """Runs last in this module: each data file under the two folders was fed by a test above."""
    root = shared_dir() / "samples"
    files = {
        str(p.relative_to(root))
        for folder in ("defender", "diagnostics")
        for p in (root / folder).rglob("*")
        if p.is_file() and p.name != "SOURCES.md"
    }
    assert files - COVERED == set()
    assert all(Path(root, f).exists() for f in COVERED)
