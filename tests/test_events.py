from datetime import UTC, datetime

import pytest

from aegis.arm import parse_resource_id
from aegis.events import AiResource, Event, Evidence, Host, Ip, Model, ModelDeployment, Severity, Source, User, make_ip


@pytest.mark.parametrize(
    ("text", "address", "prefix"),
    [
        ("81.2.69.142", "81.2.69.142", "81.2.69.0/24"),
        ("81.2.69.***", None, "81.2.69.0/24"),
        ("20.236.11.**", None, "20.236.11.0/24"),
        ("2001:db8::1", "2001:db8::1", "2001:db8::/64"),
    ],
)
def test_ip_full_or_masked_share_a_prefix(text, address, prefix):
    ip = make_ip(text)
    assert ip is not None
    assert ip.address == address
    assert ip.prefix == prefix
    assert ip.masked is (address is None)


@pytest.mark.parametrize("text", ["", "not-an-ip", "81.2.***", "81.2.69.1x*", "300.1.1.***", 12, None, "1.2.3.4" * 20])
def test_non_ips_are_not_ips(text):
    assert make_ip(text) is None


def test_event_round_trips_through_json():
    rid = parse_resource_id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/a")
    event = Event(
        id="abc",
        source=Source.DEFENDER,
        normalizer="defender.alert.arm",
        kind="AI.Azure_Jailbreak",
        time=datetime(2026, 11, 20, 9, 12, 4, 123456, tzinfo=UTC),
        evidence=Evidence("f" * 64, "/0", "defender-alerts", "3", 42, "1024", datetime(2026, 11, 20, tzinfo=UTC)),
        resource=rid,
        severity=Severity.HIGH,
        title="t",
        entities=(
            Ip(prefix="81.2.69.0/24"),
            User(upn="a@b.c", object_id="7d3e9a61-2c4b-4f1e-8a5d-6b9c0e1f2a3b"),
            Host(name="vm", mde_machine_id="m1"),
            AiResource(resource_id=rid.id, name="a"),
            ModelDeployment(name="gpt-4o", resource_id=rid.id),
            Model(name="gpt-4o", version="2024-08-06"),
        ),
        attributes={"http_status": 401, "request_bytes": 12.5, "interactive": True, "status": "New"},
    )
    assert Event.from_json(event.to_json()) == event
    assert event.to_dict()["time"] == "2026-11-20T09:12:04.123456Z"


def test_severity_parse_is_case_insensitive_and_strict():
    assert Severity.parse("High") is Severity.HIGH
    assert Severity.parse(" informational ") is Severity.INFORMATIONAL
    assert Severity.parse("Severe") is None
    assert Severity.parse(3) is None


def test_an_alerts_details_show_only_a_portal_link_and_name_its_attack_tactics():
    from dataclasses import replace as copy_with
    from datetime import UTC, datetime

    from aegis.events import Event, Evidence, Source
    from aegis.records import alert_details

    base = Event(id="a1", source=Source.DEFENDER, normalizer="defender.alert.arm", kind="AI.Azure_Jailbreak",
                 time=datetime(2026, 11, 20, tzinfo=UTC), evidence=Evidence("0" * 64, "", "h"), title="Jailbreak",
                 attributes={"intent": "PrivilegeEscalation, Probing", "description": "d",
                             "link": "https://portal.azure.com/#blade/x/alertId/a1"})  # fmt: skip
    [shown] = alert_details([base])
    assert shown.link == "https://portal.azure.com/#blade/x/alertId/a1"
    assert shown.tactics == ("TA0004 Privilege Escalation", "Probing")
    for link in ("javascript:alert(1)", "http://portal.azure.com/x", "https://portal.azure.com.evil.example/x",
                 "https://user@portal.azure.com/x", "https://evil.example/portal.azure.com"):  # fmt: skip
        [shown] = alert_details([copy_with(base, attributes={**base.attributes, "link": link})])
        assert shown.link is None, link
    log = copy_with(base, source=Source.RESOURCE_LOG)
    assert alert_details([log]) == []
