import pytest

from aegis.arm import parse_resource_id, try_parse_resource_id
from aegis.errors import MalformedInput


def test_upper_case_id_from_logs_becomes_canonical():
    rid = parse_resource_id(
        "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/OBS-OPENAI-SERVICE-RS"
        "/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/OBS-OPENAI-TEST-01"
    )
    assert rid.id == (
        "/subscriptions/12cabcb4-86e8-404f-a3d2-1dc9982f45ca/resourcegroups/obs-openai-service-rs"
        "/providers/microsoft.cognitiveservices/accounts/obs-openai-test-01"
    )
    assert rid.subscription == "12cabcb4-86e8-404f-a3d2-1dc9982f45ca"
    assert rid.resource_group == "obs-openai-service-rs"
    assert rid.provider == "microsoft.cognitiveservices"
    assert rid.type == "microsoft.cognitiveservices/accounts"
    assert rid.name == "obs-openai-test-01"


def test_child_resource_knows_its_parent():
    rid = parse_resource_id(
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/a/deployments/gpt-4o"
    )
    assert rid.type == "microsoft.cognitiveservices/accounts/deployments"
    assert rid.name == "gpt-4o"
    parent = rid.parent()
    assert parent is not None
    assert parent.id == "/subscriptions/s1/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/a"
    assert parent.parent() is None


def test_tenant_scope_and_subscription_scope():
    tenant = parse_resource_id("/tenants/c7f1e3ce-ba66-40a7-91bd-9594b36223fc/providers/Microsoft.aadiam")
    assert tenant.tenant == "c7f1e3ce-ba66-40a7-91bd-9594b36223fc"
    assert tenant.provider == "microsoft.aadiam"
    assert tenant.subscription is None
    sub = parse_resource_id("/subscriptions/12cabcb4-86e8-404f-a3d2-1dc9982f45ca")
    assert sub.subscription == "12cabcb4-86e8-404f-a3d2-1dc9982f45ca"
    assert sub.type is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "subscriptions/s1",
        "/subscriptions/",
        "/subscriptions/s1//resourceGroups/rg",
        "/subscriptions/s1/resourceGroups/rg/providers/x/accounts/a?api-version=1",
        "/subscriptions/s1/resourceGroups/rg/providers/x/accounts/a#frag",
        "/subscriptions/s1/resourceGroups/../providers/x",
        "/subscriptions/s1/resourceGroups/rg/providers/x/accounts/a\nb",
        "/subscriptions/s1/resourceGroups/rg/providers/x/accounts/a%2F..",
        "/subscriptions/s1/resourceGroups/rg/providers/x/accounts/<script>",
        "/subscriptions/s1/unexpected/segment",
        "/teams/x",
        "/subscriptions/s1/resourceGroups/rg/providers/x/accounts/" + "a" * 1100,
    ],
)
def test_hostile_or_broken_ids_are_refused(value):
    with pytest.raises(MalformedInput):
        parse_resource_id(value)
    assert try_parse_resource_id(value) is None


def test_non_string_is_refused_with_its_type():
    with pytest.raises(MalformedInput, match="int"):
        parse_resource_id(42)
