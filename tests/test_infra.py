"""infra/ checked offline: every Bicep file parses (pycep-parser; no Bicep compiler can be installed
here), the app settings infra provides are exactly the ones the code reads, and every permission an
action declares is granted by a role assignment or by the permissions script."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aegis.respond.actions import ACTIONS
from aegis.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP = sorted(INFRA.rglob("*.bicep"))

# Settings the code reads that a cloud deployment does not set, and why.
NOT_DEPLOYED = {
    "AEGIS_DB": "the SQLite file of the embedded default (the cloud store is Table Storage)",
    "AEGIS_STORAGE_CONNECTION_STRING": "Azurite and development only: the cloud uses identity-based endpoints",
    "AEGIS_DRILL_ACCOUNT": "`aegis drill` runs on an operator's machine, not in the app",
    "AEGIS_DRILL_DEPLOYMENT": "`aegis drill` runs on an operator's machine, not in the app",
    "AEGIS_DRILL_ENDPOINT": "`aegis drill` runs on an operator's machine, not in the app",
    "AEGIS_INVENTORY_FILE": "an offline file of Resource Graph rows (the demo, a test): the cloud reads Resource Graph",
    "AEGIS_ATLAS_DATA": "a path to a full ATLAS release an operator adds to the app package; the shipped subset otherwise",
}
# Read by the Functions host and its extensions, not by aegis/settings.py.
HOST_SETTINGS = {
    "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AEGIS_EVENTHUB__fullyQualifiedNamespace", "AEGIS_EVENTHUB__credential", "AEGIS_EVENTHUB__clientId",
}  # fmt: skip
# Azure built-in roles an action may name, and their ids (role definitions are global).
AZURE_ROLES = {
    "Cognitive Services Contributor": "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Microsoft Sentinel Responder": "3e150937-b8fe-4cfb-8069-0eaf05ecd056",
    "Security Admin": "fb1c8493-542b-48eb-b624-b4c8fea62acd",
}


def parse(path: Path) -> dict:
    pycep = pytest.importorskip("pycep", reason="pycep-parser is a dev dependency (make test installs it)")
    return pycep.BicepParser().parse(file_path=path)


def test_every_bicep_file_parses():
    assert len(BICEP) >= 10
    for path in BICEP:
        parsed = parse(path)
        assert parsed.get("resources") or parsed.get("modules"), path


def test_a_broken_bicep_file_is_refused(tmp_path):
    broken = tmp_path / "broken.bicep"
    broken.write_text(
        "param name string\nresource a 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: name\n"
    )
    with pytest.raises(Exception):  # noqa: B017, PT011  (the parser's own error type)
        parse(broken)


def provided_settings() -> set[str]:
    variables = parse(INFRA / "modules" / "functionapp.bicep")["variables"]
    keys = set(variables["settings"]["value"])
    for arg in variables["optional"]["value"]["function"]["parameters"].values():  # set when their parameter is
        keys |= set(arg["operator"]["operands"]["false_value"])
    return keys


def test_secrets_reach_the_app_only_as_key_vault_references():
    variables = parse(INFRA / "modules" / "functionapp.bicep")["variables"]
    for arg in variables["optional"]["value"]["function"]["parameters"].values():
        for key, value in arg["operator"]["operands"]["false_value"].items():
            if key.endswith(("_PASSWORD", "_TOKEN")):
                assert str(value).startswith("@Microsoft.KeyVault(VaultName="), key


def test_infra_provides_every_setting_the_code_reads_and_nothing_else():
    read = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | HOST_SETTINGS
    provided = provided_settings()
    missing = read - provided - set(NOT_DEPLOYED)
    assert not missing, f"the code reads settings infra does not set: {sorted(missing)}"
    unread = provided - read
    assert not unread, f"infra sets settings nothing reads: {sorted(unread)}"
    assert not (provided & set(NOT_DEPLOYED)), "a setting listed as not deployed is set by infra"


def role_ids_assigned() -> set[str]:
    text = "\n".join(p.read_text() for p in (INFRA / "modules").glob("*roles*.bicep"))
    return set(re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'", text))


def test_every_permission_an_action_declares_is_granted():
    script = (INFRA / "grant-permissions.sh").read_text()
    assigned = role_ids_assigned()
    for name, spec in ACTIONS.items():
        text = spec.permission
        for role in re.findall(r"Azure role ([A-Z][A-Za-z ]+?)(?= \(| on |;|$)", text):
            assert role in AZURE_ROLES, f"{name}: unknown Azure role {role!r}: add it to AZURE_ROLES and to infra"
        for role, role_id in AZURE_ROLES.items():
            if role in text:
                assert role_id in assigned, f"{name} needs {role}: no role assignment in infra/modules"
        for permission in re.findall(r"\b[A-Z][A-Za-z]+(?:\.[A-Z][A-Za-z]+)+\b", text):
            if permission.startswith("Microsoft."):  # an ARM operation, covered by the role above
                continue
            assert re.search(rf"\b{re.escape(permission)}\b", script), (
                f"{name} needs {permission}: not in grant-permissions.sh"
            )


def test_storage_allows_no_shared_keys_and_key_vault_keeps_purge_protection():
    storage = parse(INFRA / "modules" / "storage.bicep")["resources"]["account"]["config"]["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    vault = parse(INFRA / "modules" / "keyvault.bicep")["resources"]["vault"]["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True


def test_continuous_export_sends_as_a_trusted_service_with_a_role_on_the_alerts_hub_and_no_key():
    export = parse(INFRA / "modules" / "security-export.bicep")
    (action,) = export["resources"]["automation"]["config"]["properties"]["actions"]
    assert action["isTrustedServiceEnabled"] is True
    assert "connectionString" not in action  # no SAS key: Defender's own identity sends
    sender = export["resources"]["sender"]["config"]
    assert "hub" in str(sender["scope"])  # the alerts hub alone, not the namespace
    assert "2b629674-e913-4c01-ae53-ef4638d8f975" in (INFRA / "modules" / "security-export.bicep").read_text()
    assert "defenderPrincipalId" in str(sender["properties"]["principalId"])
    hook = (ROOT / "azure.yaml").read_text()
    assert "infra/find-defender-principal.sh" in hook
    assert "Windows Azure Security Resource Provider" in (INFRA / "find-defender-principal.sh").read_text()


def test_the_defender_plan_for_ai_services_is_on_by_default_and_prompts_stay_out_of_alerts():
    main = (INFRA / "main.bicep").read_text()
    assert re.search(r"param enableDefenderForAi bool = true", main)
    assert re.search(r"module defenderForAi 'modules/defender-ai\.bicep' = if \(enableDefenderForAi\)", main)
    plan = parse(INFRA / "modules" / "defender-ai.bicep")["resources"]["ai"]["config"]
    assert plan["name"] == "AI"
    assert plan["properties"]["pricingTier"] == "Standard"
    assert re.search(r"param promptEvidence bool = false", (INFRA / "modules" / "defender-ai.bicep").read_text())


def test_every_parameter_azd_fills_is_a_string_or_a_bool_and_the_vault_name_changes_after_azd_down():
    """`${VAR=[]}` arrays need an azd newer than some users have: every value azd substitutes is a
    plain string (lists comma-separated); the Key Vault's purge protection keeps a deleted vault's
    name for 90 days, so its name takes a suffix the postdown hook clears."""
    import json

    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = dict(re.findall(r"^param (\w+) (\w+)", (INFRA / "main.bicep").read_text(), re.MULTILINE))
    for name in params:
        assert declared[name] in ("string", "bool"), name
    assert "vaultSuffix" in params
    assert "uniqueString(token, vaultSuffix)" in (INFRA / "main.bicep").read_text()
    azure = (ROOT / "azure.yaml").read_text()
    assert re.search(r'requiredVersions:\n  azd: ">= 1\.\d+\.\d+"', azure)
    assert "postdown:" in azure
    assert 'azd env set AEGIS_VAULT_SUFFIX ""' in azure


def test_every_ai_account_given_gets_a_diagnostic_setting_into_a_namespace_of_its_region():
    """Azure Monitor sends an account's logs only to a namespace of its region: each region named in
    `diagnosticsRegions` gets one (diagnostics hub only, the app a reader of it), and each account's
    setting takes the Send rule of its own region's namespace, looked up by the account's location;
    the app gets a connection and a trigger for each."""
    main = (INFRA / "main.bicep").read_text()
    assert "split(replace(aiAccountIds, ' ', ''), ',')" in main
    assert re.search(r"module diagnostics 'modules/ai-diagnostics\.bicep' = \[for \(account, i\) in aiAccounts:", main)
    assert re.search(r"module regional 'modules/eventhubs\.bicep' = \[for region in otherRegions:", main)
    looped = parse(INFRA / "main.bicep")["modules"]["regional"]["config"]
    assert looped["loop_type"]["detail"] == {"item_name": "region", "array_name": "otherRegions"}
    regional = looped["config"]["params"]
    assert regional["alertsHub"] is False
    assert regional["location"] == "region"  # each namespace in its own region
    assert "principalId" in str(regional["receiverPrincipalId"])
    # the regions and their rules, in one order: the deployment's first, then the others
    assert "var ruleRegions = concat([location], otherRegions)" in main
    assert "var sendRules = concat([eventhubs.outputs.sendRuleId], regionalRules)" in main
    assert "var regionalRules = [for (region, i) in otherRegions: regional[i].outputs.sendRuleId]" in main
    setting = parse(INFRA / "modules" / "ai-diagnostics.bicep")["resources"]["diagnostics"]["config"]["properties"]
    assert setting["logs"] == [{"categoryGroup": "allLogs", "enabled": True}]
    assert "sendRules[indexOf(regions, account.location)]" in (INFRA / "modules" / "ai-diagnostics.bicep").read_text()
    hubs = (INFRA / "modules" / "eventhubs.bicep").read_text()
    assert "var names = alertsHub ? [defenderHub, diagnosticsHub] : [diagnosticsHub]" in hubs
    assert "a638d3c7-ab3a-418d-83e6-5f17a39d4fde" in hubs  # Event Hubs Data Receiver for the app there
    app = (INFRA / "modules" / "functionapp.bicep").read_text()
    for suffix in ("fullyQualifiedNamespace", "credential", "clientId"):
        assert f"'AEGIS_EVENTHUB_${{toUpper(n.region)}}__{suffix}'" in app
    assert "AEGIS_DIAGNOSTICS_REGIONS: join(regionNames, ',')" in app


def test_teams_goes_through_a_bot_on_the_managed_identity_whose_endpoint_checks_its_own_tokens():
    bot = parse(INFRA / "modules" / "bot.bicep")["resources"]
    props = bot["bot"]["config"]["properties"]
    assert props["msaAppType"] == "UserAssignedMSI"  # no app secret anywhere
    assert "identityClientId" in str(props["msaAppId"])
    assert props["disableLocalAuth"] is True
    assert "/api/messages" in str(props["endpoint"])
    assert bot["teams"]["config"]["name"] == "MsTeamsChannel"
    app = (INFRA / "modules" / "functionapp.bicep").read_text()
    assert "excludedPaths: ['/api/messages']" in app  # Teams cannot sign in: botauth checks the token instead
    assert "AEGIS_BOT_APP_ID: identityClientId" in app
    assert "ChannelMessage" not in (INFRA / "grant-permissions.sh").read_text()  # no delegated Graph posting
