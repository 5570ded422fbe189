"""The normalizers on our own samples (samples/) and on hand-made edge cases."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from aegis.errors import MalformedInput
from aegis.events import AiResource, Host, Ip, Model, ModelDeployment, ServicePrincipal, Severity, User, UserAgent
from aegis.normalize import REGISTRY, Ignored
from tests.conftest import SAMPLES
from tests.helpers import EVIDENCE, normalize_one

ACCOUNT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai-prod/providers/microsoft.cognitiveservices/accounts/oai-contoso-prod"
MALLORY = "7d3e9a61-2c4b-4f1e-8a5d-6b9c0e1f2a3b"


def sample(rel: str) -> Any:
    return orjson.loads((SAMPLES / rel).read_bytes())


def test_every_normalizer_has_a_name_and_a_description():
    assert len(REGISTRY) >= 9
    for name, n in REGISTRY.items():
        assert n.name == name
        assert n.description, f"{name} has no docstring"


def test_arm_shape_ai_alert():
    name, [e] = normalize_one(sample("defender/01-jailbreak-arm.json"))
    assert name == "defender.alert.arm"
    assert e.kind == "AI.Azure_Jailbreak.ContentFiltering.BlockedAttempt"
    assert e.id == "2516861522999999999_a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b"
    assert e.severity is Severity.MEDIUM
    assert e.resource is not None
    assert e.resource.id == ACCOUNT
    assert AiResource(resource_id=ACCOUNT, name="oai-contoso-prod") in e.entities
    assert Ip(prefix="203.0.113.0/24", address="203.0.113.45") in e.entities
    assert (
        User(
            upn="mallory@contoso.com",
            object_id=MALLORY,
            name="mallory",
            tenant_id="0f7c2d1a-5b3e-4c8d-9e6f-1a2b3c4d5e6f",
        )
        in e.entities
    )
    assert UserAgent(value="python-requests/2.32.3") in e.entities
    assert ModelDeployment(name="gpt-4o-prod") in e.entities
    assert Model(name="gpt-4o") in e.entities
    assert len(e.entities_of(Ip)) == 1  # the same IP in entities and extended properties is one entity


def test_export_shape_resolves_refs_and_upper_case_ids():
    name, [e] = normalize_one(sample("defender/02-credential-theft-export.json"))
    assert name == "defender.alert.export"
    assert e.resource is not None
    assert e.resource.id == ACCOUNT
    assert e.entities_of(Ip) == [Ip(prefix="203.0.113.0/24", address="203.0.113.45")]
    assert e.entities_of(AiResource) == [AiResource(resource_id=ACCOUNT, name="oai-contoso-prod")]
    assert e.entities_of(User)[0].object_id == MALLORY


def test_export_batch_has_an_ai_alert_and_a_host_alert_sharing_the_host():
    alerts = sample("defender/03-export-batch.json")
    hosts = [normalize_one(a)[1][0].entities_of(Host)[0] for a in alerts]
    assert hosts[0] == hosts[1]
    assert hosts[0].mde_machine_id == "4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2f"
    assert hosts[0].key == hosts[0].mde_machine_id


def test_sentinel_row_with_json_string_columns():
    name, [e] = normalize_one(sample("defender/04-sentinel-securityalert.json"))
    assert name == "defender.alert.sentinel"
    assert e.kind == "AI.Azure_DOWVolumeAnomaly"
    assert e.severity is Severity.MEDIUM
    assert e.title == "Suspected wallet attack - volume anomaly"
    assert Ip(prefix="203.0.113.0/24", address="203.0.113.45") in e.entities
    assert e.attributes["intent"] == "Impact"


def test_one_alert_in_three_shapes_normalizes_alike():
    arm = sample("defender/01-jailbreak-arm.json")
    p = arm["properties"]
    export = {
        "SystemAlertId": p["systemAlertId"].upper(), "AlertType": p["alertType"], "VendorName": "Microsoft",
        "AlertDisplayName": p["alertDisplayName"], "Severity": p["severity"], "StartTimeUtc": p["startTimeUtc"],
        "AzureResourceId": ACCOUNT.upper(), "Entities": [{"$id": "1", "Address": "203.0.113.45", "Type": "ip"}],
    }  # fmt: skip
    sentinel = {
        "Type": "SecurityAlert", "SystemAlertId": p["systemAlertId"], "AlertType": p["alertType"],
        "DisplayName": p["alertDisplayName"], "AlertSeverity": p["severity"], "StartTime": p["startTimeUtc"],
        "ResourceId": ACCOUNT, "Entities": orjson.dumps(export["Entities"]).decode(),
    }  # fmt: skip
    arm_min = {
        "properties": {k: p[k] for k in ("systemAlertId", "alertType", "alertDisplayName", "severity", "startTimeUtc")}
    }
    arm_min["properties"]["resourceIdentifiers"] = [{"type": "AzureResource", "azureResourceId": ACCOUNT}]
    arm_min["properties"]["entities"] = [{"type": "ip", "address": "203.0.113.45"}]
    events = [normalize_one(x)[1][0] for x in (arm_min, export, sentinel)]
    assert {e.normalizer for e in events} == {"defender.alert.arm", "defender.alert.export", "defender.alert.sentinel"}
    shape = {(e.id, e.kind, e.time, e.severity, e.title, e.resource, frozenset(e.entities)) for e in events}
    assert len(shape) == 1


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("properties", "systemAlertId"), None, "'systemAlertId' is missing"),
        (("properties", "systemAlertId"), "id with spaces/and slashes", "SystemAlertId has characters"),
        (("properties", "severity"), 3, "'severity' is a number"),
        (("properties", "startTimeUtc"), "20th of November", "is not a time"),
        (("properties", "entities"), {"type": "ip"}, "'entities' is an object, not an array"),
        (("properties", "extendedProperties"), ["x"], "'extendedProperties' is an array, not an object"),
        (("properties", "alertDisplayName"), {"x": 1}, "'alertDisplayName' is an object, not a string"),
    ],
)
def test_wrong_alert_fields_make_the_alert_malformed(path, value, reason):
    alert = copy.deepcopy(sample("defender/01-jailbreak-arm.json"))
    alert[path[0]][path[1]] = value
    with pytest.raises(MalformedInput, match=reason):
        REGISTRY["defender.alert.arm"].normalize(alert, EVIDENCE)


def test_hostile_entity_values_are_dropped_not_trusted():
    alert = copy.deepcopy(sample("defender/01-jailbreak-arm.json"))
    alert["properties"]["entities"] = [
        {"type": "ip", "address": "203.0.113.45; rm -rf /"},
        {"type": "azure-resource", "resourceId": "/subscriptions/x/../../admin"},
        {"type": "host", "hostName": "<script>alert(1)</script>", "azureID": "javascript:alert(1)"},
        {"$ref": "99"},
        "not-an-object",
    ]
    alert["properties"]["extendedProperties"] = {}
    _, [e] = normalize_one(alert)
    assert e.entities_of(Ip) == []
    [host] = e.entities_of(Host)
    assert host.name == "<script>alert(1)</script>"  # kept as data, escaped by whoever displays it
    assert host.azure_id is None
    assert e.entities_of(AiResource) == [AiResource(resource_id=ACCOUNT, name="oai-contoso-prod")]


def test_export_messages_that_are_not_alerts_are_ignored():
    for rel in ("defender/05-assessment-export.json", "defender/06-secure-score-export.json"):
        with pytest.raises(Ignored):
            normalize_one(sample(rel))


def test_request_response_records():
    envelope = sample("diagnostics/01-requestresponse-envelope.json")
    events = [normalize_one(r)[1][0] for r in envelope["records"]]
    statuses = [e.attributes["http_status"] for e in events]
    assert statuses[:8] == [401] * 8
    assert set(statuses[8:]) == {200}
    for e in events:
        assert e.normalizer == "diagnostics.ai"
        assert e.kind == "RequestResponse:ChatCompletions_Create"
        assert e.entities_of(Ip) == [Ip(prefix="203.0.113.0/24")]
        assert ModelDeployment(name="gpt-4o-prod", resource_id=ACCOUNT) in e.entities
        assert e.resource is not None
        assert e.resource.id == ACCOUNT
    # the same record with properties as a string or an object has one id
    record = envelope["records"][0]
    as_string = {**record, "properties": orjson.dumps(record["properties"]).decode()}
    assert normalize_one(record)[1][0].id == normalize_one(as_string)[1][0].id


def test_usage_records_carry_token_counts():
    records = sample("diagnostics/03-request-usage.json")["records"]
    e = normalize_one(records[0])[1][0]
    assert e.kind == "AzureOpenAIRequestUsage:ChatCompletions_Create"
    assert (e.attributes["prompt_tokens"], e.attributes["completion_tokens"], e.attributes["total_tokens"]) == (
        5200,
        900,
        6100,
    )


def test_activity_log_key_operations_on_an_ai_account():
    records = sample("diagnostics/04-activity-keys.json")["records"]
    events = [normalize_one(r) for r in records]
    assert {n for n, _ in events} == {"diagnostics.activity"}
    kinds = [es[0].kind for _, es in events]
    assert kinds == [
        "Administrative:microsoft.cognitiveservices/accounts/listkeys/action",
        "Administrative:microsoft.cognitiveservices/accounts/regeneratekey/action",
        "Administrative:microsoft.cognitiveservices/accounts/write",
    ]
    e = events[0][1][0]
    assert AiResource(resource_id=ACCOUNT, name="oai-contoso-prod") in e.entities
    assert User(upn="mallory@contoso.com", object_id=MALLORY, name="Mallory Attacker") in e.entities
    assert e.attributes["role"] == "Cognitive Services Contributor"


def test_service_principal_sign_in():
    record = sample("diagnostics/05-signin.json")["records"][0]
    record = {**record, "category": "ServicePrincipalSignInLogs"}
    record["properties"] = {
        **record["properties"],
        "servicePrincipalId": "11111111-2222-3333-4444-555555555555",
        "servicePrincipalName": "ci-bot",
    }
    _, [e] = normalize_one(record)
    assert e.entities_of(User) == []
    [sp] = e.entities_of(ServicePrincipal)
    assert (sp.object_id, sp.name) == ("11111111-2222-3333-4444-555555555555", "ci-bot")


def test_failed_then_successful_sign_in():
    events = [normalize_one(r)[1][0] for r in sample("diagnostics/05-signin.json")["records"]]
    assert [(e.attributes["error_code"], e.attributes["success"]) for e in events] == [(50126, False), (0, True)]
    assert events[1].attributes["risk_level"] == "high"


def test_trace_on_a_deployment_names_the_account_and_the_deployment():
    _, [e] = normalize_one(sample("diagnostics/06-trace.json")["records"][0])
    assert e.kind == "Trace:ContentFilter"
    assert ModelDeployment(name="gpt-4o-prod", resource_id=ACCOUNT) in e.entities
    assert AiResource(resource_id=ACCOUNT, name="oai-contoso-prod") in e.entities
    assert "message" not in e.attributes  # free text stays in the raw evidence only


@pytest.mark.parametrize(
    "link",
    [
        "https://portal.azure.com/#blade/x/alertId/2516_a'><script>/subscriptionId/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/location/westeurope",
        "https://portal.azure.com/#blade/x/alertId/2516_a/subscriptionId/../../tenants/location/westeurope",
        "https://portal.azure.com/#blade/x/alertId/2516_a",  # no subscription or location: not an address
    ],
)
def test_an_alert_link_that_is_not_a_clean_address_gives_no_alert_resource(link):
    from aegis.events import DefenderAlert

    export = sample("defender/02-credential-theft-export.json")
    export["AlertUri"] = link
    [e] = normalize_one(export)[1]
    assert e.entities_of(DefenderAlert) == []


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("2025-11-14T01:48:53.1234567Z", "2025-11-14T01:48:53.123456+00:00"),
        ("2025-11-14T02:48:53+01:00", "2025-11-14T01:48:53+00:00"),
        ("2025-11-14 01:48:53", "2025-11-14T01:48:53+00:00"),  # no zone: UTC
        ("11/14/2025 1:48:53 AM", "2025-11-14T01:48:53+00:00"),
        ("11/14/2025 1:48:53 PM", "2025-11-14T13:48:53+00:00"),
        ("11/14/2025 12:05:00 AM", "2025-11-14T00:05:00+00:00"),
        ("11/14/2025 12:05:00 PM", "2025-11-14T12:05:00+00:00"),
        ("3/4/2025 13:05:09.25", "2025-03-04T13:05:09.250000+00:00"),  # month first, 24-hour clock
    ],
)
def test_times_in_every_form_azure_writes(written, meant):
    from aegis.normalize.fields import parse_time

    parsed = parse_time(written)
    assert parsed is not None
    assert parsed.isoformat() == meant


@pytest.mark.parametrize("written", ["14/11/2025 1:48:53 AM", "11/14/2025 13:48:53 PM", "yesterday", "1731548933"])
def test_what_is_not_a_time_is_not_guessed(written):
    from aegis.normalize.fields import parse_time

    assert parse_time(written) is None


def test_a_sign_in_whose_time_is_written_the_us_way_keeps_its_own_time():
    record = sample("diagnostics/05-signin.json")["records"][0]
    created = record["properties"].get("createdDateTime")
    us = {**record, "time": "11/14/2025 1:48:53 AM"}
    _, [e] = normalize_one(us)
    if created:
        assert e.time.isoformat().startswith(created[:19])
    without = {**us, "properties": {k: v for k, v in record["properties"].items() if k != "createdDateTime"}}
    _, [e] = normalize_one(without)
    assert e.time.isoformat() == "2025-11-14T01:48:53+00:00"
    with pytest.raises(MalformedInput, match="'time' is not a time"):
        normalize_one({**without, "time": "soon"})


def test_usage_records_with_single_element_token_arrays_and_the_callers_object_id():
    record = sample("diagnostics/03-request-usage.json")["records"][0]
    props = record["properties"]
    props = {k: v for k, v in (orjson.loads(props) if isinstance(props, str) else props).items() if "okens" not in k}
    caller = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    item = {**record, "properties": {**props, "promptTokens": [120], "generatedTokens": [30], "callerObjectId": caller}}
    _, [e] = normalize_one(item)
    assert (e.attributes["prompt_tokens"], e.attributes["completion_tokens"], e.attributes["total_tokens"]) == (
        120, 30, 150)  # fmt: skip
    assert "refused" not in e.attributes
    assert User(object_id=caller) in e.entities


APIM = "/SUBSCRIPTIONS/00000000-1111-2222-3333-444444444444/RESOURCEGROUPS/RG-AI/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM-AI"


def gateway_record(**props: Any) -> dict[str, Any]:
    """A GatewayLogs record as a diagnostic setting sends it to Event Hubs (common schema, the
    documented properties), written here for the test."""
    return {
        "time": "2026-11-20T09:14:02.1234567Z", "resourceId": APIM, "category": "GatewayLogs",
        "operationName": "Microsoft.ApiManagement/GatewayLogs", "durationMs": 412, "callerIpAddress": "203.0.113.7",
        "correlationId": "5b0c7e4e-7f0a-4e3c-9c8f-2a1d3e4f5a6b", "location": "West Europe",
        "properties": {
            "method": "POST", "url": "https://apim-ai.azure-api.net/openai/deployments/gpt-4o/chat/completions",
            "backendMethod": "POST", "apiId": "azure-openai", "operationId": "ChatCompletions_Create",
            "backendUrl": "https://oai-contoso-prod.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
                          "?api-version=2024-10-21",
            "responseCode": 200, "backendResponseCode": 200, "requestSize": 812, "responseSize": 2400,
            "apimSubscriptionId": "team-a", "isRequestSuccess": True, **props,
        },
    }  # fmt: skip


def test_an_ai_gateway_request_names_the_backend_account_deployment_and_status():
    name, [e] = normalize_one(gateway_record())
    assert name == "diagnostics.gateway"
    assert e.kind == "GatewayLogs:ChatCompletions_Create"
    a = e.attributes
    assert (a["backend_account"], a["backend_host"]) == ("oai-contoso-prod", "oai-contoso-prod.openai.azure.com")
    assert (a["http_status"], a["request_bytes"], a["gateway_subscription"]) == (200, 812, "team-a")
    assert "content_filtered" not in a
    assert ModelDeployment(name="gpt-4o") in e.entities
    [ip] = e.entities_of(Ip)
    assert (ip.address, ip.prefix) == ("203.0.113.7", "203.0.113.0/24")
    assert e.resource is not None
    assert e.resource.type == "microsoft.apimanagement/service"


def test_an_ai_gateway_request_the_content_filter_refused_says_so():
    body = '{"error":{"code":"content_filter","message":"The response was filtered","status":400}}'
    _, [e] = normalize_one(gateway_record(responseCode=400, backendResponseCode=400, backendResponseBody=body))
    assert (e.attributes["http_status"], e.attributes["content_filtered"]) == (400, True)
    ok = '{"choices":[{"content_filter_results":{"jailbreak":{"filtered":false}}}]}'
    _, [fine] = normalize_one(gateway_record(backendResponseBody=ok))  # every answer names the filter: not a refusal
    assert "content_filtered" not in fine.attributes


def test_ai_gateway_llm_logs_carry_token_usage_model_and_deployment():
    record = {**gateway_record(), "category": "GatewayLlmLogs"}
    record["properties"] = {"DeploymentName": "gpt-4o-mini", "ModelName": "gpt-4o-mini", "PromptTokens": 1200,
                            "CompletionTokens": [300], "ApiVersion": "2024-10-21", "SequenceNumber": 0}  # fmt: skip
    name, [e] = normalize_one(record)
    assert name == "diagnostics.gateway"
    assert (e.attributes["prompt_tokens"], e.attributes["completion_tokens"], e.attributes["total_tokens"]) == (
        1200, 300, 1500)  # fmt: skip
    assert {ModelDeployment(name="gpt-4o-mini"), Model(name="gpt-4o-mini")} <= set(e.entities)


def test_a_gateway_in_front_of_another_backend_names_no_ai_account():
    _, [e] = normalize_one(gateway_record(backendUrl="https://evil.example/openai/deployments/x/chat"))
    assert "backend_account" not in e.attributes
    assert e.entities_of(ModelDeployment) == []


def test_an_ai_foundry_project_joins_its_parent_account_and_stays_an_entity_of_its_own():
    from aegis.arm import parse_resource_id
    from aegis.events import AiProject
    from aegis.normalize.fields import resource_entities

    account = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/foundry-1"
    for child in ("/projects/proj-a", "/projects/proj-a/connections/c1", "/projects/proj-a/agents/a1"):
        got = resource_entities(parse_resource_id(account + child))
        assert AiResource(resource_id=account.lower(), name="foundry-1") in got
        [project] = [e for e in got if isinstance(e, AiProject)]
        assert (project.name, project.account) == ("proj-a", account.lower())
    assert resource_entities(parse_resource_id(account)) == [AiResource(resource_id=account.lower(), name="foundry-1")]
    [deployment, parent] = resource_entities(parse_resource_id(account + "/deployments/gpt-4o"))
    assert deployment == ModelDeployment(name="gpt-4o", resource_id=account.lower())
    assert parent == AiResource(resource_id=account.lower(), name="foundry-1")


def test_a_vm_alert_has_its_vm_as_a_host_once_even_when_its_entities_name_it_too():
    from aegis.normalize.fields import dedupe

    vm = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/web-01"
    alert = copy.deepcopy(sample("defender/01-jailbreak-arm.json"))
    alert["properties"]["resourceIdentifiers"] = [{"type": "AzureResource", "azureResourceId": vm}]
    alert["properties"]["entities"] = [{"type": "host", "hostName": "WEB-01", "azureID": vm, "omsAgentID": "x",
                                        "operatingSystem": "Linux"}]  # fmt: skip
    [e] = REGISTRY["defender.alert.arm"].normalize(alert, EVIDENCE)
    [host] = e.entities_of(Host)
    assert (host.name, host.azure_id, host.os) == ("WEB-01", vm, "Linux")
    alert["properties"]["entities"] = []
    [bare] = REGISTRY["defender.alert.arm"].normalize(alert, EVIDENCE)
    assert [(h.name, h.azure_id) for h in bare.entities_of(Host)] == [("web-01", vm)]
    mde = Host(name="web-01.contoso.com", mde_machine_id="4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2f")
    assert len(dedupe([Host(name="web-01", azure_id=vm), mde])) == 2  # no shared id or name: not guessed the same


def test_a_sentinel_row_is_the_same_alert_as_its_export_copy_by_vendor_original_id():
    export = REGISTRY["defender.alert.arm"].normalize(sample("defender/01-jailbreak-arm.json"), EVIDENCE)[0]
    row = sample("defender/04-sentinel-securityalert.json")
    row = {**row, "SystemAlertId": "6f0f3c2a-9d1e-4b7c-8a5f-2e1d0c9b8a7f", "VendorOriginalId": export.id.upper()}
    _, [e] = normalize_one(row)
    assert e.id == export.id
    assert e.attributes["sentinel_alert_id"] == "6f0f3c2a-9d1e-4b7c-8a5f-2e1d0c9b8a7f"
    _, [own] = normalize_one(sample("defender/04-sentinel-securityalert.json"))  # a vendor id that is no alert id
    assert own.id == sample("defender/04-sentinel-securityalert.json")["SystemAlertId"].lower()
