"""The AI estate: assets parsed from the documented Azure shapes, blind spots as findings that close
when fixed, changes between refreshes with their time, both stores, and the Azure collector through
the real SDK clients up to the wire (Resource Graph paging with $skipToken, a 429, a 403)."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from aegis import assets
from aegis.assets import Asset, AssetBook, KeyCaller, TagNames, parse_asset
from aegis.events import Severity
from aegis.inventory import refresh as inv
from aegis.inventory.azure import Estate
from aegis.respond.connect import Connections
from tests.wire import Reply, WireServer

SUB = "00000000-0000-0000-0000-0000000000a1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/copilot-prod"
SANDBOX = f"/subscriptions/{SUB}/resourceGroups/rg-lab/providers/Microsoft.CognitiveServices/accounts/sandbox"
HUB = f"/subscriptions/{SUB}/resourceGroups/rg-ai/providers/Microsoft.MachineLearningServices/workspaces/foundry-hub"
NAMESPACE = f"/subscriptions/{SUB}/resourceGroups/rg-aegis/providers/Microsoft.EventHub/namespaces/aegis-ns"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def account_row(rid: str = ACCOUNT, **props: Any) -> dict[str, Any]:
    """A Resource Graph row of an Azure OpenAI account, in the shape `resources | project ...` answers."""
    return {
        "id": rid, "name": rid.rsplit("/", 1)[1], "type": "microsoft.cognitiveservices/accounts", "kind": "OpenAI",
        "location": "swedencentral", "subscriptionId": SUB, "resourceGroup": rid.split("/")[4],
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "tags": {"Owner": "ana@contoso.com", "Criticality": "High", "data-classification": "Confidential"},
        "identity": {"type": "SystemAssigned", "principalId": "5b1c7a4e-0000-4000-8000-000000000001"},
        "sku": {"name": "S0"},
        "properties": {
            "endpoint": "https://copilot-prod.openai.azure.com/", "publicNetworkAccess": "Enabled",
            "networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "203.0.113.0/24"}], "virtualNetworkRules": []},
            "disableLocalAuth": True, "privateEndpointConnections": [], **props,
        },
    }  # fmt: skip


def deployment(name: str, policy: str | None = "Microsoft.DefaultV2") -> dict[str, Any]:
    return {"id": f"{ACCOUNT}/deployments/{name}", "name": name, "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": {"name": "GlobalStandard", "capacity": 50},
            "properties": {"model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-11-20"},
                           **({"raiPolicyName": policy} if policy else {}), "provisioningState": "Succeeded"}}  # fmt: skip


def policy(name: str, *, threshold: str = "Medium", blocking: bool = True, jailbreak: bool = True) -> dict[str, Any]:
    filters = [{"name": n, "severityThreshold": threshold, "blocking": blocking, "enabled": True, "source": s}
               for n in ("Hate", "Sexual", "Violence", "Selfharm") for s in ("Prompt", "Completion")]  # fmt: skip
    if jailbreak:
        filters.append({"name": "Jailbreak", "blocking": True, "enabled": True, "source": "Prompt"})
    return {"id": f"{ACCOUNT}/raiPolicies/{name}", "name": name, "type": "Microsoft.CognitiveServices/accounts/raiPolicies",
            "properties": {"mode": "Blocking", "basePolicyName": "Microsoft.DefaultV2", "contentFilters": filters}}  # fmt: skip


def diagnostic(hub: str = "ai-diagnostics", rule_ns: str = NAMESPACE) -> dict[str, Any]:
    return {"id": f"{ACCOUNT}/providers/microsoft.insights/diagnosticSettings/aegis", "name": "aegis",
            "properties": {"eventHubAuthorizationRuleId": f"{rule_ns}/authorizationrules/aegis-send",
                           "eventHubName": hub, "logs": [{"categoryGroup": "allLogs", "enabled": True}]}}  # fmt: skip


def full_row(**kw: Any) -> dict[str, Any]:
    row = account_row(**kw)
    row["deployments"] = [deployment("chat"), deployment("chat-lax", "lax")]
    row["raiPolicies"] = [policy("lax", threshold="High", jailbreak=False)]
    row["diagnosticSettings"] = [diagnostic()]
    row["defenderForAi"] = "Standard"
    return row


OPTIONS = inv.Options(hubs=("ai-diagnostics",), namespaces=("aegis-ns",))


def parsed(row: dict[str, Any]) -> Asset:
    return parse_asset(row, aegis_hubs=OPTIONS.hubs, namespaces=OPTIONS.namespaces)


# --- parsing the documented shapes ---


def test_an_account_row_says_owner_criticality_exposure_deployments_and_monitoring():
    a = parsed(full_row())
    assert a.id == ACCOUNT.lower()
    assert a.name == "copilot-prod"
    assert a.kind == "openai"
    assert (a.owner, a.criticality, a.data_classification) == ("ana@contoso.com", "high", "Confidential")
    assert a.public_network_access == "enabled"
    assert a.default_action == "deny"
    assert a.ip_rules == ("203.0.113.0/24",)
    assert not a.public
    assert a.has_public_endpoint
    assert a.local_auth is False
    assert a.identities == ("systemassigned",)
    assert [d.name for d in a.deployments] == ["chat", "chat-lax"]
    assert a.deployments[0].weakened() == ()
    lax = a.deployments[1].weakened()
    assert "hate (prompt) blocks only high severity" in lax
    assert "jailbreak (prompt) is not in the policy" in lax
    assert a.monitored is True
    assert a.defender is True
    assert Asset.from_json(a.to_json()) == a


def test_a_diagnostic_setting_into_another_hub_or_namespace_does_not_reach_aegis():
    row = full_row()
    row["diagnosticSettings"] = [diagnostic(hub="someone-else")]
    assert parsed(row).monitored is False
    row["diagnosticSettings"] = [diagnostic(rule_ns=NAMESPACE.replace("aegis-ns", "attacker-ns"))]
    assert parsed(row).monitored is False
    partial = diagnostic()
    partial["properties"]["logs"] = [{"category": "Audit", "enabled": True}]
    row["diagnosticSettings"] = [partial]
    assert parsed(row).monitored is False  # only the audit log: requests and usage are not seen
    row.pop("diagnosticSettings")
    assert parsed(row).monitored is None  # not read: unknown, not a blind spot


def test_tags_are_matched_without_case_cut_and_cleaned_and_their_names_are_configurable():
    row = account_row()
    row["tags"] = {"OWNER": "eve\u202e@evil\x00" + "x" * 500, "tier": "Critical"}
    a = parse_asset(row, tags=TagNames(criticality=("tier",)))
    assert a.owner is not None
    assert "\u202e" not in a.owner
    assert "\x00" not in a.owner
    assert len(a.owner) <= 128
    assert a.criticality == "critical"


@pytest.mark.parametrize("row", [
    {"id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"},
    {"id": "not an id"}, {"id": 7}, {},
])  # fmt: skip
def test_a_row_that_is_not_an_ai_asset_is_refused_with_its_reason(row):
    with pytest.raises(assets.MalformedInput):
        parse_asset(row)


def test_hostile_shapes_inside_a_row_are_ignored_not_fatal():
    row = full_row()
    row["properties"]["networkAcls"] = ["not", "an", "object"]
    row["properties"]["privateEndpointConnections"] = "x"
    row["identity"] = None
    row["deployments"] = [None, 3, {"name": {"nested": 1}, "properties": []}]
    row["raiPolicies"] = "x"
    row["diagnosticSettings"] = [{"properties": {"logs": "all"}}]
    a = parsed(row)
    assert a.public
    assert a.monitored is False
    assert a.identities == ()


def test_a_foundry_hub_is_public_without_a_private_endpoint_and_has_no_local_auth():
    hub = {"id": HUB, "name": "foundry-hub", "type": "microsoft.machinelearningservices/workspaces", "kind": "Hub",
           "subscriptionId": SUB, "resourceGroup": "rg-ai", "properties": {"publicNetworkAccess": "Enabled"}}  # fmt: skip
    a = parse_asset(hub)
    assert a.public
    assert a.local_auth is None
    assert [k for k, *_ in assets.blind_spots(a)] == ["public_network"]


# --- blind spots, reconciled over refreshes ---


def kinds(found: list[assets.Finding]) -> list[tuple[str, str, bool]]:
    return [(f.kind, f.subject, f.open) for f in found]


def test_each_blind_spot_is_a_finding_with_evidence_and_the_exact_fix():
    row = full_row(disableLocalAuth=False, networkAcls={"defaultAction": "Allow"})
    row["diagnosticSettings"] = []
    row["defenderForAi"] = "Free"
    found = assets.reconcile([parsed(row)], [], T0)
    assert kinds(found) == [("local_auth", "", True), ("no_defender", "", True), ("no_diagnostics", "", True),
                            ("public_network", "", True), ("weak_content_filter", "chat-lax", True)]  # fmt: skip
    by = {f.kind: f for f in found}
    assert "aiAccountIds" in by["no_diagnostics"].fix
    assert ACCOUNT.lower() in by["no_diagnostics"].fix
    assert by["no_diagnostics"].evidence == ("no diagnostic setting",)
    assert "disableLocalAuth=true" in by["local_auth"].fix
    assert "enableDefenderForAi" in by["no_defender"].fix
    assert "raiPolicyName to Microsoft.DefaultV2" in by["weak_content_filter"].fix
    assert all(f.severity == Severity.LOW and f.owner == "ana@contoso.com" for f in found)


def test_a_finding_stays_open_from_when_it_opened_closes_when_fixed_and_reopens():
    bad = parsed(full_row(disableLocalAuth=False))
    first = assets.reconcile([bad], [], T0)
    later = assets.reconcile([bad], first, T0 + timedelta(hours=1))
    local = next(f for f in later if f.kind == "local_auth")
    assert local.opened == T0
    assert local.seen == T0 + timedelta(hours=1)
    assert local.open
    fixed = assets.reconcile([parsed(full_row())], later, T0 + timedelta(hours=2))
    closed = next(f for f in fixed if f.kind == "local_auth")
    assert closed.closed == T0 + timedelta(hours=2)
    assert not closed.open
    again = assets.reconcile([bad], fixed, T0 + timedelta(hours=3))
    reopened = next(f for f in again if f.kind == "local_auth")
    assert reopened.open
    assert reopened.opened == T0 + timedelta(hours=3)


def test_a_relaxed_content_filter_and_keys_turned_back_on_are_changes_with_their_time():
    before = parsed(full_row())
    row = full_row(disableLocalAuth=False)
    row["raiPolicies"] = [policy("lax", threshold="High", blocking=False, jailbreak=False)]
    row["deployments"][0] = deployment("chat", "lax")
    after = parsed(row)
    seen = {c.what: c for c in assets.changes(before, after, T0)}
    assert seen["local (key) auth"].weaker
    assert seen["local (key) auth"].after == "on"
    relaxed = seen["deployment chat content filter"]
    assert relaxed.weaker
    assert relaxed.before == "Microsoft.DefaultV2"
    assert "annotates and does not block" in relaxed.after
    assert relaxed.time == T0
    assert assets.changes(after, after, T0) == []


# --- one refresh, on both stores ---


def test_a_refresh_keeps_assets_findings_and_changes_and_closes_what_was_fixed(store):
    first = inv.refresh(store, [full_row(disableLocalAuth=False)], options=OPTIONS, now=T0)
    assert [a.name for a in first.assets] == ["copilot-prod"]
    assert sorted(f.kind for f in first.open) == ["local_auth", "weak_content_filter"]
    assert [c.what for c in first.changes] == ["asset"]
    assert store.assets() == first.assets

    row = full_row()
    row.pop("diagnosticSettings")  # this refresh could not read them: what the last one read stands
    second = inv.refresh(store, [row, account_row(SANDBOX)], options=OPTIONS, now=T0 + timedelta(hours=1))
    prod = next(a for a in store.assets() if a.name == "copilot-prod")
    assert prod.monitored is True
    assert prod.local_auth is False
    assert sorted(f.kind for f in second.open) == ["weak_content_filter"]  # the sandbox says nothing it lacks
    closed = [f for f in store.findings() if not f.open]
    assert [(f.kind, f.closed) for f in closed] == [("local_auth", T0 + timedelta(hours=1))]
    whats = [c.what for c in store.asset_changes()]
    assert whats[0] in {"asset", "local (key) auth"}
    assert "local (key) auth" in whats

    third = inv.refresh(store, [row], options=OPTIONS, now=T0 + timedelta(hours=2))
    assert third.gone == [SANDBOX.lower()]
    assert [a.name for a in store.assets()] == ["copilot-prod"]
    assert store.asset_changes(limit=1)[0].after == "gone"


def test_key_callers_are_kept_per_account_newest_first(store):
    a = KeyCaller(ACCOUNT.lower(), "203.0.113.7", "openai-python/1.40", "chat", T0)
    b = KeyCaller(ACCOUNT.lower(), "198.51.100.0/24", None, None, T0 + timedelta(minutes=5))
    other = KeyCaller(SANDBOX.lower(), "192.0.2.1", None, None, T0)
    store.save_key_callers([a, b, other])
    store.save_key_callers([KeyCaller(a.account, a.ip, a.user_agent, a.deployment, T0 + timedelta(hours=1))])
    got = store.key_callers(ACCOUNT)
    assert [(c.ip, c.last_seen) for c in got] == [("203.0.113.7", T0 + timedelta(hours=1)),
                                                  ("198.51.100.0/24", T0 + timedelta(minutes=5))]  # fmt: skip


def test_retention_purges_old_changes_key_callers_and_long_closed_findings(store):
    inv.refresh(store, [account_row(disableLocalAuth=False)], now=T0 - timedelta(days=41))
    inv.refresh(store, [account_row()], now=T0 - timedelta(days=40))  # fixed: its finding closed 40 days ago
    inv.refresh(store, [account_row(SANDBOX, disableLocalAuth=False)], now=T0 - timedelta(days=1))
    assert {f.kind for f in store.findings() if not f.open} == {"local_auth"}
    store.save_key_callers([KeyCaller(ACCOUNT.lower(), "203.0.113.7", None, None, T0 - timedelta(days=40))])
    store.purge(T0 - timedelta(days=30))
    assert [(f.asset_name, f.open) for f in store.findings()] == [("sandbox", True)]  # the open one stays
    assert [c.time for c in store.asset_changes()] == [T0 - timedelta(days=1)] * 2
    assert store.key_callers(ACCOUNT) == []
    assert [a.name for a in store.assets()] == ["sandbox"]  # the inventory itself stays


# --- what incidents read ---


def test_the_book_finds_an_asset_by_a_child_id_and_weighs_by_criticality_one_step():
    crit = parsed(full_row())
    crit = Asset.from_json(crit.to_json().replace(b'"criticality":"high"', b'"criticality":"critical"'))
    low = parse_asset({**account_row(SANDBOX), "tags": {"criticality": "low"}})
    book = AssetBook([crit, low])
    assert book.get(f"{ACCOUNT}/deployments/chat".lower()) is crit
    assert book.get(SANDBOX.upper()) is low
    assert book.named("SANDBOX") is low
    assert book.get("/subscriptions/x/resourcegroups/y/providers/microsoft.cognitiveservices/accounts/none") is None
    assert book.weigh(Severity.MEDIUM, crit, alerted=False) == (
        Severity.HIGH,
        "asset copilot-prod is critical: 1 higher",
    )
    assert book.weigh(Severity.MEDIUM, low, alerted=False)[0] == Severity.LOW
    assert book.weigh(Severity.MEDIUM, low, alerted=True) == (Severity.MEDIUM, None)  # Defender judged it: not down
    assert book.weigh(Severity.CRITICAL, crit, alerted=False) == (Severity.CRITICAL, None)
    assert book.of([SANDBOX.lower(), ACCOUNT.lower()]) is crit


# --- the collector, through the real SDK clients up to the wire ---


class ArmToken:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


ARG = "/providers/Microsoft.ResourceGraph/resources"


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def arg_page(rows: list[dict[str, Any]], token: str | None, total: int) -> dict[str, Any]:
    page: dict[str, Any] = {"totalRecords": total, "count": len(rows), "resultTruncated": "false", "data": rows,
                            "facets": []}  # fmt: skip
    if token:
        page["$skipToken"] = token
    return page


def test_the_estate_is_read_page_by_page_with_throttling_honoured_and_a_403_said(server):
    prod, sandbox = account_row(), account_row(SANDBOX)
    server.expect("POST", ARG,
                  Reply(200, arg_page([prod], "page-2", 2), {"x-ms-user-quota-remaining": "0",
                                                            "x-ms-user-quota-resets-after": "00:00:02"}),
                  Reply(429, {"error": {"code": "RateLimiting"}}, {"Retry-After": "1"}),
                  Reply(200, arg_page([sandbox], None, 2)))  # fmt: skip
    server.expect(
        "GET", f"{ACCOUNT}/deployments", Reply(200, {"value": [deployment("chat"), deployment("chat-lax", "lax")]})
    )
    server.expect("GET", f"{ACCOUNT}/raiPolicies", Reply(200, {"value": [policy("lax", threshold="High")]}))
    server.expect(
        "GET", f"{ACCOUNT}/providers/Microsoft.Insights/diagnosticSettings", Reply(200, {"value": [diagnostic()]})
    )
    server.expect("GET", f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/AI",
                  Reply(200, {"id": f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/AI", "name": "AI",
                              "type": "Microsoft.Security/pricings",
                              "properties": {"pricingTier": "Standard", "subPlan": "", "freeTrialRemainingTime": "PT0S"}}))  # fmt: skip
    server.expect("GET", f"{SANDBOX}/deployments", Reply(200, {"value": []}))
    server.expect("GET", f"{SANDBOX}/raiPolicies", Reply(200, {"value": []}))
    server.expect("GET", f"{SANDBOX}/providers/Microsoft.Insights/diagnosticSettings",
                  Reply(403, {"error": {"code": "AuthorizationFailed", "message": "no read"}}))  # fmt: skip
    waits: list[float] = []
    conn = Connections(ArmToken(), arm=server.url, ca_file=str(server.ca_file), retries=2)  # type: ignore[arg-type]
    started = time.monotonic()
    got = Estate(conn, subscriptions=[SUB], sleep=waits.append).collect()
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After
    assert waits == [2]  # the first page left no quota: waited for its reset before the second
    assert got.pages == 2
    assert [r["name"] for r in got.rows] == ["copilot-prod", "sandbox"]
    assert got.errors == [f"{SANDBOX}: cannot read diagnosticSettings (403 Forbidden)"]

    posts = [s for s in server.seen if s.method == "POST"]
    assert [p.query["api-version"] for p in posts] == [["2021-03-01"]] * 3
    assert posts[0].body["subscriptions"] == [SUB]
    assert "$skipToken" not in posts[0].body["options"]
    assert posts[0].body["options"] == {"$top": 1000, "resultFormat": "objectArray", "allowPartialScopes": False}
    assert posts[2].body["options"]["$skipToken"] == "page-2"
    assert "microsoft.cognitiveservices/accounts" in posts[0].body["query"]
    assert all(s.headers["authorization"] == "Bearer test-token" for s in server.seen)
    assert [s.path for s in server.seen].count(f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/AI") == 1

    store_rows = copy.deepcopy(got.rows)
    prod_asset, sandbox_asset = (parsed(r) for r in store_rows)
    assert prod_asset.monitored is True
    assert prod_asset.defender is True
    assert [d.name for d in prod_asset.deployments] == ["chat", "chat-lax"]
    assert prod_asset.deployments[1].weakened()
    assert sandbox_asset.monitored is None
    assert sandbox_asset.defender is True


def test_a_project_is_judged_by_its_parent_not_flagged_for_network_or_keys_it_does_not_have():
    project = {"id": f"{ACCOUNT}/projects/support-bot", "name": "support-bot",
               "type": "microsoft.cognitiveservices/accounts/projects", "subscriptionId": SUB, "resourceGroup": "rg-ai",
               "properties": {}}  # fmt: skip
    hub_project = {"id": HUB.replace("foundry-hub", "foundry-project"), "name": "foundry-project",
                   "type": "microsoft.machinelearningservices/workspaces", "kind": "Project", "subscriptionId": SUB,
                   "resourceGroup": "rg-ai", "properties": {"hubResourceId": HUB}}  # fmt: skip
    a, b = parse_asset(project), parse_asset(hub_project)
    assert (a.hub, b.hub) == (ACCOUNT.lower(), HUB.lower())
    assert a.is_project
    assert b.is_project
    assert assets.blind_spots(a) == []
    assert assets.blind_spots(b) == []
    assert AssetBook([parsed(full_row()), a]).get(f"{ACCOUNT}/projects/support-bot".lower()) is a
