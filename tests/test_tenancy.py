"""The tenant as a dimension of every group: where an event's tenant comes from, and that no
incident spans two tenants while a resource's logs and alerts still join whatever they say."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from aegis import settings
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.errors import ConfigurationError
from aegis.pipeline import Message, Pipeline
from aegis.store import SqliteStore
from aegis.tenancy import Tenancy, split_group
from tests.conftest import SAMPLES
from tests.helpers import normalize_one

T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"
SUB = "6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10"  # the samples' subscription
ARM_ALERT = orjson.loads((SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes())
SIGNIN = orjson.loads((SAMPLES / "diagnostics" / "05-signin.json").read_bytes())
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def alert(n: int, tenant: str, *, subscription: str = SUB, ip: str = "203.0.113.45") -> dict[str, Any]:
    """The sample jailbreak alert, as the n-th of a campaign, in `tenant`'s subscription."""
    a = copy.deepcopy(ARM_ALERT)
    p = a["properties"]
    sysid = f"25168615229999{n:05d}_a1b2c3d4-0001-4e5f-8a9b-{int(tenant[0]):04d}1d2e3f4a5b"
    a["name"] = p["systemAlertId"] = sysid
    a["id"] = a["id"].rsplit("/", 1)[0].replace(SUB, subscription) + "/" + sysid
    for ident in p["resourceIdentifiers"]:
        if "aadTenantId" in ident:
            ident["aadTenantId"] = tenant
        if "azureResourceId" in ident:
            ident["azureResourceId"] = ident["azureResourceId"].replace(SUB, subscription)
    p["entities"] = [{"address": ip, "type": "ip"}]
    p["extendedProperties"] = {}
    p["alertUri"] = None
    p["startTimeUtc"] = p["timeGeneratedUtc"] = (NOW + timedelta(minutes=2 * n)).isoformat()
    return a


def pipeline(tenancy: Tenancy | None = None) -> Pipeline:
    store = SqliteStore(":memory:")
    return Pipeline(store, correlator=Correlator(detections.load().detections, store), tenancy=tenancy,
                    clock=lambda: NOW + timedelta(hours=1))  # fmt: skip


def by_detection(p: Pipeline, detection: str) -> list[Any]:
    return [i for i in p.store.incidents() if i.detection == detection]


def test_an_alert_says_its_tenant_by_its_resource_identifiers_and_a_sign_in_by_its_tenant_id():
    _, (event,) = normalize_one(ARM_ALERT)
    assert event.tenant == "0f7c2d1a-5b3e-4c8d-9e6f-1a2b3c4d5e6f"  # the AAD identifier; no resource tenant given
    both = alert(1, T1)
    both["properties"]["resourceIdentifiers"].append({"type": "AzureResource", "azureResourceTenantId": T2})
    _, (event,) = normalize_one(both)
    assert event.tenant == T2  # the affected resource's tenant first
    record = copy.deepcopy(SIGNIN["records"][0] if "records" in SIGNIN else SIGNIN)
    record["tenantId"] = T1.upper()
    _, (event,) = normalize_one(record)
    assert event.tenant == T1


def test_the_operators_word_beats_the_payloads_and_the_home_tenant_fills_in():
    _, (event,) = normalize_one(alert(1, T1))
    tenancy = Tenancy(home=T2, by_subscription={SUB: T2})
    placed = tenancy.assign(event)
    assert placed.tenant == T2
    assert placed.attributes["claimed_tenant"] == T1  # what the payload said is kept, not believed
    assert Tenancy(home=T2).assign(event).tenant == T1  # the payload's, when the operator names none
    bare = normalize_one(alert(1, T1) | {"properties": {**alert(1, T1)["properties"], "resourceIdentifiers": []}})[1][0]
    assert bare.tenant is None
    assert Tenancy(home=T2).assign(bare).tenant == T2
    assert Tenancy().assign(bare) is bare


def test_one_network_attacking_two_tenants_is_one_incident_per_tenant():
    p = pipeline()
    bodies = [alert(n, T1) for n in range(3)] + [alert(n, T2, subscription="0" * 8 + SUB[8:]) for n in range(3)]
    p.process([Message(orjson.dumps(b), hub="defender-alerts") for b in bodies])
    campaigns = by_detection(p, "ai-prompt-attack-campaign-by-caller")
    assert sorted(i.tenant for i in campaigns) == [T1, T2]
    for i in campaigns:
        assert i.event_count == 3
        tenant, values = split_group(i.group)
        assert (tenant, values, i.grouped_on) == (i.tenant, "203.0.113.0/24", "203.0.113.0/24")
        assert i.summary()["tenant"] == i.tenant
        assert "tenant=" not in i.title


def test_without_the_tenant_dimension_the_two_tenants_would_merge(monkeypatch):
    """The same batch, with the groups' tenant switched off: one incident of six events. What the
    test above asserts is the dimension's doing, not the alerts'."""
    monkeypatch.setattr(detections.Detection, "by_tenant", property(lambda self: False))
    p = pipeline()
    bodies = [alert(n, T1) for n in range(3)] + [alert(n, T2, subscription="0" * 8 + SUB[8:]) for n in range(3)]
    p.process([Message(orjson.dumps(b), hub="defender-alerts") for b in bodies])
    (campaign,) = by_detection(p, "ai-prompt-attack-campaign-by-caller")
    assert campaign.event_count == 6


def test_a_resource_group_needs_no_tenant_so_its_logs_and_alerts_still_join():
    loaded = {d.id: d for d in detections.load().detections}
    assert loaded["ai-prompt-attack-campaign-by-caller"].by_tenant
    assert not loaded["ai-denial-of-wallet-tokens"].by_tenant  # grouped on the AI resource
    assert not loaded["ai-prompt-attack-then-exfiltration"].by_tenant  # network and resource: the resource pins it
    assert not loaded["defender-ai-alert"].by_tenant


def test_a_configured_subscription_puts_its_alerts_in_its_tenant_whatever_they_claim():
    p = pipeline(Tenancy(by_subscription={SUB: T2}))
    p.process([Message(orjson.dumps(alert(n, T1)), hub="defender-alerts") for n in range(3)])
    (campaign,) = by_detection(p, "ai-prompt-attack-campaign-by-caller")
    assert campaign.tenant == T2


def test_subscription_tenants_are_read_from_the_settings_and_a_bad_entry_says_how_to_write_one(monkeypatch):
    monkeypatch.setenv("AEGIS_TENANTS", f" {SUB.upper()}={T1} , {'0' * 8 + SUB[8:]}={T2},")
    monkeypatch.setenv("AEGIS_TENANT_ID", T2.upper())
    cfg = settings.load()
    assert cfg.tenancy == Tenancy(home=T2, by_subscription={SUB: T1, "0" * 8 + SUB[8:]: T2})
    monkeypatch.setenv("AEGIS_TENANTS", f"{SUB}:{T1}")
    with pytest.raises(ConfigurationError, match=r"AEGIS_TENANTS: .*SUBSCRIPTION=TENANT.*example"):
        settings.load()
